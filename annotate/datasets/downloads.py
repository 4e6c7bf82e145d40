"""HTTP responses that carry an export, shared by the browser pages and the API."""

from __future__ import annotations

import logging
import shutil
import socket
import struct
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from django.http import FileResponse, HttpResponseBase, StreamingHttpResponse

from annotate.models import Project

from . import exporters
from .labels import PairOptions

log = logging.getLogger(__name__)

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
    environ: Mapping[str, Any], project: Project, fmt: str, options: PairOptions, bundle: str
) -> HttpResponseBase:
    """A streamed JSONL/CSV download, or a spooled Parquet/zip one.

    ``environ`` is the request's WSGI environ (``request.META``): a streamed export that fails
    after its first bytes went out resets the connection through it.
    """
    exporters.check_format(fmt, bundle)
    filename = exporters.export_filename(project, fmt, bundle)
    if bundle == "file" and fmt in exporters.STREAMED:
        content_type = "text/csv" if fmt == "csv" else "application/x-ndjson"
        chunks = exporters.stream_export(project, fmt, options)
        response = StreamingHttpResponse(
            _failing_loudly(chunks, environ, f"project {project.pk}, {fmt}"),
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


def _failing_loudly(
    chunks: Iterator[bytes], environ: Mapping[str, Any], what: str
) -> Iterator[bytes]:
    """The chunks of a streamed export; if reading them fails after some were sent, the client
    must not mistake what it got for the whole file.

    The status line has gone out by then, so the only signal left is how the connection ends.
    Re-raising makes the server stop: with chunked framing the body then lacks its last chunk,
    which clients report. A response framed by closing the connection (an HTTP/1.0 client, or a
    proxy that speaks HTTP/1.0 to the app, as nginx does by default) ends the same way a complete
    one does, so the connection is reset instead of closed wherever the server lets the app
    reach its socket.
    """
    sent = 0
    try:
        for chunk in chunks:
            yield chunk
            sent += len(chunk)
    except Exception:
        log.exception("Streamed export (%s) failed after %d bytes", what, sent)
        if sent:
            _reset_connection(environ)
        raise


def _reset_connection(environ: Mapping[str, Any]) -> None:
    """Close the client's connection with a TCP reset rather than an orderly end.

    gunicorn puts the socket in the environ (``gunicorn.socket``); a server that does not is
    left to end the response its own way.
    """
    sock = environ.get("gunicorn.socket")
    if not isinstance(sock, socket.socket):
        return
    try:
        # a zero linger turns the close into a reset; gunicorn's own close then finds the
        # socket closed and stops there
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        log.warning("Could not reset the connection of a failed export", exc_info=True)
