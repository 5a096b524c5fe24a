"""`flower-superlink`, with a leaner middleware stack for its message routes, and long polling.

Flower 1.41's SuperLink serves its Fleet, Runtime and Control APIs from one FastAPI
app whose middleware stack (`flwr.superlink.main._get_middleware`) wraps every
request in ten `BaseHTTPMiddleware` layers. Each layer costs a task group and a pair
of memory streams per request, whether or not it does anything: in a deployed round
the SuperLink, one Python process, serves a few hundred Fleet and Runtime requests
(every message, every object of a message, every poll) and spent about 5 ms of CPU
on each, most of it in those layers.

Six of the layers act on some requests only, and for every other request their
`dispatch` is exactly `return await call_next(request)` (read in Flower 1.41's
source):

- `ControlSensitiveResponseMiddleware`, `ControlAuthenticationMiddleware`,
  `ControlLicenseMiddleware`, `ControlEventLogMiddleware`: requests whose path starts
  with `/v1/control/`;
- `FleetEventLogMiddleware`: `/v1/fleet/` requests, when a Fleet event-log plugin is
  configured (`app.state.fleet_event_log_plugin`);
- `RuntimeTracingMiddleware`: only when `FLWR_TRACING_ENABLED=1`.

This entry point runs Flower's own `flower_superlink()` unchanged, except that each of
those six layers is wrapped in `ScopedMiddleware`, which hands a request the layer
does not act on straight to the next layer (pure ASGI, no task group) and every other
request to the layer itself, unchanged. The layers every request needs (protobuf
translation, error translation, SuperNode authentication) run as before, in the same
order; Control requests see the full stack. Same arguments, same protocol, same
responses.

Those three remaining layers are `BaseHTTPMiddleware`s too. On the unary protobuf
routes a round's messages and objects travel on (`MESSAGE_ROUTES`), each runs its own
`dispatch` through `InlineMiddleware`, which calls the next app in the same task and
hands `dispatch` the buffered response, instead of a task group and memory streams
per layer; every other route goes through the layers unchanged. In a deployed round
(`bench/deployed_round.py`, 12 rounds) the SuperLink then used about 20 % less CPU.

The pull handlers of the Fleet and Runtime APIs long-poll (`fedsilo.peers.deployment.long_poll`):
an empty answer waits for the next push before it is sent.

Run: `python -m peers.deployment.superlink <flower-superlink arguments>`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

# What `main` rewrites is the middleware list of Flower 1.41's SuperLink app, and the
# scopes below are those of 1.41's middlewares. Another Flower may add a layer that
# acts on Fleet requests under a name below: re-read `flwr.superlink.main` and the
# middlewares' `dispatch` before widening this.
PINNED_FLOWER = "1.41."
CONTROL_PREFIX = "/v1/control/"
# The unary protobuf routes a round's messages and objects travel on (Fleet: the
# SuperNodes'; Runtime: the ServerApp's), which `InlineMiddleware` serves inline.
MESSAGE_ROUTES = frozenset(
    [
        f"/v1/fleet/{route}"
        for route in (
            "pull-messages",
            "push-messages",
            "pull-object",
            "push-object",
            "confirm-message-received",
            "send-node-heartbeat",
        )
    ]
    + [
        f"/v1/runtime/{route}"
        for route in (
            "pull-messages",
            "push-messages",
            "pull-object",
            "push-object",
            "confirm-message-received",
            "get-nodes",
            "send-task-heartbeat",
            "push-logs",
        )
    ]
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


def _tracing(_scope: Scope) -> bool:
    return os.getenv("FLWR_TRACING_ENABLED") == "1"


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
        Response = self._response_type  # pylint: disable=invalid-name

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
            response = Response(b"".join(body), status_code=start["status"])
            response.raw_headers = list(start.get("headers", []))
            return response

        response = await self.layer.dispatch_func(request, call_next)
        await response(scope, request.wrapped_receive, send)


def scoped_middleware(stack: list[Any]) -> list[Any]:
    """Flower's SuperLink middleware list with the request-scoped layers wrapped in `ScopedMiddleware`."""
    from flwr.supercore.routers.runtime.tracing import RuntimeTracingMiddleware
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
        RuntimeTracingMiddleware: _tracing,
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


def main() -> None:
    import flwr.superlink.main as superlink_app
    from flwr.supercore.version import package_version
    from flwr.superlink.cli.flower_superlink import flower_superlink

    if not package_version.startswith(PINNED_FLOWER):
        raise SystemExit(
            f"fedsilo.peers.deployment.superlink rewrites Flower {PINNED_FLOWER}x's SuperLink middleware, but "
            f"Flower {package_version} is installed: install flwr {PINNED_FLOWER}x (pyproject.toml pins it)"
        )
    from flwr.superlink.servicer.fleet import fleet_handlers
    from flwr.superlink.servicer.runtime import runtime_handlers

    from fedsilo.peers.deployment.long_poll import LongPoll, install

    flower_middleware = superlink_app._get_middleware  # pylint: disable=protected-access
    superlink_app._get_middleware = lambda: scoped_middleware(flower_middleware())  # pylint: disable=protected-access
    install(fleet_handlers, runtime_handlers, LongPoll())
    flower_superlink()


if __name__ == "__main__":
    main()
