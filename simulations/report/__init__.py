"""What a run leaves behind: the model card, per-round metrics and plots."""
