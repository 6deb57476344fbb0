"""Octopus's collection envelope, paging, and the other shapes every resource
module shares: ids with a prefix, `Links`, JSON request bodies.

A collection is `{ItemType, TotalResults, ItemsPerPage, NumberOfPages,
LastPageNumber, Items, Links}`; `skip` and `take` (default 30, at most
2147483647, which Octopus's clients send to mean "all") page it, and the
`Links` carry `Self`, `Template`, `Page.All`, `Page.Current`, `Page.Last`
and, while there is one, `Page.Next` and `Page.Previous`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request

from ..errors import NotFound, UsageError
from .context import context_of

if TYPE_CHECKING:
    from ..cluster import Cluster

DEFAULT_TAKE = 30
TAKE_ALL = 2_147_483_647
"""Octopus's "every item" (`BasicRepository.TakeAll`), and the largest take."""
MAX_BODY = 64 * 1024
"""Bytes a JSON request body may have; 413 past it."""
SPACE_ID = "Spaces-1"
SPACE_PREFIXES = ("/api", f"/api/{SPACE_ID}")
"""Every space-scoped path is served with and without the one space."""
LARGEST_ID = 2**63 - 1


@dataclass(frozen=True)
class Page:
    skip: int
    take: int


def _whole(request: Request, name: str, default: int) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    if not text.isascii() or not text.isdigit() or int(text) > TAKE_ALL:
        raise UsageError(f"invalid {name} {text!r}: a whole number from 0 to {TAKE_ALL}")
    return int(text)


def page_of(request: Request) -> Page:
    """`skip` and `take` from the query string; 400 for anything but whole
    numbers from 0 to 2147483647."""
    return Page(skip=_whole(request, "skip", 0), take=_whole(request, "take", DEFAULT_TAKE))


def listed(request: Request, name: str) -> list[str]:
    """A comma-separated (or repeated) query parameter, as a list."""
    return [v.strip() for raw in request.query_params.getlist(name) for v in raw.split(",")
            if v.strip()]


def _link(path: str, params: dict) -> str:
    return f"{path}?{urlencode(params)}" if params else path


def collection(request: Request, item_type: str, items: list[dict], total: int, page: Page,
               template: str) -> dict:
    """The envelope around one page of `items` out of `total`."""
    path = request.url.path
    others = {k: v for k, v in request.query_params.multi_items() if k not in ("skip", "take")}
    pages = max(1, -(-total // page.take)) if page.take else 1

    def at(skip: int, take: int = page.take) -> str:
        return _link(path, {**others, "skip": skip, "take": take})

    links = {"Self": at(page.skip), "Template": template, "Page.All": at(0, TAKE_ALL),
             "Page.Current": at(page.skip), "Page.Last": at(page.take * (pages - 1))}
    if page.take and page.skip + page.take < total:
        links["Page.Next"] = at(page.skip + page.take)
    if page.take and page.skip > 0:
        links["Page.Previous"] = at(max(0, page.skip - page.take))
    return {"ItemType": item_type, "TotalResults": total, "ItemsPerPage": page.take,
            "NumberOfPages": pages, "LastPageNumber": pages - 1, "Items": items, "Links": links}


def paged(request: Request, item_type: str, items: list[dict], template: str) -> dict:
    """The collection of a list held whole in memory (nodes, spaces, packages)."""
    page = page_of(request)
    return collection(request, item_type, items[page.skip:page.skip + page.take], len(items), page,
                      template)


async def database_page(request: Request, item_type: str, template: str,
                        fetch: Callable[[Cluster, Page], tuple[int, list]],
                        resource: Callable[[Any], dict]) -> dict:
    """The collection of a list the database pages (tasks, packages, events):
    `fetch(cluster, page)` gives the total and the page's items, on a
    database thread; `resource` makes each item a resource."""
    page = page_of(request)
    total, items = await context_of(request).call(lambda cluster: fetch(cluster, page))
    return collection(request, item_type, [resource(i) for i in items], total, page, template)


def numbered_id(prefix: str, text: str, what: str) -> int:
    """`ServerTasks-12` (or `12`) -> 12; NotFound for anything else, so an
    id that cannot exist is a 404 like one that does not."""
    number = text[len(prefix):] if text.lower().startswith(prefix.lower()) else text
    if number.isascii() and number.isdigit() and 0 < int(number) <= LARGEST_ID:
        return int(number)
    raise NotFound(f"no {what} with id {text!r}")


async def json_object(request: Request) -> dict:
    """The request body, which must be one JSON object of at most MAX_BODY bytes."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise HTTPException(413, f"the request body is larger than {MAX_BODY} bytes")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python goes
        raise UsageError("the request body is not JSON") from None
    if not isinstance(doc, dict):
        raise UsageError("the request body must be a JSON object")
    return doc


def check_fields(doc: dict, allowed: set[str], what: str) -> None:
    """400 naming the fields of `doc` that `what` does not have."""
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise UsageError(f"unknown field(s) for {what}: {', '.join(unknown)}")
