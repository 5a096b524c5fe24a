"""The one Flower release `fedsilo.peers.flower_compat` is written against, checked when it is imported.

Every module of the package patches or reads Flower code that is not Flower's public
API (see the package docstring); another release may have moved or changed any of it,
silently slower or broken. So the package refuses to load under any other release, with
the fix in the message. Moving Flower: docs/flower-compat.md.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fedsilo.errors import FedsiloError

FLOWER_VERSION = "1.42.0"
FIX = f"python -m pip install 'flwr[simulation]=={FLOWER_VERSION}'"


class FlowerVersionError(FedsiloError, ImportError):
    """The installed Flower is not the release `fedsilo.peers.flower_compat` patches."""


def installed_flower() -> str | None:
    """The installed flwr distribution's version, or None when flwr is not installed."""
    try:
        return version("flwr")
    except PackageNotFoundError:
        return None


def check_flower_version(installed: str | None) -> None:
    """Raise FlowerVersionError unless `installed` is exactly `FLOWER_VERSION`."""
    if installed == FLOWER_VERSION:
        return
    found = "no Flower is installed" if installed is None else f"Flower {installed} is installed"
    raise FlowerVersionError(
        f"fedsilo supports exactly Flower {FLOWER_VERSION} (fedsilo.peers.flower_compat patches its internals), "
        f"but {found}: run `{FIX}`"
    )
