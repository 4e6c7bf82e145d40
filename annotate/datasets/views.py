"""Browser pages for datasets: import a file or pasted lines, export (downloaded now or prepared
by a worker).

A form that fails comes back filled in, with its error beside the field it is about; an export
that would hold no rows says so instead of sending an empty file.
"""

from __future__ import annotations

import io
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotate.access import project_for
from annotate.errors import NotFound, ServiceError
from annotate.models import Comparison, DatasetJob, Project

from . import exporters, jobs
from .downloads import export_response
from .formats import ImportOptions
from .forms import DatasetExportForm, DatasetImportForm
from .imports import import_file
from .labels import PairOptions
from .paste import PLACEHOLDERS, PasteForm


def _page(
    request: HttpRequest,
    project: Project,
    import_form: DatasetImportForm | None = None,
    export_form: DatasetExportForm | None = None,
    paste_form: PasteForm | None = None,
    export_empty: str = "",
    status: int = 200,
) -> HttpResponse:
    if paste_form is None:
        # ?kind=pairs picks the pasted lines' kind (and their example) without JavaScript
        kind = request.GET.get("kind", "prompts")
        paste_form = PasteForm(initial={"kind": kind if kind in PLACEHOLDERS else "prompts"})
    recent = list(DatasetJob.objects.filter(project=project)[:10])
    context: dict[str, Any] = {
        "project": project,
        "import_form": import_form or DatasetImportForm(),
        "export_form": export_form or DatasetExportForm(),
        "paste_form": paste_form,
        "placeholders": PLACEHOLDERS,
        "export_empty": export_empty,
        "jobs": [(job, jobs.job_percent(job)) for job in recent],
        "limit_mb": settings.PREFLOOP_MAX_UPLOAD_BYTES / (1024 * 1024),
        "n_prompts": project.prompts.count(),
        "n_comparisons": project.comparisons.filter(kind__in=Comparison.PAIR_KINDS).count(),
        "n_judgments": project.judgments.count(),
    }
    return render(request, "datasets/datasets.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def datasets(request: HttpRequest, project_id: int) -> HttpResponse:
    """The page; a POST imports the lines pasted into its "Paste JSONL" box."""
    project = project_for(request, project_id, lead=True)
    if request.method == "GET":
        return _page(request, project)
    form = PasteForm(request.POST)
    if form.is_valid():
        text = form.cleaned_data["text"]
        try:
            # the box holds JSONL whatever it looks like, hence the file name
            report = import_file(
                project, form.cleaned_data["kind"], io.BytesIO(text.encode()), "lines.jsonl"
            )
        except ServiceError as exc:
            form.add_error("text", f"Nothing was imported: {exc.message}")
        else:
            messages.success(request, f"Imported: {report.summary()}")
            return redirect("datasets", project_id=project.pk)
    return _page(request, project, paste_form=form, status=400)


def _empty_export(project: Project, fmt: str, options: PairOptions, download: bool) -> str:
    """Why an export of these options would hold no rows, or "" when it holds some."""
    if not project.judgments.exists():
        return "Nothing to export yet: no pair of this project has been judged."
    # a background export is for large data, where reading ahead for a first row costs too much
    nothing = (
        exporters.estimated_total(project, fmt, options) == 0
        or download
        and next(iter(exporters.export_rows(project, fmt, options)), None) is None
    )
    if nothing:
        return (
            "Nothing to export: no judged pair matches these options. "
            "Widen the rounds, splits or kinds, or include ties and both-bad pairs."
        )
    return ""


@login_required
@require_POST
def dataset_import(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request, project_id, lead=True)
    form = DatasetImportForm(request.POST, request.FILES)
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, f"Nothing was imported: {error}")
        return redirect("datasets", project_id=project.pk)
    data = form.cleaned_data
    upload = data["file"]
    try:
        options = ImportOptions.from_dict(data)
        if jobs.import_in_background(upload.size):
            job = jobs.start_import_job(
                project,
                request.user,
                data["format"],
                upload,
                upload.name,
                options,
                size=upload.size,
            )
            return redirect("dataset-job", project_id=project.pk, job_id=job.pk)
        report = import_file(
            project, data["format"], upload, upload.name, size=upload.size, options=options
        )
    except ServiceError as exc:
        messages.error(request, f"Nothing was imported: {exc.message}")
    else:
        messages.success(request, f"Imported: {report.summary()}")
    return redirect("datasets", project_id=project.pk)


@login_required
@require_http_methods(["GET", "POST"])
def dataset_export(request: HttpRequest, project_id: int) -> HttpResponseBase:
    """GET streams the export named by the query; POST does the same, or starts a job."""
    project = project_for(request, project_id, lead=True)
    data = request.POST if request.method == "POST" else request.GET
    form = DatasetExportForm(data)
    if not form.is_valid():
        messages.error(request, "Check the export options.")
        return _page(request, project, export_form=form, status=400)
    cleaned = form.cleaned_data
    try:
        options = PairOptions.from_dict(cleaned)
        background = request.method == "POST" and data.get("action") == "background"
        empty = _empty_export(project, cleaned["format"], options, download=not background)
        if empty:
            return _page(request, project, export_form=form, export_empty=empty)
        if background:
            job = jobs.start_export_job(
                project, request.user, cleaned["format"], options, cleaned["bundle"]
            )
            return redirect("dataset-job", project_id=project.pk, job_id=job.pk)
        return export_response(request.META, project, cleaned["format"], options, cleaned["bundle"])
    except ServiceError as exc:
        messages.error(request, exc.message)
        return _page(request, project, export_form=form, status=exc.status_code)


@login_required
@require_GET
def dataset_job(request: HttpRequest, project_id: int, job_id: int) -> HttpResponse:
    project = project_for(request, project_id, lead=True)
    try:
        job = jobs.get_job(project, job_id)
    except NotFound:
        raise Http404("No such job.") from None
    done, total = jobs.job_progress(job)
    context = {
        "project": project,
        "job": job,
        "percent": jobs.job_percent(job),
        "done": done,
        "total": total,
    }
    template = (
        "datasets/job.html#status" if getattr(request, "htmx", False) else "datasets/job.html"
    )
    return render(request, template, context)


@login_required
@require_GET
def dataset_job_download(request: HttpRequest, project_id: int, job_id: int) -> FileResponse:
    project = project_for(request, project_id, lead=True)
    try:
        job = jobs.get_job(project, job_id)
        path = jobs.result_file(job)
    except ServiceError:
        raise Http404("No such file.") from None
    return FileResponse(path.open("rb"), as_attachment=True, filename=job.filename)
