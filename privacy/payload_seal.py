"""End-to-end sealing of the payloads two consortium members exchange, inside TLS (the gm suite's transport).

Python's TLS has no TLCP, and TLS may end before the peer (a load balancer, a TLS-inspecting
proxy of the institution's network). Under the gm suite every request body and reply body between
two members is therefore also sealed with the consortium's suite, end to end between the two
members' daemons (or a member's CLI), so that the national algorithms protect the data wherever
TLS ends. The construction, for a client C (who calls) and a server S (who answers):

**Session (one handshake per pair, reused).** C draws an ephemeral agreement key ``e_C`` and sends
``hello = (suite, C, S, E_C, time)`` with its SM2 signature (the key the signed manifest binds to C)
of those fields. S checks the signature with C's manifest key, that the hello names S as receiver
and C as the TLS-authenticated caller, and that ``time`` is within ``HELLO_SKEW`` seconds; it draws
``e_S`` and a random 16-byte session id, and answers ``accept = (session, E_S)`` with its SM2
signature over the suite, both names, the SM3 hash of C's signed hello, the session id and ``E_S``.
C checks it with S's manifest key. Both compute ``Z = ECDH(e_C, E_S)`` on the SM2 curve (standard:
X25519) and derive two directional keys with the suite's KDF (SM3-KDF) over the hash of the whole
signed transcript: ``k_CS`` for requests, ``k_SC`` for replies (16-byte SM4 keys). Ephemeral keys
are discarded after the derivation (forward secrecy), and the long-term SM2 keys only sign (they
are never used for agreement). A session expires after ``SESSION_SECONDS``; S keeps at most
``MAX_SESSIONS`` per client (the oldest is dropped) and forgets all at restart, and C then opens a
new one.

**Frames.** ``MAGIC || len(suite) || suite || session (16) || seq (8, big-endian) || nonce || ct || tag``,
the tail being the suite's AEAD (SM4-GCM) of the body with a fresh random nonce. The associated
data binds the frame to its direction (request / reply), the suite, the session, ``seq``, the
sender and receiver names, the HTTP method and target (path and query) and, for a reply, its HTTP
status. C numbers its requests 1, 2, ... within a session; S's reply to request ``seq`` carries the
same ``seq``.

**Who can read.** Only C and S: the keys come from ephemeral keys whose public halves were signed
by the two members' SM2 keys. A relay or terminating proxy that sees the TLS plaintext, even one
holding both TLS keys, sees the method, the path, the session id, ``seq`` and SM4 ciphertext, never
a body. It cannot substitute its own ephemeral key (it holds neither SM2 signing key).

**Replay, re-addressing, downgrade.** S accepts each ``seq`` of a session once, within a window of
the ``WINDOW`` highest (requests of a pooled client arrive slightly out of order); a replayed frame
is refused naming the session and ``seq``. A frame moved to another route, method or direction,
or with another status, fails authentication, refused naming the route and both members; a frame
sent to another receiver names a session that receiver does not hold. A frame whose header names
another suite (a frame sealed with AES-GCM under the standard suite) is refused naming both
suites before any decryption; a body that is not a frame is refused as unsealed. A hello replayed
within ``HELLO_SKEW`` opens a session no one can use (the ephemeral private key behind it is gone);
at most it evicts the client's oldest sessions, which the client then reopens.

Assumptions: the two members' clocks agree within ``HELLO_SKEW`` (for the hello only; frames carry
no time); the manifest's SM2 keys are the members' (the CA's admission binds them); lengths of
bodies are not hidden.
"""

from __future__ import annotations

import os
import time as clock
from dataclasses import dataclass, field
from typing import Any

from fedsilo.errors import CryptoSuiteError, ProtocolError
from fedsilo.privacy.crypto_suite import CryptoSuite

MAGIC = b"FSEAL1"
PROTOCOL = b"fedsilo/seal/v1"
SESSION_BYTES = 16
WINDOW = 4096
SESSION_SECONDS = 900.0
HELLO_SKEW = 300.0
MAX_SESSIONS = 32


class SealError(ProtocolError):
    """A payload sealed end to end between two members is malformed, replayed, re-addressed, of another
    suite, or does not authenticate."""


class UnknownSealSession(SealError):
    """A sealed frame names a session the receiver does not hold (expired, or the receiver restarted)."""


def _fields(*parts: bytes | str | int) -> bytes:
    """An unambiguous encoding: each part length-prefixed (4 bytes)."""
    out = bytearray()
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part.to_bytes(8, "big") if isinstance(part, int) else part
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def _agree(suite: CryptoSuite, private: bytes, peer_ephemeral: bytes) -> bytes:
    """The raw agreement with the peer's ephemeral key; SealError if that key is malformed or off the curve."""
    try:
        return suite.agree(private, peer_ephemeral)
    except CryptoSuiteError as error:
        raise SealError(f"the seal handshake's ephemeral key is refused: {error}") from None


# -- sessions --------------------------------------------------------------------------------
@dataclass
class Session:
    """One end of an open session between `client` and `server` (see the module docstring)."""

    suite: CryptoSuite
    session_id: bytes
    client: str
    server: str
    request_key: bytes
    reply_key: bytes
    created: float = field(default_factory=clock.monotonic)
    next_seq: int = 1
    highest: int = 0
    seen: set[int] = field(default_factory=set)

    @property
    def expired(self) -> bool:
        return self.expires_within(0.0)

    def expires_within(self, seconds: float) -> bool:
        """Whether the session is (or within `seconds` will be) older than SESSION_SECONDS."""
        return clock.monotonic() - self.created > SESSION_SECONDS - seconds

    def _aad(self, direction: str, seq: int, method: str, target: str, status: int = 0) -> bytes:
        return _fields(
            PROTOCOL + b"/" + direction.encode(),
            self.suite.name,
            self.session_id,
            seq,
            self.client,
            self.server,
            method.upper(),
            target,
            status,
        )

    def _header(self, seq: int) -> bytes:
        return (
            MAGIC + bytes([len(self.suite.name)]) + self.suite.name.encode() + self.session_id + seq.to_bytes(8, "big")
        )

    # client side
    def seal_request(self, method: str, target: str, body: bytes) -> tuple[bytes, int]:
        """(frame, seq) of a request body to the server."""
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        sealed = self.suite.seal(self.request_key, body, self._aad("request", seq, method, target))
        return self._header(seq) + sealed, seq

    def open_reply(self, frame: bytes, seq: int, method: str, target: str, status: int) -> bytes:
        """The body of the server's reply to request `seq`; SealError if it is not exactly that reply."""
        suite, session_id, got = parse_header(frame, self.suite.name)
        if session_id != self.session_id or got != seq:
            raise SealError(
                f"the sealed reply of {self.server} to {method} {target} names another session or request: refused"
            )
        try:
            return self.suite.open(
                self.reply_key, frame[header_length(suite) :], self._aad("reply", seq, method, target, status)
            )
        except CryptoSuiteError:
            raise SealError(
                f"the sealed reply to {method} {target} does not authenticate as {self.server}'s reply to "
                f"{self.client} (status {status}): altered, or another reply: refused"
            ) from None

    # server side
    def open_request(self, frame: bytes, method: str, target: str) -> tuple[bytes, int]:
        """(body, seq) of a client's request; SealError if replayed, re-addressed or altered."""
        suite, _, seq = parse_header(frame, self.suite.name)
        if seq in self.seen or seq <= self.highest - WINDOW or seq < 1:
            raise SealError(
                f"replayed sealed frame: session {self.session_id.hex()[:12]}… of {self.client} already "
                f"carried request {seq} (or it is older than the last {WINDOW}): refused"
            )
        try:
            body = self.suite.open(
                self.request_key, frame[header_length(suite) :], self._aad("request", seq, method, target)
            )
        except CryptoSuiteError:
            raise SealError(
                f"the sealed frame does not authenticate for {method.upper()} {target} from {self.client} to "
                f"{self.server}: altered, re-addressed to another route or peer, or sealed with another key: refused"
            ) from None
        self.seen.add(seq)
        if seq > self.highest:
            self.highest = seq
            if len(self.seen) > 2 * WINDOW:
                self.seen = {s for s in self.seen if s > self.highest - WINDOW}
        return body, seq

    def seal_reply(self, seq: int, method: str, target: str, status: int, body: bytes) -> bytes:
        return self._header(seq) + self.suite.seal(
            self.reply_key, body, self._aad("reply", seq, method, target, status)
        )


def header_length(suite: str) -> int:
    return len(MAGIC) + 1 + len(suite) + SESSION_BYTES + 8


def is_frame(data: bytes) -> bool:
    return data.startswith(MAGIC)


def parse_header(frame: bytes, expected_suite: str) -> tuple[str, bytes, int]:
    """(suite, session id, seq) of a frame; SealError if it is not a frame or names another suite than expected."""
    if not is_frame(frame) or len(frame) < len(MAGIC) + 1:
        raise SealError(
            f"the body is not a sealed frame: this consortium's members accept only payloads sealed end to end "
            f"with the {expected_suite} suite"
        )
    size = frame[len(MAGIC)]
    suite = frame[len(MAGIC) + 1 : len(MAGIC) + 1 + size].decode(errors="replace")
    if suite != expected_suite:
        raise SealError(
            f"the frame is sealed with the {suite!r} suite, but this consortium seals with the {expected_suite} suite: "
            "refused"
        )
    start = len(MAGIC) + 1 + size
    if len(frame) < start + SESSION_BYTES + 8:
        raise SealError("the sealed frame is truncated")
    session_id = frame[start : start + SESSION_BYTES]
    seq = int.from_bytes(frame[start + SESSION_BYTES : start + SESSION_BYTES + 8], "big")
    return suite, session_id, seq


# -- the handshake ---------------------------------------------------------------------------
def _hello_fields(suite: str, client: str, server: str, ephemeral: bytes, at: int) -> bytes:
    return _fields(PROTOCOL + b"/hello", suite, client, server, ephemeral, at)


def _accept_fields(
    suite: CryptoSuite, client: str, server: str, hello_hash: bytes, session: bytes, eph: bytes
) -> bytes:
    return _fields(PROTOCOL + b"/accept", suite.name, client, server, hello_hash, session, eph)


def _keys(suite: CryptoSuite, secret: bytes, transcript: bytes) -> tuple[bytes, bytes]:
    size = suite.aead_key_sizes[0]
    material = suite.kdf(secret, _fields(PROTOCOL + b"/keys", suite.hash(transcript)), 2 * size)
    return material[:size], material[size:]


class ClientHandshake:
    """C's side: `hello()` to send, then `finish(accept, server_key)` -> Session."""

    def __init__(self, suite: CryptoSuite, signing_key: bytes, client: str, server: str) -> None:
        self.suite, self.client, self.server = suite, client, server
        self._private, self._public = suite.agreement_keypair()
        self._at = int(clock.time())
        self._signed = _hello_fields(suite.name, client, server, self._public, self._at)
        self._signature = suite.sign(signing_key, self._signed)

    def hello(self) -> dict[str, Any]:
        return {
            "suite": self.suite.name,
            "from": self.client,
            "to": self.server,
            "ephemeral": self._public.hex(),
            "time": self._at,
            "signature": self._signature.hex(),
        }

    def finish(self, accept: Any, server_public_key: bytes) -> Session:
        """The session, if `accept` is the server's signed answer to this hello; SealError otherwise."""
        try:
            session_id, eph, signature = (bytes.fromhex(accept[k]) for k in ("session", "ephemeral", "signature"))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise SealError(
                f"{self.server} answered the seal handshake with something that is not {{session, ephemeral, signature}}"
            ) from None
        if len(session_id) != SESSION_BYTES:
            raise SealError(f"{self.server} answered the seal handshake with a malformed session id")
        hello_hash = self.suite.hash(self._signed + self._signature)
        signed = _accept_fields(self.suite, self.client, self.server, hello_hash, session_id, eph)
        try:
            self.suite.verify(server_public_key, signed, signature)
        except CryptoSuiteError:
            raise SealError(
                f"the seal handshake's answer is not signed by {self.server}'s {self.suite.name}-suite key: "
                "someone between the two peers answered: refused"
            ) from None
        request_key, reply_key = _keys(
            self.suite, _agree(self.suite, self._private, eph), self._signed + self._signature + signed + signature
        )
        del self._private
        return Session(self.suite, session_id, self.client, self.server, request_key, reply_key)


def accept_hello(
    suite: CryptoSuite, signing_key: bytes, server: str, caller: str, hello: Any, caller_public_key: bytes
) -> tuple[dict[str, Any], Session]:
    """S's side: (answer, Session) for `caller`'s (the TLS-authenticated member) `hello`; SealError otherwise."""
    if not isinstance(hello, dict):
        raise SealError("the seal handshake is not a JSON object {suite, from, to, ephemeral, time, signature}")
    if hello.get("suite") != suite.name:
        raise SealError(
            f"the seal handshake is for the {str(hello.get('suite'))[:40]!r} suite, but this consortium seals with "
            f"the {suite.name} suite: refused"
        )
    if hello.get("from") != caller or hello.get("to") != server:
        raise SealError(
            f"the seal handshake is from {str(hello.get('from'))[:80]!r} to {str(hello.get('to'))[:80]!r}, but "
            f"{caller} sent it to {server}: refused"
        )
    try:
        at = int(hello["time"])
        eph, signature = bytes.fromhex(hello["ephemeral"]), bytes.fromhex(hello["signature"])
    except (KeyError, TypeError, ValueError):
        raise SealError("the seal handshake's time, ephemeral key or signature is malformed") from None
    if abs(clock.time() - at) > HELLO_SKEW:
        raise SealError(
            f"the seal handshake is {abs(clock.time() - at):.0f} s off this peer's clock (more than {HELLO_SKEW:.0f}): "
            "an old handshake replayed, or the clocks disagree: refused"
        )
    signed = _hello_fields(suite.name, caller, server, eph, at)
    try:
        suite.verify(caller_public_key, signed, signature)
    except CryptoSuiteError:
        raise SealError(f"the seal handshake is not signed by {caller}'s {suite.name}-suite key: refused") from None
    private, public = suite.agreement_keypair()
    session_id = os.urandom(SESSION_BYTES)
    accept = _accept_fields(suite, caller, server, suite.hash(signed + signature), session_id, public)
    answer_signature = suite.sign(signing_key, accept)
    request_key, reply_key = _keys(suite, _agree(suite, private, eph), signed + signature + accept + answer_signature)
    answer = {"session": session_id.hex(), "ephemeral": public.hex(), "signature": answer_signature.hex()}
    return answer, Session(suite, session_id, caller, server, request_key, reply_key)


class SessionTable:
    """S's open sessions: at most MAX_SESSIONS per client, each dropped after SESSION_SECONDS."""

    def __init__(self) -> None:
        self._sessions: dict[bytes, Session] = {}

    def add(self, session: Session) -> None:
        mine = sorted((s for s in self._sessions.values() if s.client == session.client), key=lambda s: s.created)
        for old in mine[: max(0, len(mine) - MAX_SESSIONS + 1)]:
            del self._sessions[old.session_id]
        self._sessions[session.session_id] = session

    def find(self, frame: bytes, suite: str, caller: str | None) -> Session:
        """The session a frame from `caller` names; UnknownSealSession if none (or expired, or another caller's).
        `caller` None where the transport does not authenticate the caller (the session's client is
        then the caller: the frame authenticates only under its keys)."""
        _, session_id, _ = parse_header(frame, suite)
        session = self._sessions.get(session_id)
        if session is not None and session.expired:
            del self._sessions[session_id]
            session = None
        if session is None or (caller is not None and session.client != caller):
            raise UnknownSealSession(
                f"the sealed frame names session {session_id.hex()[:12]}…, which this peer does not hold for "
                f"{caller or 'its sender'} (expired, opened with another peer, or this peer restarted): open a new one"
            )
        return session
