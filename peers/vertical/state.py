"""A party's mutable state as named arrays: what a Flower node keeps in its Context between messages.

A :class:`~.parties.FeatureParty` or :class:`~.parties.LabelHolder` is its data (rows,
sides, alignment: fixed for the job) plus a small mutable state: its model's parameters,
its :class:`~fedsilo.privacy.vertical.RowAccountant`'s release counts, the batch it
released and awaits gradients for, a frozen bottom's stored releases, and a seeded
noise generator's position (``--reproducible`` only; :class:`SecureNoise` keeps no state
worth carrying: a fresh OS key is as good). :func:`export_state` flattens that state
into arrays (an ArrayRecord's content) and :func:`import_state` puts it back into a
party built from the same data, so the party continues exactly where it stopped,
whichever process handles its next message. Plain SGD keeps no optimizer state.
"""

from __future__ import annotations

import numpy as np
import torch

from fedsilo.errors import ProtocolError
from fedsilo.privacy.noise_source import SeededNoise

__all__ = ["export_state", "import_state"]

_PARAM, _OTHER = "param.", "accountant.other."


def _model(party) -> torch.nn.Module:
    return party.bottom if hasattr(party, "bottom") else party.model


def export_state(party) -> dict[str, np.ndarray]:
    """The party's mutable state (see the module docstring) as named arrays."""
    out = {_PARAM + k: v.detach().numpy().copy() for k, v in _model(party).state_dict().items()}
    if party.accountant is not None:
        out["accountant.counts"] = party.accountant.counts.copy()
        for z, counts in party.accountant.other.items():
            out[f"{_OTHER}{z!r}"] = counts.copy()
    for batch, positions in getattr(party, "pending", {}).items():
        out["pending.batch"] = np.array([batch], dtype=np.int64)
        out["pending.positions"] = np.asarray(positions, dtype=np.int64)
    released = getattr(party, "released", {})
    if released:
        keys = sorted(released)
        out["released.positions"] = np.array(keys, dtype=np.int64)
        out["released.values"] = np.stack([released[k] for k in keys])
    if isinstance(party.noise, SeededNoise):
        out["noise.sampling"], out["noise.gaussian"] = party.noise.state()
    return out


def import_state(party, state: dict[str, np.ndarray]) -> None:
    """Put ``state`` (from :func:`export_state` of a party built from the same data) into ``party``."""
    model = _model(party)
    params = {k.removeprefix(_PARAM): torch.as_tensor(v) for k, v in state.items() if k.startswith(_PARAM)}
    if set(params) != set(model.state_dict()):
        raise ProtocolError(f"{party.name}: the stored state is not of this party's model: refused")
    model.load_state_dict(params)
    if party.accountant is not None:
        party.accountant.counts = np.array(state["accountant.counts"], dtype=np.int64)
        party.accountant.other = {
            float(k.removeprefix(_OTHER)): np.array(v, dtype=np.int64) for k, v in state.items() if k.startswith(_OTHER)
        }
    if hasattr(party, "pending"):
        party.pending = (
            {int(state["pending.batch"][0]): np.array(state["pending.positions"])} if "pending.batch" in state else {}
        )
    if hasattr(party, "released"):
        party.released = (
            dict(zip(state["released.positions"].tolist(), np.array(state["released.values"])))
            if "released.positions" in state
            else {}
        )
    if isinstance(party.noise, SeededNoise) and "noise.sampling" in state:
        party.noise.restore(state["noise.sampling"], state["noise.gaussian"])
