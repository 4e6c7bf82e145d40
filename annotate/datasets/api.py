"""Dataset import and export endpoints: files in, streamed files out, background jobs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.http import FileResponse, HttpResponseBase, StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.decorators import api_view, parser_classes
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from annotate import services
from annotate.errors import InvalidInput
from annotate.models import Comparison, DatasetJob, Project, Prompt

from . import exporters, jobs
from .downloads import MEDIA_TYPES, export_response, media_type
from .formats import IMPORT_FORMATS, ImportOptions
from .imports import check_size, import_file
from .labels import AGGREGATIONS, WEIGHTS, PairOptions


class _IgnoreFormatParameter(DefaultContentNegotiation):
    """``?format=`` names the dataset format here, not a DRF renderer."""

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, str(renderer.media_type)


def _dataset_view(func: Callable[..., Any]) -> Callable[..., Any]:
    func.content_negotiation_class = _IgnoreFormatParameter  # type: ignore[attr-defined]
    return func


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def job_data(request: Request, project: Project, job: DatasetJob) -> dict[str, Any]:
    done, total = jobs.job_progress(job)
    data: dict[str, Any] = {
        "id": job.pk,
        "kind": job.kind,
        "format": job.format,
        "status": job.status,
        "progress": done,
        "total": total,
        "percent": jobs.job_percent(job),
        "options": job.options,
        "report": job.report,
        "error": job.error,
        "url": request.build_absolute_uri(reverse("api-dataset-job", args=[project.pk, job.pk])),
        "download_url": None,
    }
    if job.status == DatasetJob.Status.DONE and job.kind == DatasetJob.Kind.EXPORT:
        data["download_url"] = request.build_absolute_uri(
            reverse("api-dataset-job-download", args=[project.pk, job.pk])
        )
    return data


@extend_schema(
    request={
        "multipart/form-data": {
            "type": "object",
            "properties": {
                "file": {"type": "string", "format": "binary"},
                "format": {"type": "string", "enum": list(IMPORT_FORMATS)},
                "column": {"type": "string"},
                "kind": {"type": "string", "enum": ["train", "eval", "gold"]},
                "round": {"type": "integer"},
                "split": {"type": "string", "enum": ["train", "eval", "dev"]},
                "background": {"type": "boolean"},
                "on_error": {
                    "type": "string",
                    "enum": ["stop", "skip"],
                    "default": "stop",
                    "description": "stop: a bad row rejects the file; skip: import the good "
                    'rows and list each bad one in "skipped" with its line and reason',
                },
                "validate": {
                    "type": "boolean",
                    "default": False,
                    "description": "check every row and list every problem, writing nothing",
                },
            },
            "required": ["file", "format"],
        }
    },
    responses={
        201: OpenApiResponse(
            OpenApiTypes.OBJECT,
            description='The counts, "imported" (rows accepted) and "skipped": '
            '[{"line": n, "error": "..."}] (empty unless on_error=skip).',
        ),
        200: OpenApiResponse(
            OpenApiTypes.OBJECT,
            description='validate=true: {"valid": bool, "rows": n, "problems": '
            '[{"line": n, "error": "..."}]}; nothing was written.',
        ),
        202: OpenApiTypes.OBJECT,
        503: OpenApiResponse(
            OpenApiTypes.OBJECT,
            description="background: the task broker could not be reached; nothing was kept",
        ),
    },
    description=(
        "Import a file (.jsonl, .json, .csv, .tsv, .txt, .parquet) as prompts, pairs or labeled "
        "preference data (trl, hh, ultrafeedback, label-studio). One transaction: a bad row "
        "rejects the file with a message naming its line and field, unless on_error=skip. "
        "Rows over PREFLOOP_IMPORT_MAX_CELL_CHARS / _ROW_CHARS decoded are bad rows. Large "
        "files (or "
        "background=true) run as a job: 202 with the job to poll."
    ),
)
@api_view(["POST"])
@parser_classes([MultiPartParser, FormParser])
@_dataset_view
def dataset_import(request: Request, project_id: int) -> Response:
    project = services.get_project(request.user, project_id, lead=True)
    upload = request.FILES.get("file")
    if upload is None:
        raise InvalidInput('"file" is missing: send the file as multipart/form-data.')
    posted: Any = request.data
    form: dict[str, Any] = {key: posted.get(key) for key in posted}
    fmt = str(form.get("format") or "")
    if fmt not in IMPORT_FORMATS:
        raise InvalidInput(f'"format" must be one of {", ".join(IMPORT_FORMATS)}')
    check_size(upload.size)
    options = ImportOptions.from_dict(form)
    name = upload.name or "upload"
    if jobs.import_in_background(upload.size, asked=_flag(form.get("background", ""))):
        job = jobs.start_import_job(
            project, request.user, fmt, upload, name, options, size=upload.size
        )
        return Response(job_data(request, project, job), status=202)
    report = import_file(project, fmt, upload, name, size=upload.size, options=options)
    return Response(report.as_report(), status=200 if options.validate else 201)


def _listing(item: str) -> str:
    """A pattern for a comma-separated list of ``item`` (a regex), empty items and spaces
    allowed, as PairOptions.from_dict reads one."""
    return rf"^\s*({item}\s*)?(,\s*({item}\s*)?)*$"


def _names(names: Iterable[str]) -> str:
    return "(" + "|".join(names) + ")"


# a version name as annotate.datasets.versions reads it, in any case
_VERSION = "([bB][aA][sS][eE]|[vV][0-9]+)"
_SHARE = {"type": "number", "minimum": 0, "maximum": 1}

_EXPORT_PARAMETERS = [
    OpenApiParameter(
        "format",
        str,
        enum=[*exporters.EXPORT_FORMATS, "card"],
        required=True,
        description="card: only the dataset card (README.md) of the export card_format names",
    ),
    OpenApiParameter(
        "card_format",
        str,
        enum=["", *exporters.EXPORT_FORMATS],
        description="empty: trl",
    ),
    OpenApiParameter(
        "bundle", str, enum=["", *exporters.BUNDLES], description="file (or empty), zip or hf"
    ),
    OpenApiParameter(
        "rounds",
        str,
        description="comma-separated round numbers",
        pattern=_listing("[0-9]{1,9}"),
    ),
    OpenApiParameter(
        "splits",
        str,
        description="comma-separated: train, eval, dev (default: train)",
        pattern=_listing(_names(Prompt.Split.values)),
    ),
    OpenApiParameter(
        "kinds",
        str,
        description="comma-separated: train, eval, gold; empty: train and gold (eval only "
        "when named)",
        pattern=_listing(_names(Comparison.PAIR_KINDS)),
    ),
    OpenApiParameter(
        "versions",
        str,
        description='comma-separated version names ("base", "v1", ...; "v0" is the base): '
        "pairs with a completion sampled by one of them; empty: all",
        pattern=_listing(_VERSION),
    ),
    OpenApiParameter("include_ties", bool),
    OpenApiParameter("include_both_bad", bool),
    OpenApiParameter("aggregation", str, enum=["", *AGGREGATIONS], description="empty: majority"),
    OpenApiParameter("min_agreement", _SHARE),
    OpenApiParameter("min_votes", {"type": "integer", "minimum": 1}),
    OpenApiParameter(
        "weight", str, enum=["", *WEIGHTS], description="empty: the project's count_weight"
    ),
    OpenApiParameter(
        "skip_paused",
        bool,
        description="leave out paused annotators' judgments; empty: the project's "
        "count_skip_paused",
    ),
    OpenApiParameter(
        "min_gold_accuracy",
        _SHARE,
        description="0-1: leave out annotators below this gold accuracy (after gold_min_items); "
        "empty: the project's count_min_gold_accuracy",
    ),
    OpenApiParameter(
        "skip_fast",
        bool,
        description="leave out judgments under fast_judgment_seconds; empty: the project's "
        "count_skip_fast",
    ),
    OpenApiParameter(
        "label_smoothing", bool, description="add each pair's minority vote share (soft labels)"
    ),
    OpenApiParameter("background", bool, description="run as a job and answer 202"),
]


# what a download is sent as, by format and bundle
_FILES = {
    (200, media): OpenApiResponse(OpenApiTypes.BINARY, description="the file, as an attachment")
    for media in sorted({*MEDIA_TYPES.values(), "text/markdown"})
}


@extend_schema(
    parameters=_EXPORT_PARAMETERS,
    responses={
        **_FILES,
        202: OpenApiTypes.OBJECT,
        503: OpenApiResponse(
            OpenApiTypes.OBJECT,
            description="background: the task broker could not be reached; no job was kept",
        ),
    },
    description="A JSONL or CSV file is streamed as it is read: if reading fails partway, the "
    "connection is broken off (no final chunk, or a reset) rather than ended as if the file "
    "were whole.",
)
@api_view(["GET"])
@_dataset_view
def dataset_export(request: Request, project_id: int) -> HttpResponseBase:
    project = services.get_project(request.user, project_id, lead=True)
    params = request.query_params
    fmt = params.get("format", "")
    bundle = params.get("bundle") or "file"
    options = PairOptions.from_dict(params.dict())
    if fmt == "card":
        card = exporters.export_card(project, params.get("card_format") or "trl", options)
        response = StreamingHttpResponse(
            [card.encode("utf-8")], content_type="text/markdown; charset=utf-8"
        )
        response["Content-Disposition"] = 'attachment; filename="README.md"'
        return response
    exporters.check_format(fmt, bundle)
    if _flag(params.get("background", "")):
        job = jobs.start_export_job(project, request.user, fmt, options, bundle)
        return Response(job_data(request, project, job), status=202)
    return export_response(request.META, project, fmt, options, bundle)


@extend_schema(responses=OpenApiTypes.OBJECT)
@api_view(["GET"])
def dataset_job(request: Request, project_id: int, job_id: int) -> Response:
    project = services.get_project(request.user, project_id, lead=True)
    return Response(job_data(request, project, jobs.get_job(project, job_id)))


@extend_schema(responses=_FILES)
@api_view(["GET"])
@_dataset_view
def dataset_job_download(request: Request, project_id: int, job_id: int) -> HttpResponseBase:
    project = services.get_project(request.user, project_id, lead=True)
    job = jobs.get_job(project, job_id)
    path = jobs.result_file(job)
    return FileResponse(
        path.open("rb"),
        as_attachment=True,
        filename=job.filename,
        content_type=media_type(job.filename),
    )
