"""Contract of `fedsilo.peers.flower_compat.control` with Flower's Control API client, FAB builder and SuperLink.

The slow test starts the job's SuperLink as the job host does (Flower's own
`flower-superlink` with fedsilo's middleware and handler patches, TLS on 127.0.0.1,
SuperNode authentication) and drives it through `ControlClient`: every Control
request then passes the scoped middleware on the Control path, where Flower's Control
layers run in full.
"""

import inspect
import io
import socket
import sys
import time
import zipfile

import pytest
from flwr.proto.control_pb2 import (  # pylint: disable=no-name-in-module  # protobuf-generated
    ListRunsRequest,
    RegisterNodeRequest,
    StartRunRequest,
)
from flwr.supercore.control import ControlHttpClient

from fedsilo.peers.deployment import node_auth_keypair
from fedsilo.peers.deployment.host import job_environment
from fedsilo.peers.deployment.local_ca import make_local_tls
from fedsilo.peers.deployment.processes import Supervisor
from fedsilo.peers.deployment.tls import public_key_pem
from fedsilo.peers.flower_app import CLIENT_APP, write_app_descriptor
from fedsilo.peers.flower_compat.control import COMPLETED, FINISHED, ControlClient, build_fab
from fedsilo.peers.flower_compat.in_process_clientapp import fab_client_app


def test_the_client_has_the_calls_and_the_requests_the_fields_the_host_uses():
    for name in ("ListRuns", "RegisterNode", "StartRun", "close", "from_server_address"):
        assert callable(getattr(ControlHttpClient, name)), name
    assert {"server_address", "insecure", "root_certificates", "interceptors"} <= set(
        inspect.signature(ControlHttpClient.from_server_address).parameters
    )
    assert {"run_id"} <= set(ListRunsRequest.DESCRIPTOR.fields_by_name)
    assert {"public_key"} <= set(RegisterNodeRequest.DESCRIPTOR.fields_by_name)
    assert {"fab", "override_config"} <= set(StartRunRequest.DESCRIPTOR.fields_by_name)
    assert (FINISHED, COMPLETED) == ("finished", "completed")


def test_the_fab_of_the_app_descriptor_declares_the_fedsilo_client_app(tmp_path):
    """What the host builds is what a SuperNode's in-process ClientApp checks before it runs anything."""
    write_app_descriptor(tmp_path / "app", {"job-id": "j1"}, "0.1.0")
    fab = build_fab(tmp_path / "app")
    with zipfile.ZipFile(io.BytesIO(fab)) as archive:
        assert "pyproject.toml" in archive.namelist()
    assert fab_client_app(fab) == CLIENT_APP


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_the_patched_superlink_registers_a_node_and_starts_a_run_over_the_control_api(tmp_path):
    tls = make_local_tls(tmp_path / "tls")
    port = _free_port()
    supervisor = Supervisor(tmp_path / "logs", job_environment(tmp_path))
    command = [sys.executable, "-m", "fedsilo.peers.deployment.superlink"]
    command += ["--ssl-ca-certfile", str(tls.ca_cert), "--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key)]
    command += ["--enable-supernode-auth", "--disable-runtime-dependency-installation", "--isolation", "process"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    supervisor.start("superlink", command)
    client = ControlClient(f"127.0.0.1:{port}", tls.ca_cert.read_bytes())
    try:
        deadline = time.monotonic() + 90
        while True:
            supervisor.check()
            try:
                assert client.list_run_ids() == []
                break
            except AssertionError:
                raise
            except Exception:  # pylint: disable=broad-exception-caught  # not listening yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        node_id = client.register_node(public_key_pem(node_auth_keypair(tmp_path / "keys")))
        assert node_id > 0
        write_app_descriptor(tmp_path / "app", {"job-id": "j1"}, "0.1.0")
        run_id = client.start_run(build_fab(tmp_path / "app"))
        assert run_id is not None and client.list_run_ids() == [run_id]
        status, _sub_status, _details = client.run_status(run_id)
        assert status in ("pending", "starting", "running")  # no SuperExec here: it waits
    finally:
        client.close()
        supervisor.stop()
