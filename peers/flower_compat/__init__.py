"""Every use of Flower's non-public code, in one folder, for exactly one Flower release.

fedsilo builds on Flower's public API (`flwr.app`, `flwr.clientapp`, `flwr.serverapp`,
`flwr.common`); where it needs more, the code is here and nowhere else. Importing this
package (any module of it) checks the installed Flower first (`version`): any release
but `FLOWER_VERSION` raises `FlowerVersionError`, naming both versions and the pip
command that fixes it. Moving Flower means reading this folder against the new
release, bumping `FLOWER_VERSION` and the pin in pyproject.toml, and running
`tests/peers/flower_compat` (one contract test module per patch, against Flower's
real code): docs/flower-compat.md.

What each module touches, why, and what public API would replace it (Flower 1.42
has none of them):

- `superlink_middleware`: rebinds `flwr.superlink.main._get_middleware` so the
  SuperLink's app runs its Control-only and event-log layers only on the requests
  they act on, and the others inline on message routes (about 20 % less SuperLink
  CPU per deployed round). Would go with: a SuperLink option for its middleware.
- `superlink_handlers`: rebinds the pull/push functions of
  `flwr.superlink.servicer.fleet.fleet_handlers` and
  `flwr.superlink.servicer.runtime.runtime_handlers` so an empty pull waits for the
  next push (long polling). Would go with: long polling in Flower's Fleet/Runtime APIs.
- `supernode`: rebinds `time`, `pull_objects`, `_pull_and_store_message` and
  `_push_messages` of `flwr.supernode.start_client_internal` (Flower's SuperNode loop)
  and `remove_content_from_message` of `flwr.supernode.fleet_http_connection`: waits
  capped at the poll interval, each pulled message handled in the SuperNode's process
  instead of a task for an outside executor, replies pushed with their objects inline.
  Would go with: settable poll intervals and an in-process isolation mode.
- `heartbeat`: rebinds the heartbeat constants of `flwr.supernode.fleet_http_connection`,
  `flwr.supercore.heartbeat` (SuperNode) and `flwr.superlink.servicer.fleet.fleet_handlers`
  (SuperLink) so a SuperNode heartbeats every few seconds and a dead one is offline, its
  messages answered with `NODE_UNAVAILABLE`, 10 s after its last heartbeat instead of 60 s.
  Would go with: heartbeat-interval options of the SuperNode and SuperLink.
- `in_process_clientapp`: runs the ClientApp on a message in the SuperNode's
  NodeState/ObjectStore with the calls Flower's Runtime API handlers make
  (`flwr.supernode.nodestate`, `flwr.supercore.inflatable`). Would go with: the same
  in-process isolation mode.
- `objects`: Flower's object tree (`flwr.supercore.inflatable`): object ids, deflated
  bytes, inflation, for packed content and the in-process ClientApp. Would go with:
  a public (de)serialisation of a RecordDict.
- `inline_objects`: a small message's objects carried in the `content` field of its
  PushMessages/PullMessages protos (the SuperLink's push and pull handlers, the clients'
  `PullMessages`, `pull_objects`), instead of one request per object: a deployed
  exchange is 4 sequential HTTPS requests instead of about 18. Would go with: a batch
  object API.
- `messages`: the stored message id write (`metadata.__dict__["_message_id"]`, no
  setter), `ErrorCode` (`flwr.common.constant`), `remove_content_from_message`.
  Would go with: a `Metadata.message_id` setter and public error codes.
- `grid`: `InMemoryGrid`/`HttpGrid` checks (`flwr.superlink.grid`), the `Run` type,
  and the rebinding of `http_grid.pull_objects` (object-pull backoff from the poll
  interval, carried objects first), `http_grid.remove_content_from_message` (a pushed
  message carries its objects) and `RuntimeHttpClient.ConfirmMessageReceived` (sent
  from a background thread). Would go with: the engine named in the ServerApp's
  Context, a backoff setting.
- `simulation`: `flwr.simulation.run_simulation._run_simulation` with `app_dir` (the
  public `run_simulation` takes no run config). Would go with: a run config (or app
  directory) argument to `run_simulation`. And `prompt_dispatch`: rebinds
  `flwr.server.superlink.fleet.vce.vce_api.add_messages_to_queue` within a block so the
  engine hands out messages every few ms instead of every 0.1 s (a vertical job's two
  exchanges per batch). Would go with: a dispatch-interval setting of the engine.
- `control`: the Control API client of Flower's CLI
  (`flwr.supercore.control.ControlHttpClient`), its FAB builder and protobuf
  messages, to register node keys and start a run. Would go with: a Python Control
  API client.

Replaced by public API when moving to 1.42: the SecAgg+ strategy's aggregate message
no longer writes `metadata.__dict__["_src_node_id"]` (it is a reply to a message for
node 0), and the strategies log through `flwr.common.log`.
"""

from fedsilo.peers.flower_compat.version import (
    FLOWER_VERSION,
    FlowerVersionError,
    check_flower_version,
    installed_flower,
)

check_flower_version(installed_flower())

__all__ = ["FLOWER_VERSION", "FlowerVersionError"]
