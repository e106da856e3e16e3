"""Route templates for Starlette and FastAPI, read from what the router already decided.

Starlette's ``Router`` writes the route it chose into ``scope["route"]`` (and the endpoint
into ``scope["endpoint"]``); the first router also puts itself in ``scope["router"]``. A
route object only knows its *local* path, so the full template (mount prefixes, FastAPI
``include_router`` prefixes) comes from an index of the route tree, built once per router
and again only when a route object turns up that the index has not seen. The request path
is never matched against the routes, except to tell apart the few templates that share
one route object (a router included under two prefixes).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, MutableMapping, Sequence
from typing import Any

from asgi_metrics.compat import effective_route
from asgi_metrics.core.labels import UNMATCHED_ROUTE, UNTRACKED_ROUTE
from asgi_metrics.core.tracking import untracked

_MAX_DEPTH = 32

Scope = MutableMapping[str, Any]


class _Entry:
    """One full template a route object (or endpoint) stands for."""

    __slots__ = ("_regex", "label", "mount", "opaque_mount", "owner", "template")

    def __init__(
        self,
        template: str,
        owner: object,
        mount: bool = False,
        opaque_mount: bool = False,
        tracked: bool = True,
    ) -> None:
        self.template = template
        #: What the lookup answers: the template, or the untracked route (do_not_track).
        self.label = template if tracked else UNTRACKED_ROUTE
        self.owner = owner  # keeps the object alive, so its id() is not reused
        self.mount = mount
        self.opaque_mount = opaque_mount
        self._regex: re.Pattern[str] | None = None

    def matches(self, route_path: str) -> bool:
        if self._regex is None:
            from starlette.routing import compile_path

            self._regex = compile_path(self.template)[0]
        return self._regex.match(route_path) is not None


class _Index:
    """Full templates of one router's tree, by route object and by endpoint."""

    def __init__(self, router: Any) -> None:
        from starlette.routing import Host, Mount

        self.router = router
        self.by_route: dict[int, list[_Entry]] = {}
        self.by_endpoint: dict[int, list[_Entry]] = {}
        #: Starlette's Mount and Host classes (imported with the first router).
        self.containers = (Mount, Host)
        # Every route list walked and its length then, to notice routes added later.
        self._lists: list[tuple[Sequence[Any], int]] = []
        self._walk(_routes_of(router), "", 0)

    def stale(self) -> bool:
        """Whether a route list of the tree has changed length since it was walked."""
        return any(len(routes) != size for routes, size in self._lists)

    def _add(self, table: dict[int, list[_Entry]], obj: object, entry: _Entry) -> None:
        if obj is None:
            return
        entries = table.setdefault(id(obj), [])
        if all(existing.template != entry.template for existing in entries):
            entries.append(entry)

    def _walk(self, routes: Sequence[Any], prefix: str, depth: int) -> None:
        if depth > _MAX_DEPTH:
            return
        self._lists.append((routes, len(routes)))
        for original, effective, path in _route_contexts(routes):
            if isinstance(effective, self.containers[1]):
                self._walk(_routes_of(effective.app), prefix, depth + 1)
                continue
            template = prefix + (path or "")
            if isinstance(effective, self.containers[0]):
                children = _routes_of(effective.app)
                entry = _Entry(
                    template + "/{path:path}", original, mount=True, opaque_mount=not children
                )
                self._add(self.by_route, original, entry)
                self._add(self.by_route, effective, entry)
                self._add(self.by_endpoint, effective.app, entry)
                self._walk(children, template, depth + 1)
                continue
            endpoint = getattr(effective, "endpoint", None)
            entry = _Entry(template, original, tracked=not untracked(endpoint))
            self._add(self.by_route, original, entry)
            self._add(self.by_route, effective, entry)
            self._add(self.by_endpoint, endpoint, entry)


def _routes_of(app: Any) -> Sequence[Any]:
    """The routes of a router or app, looking through middleware that wraps it."""
    for _ in range(_MAX_DEPTH):
        if app is None:
            return []
        routes = getattr(app, "routes", None)
        if routes is not None:
            return routes  # type: ignore[no-any-return]
        app = getattr(app, "app", None)
    return []


def _route_contexts(routes: Sequence[Any]) -> Iterable[tuple[Any, Any, str | None]]:
    """(object the router puts in the scope, the route as matched, its path) per route.

    FastAPI 0.165 keeps included routers as nodes; its public ``iter_route_contexts``
    yields their routes with full prefixes. Older FastAPI and Starlette have flat lists.
    """
    fastapi_routing = sys.modules.get("fastapi.routing")  # no FastAPI app without it
    iter_route_contexts = getattr(fastapi_routing, "iter_route_contexts", None)
    if iter_route_contexts is None:
        return [(route, route, getattr(route, "path", None)) for route in routes]
    return [
        (ctx.original_route, effective_route(ctx), ctx.path)
        for ctx in iter_route_contexts(routes)
    ]


class RouteTemplates:
    """Finds the route template of a request served by a Starlette or FastAPI router."""

    def __init__(self) -> None:
        self._indexes: dict[int, _Index] = {}
        self._misses: set[int] = set()
        # id(route) -> (route, router, template) for route objects with one template: the
        # answer for nearly every request, found with one dict lookup.
        self._known: dict[int, tuple[object, object, str]] = {}

    def _index(self, router: Any, rebuild: bool = False) -> _Index:
        index = self._indexes.get(id(router))
        if index is None or index.router is not router or rebuild:
            index = _Index(router)
            if len(self._indexes) > 16:  # routers come and go only in test suites
                self._indexes.clear()
            self._indexes[id(router)] = index
        return index

    def lookup(self, scope: Scope, root_path: str) -> str | None:
        """The template for a finished request, :data:`UNMATCHED_ROUTE` when the router
        matched nothing, or ``None`` when no Starlette router saw the request.

        ``root_path`` is the scope's ``root_path`` as it was when the request arrived.
        """
        router = scope.get("router")
        if router is None:
            return None
        route = scope.get("route")
        known = self._known.get(id(route))
        if known is not None and known[0] is route and known[1] is router:
            return known[2]
        index = self._index(router)
        entries = None
        if route is not None and not isinstance(route, index.containers):
            entries = self._find(router, False, route)
            if entries is None:
                path = getattr(route, "path", None)  # a route outside the tree we can walk
                return path if isinstance(path, str) else UNMATCHED_ROUTE
            if len(entries) == 1:
                if len(self._known) > 10_000:
                    self._known.clear()
                self._known[id(route)] = (route, router, entries[0].label)
        else:
            entries = self._find(router, True, scope.get("endpoint"))
            if entries is None:
                return UNMATCHED_ROUTE
        if route is None or isinstance(route, index.containers):
            # By endpoint, which several routes may share, one of them added after the
            # index was built: check the path against the templates (not the routes).
            route_path = _route_path(scope, root_path)
            entry = _pick(entries, route_path)
            if not entry.matches(route_path) and self._index(router).stale():
                entries = self._find(router, True, scope.get("endpoint"), rebuild=True)
                if entries is None:
                    return UNMATCHED_ROUTE
                entry = _pick(entries, route_path)
        elif len(entries) == 1:
            entry = entries[0]
        else:
            entry = _pick(entries, _route_path(scope, root_path))
        if entry.mount and not entry.opaque_mount:
            return UNMATCHED_ROUTE  # a mounted router that matched nothing inside
        return entry.label

    def _find(
        self, router: Any, by_endpoint: bool, obj: object, rebuild: bool = False
    ) -> list[_Entry] | None:
        if obj is None:
            return None
        index = self._index(router, rebuild)
        entries = (index.by_endpoint if by_endpoint else index.by_route).get(id(obj))
        if entries is None and id(obj) not in self._misses:
            # Routes added after the first request: rebuild once per unknown object.
            if len(self._misses) > 10_000:
                self._misses.clear()
            self._misses.add(id(obj))
            index = self._index(router, rebuild=True)
            entries = (index.by_endpoint if by_endpoint else index.by_route).get(id(obj))
        return entries


def _pick(entries: list[_Entry], route_path: str) -> _Entry:
    for entry in entries:
        if entry.matches(route_path):
            return entry
    return entries[0]


def _route_path(scope: Scope, root_path: str) -> str:
    path: str = scope.get("path", "")
    if root_path and path.startswith(root_path):
        return path[len(root_path):] or "/"
    return path
