"""Who may open a project's pages: the one access check every browser view calls.

Outsiders get 404 (a project's existence is not revealed to people outside it); members whose
role does not allow the page get 403, rendered by ``templates/403.html``.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest

from . import services
from .errors import NotAllowed, NotFound
from .models import Project


def project_for(request: HttpRequest, project_id: int | str, *, lead: bool = False) -> Project:
    """The project if the request's user is a member (a lead, when ``lead``).

    Raises:
        Http404: the project does not exist or the user is not a member.
        PermissionDenied: the user is a member but the page needs a lead.
    """
    try:
        return services.get_project(request.user, project_id, lead=lead)
    except NotFound:
        raise Http404("No such project.") from None
    except NotAllowed as exc:
        raise PermissionDenied(exc.message) from None
