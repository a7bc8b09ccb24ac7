"""A cap on the size of request bodies, so no client can make the server hold a huge body in memory.

The JSON bodies of the API are small (the largest, an edited outline, is about 100 kB at its most),
yet FastAPI reads a body whole before validating it: a 2 GB "question" would be read into memory
and only then refused. Bodies above `MAX_BODY_BYTES` are refused with 413 before they are read
when they declare their length, and as soon as the count passes the cap when they are chunked.
Uploads have larger limits of their own, counted as the files arrive (`deepdraft.server.kbs`): the
KB upload route, and add-source when it is sent a file (multipart); its JSON body is capped here.
"""

from __future__ import annotations

import re

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 1024 * 1024
UPLOADS = re.compile(r"^/api/kbs/[^/]+/documents$")
FILE_ROUTES = re.compile(r"^/api/runs/[^/]+/add-source$")
"""Routes that take a file as multipart/form-data besides JSON (the route counts a file's bytes)."""


class LimitBody:
    """Answer 413 to a request body over `max_bytes`, except for an upload (see `_uploads`)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app, self.max_bytes = app, max_bytes

    def refusal(self) -> str:
        return f"the request body is larger than the limit of {self.max_bytes // 1024} kB"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _uploads(scope):
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await JSONResponse({"detail": self.refusal()}, 413)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI passes an HTTPException raised while it reads the body on to its handler.
                    raise HTTPException(413, self.refusal())
            return message

        await self.app(scope, counted, send)


def _uploads(scope: Scope) -> bool:
    """The request sends files to a route that limits them itself."""
    path = scope["path"]
    if UPLOADS.match(path):
        return True
    multipart = Headers(scope=scope).get("content-type", "").startswith("multipart/form-data")
    return multipart and FILE_ROUTES.match(path) is not None
