"""Shared lists: serve this peer's PSI and anonymous-query lists, and log the ones it ran elsewhere.

`ListServing` owns the `SharedLists` of peer.toml (`shared_lists`) and runs each PSI or
query request alone in the mailbox, in a thread (`serve`), auditing who asked which list
for how many identifiers (never which). It also writes this peer's own client's record
of a PSI or query it ran at another peer (`record_own`, counts only). It calls no other role.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fedsilo.errors import DataError
from fedsilo.peers.daemon.context import PeerContext
from fedsilo.peers.daemon.shared_lists import Served, SharedLists
from fedsilo.peers.errors import Refused
from fedsilo.peers.identity.manifest import Member

RECORD_KEYS = {"action", "peer", "list", "outcome", "sent", "learned"}


class ListServing:
    """See the module docstring."""

    def __init__(self, context: PeerContext) -> None:
        self.ctx = context
        self.lists = SharedLists(
            context.config.lists, context.config.state_dir / "psi", suite=context.identity.manifest.suite
        )

    def close(self) -> None:
        self.lists.close()

    async def serve(self, member: Member, action: str, list_name: str, work: Callable[[], Served]) -> bytes:
        """Run one PSI / query request (`work`, blocking) in a thread, alone in the actor, and audit it.

        A refusal is audited by the HTTP layer (and changes nothing); success writes one
        entry: who, which list, how many identifiers (never which).
        """

        async def run() -> bytes:
            try:
                served = await asyncio.to_thread(work)
            except DataError as error:  # the holder's own file: tell its log, not the caller
                with self.ctx.store.transaction():
                    self.ctx.store.audit.append(
                        member.name, action, "failed", f"the list cannot be served: {error}", source=list_name
                    )
                refusal = Refused(
                    f"{self.ctx.name} cannot serve list {list_name!r} now (a problem with its own file, "
                    "recorded in its audit log); ask its operator",
                    503,
                )
                refusal.audited = True
                raise refusal from None
            if served.detail is not None:  # None: a middle step of an OT-PSI run (its start and end are audited)
                with self.ctx.store.transaction():
                    self.ctx.store.audit.append(
                        member.name, served.action or action, "ok", served.detail, source=list_name
                    )
            return served.body

        return await self.ctx.mailbox.ask(run)

    async def record_own(self, member: Member, body: Any) -> dict[str, Any]:
        """This peer's own client records a PSI or query it ran at another peer (counts only)."""
        if member.name != self.ctx.name:
            raise Refused(f"only {self.ctx.name}'s own certificate may write to its log of PSI and queries", 403)
        if not isinstance(body, dict) or set(body) != RECORD_KEYS:
            raise Refused("a record is {action, peer, list, outcome, sent, learned}", 400)
        action, outcome = body["action"], body["outcome"]
        counts = (body["sent"], body["learned"])
        if (
            action not in ("psi.run", "query.run")
            or outcome not in ("started", "ok", "refused")
            or not all(isinstance(body[k], str) and 0 < len(body[k]) <= 200 for k in ("peer", "list"))
            or not all(c is None or (isinstance(c, int) and not isinstance(c, bool) and c >= 0) for c in counts)
        ):
            raise Refused(
                "a record names action psi.run|query.run, outcome started|ok|refused, the peer and list, "
                "and counts (non-negative integers or null)",
                400,
            )
        detail = f"at {body['peer']}: {counts[0]} identifiers sent" + (
            f", {counts[1]} learned" if counts[1] is not None else ""
        )

        async def work() -> dict[str, Any]:
            with self.ctx.store.transaction():
                entry = self.ctx.store.audit.append(self.ctx.name, action, outcome, detail, source=body["list"])
            return {"seq": entry.seq}

        return await self.ctx.mailbox.ask(work)
