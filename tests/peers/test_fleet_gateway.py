"""What the fleet gateway lets through to a job's SuperLink: the Fleet API and the health check only."""

import pytest

from fedsilo.peers.deployment.fleet_gateway import allowed


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/v1/fleet/pull-messages"),
        ("POST", "/v1/fleet/push-object"),
        ("POST", "/v1/fleet/register-node"),
        ("GET", "/health"),
        ("HEAD", "/health"),
    ],
)
def test_fleet_routes_and_health_pass(method, path):
    assert allowed(method, path)


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/v1/control/start-run"),
        ("POST", "/v1/control/register-node"),
        ("POST", "/v1/runtime/acquire-task"),
        ("POST", "/v1/runtime/responses"),
        ("GET", "/v1/fleet/pull-messages"),
        ("POST", "/v1/fleet/"),
        ("POST", "/v1/fleet/../control/start-run"),
        ("POST", "/v1/fleet/%2e%2e/control/start-run"),
        ("POST", "/v1/fleet/pull-messages?next=/v1/control"),
        ("POST", "/v1/fleet/pull-messages/"),
        ("POST", "//v1/fleet/pull-messages"),
        ("POST", "/health"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
    ],
)
def test_everything_else_is_refused(method, path):
    assert not allowed(method, path)
