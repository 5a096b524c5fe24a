"""Flower client mods: middleware that wraps any ClientApp (secure aggregation, ...)."""
