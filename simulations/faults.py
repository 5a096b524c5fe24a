"""Simulated dropouts: a client mod that makes a share of the banks vanish each round.

`--dropout F` makes each bank, independently in each round, vanish with its own
probability pᵢ (F for every bank by default; drawn around F with
`--dropout-concentration κ`, see `fedsilo.simulations.population.dropout_probability`) at one stage of the round drawn uniformly from advertise, share, mask, unmask: from
that stage on (the consistency check, between mask and unmask, counts with mask: a
bank drawn to vanish at unmask still signs the survivor list) it answers nothing in that round (an error reply, which the host treats
as a vanished peer). The draw depends only on (seed, round, bank), so a run with
secure aggregation and one without lose the same banks at the same rounds: without
secure aggregation there is a single upload, and a bank is lost if it vanishes before
or at the mask (upload) stage, and kept if it vanishes only at unmask, after uploading.
From round 2 on, a round's advertise stage travels with the previous round's
evaluation (`fedsilo.strategies.secagg.SecureAggregation`), which this mod lets through, so a
bank drawn to vanish at advertise vanishes at share, the round's first own exchange.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Context, Error, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable

from fedsilo.peers.client.app import bank_index
from fedsilo.simulations.population import dropout_probability
from fedsilo.strategies.secagg.wire import SECAGG_CONFIG_KEY, STAGES, read_stage

DROPOUT_KEY = "sim.dropout"
DROPOUT_CONCENTRATION_KEY = "sim.dropout-concentration"
ERROR_CODE_DROPOUT = 4100


DROP_STAGES = ("advertise", "share", "mask", "unmask")  # the stages a bank is drawn to vanish at


def dropout_stage(seed: int, server_round: int, bank: int, fraction: float) -> str | None:
    """The stage at which `bank` vanishes in `server_round`, or None if it stays."""
    if fraction <= 0:
        return None
    rng = np.random.default_rng([seed, server_round, bank, 0xD0])
    if rng.random() >= fraction:
        return None
    return DROP_STAGES[int(rng.integers(len(DROP_STAGES)))]


def dropout_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Client mod: answer with an error from the stage this bank vanishes at."""
    mean = float(context.run_config.get(DROPOUT_KEY, 0.0))
    if mean <= 0 or msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, context)
    seed = int(context.run_config.get("train.seed", 0))
    fraction = dropout_probability(
        seed, bank_index(context), mean, float(context.run_config.get(DROPOUT_CONCENTRATION_KEY, 0.0))
    )
    if SECAGG_CONFIG_KEY in msg.content.config_records:
        stage, server_round, _ = read_stage(msg.content)
    else:
        stage, server_round = "mask", int(msg.content["config"]["server-round"])
    gone = dropout_stage(seed, server_round, bank_index(context), fraction)
    if gone is not None and STAGES.index(stage) >= STAGES.index(gone):
        return Message(Error(code=ERROR_CODE_DROPOUT, reason=f"simulated dropout at the {gone} stage"), reply_to=msg)
    return call_next(msg, context)
