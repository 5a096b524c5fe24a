"""Vertical (split) learning: the same customers at several parties, each holding its own columns.

- :mod:`.messages` — what crosses between parties (batch requests, embeddings, gradients) as
  plain arrays with a byte form, checked on arrival;
- :mod:`.alignment` — the shared customers' one order and train/test sides, by PSI and a pin frame;
- :mod:`.parties` — a feature party (its bottom model) and the label holder (its bottom and the top);
- :mod:`.training` — the rounds of split training and two-party scoring, transport-agnostic;
- :mod:`.coded` — the coded scheme: each shared customer's code released once by randomized response.
"""
