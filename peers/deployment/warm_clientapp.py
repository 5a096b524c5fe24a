"""A long-lived ClientApp process for a SuperNode in `process` isolation.

Flower's SuperNode, started with `--isolation process`, does not run ClientApps
itself: it queues each message as a task on its Runtime API, and an outside executor
acquires the task (a one-time token) and runs it. Flower's own executor (SuperExec)
starts a fresh `flwr-clientapp` process per task, which re-imports torch every time.
This process is a SuperExec that keeps one ClientApp loaded instead: it imports the
fedsilo ClientApp once, then for every task it acquires, it runs the steps of
`flwr-clientapp` (`flwr.supernode.runtime.run_clientapp`: pull the task input, call
the app, push the reply and the task output, with Flower's own functions; only the
retry backoff of the input pull is shorter) against that loaded app. Tasks therefore run one at a time, exactly as the SuperNode
hands them out; the Context travels through the SuperNode as with `flwr-clientapp`.

It runs only the fedsilo ClientApp: a task whose app (FAB) names any other
`clientapp` is answered with an error, never imported. Runtime dependency
installation does not exist here: nothing is installed or downloaded.

Between tasks it asks the Runtime API for one every `--poll-seconds` (0.05 s). With
`--wake-port PORT` it instead waits for a UDP datagram on 127.0.0.1:PORT, which
`peers.deployment.supernode` sends when it posts a task, and asks only then (and every
`WAKE_FALLBACK_SECONDS` in case a datagram is lost): no idle polling, and no polling
delay before a task starts. A datagram is only a hint; the task still comes from the
Runtime API.

Run: `python -m peers.deployment.warm_clientapp --runtime-api-address HOST:PORT [--wake-port PORT]`.
"""

from __future__ import annotations

import argparse
import io
import logging
import select
import signal
import socket
import sys
import time
import tomllib
import zipfile
from types import FrameType
from typing import Callable

import httpx

from flwr.app import Context, Error, Message
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode, SubStatus
from flwr.common.serde import context_from_proto, fab_from_proto, run_from_proto
from flwr.proto.node_pb2 import Node  # pylint: disable=E0611
from flwr.proto.runtime_pb2 import (AcquireTaskRequest, PullAppMessagesRequest,  # pylint: disable=E0611
                                    PullTaskInputRequest, SendTaskHeartbeatRequest)
from flwr.supercore.app_utils import start_parent_process_monitor
from flwr.supercore.constant import TaskType
from flwr.supercore.fab import Fab
from flwr.supercore.inflatable.inflatable_protobuf_utils import (make_confirm_message_received_fn_protobuf,
                                                                 make_pull_object_fn_protobuf)
from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
from flwr.supercore.heartbeat import HeartbeatSender
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.run import Run
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.task_identity import TaskIdentity
from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

from peers.flower_app import CLIENT_APP

LOGGER = logging.getLogger("fedsilo.warm_clientapp")
DEFAULT_POLL_SECONDS = 0.05
WAKE_FALLBACK_SECONDS = 1.0  # with a wake port: ask for a task this often even without a datagram
LOOPBACK = "127.0.0.1"
# Not shorter: the SuperNode hands out a task before it has the message's objects, and
# each retry is served by the SuperNode process while it is still pulling them from the
# SuperLink. Retrying from 10 ms made rounds slower than from 50 ms (bench/README.md).
OBJECT_PULL_INITIAL_BACKOFF = 0.05
OBJECT_PULL_BACKOFF_CAP = 0.2


def pull_task_input(client: RuntimeHttpClient) -> tuple[Message, Context, Run, Fab]:
    """Flower's `run_clientapp.pull_task_input`, with a short retry backoff for the message's objects.

    The SuperNode hands out a task before it has pulled the message's objects from
    the SuperLink; Flower's default backoff (1 s, doubling) would cost seconds per message.
    """
    res = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id = res.task_id
    TaskIdentity.run_id = res.run.run_id
    TaskIdentity.node_id = res.context.node_id
    context, run, fab = context_from_proto(res.context), run_from_proto(res.run), fab_from_proto(res.fab)
    pulled = client.PullMessages(PullAppMessagesRequest())
    if not pulled.messages_list:
        raise RuntimeError("No messages received from Runtime API")
    node = Node(node_id=context.node_id)
    tree = pulled.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        tree, make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
        make_confirm_message_received_fn_protobuf(client.ConfirmMessageReceived, node, context.run_id),
        return_type=Message, initial_backoff=OBJECT_PULL_INITIAL_BACKOFF, backoff_cap=OBJECT_PULL_BACKOFF_CAP)
    message.metadata.__dict__["_message_id"] = tree.object_id  # as Flower does: the id is not in the deflated message
    return message, context, run, fab


def fab_client_app(fab_content: bytes) -> str:
    """The `clientapp` reference a FAB (a zip holding the app's pyproject.toml) declares."""
    with zipfile.ZipFile(io.BytesIO(fab_content)) as archive:
        descriptor = tomllib.loads(archive.read("pyproject.toml").decode())
    return str(descriptor["tool"]["flwr"]["app"]["components"]["clientapp"])


def _client(address: str, component: str, token: str | None = None, retry: bool = True) -> RuntimeHttpClient:
    interceptors = [RuntimeVersionHttpInterceptor(component_name=component)]
    if token is not None:
        interceptors.append(RuntimeTokenHttpInterceptor(token))
    return RuntimeHttpClient.from_server_address(server_address=address, insecure=True, root_certificates=None,
                                                 interceptors=interceptors,
                                                 retry_invoker=make_simple_http_retry_invoker() if retry else None)


def task_heartbeat(client: RuntimeHttpClient) -> Callable[[], bool]:
    """One heartbeat of a running task, for Flower's `HeartbeatSender` (False: retry it).

    Unlike Flower's `make_task_heartbeat_fn_http`, made for a `flwr-clientapp` process
    that lives for one task, it never stops this process: a heartbeat the SuperNode
    refuses (401) because it has already closed the task (the reply is in, and the
    SuperNode no longer waits for this process) means there is nothing left to keep
    alive. `client` must have no retry invoker: Flower's sends this process SIGINT on
    a 401.
    """
    request = SendTaskHeartbeatRequest()

    def beat() -> bool:
        try:
            client.SendTaskHeartbeat(request)
        except httpx.TransportError:
            return False
        except httpx.HTTPStatusError as error:
            if error.response.status_code == httpx.codes.UNAUTHORIZED:
                return True
            if error.response.status_code in (httpx.codes.SERVICE_UNAVAILABLE, httpx.codes.GATEWAY_TIMEOUT):
                return False
            raise
        return True

    return beat


def run_task(address: str, token: str, client_app: ClientApp) -> None:
    """Run one acquired task with the loaded `client_app` (Flower's flwr-clientapp steps)."""
    client = _client(address, "flwr-clientapp", token)
    heartbeat_client = _client(address, "flwr-clientapp", token, retry=False)
    heartbeat = HeartbeatSender(task_heartbeat(heartbeat_client))
    heartbeat.start()
    message = reply = context = None
    status, details = SubStatus.FAILED, "ClientApp task failed"
    try:
        message, context, _run, fab = pull_task_input(client)
        declared = fab_client_app(fab.content)
        if declared != CLIENT_APP:
            raise PermissionError(f"this SuperNode runs only {CLIENT_APP}; the run's app declares {declared}")
        started = time.perf_counter()
        reply = client_app(message=message, context=context)
        status, details = SubStatus.COMPLETED, ""
        LOGGER.info("%s handled in %.3f s", message.metadata.message_type, time.perf_counter() - started)
    except Exception as ex:  # pylint: disable=broad-exception-caught  # reported to the SuperNode like flwr-clientapp
        LOGGER.exception("ClientApp task failed")
        details = f"{type(ex)}:<'{ex}'>"
        if message is not None:
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details), reply_to=message)
    finally:
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
        finally:
            push_task_output(client=client, context=context, sub_status=status, details=details)
            if heartbeat.is_running:
                heartbeat.stop()
            heartbeat_client.close()
            client.close()


class TaskWaiter:
    """Waits between two task requests: `poll_seconds`, or until a datagram arrives on `wake_port` (see module)."""

    def __init__(self, poll_seconds: float, wake_port: int | None = None) -> None:
        self.sock: socket.socket | None = None
        self.seconds = poll_seconds
        if wake_port is not None:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((LOOPBACK, wake_port))
            self.sock.setblocking(False)
            self.seconds = WAKE_FALLBACK_SECONDS

    def wait(self) -> None:
        if self.sock is None:
            time.sleep(self.seconds)
            return
        try:
            ready, _, _ = select.select([self.sock], [], [], self.seconds)
        except InterruptedError:  # a signal: the loop checks whether to stop
            return
        while ready:
            try:
                self.sock.recv(64)
            except BlockingIOError:
                break

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def serve(address: str, poll_seconds: float = DEFAULT_POLL_SECONDS, wake_port: int | None = None) -> None:
    """Acquire and run ClientApp tasks until SIGTERM/SIGINT."""
    from peers.client.app import app as client_app  # imports torch once, for the life of the process

    stopping = False

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    acquirer = _client(address, "SuperExec")
    request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
    waiter = TaskWaiter(poll_seconds, wake_port)
    LOGGER.info("warm ClientApp ready on %s", address)
    try:
        while not stopping:
            response = acquirer.AcquireTask(request)
            if response.HasField("task") and response.token:
                run_task(address, response.token, client_app)
            else:
                waiter.wait()
    finally:
        waiter.close()
        acquirer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A long-lived fedsilo ClientApp for a SuperNode in process isolation")
    parser.add_argument("--runtime-api-address", required=True, help="the SuperNode's Runtime API, HOST:PORT")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process (the SuperNode) exits")
    parser.add_argument("--poll-seconds", type=float, default=DEFAULT_POLL_SECONDS,
                        help="pause between checks for a new task when idle")
    parser.add_argument("--wake-port", type=int, default=None,
                        help="wait for a datagram on 127.0.0.1:PORT (sent by peers.deployment.supernode when it "
                             "posts a task) instead of polling")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s", force=True)
    if args.parent_pid is not None:
        start_parent_process_monitor(args.parent_pid)  # SIGINT to this process when the SuperNode is gone
    serve(args.runtime_api_address, args.poll_seconds, args.wake_port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
