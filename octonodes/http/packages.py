"""`POST /api/{space}/packages/raw`: a package upload, streamed to the store.

The body is multipart/form-data with one file part. It is parsed as it
arrives (streaming-form-data, fed from `request.stream()`), and the file
part's bytes go straight to the package store's temporary file with their
SHA-256 computed on the way (`PackageTarget`), in constant memory and with
no size limit; the body is never held whole, nor written twice. The parser
(compiled) runs on the event loop as the body arrives and only gathers the
file part's bytes; writing and hashing (`Incoming`) run in a worker thread,
a batch at a time, so the event loop stays free for pings while a large
upload runs; one batch is in that thread while the loop reads and parses
the next, so the two overlap (at most two batches in memory).

Answers: 200 with the package (a new upload, or IgnoreIfExists's existing
one); 400 for a bad name, a bad overwriteMode or a malformed body; 409 under
FailIfExists when the package exists; 503 when there is no package store;
507 on a full disk. A failed or abandoned upload leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from streaming_form_data import StreamingFormDataParser
from streaming_form_data.parser import ParseFailedException
from streaming_form_data.targets import BaseTarget

from ..audit import Action
from ..errors import UsageError
from ..packages.upload import Incoming
from ..packages import (OverwriteMode, Package, PackageExists, PackageFolder, PackageName,
                        parse_file_name)
from .context import context_of
from .package_files import package_resource

log = logging.getLogger("octonodes.http")

FEED_SIZE = 1024 * 1024
"""Bytes of the file part gathered before one hand-off to the writing thread."""


class MalformedUpload(UsageError):
    """The body is not the multipart/form-data upload expected."""


class PackageTarget(BaseTarget):
    """Receives every part of the body: the one file part goes to the store,
    other (plain form) parts are ignored, a second file part is an error.
    Under FailIfExists and IgnoreIfExists, a package already in the store is
    not written again: its bytes are read and dropped.

    The parser calls it on the event loop, where it only gathers the file
    part's bytes (`take`); `store` then writes them, in a worker thread,
    which is also where the store is first looked at (file system calls
    stay off the event loop)."""

    def __init__(self, folder: PackageFolder, mode: OverwriteMode) -> None:
        super().__init__()
        self.folder = folder
        self.mode = mode
        self.name: PackageName | None = None
        self.incoming: Incoming | None = None
        self.decided = False  # whether this upload is written, once the store was looked at
        self.in_file_part = False
        self.file_done = False
        self.gathered: list[bytes] = []
        self.gathered_size = 0

    def on_start(self) -> None:
        self.in_file_part = self.multipart_filename is not None
        if not self.in_file_part:
            return
        if self.name is not None:
            raise MalformedUpload("the upload has more than one file part; send one package")
        self.name = parse_file_name(self.multipart_filename)

    def on_data_received(self, chunk: bytes) -> None:
        if self.in_file_part:
            self.gathered.append(chunk)
            self.gathered_size += len(chunk)

    def on_finish(self) -> None:
        if self.in_file_part:
            self.file_done = True
        self.in_file_part = False
        self.multipart_filename = None  # the next part sets its own, or has none

    def take(self) -> list[bytes]:
        """The file part's bytes gathered since the last call."""
        gathered, self.gathered, self.gathered_size = self.gathered, [], 0
        return gathered

    def store(self, chunks: list[bytes]) -> None:
        """In a worker thread: write these bytes of the file part."""
        if not self.decided and self.name is not None:
            if self.mode is OverwriteMode.OVERWRITE_EXISTING or not self.folder.exists(self.name):
                self.incoming = Incoming(self.folder, self.name)
            self.decided = True
        if self.incoming is not None:
            for chunk in chunks:  # as they came: joining them would copy every byte once more
                self.incoming.write(chunk)

    def complete(self, journal=None) -> tuple[Package, bool]:
        """After the whole body: put the package in place (or decide why not),
        recorded by `journal` (`Incoming.commit`). Returns the package the
        store holds and whether it is this upload."""
        if self.name is None:
            raise MalformedUpload("the upload has no file part (a part with a filename)")
        if not self.file_done:
            raise MalformedUpload("the body ended before the file part did (malformed multipart)")
        self.store(self.take())
        if self.incoming is not None:
            return self.incoming.commit(self.mode, journal)
        existing = self.folder.find(self.name)
        if existing is None:
            raise PackageExists(f"package {self.name.file_name} was removed during the upload; "
                                "send it again")
        if self.mode is OverwriteMode.FAIL_IF_EXISTS:
            raise PackageExists(f"package {self.name.file_name} already exists "
                                "(overwriteMode=FailIfExists)")
        return existing, False

    def discard(self) -> None:
        if self.incoming is not None:
            self.incoming.discard()

    def abandon(self) -> None:
        """From another thread, as the server gives up on this upload: remove
        the temporary file (whatever the upload's thread is doing with it)."""
        if self.incoming is not None:
            self.incoming.temp.unlink(missing_ok=True)


def _what(target: PackageTarget) -> str:
    return target.name.file_name if target.name else "a package"


def overwrite_mode(request: Request) -> OverwriteMode:
    value = request.query_params.get("overwriteMode", OverwriteMode.FAIL_IF_EXISTS.value)
    for mode in OverwriteMode:
        if mode.value.lower() == value.lower():
            return mode
    raise UsageError(f"invalid overwriteMode {value!r}: use "
                     + ", ".join(m.value for m in OverwriteMode))


def _release(context, target: PackageTarget) -> None:
    target.discard()
    context.upload_ended(target)


def _when_done(in_flight: asyncio.Future | None, release) -> None:
    """Run `release` now, or, while a batch is still being written in a
    worker thread (the request ended early), once that batch is done; until
    then the upload stays listed, so a server that stops first abandons it."""
    if in_flight is None or in_flight.done():
        if in_flight is not None and not in_flight.cancelled():
            in_flight.exception()  # retrieved: its error, if any, was answered or moot
        release()  # synchronous: it must run even when the request is cancelled
        return
    in_flight.add_done_callback(lambda _done: _when_done(_done, release))


def _journal(request: Request, target: PackageTarget):
    """Records the push in the audit trail, on a database thread, in the
    transaction that makes the package visible."""
    context, actor = context_of(request), request.state.actor

    def journal(replaces: bool, size: int, publish) -> None:
        name = target.name
        action = Action.PACKAGE_OVERWRITE if replaces else Action.PACKAGE_PUSH
        context.call_blocking(lambda cluster: cluster.record(
            action, name.file_name, actor=actor, during=publish,
            details={"package_id": name.package_id, "version": name.version, "size": size}))

    return journal


async def upload(request: Request) -> Response:
    mode = overwrite_mode(request)
    context = context_of(request)
    folder = await context.call(lambda cluster: cluster.package_folder())
    try:
        parser = StreamingFormDataParser(request.headers)
    except ParseFailedException as exc:
        raise MalformedUpload(f"expected a multipart/form-data body with one file part ({exc})") from None
    target = PackageTarget(folder, mode)
    parser.register("file", target, lambda _registered, _actual: True)  # whatever the part's name
    context.upload_started(target)
    in_flight: asyncio.Future | None = None
    try:
        async for chunk in request.stream():
            parser.data_received(chunk)  # fast (compiled), and it only gathers
            if target.gathered_size >= FEED_SIZE:
                # One batch in flight: it is written (and hashed) in a
                # worker thread while the event loop reads the next one.
                if in_flight is not None:
                    await asyncio.shield(in_flight)
                in_flight = asyncio.ensure_future(run_in_threadpool(target.store, target.take()))
        if in_flight is not None:
            await asyncio.shield(in_flight)
        package, stored = await run_in_threadpool(target.complete, _journal(request, target))
    except ParseFailedException as exc:
        raise MalformedUpload(f"malformed multipart/form-data body ({exc})") from None
    except ClientDisconnect:
        log.warning("upload of %s abandoned: the client disconnected", _what(target))
        return Response(status_code=400)  # nobody is listening; for the record
    except asyncio.CancelledError:
        # The node is stopping and was told not to wait (a second signal):
        # the task ends here, its temporary file removed by the finally.
        log.warning("upload of %s cancelled: the node is stopping", _what(target))
        return Response(status_code=503)
    finally:
        _when_done(in_flight, lambda: _release(context, target))
    if stored:
        log.info("stored package %s (%d bytes, sha256 %s)", package.file_name, package.size,
                 package.sha256)
    else:
        log.info("kept the existing package %s (overwriteMode=IgnoreIfExists)", package.file_name)
    return JSONResponse(package_resource(package))

