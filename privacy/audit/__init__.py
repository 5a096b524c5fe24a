"""Privacy self-audit: attacks run as measurements against a trained model.

Pure numbers in, numbers out (torch and numpy, no Flower, no network):

- `roc`: ROC, AUC, TPR at low FPR, membership advantage, and the advantage bound
  (e^ε − 1 + 2δ)/(e^ε + 1) that (ε, δ)-DP implies;
- `membership`: loss-threshold and calibrated (LiRA-style, offline) membership scores;
- `one_run`: the one-training-run ε lower bound of Steinke, Nasr and Jagielski (2023)
  from canaries, and `check_claim`, which raises `PrivacyAuditFailed` when the lower
  bound exceeds the claimed ε;
- `reconstruction`: the aggregator's view: closed-form inversion of a linear first
  layer's batch-size-1 gradient, DLG-style gradient matching, and one in-process
  SecAgg+ round to attack what the aggregator really receives.
"""
