"""Reading a user's TOML file with one-line errors that say which file and what to fix."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from fedsilo.errors import ConfigError


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """The parsed document of `path`; `what` names the file in errors ("config file")."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist: check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}): fix its syntax") from None
