"""Contract of `fedsilo.peers.flower_compat.superlink_middleware` with Flower's SuperLink middleware stack."""

import asyncio

from flwr.superlink.main import _get_middleware
from starlette.middleware.base import BaseHTTPMiddleware

from fedsilo.peers.flower_compat.superlink_middleware import (
    MESSAGE_ROUTES,
    InlineMiddleware,
    ScopedMiddleware,
    scoped_middleware,
)

SCOPED = {
    "ControlSensitiveResponseMiddleware",
    "ControlAuthenticationMiddleware",
    "ControlLicenseMiddleware",
    "ControlEventLogMiddleware",
    "FleetEventLogMiddleware",
}


def test_every_layer_is_kept_in_flowers_order_scoped_or_run_inline():
    flower = _get_middleware()
    ours = scoped_middleware(flower)
    assert len(ours) == len(flower)
    names = [
        m.kwargs["layer"].__name__ if m.cls in (ScopedMiddleware, InlineMiddleware) else m.cls.__name__ for m in ours
    ]
    assert names == [m.cls.__name__ for m in flower]
    assert {m.kwargs["layer"].__name__ for m in ours if m.cls is ScopedMiddleware} == SCOPED
    inline = [m for m in ours if m.cls is InlineMiddleware]  # what a message or object request still goes through
    assert {m.kwargs["layer"].__name__ for m in inline} == {
        "ProtobufTranslationMiddleware",
        "NodeAuthMiddleware",
        BaseHTTPMiddleware.__name__,
    }
    translator = next(m for m in inline if m.kwargs["layer"] is BaseHTTPMiddleware)
    assert translator.kwargs["dispatch"].__name__ == "http_error_translator"  # Flower's, with its own dispatch
    assert all(m.kwargs["routes"] == MESSAGE_ROUTES for m in inline)


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
    from fedsilo.peers.flower_compat.superlink_middleware import _control

    middleware = ScopedMiddleware(lambda *a: None, layer=_Layer, applies=_control)
    assert _through(middleware, "/v1/fleet/pull-messages") == ["/v1/fleet/pull-messages"]
    assert middleware.layer.seen == []
    assert _through(middleware, "/v1/control/start-run") == ["/v1/control/start-run"]
    assert middleware.layer.seen == ["/v1/control/start-run"]
    _through(middleware, "/v1/fleet/x", kind="websocket")  # not HTTP: always the layer's
    assert middleware.layer.seen[-1] == "/v1/fleet/x"


def _post(app, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    """One POST through an ASGI app, in this process: (status, headers, body)."""
    sent = {"headers": {}, "body": b""}
    request = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return request.pop(0) if request else {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
            sent["headers"] = {k.decode(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            sent["body"] += message.get("body", b"")

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"content-length", str(len(body)).encode())],
        "scheme": "https",
        "http_version": "1.1",
        "server": ("127.0.0.1", 1),
        "client": ("127.0.0.1", 2),
        "root_path": "",
    }
    asyncio.run(app(scope, receive, send))
    return sent["status"], sent["headers"], sent["body"]


# InlineMiddleware: a BaseHTTPMiddleware layer's dispatch, with call_next run in the same task.


def _app_with(layer_stack):
    """A Starlette app whose endpoint echoes the body it reads, raises on /fail, and sets a header."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def echo(request):
        body = await request.body()
        return Response(b"echo:" + body, status_code=201, headers={"x-inner": "1"})

    async def fail(request):
        await request.body()
        raise LookupError("downstream failed")

    return Starlette(
        routes=[
            Route("/v1/fleet/push-object", echo, methods=["POST"]),
            Route("/v1/fleet/pull-object", fail, methods=["POST"]),
            Route("/v1/control/list-runs", echo, methods=["POST"]),
        ],
        middleware=layer_stack,
    )


async def _reading_and_translating(request, call_next):
    """Reads the body first (it must be replayed), rewrites the response, translates an exception."""
    seen = await request.body()
    try:
        response = await call_next(request)
    except LookupError as error:
        from starlette.responses import JSONResponse

        return JSONResponse({"error": str(error), "body": seen.decode()}, status_code=503)
    response.headers["x-outer"] = "2"
    return response


def _answers(layer_stack):
    app = _app_with(layer_stack)
    answers = []
    for path in ("/v1/fleet/push-object", "/v1/fleet/pull-object", "/v1/control/list-runs"):
        status, headers, body = _post(app, path, b"payload")
        answers.append((status, headers.get("x-inner"), headers.get("x-outer"), headers.get("content-length"), body))
    return answers


def test_inline_answers_exactly_as_base_http_middleware():
    from starlette.middleware import Middleware

    stock = _answers([Middleware(BaseHTTPMiddleware, dispatch=_reading_and_translating)])
    inline = _answers(
        [
            Middleware(
                InlineMiddleware,
                layer=BaseHTTPMiddleware,
                dispatch=_reading_and_translating,
                routes=frozenset({"/v1/fleet/push-object", "/v1/fleet/pull-object"}),
            )
        ]
    )
    assert inline == stock
    assert stock[0] == (201, "1", "2", str(len(b"echo:payload")), b"echo:payload")  # the body was replayed
    assert stock[1][0] == 503 and b"downstream failed" in stock[1][4]  # the exception reached dispatch


def _tasks_seen(layer_stack) -> dict:
    """What `_Recording` and the endpoint saw for one request on the message route, then one on the control route."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    _Recording.seen = {}

    async def endpoint(request):
        _Recording.seen.setdefault("endpoint", asyncio.current_task())
        return Response(b"ok")

    app = Starlette(
        routes=[
            Route("/v1/fleet/push-object", endpoint, methods=["POST"]),
            Route("/v1/control/list-runs", endpoint, methods=["POST"]),
        ],
        middleware=layer_stack,
    )
    _post(app, "/v1/fleet/push-object", b"x")
    first_layer_call = _Recording.seen.get("layer_call")
    _post(app, "/v1/control/list-runs", b"x")
    return {**_Recording.seen, "first_layer_call": first_layer_call}


class _Recording(BaseHTTPMiddleware):
    seen: dict = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            _Recording.seen["layer_call"] = scope["path"]
        await super().__call__(scope, receive, send)

    async def dispatch(self, request, call_next):
        _Recording.seen.setdefault("dispatch", asyncio.current_task())
        return await call_next(request)


def test_inline_runs_the_next_app_in_the_same_task_and_other_routes_through_the_layer():
    from starlette.middleware import Middleware

    def run(stack):
        seen = _tasks_seen(stack)
        return seen["dispatch"] is seen["endpoint"], seen["first_layer_call"], seen["layer_call"]

    assert run([Middleware(_Recording)]) == (False, "/v1/fleet/push-object", "/v1/control/list-runs")  # child task
    inline = [Middleware(InlineMiddleware, layer=_Recording, routes=frozenset({"/v1/fleet/push-object"}))]
    assert run(inline) == (True, None, "/v1/control/list-runs")  # the message route never entered the layer's __call__


def test_inline_refuses_a_layer_that_is_not_a_base_http_middleware():
    import pytest

    with pytest.raises(TypeError, match="not a BaseHTTPMiddleware"):
        InlineMiddleware(lambda *a: None, layer=_Layer, routes=frozenset())


def _flower_scoped_layers():
    from fedsilo.peers.flower_compat.superlink_middleware import ScopedMiddleware

    return [m.kwargs["layer"] for m in scoped_middleware(_get_middleware()) if m.cls is ScopedMiddleware]


def test_every_scoped_flower_layer_passes_a_request_outside_its_scope_through_unchanged():
    """What `ScopedMiddleware` assumes of each layer it skips, checked on Flower's real layer classes."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import Response
    from starlette.routing import Route

    async def endpoint(request):
        return Response(b"inner:" + await request.body(), status_code=200, headers={"x-inner": "1"})

    for layer in _flower_scoped_layers():
        app = Starlette(
            routes=[Route("/v1/fleet/pull-messages", endpoint, methods=["POST"])], middleware=[Middleware(layer)]
        )
        app.state.fleet_event_log_plugin = None  # no event log configured, as on a fedsilo SuperLink
        status, headers, body = _post(app, "/v1/fleet/pull-messages", b"req")
        assert (status, headers.get("x-inner"), body) == (200, "1", b"inner:req"), layer.__name__


def test_a_control_request_reaches_flowers_control_layers():
    """On a Control path the Control layers run: here the authentication layer finds no account set up and raises."""
    import pytest
    from flwr.supercore.error.base import FlowerError
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    reached = []

    async def endpoint(request):
        reached.append(request.url.path)
        return Response(b"ok")

    control_layers = [layer for layer in _flower_scoped_layers() if layer.__name__.startswith("Control")]
    assert len(control_layers) == 4
    stack = [m for m in scoped_middleware(_get_middleware()) if m.cls is ScopedMiddleware]
    app = Starlette(routes=[Route("/v1/control/list-runs", endpoint, methods=["POST"])], middleware=stack)
    app.state.fleet_event_log_plugin = None
    with pytest.raises(FlowerError, match="account authentication"):
        _post(app, "/v1/control/list-runs", b"")
    assert reached == []  # the layer acted on it: the request never got through unauthenticated
