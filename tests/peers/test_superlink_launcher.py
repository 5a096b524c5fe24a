"""`peers.deployment.superlink`: Flower's SuperLink middleware, with the Control-only layers scoped."""

import asyncio

from flwr.superlink.main import _get_middleware  # pylint: disable=protected-access
from starlette.middleware.base import BaseHTTPMiddleware

from peers.deployment.superlink import ScopedMiddleware, scoped_middleware

SCOPED = {"ControlSensitiveResponseMiddleware", "ControlAuthenticationMiddleware", "ControlLicenseMiddleware",
          "ControlEventLogMiddleware", "FleetEventLogMiddleware", "RuntimeTracingMiddleware"}


def test_only_the_request_scoped_layers_are_wrapped_and_the_order_is_flowers():
    flower = _get_middleware()
    ours = scoped_middleware(flower)
    assert len(ours) == len(flower)
    names = [m.kwargs["layer"].__name__ if m.cls is ScopedMiddleware else m.cls.__name__ for m in ours]
    assert names == [m.cls.__name__ for m in flower]
    assert {m.kwargs["layer"].__name__ for m in ours if m.cls is ScopedMiddleware} == SCOPED
    kept = [m.cls.__name__ for m in ours if m.cls is not ScopedMiddleware]  # what every request still goes through
    assert {"ProtobufTranslationMiddleware", "NodeAuthMiddleware"} <= set(kept)
    assert BaseHTTPMiddleware.__name__ in kept  # Flower's error translator


class _Layer:
    def __init__(self, app):
        self.app = app
        self.seen = []

    async def __call__(self, scope, receive, send):
        self.seen.append(scope["path"])
        await self.app(scope, receive, send)


def _through(middleware: ScopedMiddleware, path: str, kind: str = "http") -> list[str]:
    reached = []

    async def app(scope, receive, send):
        reached.append(scope["path"])

    middleware.app = app
    middleware.layer.app = app
    asyncio.run(middleware({"type": kind, "path": path}, None, None))
    return reached


def test_a_fleet_request_skips_a_control_layer_and_a_control_request_goes_through_it():
    from peers.deployment.superlink import _control

    middleware = ScopedMiddleware(lambda *a: None, layer=_Layer, applies=_control)
    assert _through(middleware, "/v1/fleet/pull-messages") == ["/v1/fleet/pull-messages"]
    assert middleware.layer.seen == []
    assert _through(middleware, "/v1/control/start-run") == ["/v1/control/start-run"]
    assert middleware.layer.seen == ["/v1/control/start-run"]
    _through(middleware, "/v1/fleet/x", kind="websocket")  # not HTTP: always the layer's
    assert middleware.layer.seen[-1] == "/v1/fleet/x"
