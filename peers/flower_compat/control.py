"""The SuperLink's Control API, as the job host uses it: register node keys, start a run, read its status.

Flower 1.42 drives the Control API from its CLI (`flwr run`, `flwr supernode
register`, `flwr ls`), which reads a federation from the user's Flower configuration
and prints for a human. The job host needs the same calls from Python, against a
SuperLink it just started on 127.0.0.1, with a loopback CA of its own: it uses the
client class the CLI uses (`flwr.supercore.control.ControlHttpClient`, with the CLI's
version interceptor), the CLI's FAB builder (`flwr.cli.build.build_fab_from_disk`)
and Flower's protobuf messages and conversions. None of them is public API.
"""

from __future__ import annotations

import warnings
from hashlib import sha256
from pathlib import Path

from flwr.cli.build import build_fab_from_disk
from flwr.common.constant import Status, SubStatus
from flwr.common.serde import fab_to_proto, user_config_to_proto
from flwr.proto.control_pb2 import (  # pylint: disable=no-name-in-module  # protobuf generates these names
    ListRunsRequest,
    RegisterNodeRequest,
    StartRunRequest,
)
from flwr.supercore.control import ControlHttpClient
from flwr.supercore.fab import Fab
from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor

FINISHED = Status.FINISHED
COMPLETED = SubStatus.COMPLETED


def build_fab(app_dir: Path) -> bytes:
    """The FAB (a zip) `flwr run` would build from the Flower App in `app_dir`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pathspec's, inside Flower's FAB builder
        return build_fab_from_disk(app_dir)


class ControlClient:
    """A Control API client for one SuperLink, over TLS verified against `root_certificates` (PEM bytes).

    No retries: a SuperLink that does not answer is news to the caller. Errors are
    Flower's (httpx and protobuf exceptions).
    """

    def __init__(self, address: str, root_certificates: bytes) -> None:
        self._client = ControlHttpClient.from_server_address(
            server_address=address,
            insecure=False,
            root_certificates=root_certificates,
            interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr CLI")],
        )

    def list_run_ids(self) -> list[int]:
        """The ids of every run the SuperLink knows (also a check that it answers)."""
        return list(self._client.ListRuns(ListRunsRequest()).run_dict)

    def run_status(self, run_id: int) -> tuple[str, str, str]:
        """(status, sub-status, details) of run `run_id`, as the SuperLink reports it."""
        run = self._client.ListRuns(ListRunsRequest(run_id=run_id)).run_dict[run_id]
        return run.status.status, run.status.sub_status, run.status.details

    def register_node(self, public_key_pem: bytes) -> int:
        """Register a SuperNode's public key (PEM); the node id the SuperLink gives it."""
        return int(self._client.RegisterNode(RegisterNodeRequest(public_key=public_key_pem)).node_id)

    def start_run(self, fab: bytes) -> int | None:
        """Start a run of the FAB `fab` with its own run config; its run id, or None if the SuperLink refused."""
        response = self._client.StartRun(
            StartRunRequest(
                fab=fab_to_proto(Fab(sha256(fab).hexdigest(), fab, {})),
                override_config=user_config_to_proto({}),
            )
        )
        return int(response.run_id) if response.HasField("run_id") else None

    def close(self) -> None:
        self._client.close()
