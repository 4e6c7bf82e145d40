"""HTTP responses that carry an export, shared by the browser pages and the API."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from django.http import FileResponse, HttpResponseBase, StreamingHttpResponse

from annotate.models import Project

from . import exporters
from .labels import PairOptions

# What a download's suffix is sent as; anything else is application/octet-stream. Named here
# rather than guessed, since the platform's MIME table differs between machines.
MEDIA_TYPES = {
    ".jsonl": "application/x-ndjson",
    ".csv": "text/csv",
    ".parquet": "application/vnd.apache.parquet",
    ".zip": "application/zip",
}


def media_type(filename: str) -> str:
    return MEDIA_TYPES.get(Path(filename).suffix.lower(), "application/octet-stream")


def export_response(
    project: Project, fmt: str, options: PairOptions, bundle: str
) -> HttpResponseBase:
    """A streamed JSONL/CSV download, or a spooled Parquet/zip one."""
    exporters.check_format(fmt, bundle)
    filename = exporters.export_filename(project, fmt, bundle)
    if bundle == "file" and fmt in exporters.STREAMED:
        content_type = "text/csv" if fmt == "csv" else "application/x-ndjson"
        response = StreamingHttpResponse(
            exporters.stream_export(project, fmt, options),
            content_type=f"{content_type}; charset=utf-8",
        )
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - FileResponse closes it when sent
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / filename
        if bundle == "hf":
            directory = Path(tmp) / filename.removesuffix(".zip")
            exporters.write_export(project, fmt, options, directory, bundle="hf")
            exporters.zip_directory(directory, target)
        else:
            exporters.write_export(project, fmt, options, target, bundle=bundle)
        with target.open("rb") as fh:
            shutil.copyfileobj(fh, spool, length=1 << 20)
    spool.seek(0)
    return FileResponse(
        spool, as_attachment=True, filename=filename, content_type=media_type(filename)
    )
