"""The peer: one context (mailbox, store, ledger, client) and the roles that work over it.

`PeerService` builds the `PeerContext` and one object per role (`roles/`), wires them,
and starts and stops them; the HTTP routes (`app`) call the roles through it:
`hosting`, `participating`, `cancellation`, `replication`, `list_serving`, `views`, and
`manifest_sync` (the consortium's manifest and CRL: served, taken, polled, acted on).

Every state change is one message through the context's mailbox: it runs alone, checks
everything first, then changes the store, the ledger and the audit log in one store
transaction (the ledger write is the last step inside it, so a crash can only leave a
ledger reservation without a job, which `Reconciliation` releases at the next start). A
refusal raises `Refused`, writes one audit entry and changes nothing else.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

from fedsilo.peers.daemon.config import PeerConfig
from fedsilo.peers.daemon.context import PeerContext
from fedsilo.peers.daemon.manifest_sync import ManifestSync
from fedsilo.peers.daemon.roles.budget import Budget
from fedsilo.peers.daemon.roles.cancellation import Cancellation
from fedsilo.peers.daemon.roles.hosting import Hosting
from fedsilo.peers.daemon.roles.list_serving import ListServing
from fedsilo.peers.daemon.roles.participating import Participating
from fedsilo.peers.daemon.roles.reconciliation import Reconciliation
from fedsilo.peers.daemon.roles.replication import Replication
from fedsilo.peers.daemon.roles.transfer_holdout import TransferHoldout
from fedsilo.peers.daemon.roles.vertical import Vertical
from fedsilo.peers.daemon.roles.vertical_split import VerticalSplit
from fedsilo.peers.daemon.roles.views import Views
from fedsilo.peers.identity.consortium import Identity
from fedsilo.peers.identity.manifest import Member


class PeerService:
    """See the module docstring. Call `start()` inside the event loop before serving, `stop()` after."""

    def __init__(
        self,
        config: PeerConfig,
        identity: Identity,
        server_tls: ssl.SSLContext | None = None,
        drop: Callable[[str], int] = lambda member: 0,
    ) -> None:
        """`server_tls` is the listening context (it gets each new CRL); `drop` aborts a member's connections."""
        self.context = context = PeerContext(config, identity)
        self.name, self.identity, self.store, self.ledger = context.name, identity, context.store, context.ledger
        self.budget = Budget(context)
        self.participating = Participating(context, self.budget)
        self.hosting = Hosting(context, self.budget, self.participating)
        self.cancellation = Cancellation(context, self.budget, self.hosting)
        self.replication = Replication(context)
        self.list_serving = ListServing(context)
        self.vertical = Vertical(context, self.budget, self.list_serving.lists)
        self.participating.vertical = self.hosting.vertical = self.vertical
        self.transfer_holdout = self.hosting.transfer_holdout = TransferHoldout(
            context, self.budget, self.list_serving.lists
        )
        self.participating.split = self.hosting.split = self.vertical.split = VerticalSplit(context, self.vertical)
        self.reconciliation = Reconciliation(context, self.budget, self.participating, self.hosting)
        self.views = Views(context)
        contexts = [context.client.ssl_context] + ([server_tls] if server_tls is not None else [])
        self.manifest_sync = ManifestSync(context, self.cancellation.cancel, contexts, drop)

    async def start(self) -> None:
        """Start the mailbox and the client, reconcile the state, start the expiry and replication sweeps."""
        self.context.mailbox.start()
        await self.context.client.__aenter__()
        await self.context.mailbox.ask(self.reconciliation.open)
        self.replication.clear_staging()
        self.context.spawn(self.participating.sweep_expired())
        self.context.spawn(self.manifest_sync.poll_forever())
        self.context.spawn(self.replication.resume())

    async def stop(self) -> None:
        """Stop the engine processes of running jobs (they show as interrupted at the next start)."""
        context = self.context
        for running in list(context.running.values()):
            await asyncio.to_thread(running.stop)
        for task in list(context.tasks):
            task.cancel()
        await asyncio.gather(*context.tasks, return_exceptions=True)
        await context.mailbox.stop()
        await context.client.__aexit__()
        context.ledger.close()
        self.list_serving.close()
        context.store.close()

    def member_for(self, fingerprint: str) -> Member | None:
        """The member holding this certificate in the newest manifest copied to this peer, if any."""
        return self.identity.current_manifest().by_fingerprint(fingerprint)

    async def record_refusal(self, actor: str, action: str, detail: str, outcome: str = "refused") -> None:
        """Audit a request refused before it reached a role (unknown peer, bad body), or one that failed."""
        await self.context.record_refusal(actor, action, detail, outcome)
