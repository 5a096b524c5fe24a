"""Contract of `fedsilo.peers.flower_compat.superlink_handlers` with Flower's Fleet and Runtime API handlers.

The patch rebinds module attributes; it works only while Flower's routers look the
handlers up on those modules at request time, pass the protobuf request first (by
position or as `request`), and answer with the protobuf fields `no_messages` and
`object_pending` read.
"""

import inspect
from types import SimpleNamespace

import pytest
from flwr.proto.fleet_pb2 import PullMessagesResponse  # pylint: disable=no-name-in-module  # protobuf-generated
from flwr.proto.message_pb2 import PullObjectResponse  # pylint: disable=no-name-in-module  # protobuf-generated
from flwr.proto.runtime_pb2 import PullAppMessagesResponse  # pylint: disable=no-name-in-module  # protobuf-generated
from flwr.superlink.servicer.fleet import fleet_handlers
from flwr.superlink.servicer.runtime import runtime_handlers

from fedsilo.peers.deployment.long_poll import LongPoll
from fedsilo.peers.flower_compat.superlink_handlers import (
    INSTRUCTIONS,
    REPLIES,
    install,
    no_messages,
    object_pending,
)

WRAPPED = ("pull_messages", "pull_object", "push_messages", "push_object")


@pytest.mark.parametrize("module", [fleet_handlers, runtime_handlers], ids=["fleet", "runtime"])
@pytest.mark.parametrize("name", WRAPPED)
def test_every_wrapped_handler_exists_and_takes_the_request_first(module, name):
    parameters = list(inspect.signature(getattr(module, name)).parameters)
    assert parameters[0] == "request"


def test_the_fleet_router_looks_each_handler_up_on_the_module_per_request():
    from flwr.superlink.routers.fleet import router

    for name in WRAPPED:
        endpoint = getattr(router, f"fleet_{name}")
        assert endpoint.__globals__["fleet_handlers"] is fleet_handlers
        assert {"fleet_handlers", name} <= set(endpoint.__code__.co_names), name


def _endpoints(router):
    """Every endpoint function of a FastAPI router, included routers' too."""
    for route in router.routes:
        if hasattr(route, "endpoint"):
            yield route.endpoint
        else:
            yield from _endpoints(route.original_router)


def test_the_runtime_router_calls_the_handlers_module_the_superlink_app_holds():
    import flwr.superlink.main as superlink_app
    from flwr.supercore.routers.runtime import create_runtime_router

    assert superlink_app._RUNTIME_HANDLERS is runtime_handlers  # app.state.runtime_handlers: the module itself
    endpoints = {endpoint.__name__: endpoint for endpoint in _endpoints(create_runtime_router("SuperLink"))}
    for name in WRAPPED:
        endpoint = inspect.unwrap(endpoints[name])  # the route wraps it in its protobuf endpoint
        assert "handlers" in inspect.signature(endpoint).parameters
        assert name in endpoint.__code__.co_names, name  # handlers.<name>(...), looked up per request


def test_what_counts_as_empty():
    assert no_messages(PullMessagesResponse())
    assert no_messages(PullAppMessagesResponse())
    assert object_pending(PullObjectResponse(object_found=True, object_available=False))
    assert not object_pending(PullObjectResponse(object_found=True, object_available=True, object_content=b"x"))
    assert not object_pending(PullObjectResponse(object_found=False))  # unknown: no push makes it appear


def test_install_wraps_flowers_pull_and_push_handlers_of_both_apis_with_matching_keys():
    fleet = SimpleNamespace(**vars(fleet_handlers))
    runtime = SimpleNamespace(**vars(runtime_handlers))
    poll = LongPoll(hold_seconds=5.0)
    install(poll, fleet, runtime)
    for copy, original in ((fleet, fleet_handlers), (runtime, runtime_handlers)):
        for name in ("pull_messages", "pull_object", "push_messages", "push_object"):
            assert getattr(copy, name) is not getattr(original, name)
            assert inspect.unwrap(getattr(copy, name)) is getattr(original, name)
        assert copy.confirm_message_received is original.confirm_message_received
    # which push wakes which pull: watch each key, then push through the wrapped handlers' announcements
    from flwr.proto.message_pb2 import PushObjectRequest  # pylint: disable=no-name-in-module  # protobuf-generated

    expected = {INSTRUCTIONS: (runtime, "push_messages"), REPLIES: (fleet, "push_messages")}
    for key, (module, name) in expected.items():
        channel, seen = poll.arrivals.watch(key)
        try:
            getattr(module, name)(request=None, state=None)  # Flower's handler fails; the push is still announced
        except Exception:  # pylint: disable=broad-exception-caught  # Flower's own error for a None request
            pass
        assert channel.count == seen + 1, key
        poll.arrivals.unwatch(key, channel)
    for module in (fleet, runtime):
        channel, seen = poll.arrivals.watch(("object", "abc"))
        try:
            module.push_object(PushObjectRequest(object_id="abc"), None, None)
        except Exception:  # pylint: disable=broad-exception-caught  # Flower's own error for a None request
            pass
        assert channel.count == seen + 1
        poll.arrivals.unwatch(("object", "abc"), channel)
