"""Errors of the peer network (identity, daemon, jobs), all `FedsiloError`s.

`main` prints any of them as one line; the daemon turns a `Refused` into an HTTP error
reply with its `status` and writes the refusal to the audit log.
"""

from __future__ import annotations

from fedsilo.errors import FedsiloError


class IdentityError(FedsiloError):
    """A key, certificate, request or manifest is missing, malformed or not trusted."""


class SignatureError(IdentityError):
    """A signature does not verify, or its signer is not who the document says."""


class IntegrityError(FedsiloError):
    """A model's file does not match the hash its model card states, or the card cannot vouch for it; or
    stored state is hashed with another suite's algorithm than the consortium's."""


class Refused(FedsiloError):
    """A request the daemon refuses; `status` is the HTTP status it answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.audited = False


class PeerUnreachable(FedsiloError):
    """Another peer could not be reached or answered with an error."""
