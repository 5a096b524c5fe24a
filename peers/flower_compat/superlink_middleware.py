"""Flower's SuperLink middleware stack (`flwr.superlink.main._get_middleware`), leaner for message routes.

Flower 1.42's SuperLink serves its Fleet, Runtime and Control APIs from one FastAPI
app whose middleware stack wraps every request in eight `BaseHTTPMiddleware` layers
(1.41 had nine). Each layer costs a task group and a pair of memory streams per
request, whether or not it does anything: in a deployed round the SuperLink, one
Python process, serves a few hundred Fleet and Runtime requests (every message, every
object of a message, every poll) and spent about 5 ms of CPU on each, most of it in
those layers.

Five of the layers act on some requests only, and for every other request their
`dispatch` is exactly `return await call_next(request)` (read in Flower 1.42's
source; `tests/peers/flower_compat/test_superlink_middleware.py` checks it):

- `ControlSensitiveResponseMiddleware`, `ControlAuthenticationMiddleware`,
  `ControlLicenseMiddleware`, `ControlEventLogMiddleware`: requests whose path starts
  with `/v1/control/`;
- `FleetEventLogMiddleware`: `/v1/fleet/` requests, when a Fleet event-log plugin is
  configured (`app.state.fleet_event_log_plugin`).

(1.41's sixth, `RuntimeTracingMiddleware`, is gone from 1.42's stack.)

`install` makes Flower's `create_app` build its app from `scoped_middleware` of that
list: each of those five layers is wrapped in `ScopedMiddleware`, which hands a
request the layer does not act on straight to the next layer (pure ASGI, no task
group) and every other request to the layer itself, unchanged. The layers every
request needs (protobuf translation, error translation, SuperNode authentication)
run as before, in the same order; Control requests see the full stack. Same
arguments, same protocol, same responses.

Those three remaining layers are `BaseHTTPMiddleware`s too. On the unary protobuf
routes a round's messages and objects travel on (`MESSAGE_ROUTES`), each runs its own
`dispatch` through `InlineMiddleware`, which calls the next app in the same task and
hands `dispatch` the buffered response, instead of a task group and memory streams
per layer; every other route goes through the layers unchanged. In a deployed round
(`bench/deployed_round.py`, 12 rounds) the SuperLink then used about 20 % less CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

CONTROL_PREFIX = "/v1/control/"
# The unary protobuf routes a round's messages and objects travel on (Fleet: the
# SuperNodes'; Runtime: the ServerApp's; both have `_COMMON_ROUTES`), which `InlineMiddleware` serves inline.
_COMMON_ROUTES = ("pull-messages", "push-messages", "pull-object", "push-object", "confirm-message-received")
MESSAGE_ROUTES = frozenset(
    [f"/v1/fleet/{route}" for route in (*_COMMON_ROUTES, "send-node-heartbeat")]
    + [f"/v1/runtime/{route}" for route in (*_COMMON_ROUTES, "get-nodes", "send-task-heartbeat", "push-logs")]
)
FLEET_PREFIX = "/v1/fleet/"

Scope = dict[str, Any]
Applies = Callable[[Scope], bool]


def _control(scope: Scope) -> bool:
    return str(scope.get("path", "")).startswith(CONTROL_PREFIX)


def _fleet_event_log(scope: Scope) -> bool:
    app = scope.get("app")
    plugin = getattr(getattr(app, "state", None), "fleet_event_log_plugin", None)
    return plugin is not None and str(scope.get("path", "")).startswith(FLEET_PREFIX)


class ScopedMiddleware:
    """Runs `layer` (a middleware class) on the HTTP requests `applies` selects; passes every other one on.

    Only correct for a layer whose `dispatch` is `return await call_next(request)` for
    every request `applies` rejects.
    """

    def __init__(self, app: Any, layer: type, applies: Applies, **kwargs: Any) -> None:
        self.app = app
        self.layer = layer(app, **kwargs)
        self.applies = applies

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not self.applies(scope):
            await self.app(scope, receive, send)
        else:
            await self.layer(scope, receive, send)


class InlineMiddleware:
    """Runs a `BaseHTTPMiddleware` layer's own `dispatch` on `routes` with `call_next` run in the same task.

    Starlette's `BaseHTTPMiddleware` runs `call_next` in a task group, with a pair of
    memory streams carrying the response back, so that a response can stream; without
    that machinery the SuperLink used about a fifth less CPU in a deployed round. The SuperLink's
    message and object routes answer one protobuf body, never a stream, so for them
    `call_next` here calls the next app directly and hands `dispatch` the buffered
    response (status, raw headers and body exactly as sent). The request is Starlette's
    own `_CachedRequest`, as in `BaseHTTPMiddleware`, so a body `dispatch` read is
    replayed to the next app; an exception of the next app propagates out of
    `call_next` into `dispatch`, as there. Any other request goes through the layer
    itself.
    """

    def __init__(self, app: Any, layer: type, routes: frozenset[str], **kwargs: Any) -> None:
        # Starlette's own request type for a BaseHTTPMiddleware's dispatch (it replays a body read there).
        from starlette.middleware.base import BaseHTTPMiddleware, _CachedRequest  # pylint: disable=protected-access
        from starlette.responses import Response

        self.app = app
        self.layer = layer(app, **kwargs)
        if not isinstance(self.layer, BaseHTTPMiddleware):
            raise TypeError(f"{layer.__name__} is not a BaseHTTPMiddleware")
        self.routes = routes
        self._request_type, self._response_type = _CachedRequest, Response

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") not in self.routes:
            await self.layer(scope, receive, send)
            return
        request = self._request_type(scope, receive)
        response_type = self._response_type

        async def call_next(_request: Any) -> Any:
            start: dict[str, Any] = {}
            body: list[bytes] = []

            async def collect(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    start.update(message)
                elif message["type"] == "http.response.body":
                    body.append(message.get("body", b""))

            await self.app(scope, request.wrapped_receive, collect)
            if not start:
                raise RuntimeError("No response returned.")
            response = response_type(b"".join(body), status_code=start["status"])
            response.raw_headers = list(start.get("headers", []))
            return response

        response = await self.layer.dispatch_func(request, call_next)
        await response(scope, request.wrapped_receive, send)


def scoped_middleware(stack: list[Any]) -> list[Any]:
    """Flower's SuperLink middleware list with the request-scoped layers wrapped in `ScopedMiddleware`."""
    from flwr.superlink.routers.control.middlewares import (
        ControlAuthenticationMiddleware,
        ControlEventLogMiddleware,
        ControlLicenseMiddleware,
        ControlSensitiveResponseMiddleware,
    )
    from flwr.superlink.routers.fleet.middlewares import FleetEventLogMiddleware
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware

    scopes: dict[type, Applies] = {
        ControlSensitiveResponseMiddleware: _control,
        ControlAuthenticationMiddleware: _control,
        ControlLicenseMiddleware: _control,
        ControlEventLogMiddleware: _control,
        FleetEventLogMiddleware: _fleet_event_log,
    }
    out = []
    for middleware in stack:
        applies = scopes.get(middleware.cls)
        if middleware.args:
            out.append(middleware)
        elif applies is not None:
            out.append(Middleware(ScopedMiddleware, layer=middleware.cls, applies=applies, **middleware.kwargs))
        elif issubclass(middleware.cls, BaseHTTPMiddleware):
            out.append(Middleware(InlineMiddleware, layer=middleware.cls, routes=MESSAGE_ROUTES, **middleware.kwargs))
        else:
            out.append(middleware)
    return out


def install() -> None:
    """Make Flower's SuperLink app (`create_app`, run by `flower_superlink`) use `scoped_middleware`."""
    import flwr.superlink.main as superlink_app

    flower_middleware = superlink_app._get_middleware
    superlink_app._get_middleware = lambda: scoped_middleware(flower_middleware())
