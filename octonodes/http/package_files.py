"""The package store, read and pruned over HTTP (uploads are `packages.py`):

- `GET /api/packages[?filter=&skip=&take=]`: a page of packages, by file
  name; `filter` keeps those whose id holds it (case-insensitive);
- `GET /api/packages/{id}`, with the id `packages-<PackageId>.<Version>`;
- `GET /api/packages/{id}/raw`: the file, streamed from disk;
- `DELETE /api/packages/{id}`.

Each is also served under `/api/Spaces-1/`. Only complete packages exist
(an upload in progress is a hidden temporary file), so a download never
sees a partial one.
"""

from __future__ import annotations

import os
from typing import AsyncIterator, BinaryIO

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..errors import NotFound
from ..packages import Package
from .collections import SPACE_ID, database_page
from .context import context_of
from ..models import iso

PREFIX = "packages-"
PACKAGES = f"/api/{SPACE_ID}/packages"
TEMPLATE = PACKAGES + "{/id}{?filter,skip,take}"
READ_BLOCK = 1024 * 1024


def package_resource(package: Package) -> dict:
    pid = f"{PREFIX}{package.package_id}.{package.version}"
    return {
        "Id": pid,
        "SpaceId": SPACE_ID,
        "PackageId": package.package_id,
        "Version": package.version,
        "FileName": package.file_name,
        "FileExtension": "." + package.extension,
        "Size": package.size,
        "PackageSizeBytes": package.size,
        "Sha256": package.sha256,
        "Hash": package.sha256,
        "Published": iso(package.uploaded_at),
        "FeedId": "feeds-builtin",
        "Links": {"Self": f"{PACKAGES}/{pid}", "Raw": f"{PACKAGES}/{pid}/raw"},
    }


def package_key(text: str) -> str:
    """`packages-Acme.Web.1.2.3` -> `Acme.Web.1.2.3`; NotFound for any other shape."""
    if not text.lower().startswith(PREFIX) or len(text) == len(PREFIX):
        raise NotFound(f"no package with id {text!r}: ids are {PREFIX}<PackageId>.<Version>")
    return text[len(PREFIX):]


async def list_packages(request: Request) -> JSONResponse:
    contains = request.query_params.get("filter", "")
    return JSONResponse(await database_page(
        request, "Package", TEMPLATE,
        lambda c, page: c.package_page(contains, skip=page.skip, take=page.take), package_resource))


async def get_package(request: Request) -> JSONResponse:
    key = package_key(request.path_params["id"])
    return JSONResponse(package_resource(await context_of(request).call(lambda c: c.package(key))))


class FileStream(StreamingResponse):
    """A file, streamed a block at a time (each read in a worker thread),
    and closed however the response ends: a client that leaves mid-body
    leaves no open file behind."""

    def __init__(self, file: BinaryIO, headers: dict) -> None:
        self.file = file
        super().__init__(self._blocks(), media_type="application/octet-stream", headers=headers)

    async def _blocks(self) -> AsyncIterator[bytes]:
        while block := await run_in_threadpool(self.file.read, READ_BLOCK):
            yield block

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.file.close()


async def download_package(request: Request) -> Response:
    key = package_key(request.path_params["id"])
    name, file = await context_of(request).call(lambda c: c.open_package(key))
    size = (await run_in_threadpool(os.fstat, file.fileno())).st_size
    return FileStream(file, headers={
        "Content-Length": str(size),
        "Content-Disposition": f'attachment; filename="{name.file_name}"'})


async def delete_package(request: Request) -> Response:
    key = package_key(request.path_params["id"])
    actor = request.state.actor
    await context_of(request).call(
        lambda c: c.delete_package(c.package(key).file_name, actor=actor))
    return Response(status_code=204)
