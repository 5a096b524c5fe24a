"""A transfer job's view of one institution's table: the shared vocabulary, its own columns, its encoder.

A deployed transfer job states its shared vocabulary: the consortium's canonical
column names (and units), which every institution's table holds under those names
where it has them (its platform team maps its own names to the data dictionary once).
Every other column besides the label (and the source's id column, dropped before) is
the institution's own. The ClientApp's encoder is the concatenation of

- the shared-vocabulary encoder, fitted by the job's host from every institution's
  aggregates of the vocabulary columns only (`shared_frame`), and
- the own-columns encoder, fitted at the institution from its own rows only
  (`own_encoder`): nothing about its own columns ever leaves it;

so its first `shared_feature_count` inputs feed the model's shared block
(`fedsilo.privacy.split_input`). The simulation (`fedsilo.simulations.transfer`) builds
the same encoders from the same functions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedsilo.errors import DataError
from fedsilo.peers.data.encoding import SPLIT_COLUMN, BankSummary, TabularEncoder


def institution_table(frame: pd.DataFrame, vocabulary: tuple[str, ...], label: str) -> pd.DataFrame:
    """The table in the order the encoder reads it: vocabulary columns (NaN where this institution lacks
    one), then its own columns and the label; DataError if it holds no vocabulary column at all."""
    if label not in frame.columns:
        raise DataError(f"the table has no label column {label!r}")
    if not any(name in frame.columns for name in vocabulary):
        raise DataError(
            f"the table holds none of the job's shared-vocabulary columns ({', '.join(vocabulary)}): "
            "name the columns it shares with the consortium as the data dictionary does"
        )
    shared = pd.DataFrame(
        {name: frame[name] if name in frame.columns else np.nan for name in vocabulary}, index=frame.index
    )
    own = [c for c in frame.columns if c not in vocabulary]
    return pd.concat([shared, frame[own]], axis=1)


def shared_frame(table: pd.DataFrame, vocabulary: tuple[str, ...], label: str) -> pd.DataFrame:
    """The vocabulary columns and the label: all the host's summary of this institution may describe."""
    return table[[*vocabulary, label]]


def own_frame(table: pd.DataFrame, vocabulary: tuple[str, ...], label: str) -> pd.DataFrame:
    """This institution's own columns and the label (never summarized for anyone else)."""
    return table[[c for c in table.columns if c not in vocabulary and c not in (label, SPLIT_COLUMN)] + [label]]


def own_encoder(own: pd.DataFrame, label: str) -> TabularEncoder:
    """The own-columns encoder, fitted from this institution's own rows only (empty if it has none)."""
    if own.shape[1] == 1:  # the label only: every column of this institution is in the vocabulary
        return TabularEncoder(label, ())
    return TabularEncoder.fit([BankSummary.from_frame(own, label)], label)


def institution_encoder(
    shared: TabularEncoder, table: pd.DataFrame, vocabulary: tuple[str, ...], label: str
) -> TabularEncoder:
    """The host's shared-vocabulary encoder followed by this institution's own-columns encoder.

    DataError if `shared` encodes anything but exactly the vocabulary, in order, for `label`:
    a host cannot make one of the institution's own columns an input of the shared block.
    """
    if shared.label != label or tuple(shared.input_columns) != tuple(vocabulary):
        raise DataError(
            f"the host's shared encoder encodes {shared.input_columns} for label {shared.label!r}; the signed job's "
            f"shared vocabulary is {list(vocabulary)} for label {label!r}: refused"
        )
    return TabularEncoder(label, shared.columns + own_encoder(own_frame(table, vocabulary, label), label).columns)


def shared_feature_count(encoder: TabularEncoder, vocabulary: tuple[str, ...]) -> int:
    """The model inputs of the vocabulary columns (the first ones of an `institution_encoder`)."""
    return sum(c.width for c in encoder.columns if c.name in vocabulary)
