"""The signature gate: which requests serve accepts, by Plivo's V3 signature and replay memory.

Every WebSocket upgrade and every webhook passes `SignatureGate.check` before serve acts on it.
Plivo signs the URL it dialled, so the gate rebuilds that URL: the public one when serve knows
it (`--public-url`, `--ngrok`), else the Host header's. With `--reject-replays` a signature is
accepted once per replay window (in a `serve --workers` worker the first process remembers for
all, through `replay_authority`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from plivo_stream_cli.nonces import NonceCache, replay_key
from plivo_stream_cli.signature import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    UnsignableURL,
    compute_v3,
    diagnose,
    request_url,
    validate_v3,
)

ReplayAuthority = Callable[[str], Awaitable[float | None]]


class SignatureGate:
    """V3 signature checks and replay memory for one serve (its settings are read live)."""

    def __init__(
        self,
        auth_token: str | None,
        public_url: Callable[[], str | None],
        *,
        reject_replays: bool = False,
        replay_window: float = 300.0,
    ) -> None:
        self.auth_token = auth_token
        self._public_url = public_url  # read per request: `--ngrok` sets it after start
        self.nonces = NonceCache(replay_window) if reject_replays else None
        # In a `serve --workers` worker: asks the first process, whose `nonces` serve them all.
        self.replay_authority: ReplayAuthority | None = None

    def signed_url(self, target: str, host: str) -> str:
        """The URL Plivo signed for this request: the public one when known (`UnsignableURL`)."""
        return request_url(target, host, self._public_url())

    async def check(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        params: dict[str, list[str]] | None = None,
    ) -> tuple[bool, str]:
        """(accepted, why) for a request's V3 signature; always accepted when no token is set."""
        token = self.auth_token
        if not token:
            return True, "signature check off (no auth token)"
        signature = headers.get(SIGNATURE_HEADER.lower())
        nonce = headers.get(NONCE_HEADER.lower())
        if not signature or not nonce:
            return False, f"missing {SIGNATURE_HEADER} or {NONCE_HEADER} header"
        try:
            url = self.signed_url(target, headers.get("host", ""))
        except UnsignableURL as exc:  # refused like a bad signature (1008 / 403), not a crash
            return False, str(exc)
        if validate_v3(url, nonce, signature, token, method=method, params=params):
            return await self._first_use(url, nonce, token, method, params)
        host = headers.get("host", "")
        hint = diagnose(
            url, nonce, signature, token, method=method, params=params, alt_hosts=[host]
        )
        why = f"invalid signature for {url}"
        if hint:
            why += f"; it matches {hint} (pass --public-url with that scheme and host)"
        return False, why

    async def _first_use(
        self, url: str, nonce: str, token: str, method: str, params: dict[str, list[str]] | None
    ) -> tuple[bool, str]:
        """With --reject-replays, refuse a valid signature that was already used."""
        if self.nonces is None and self.replay_authority is None:
            return True, "signature valid"
        key = replay_key(nonce, compute_v3(url, nonce, token, method=method, params=params))
        if self.replay_authority is not None:  # a worker: the first process remembers for all
            age = await self.replay_authority(key)
        else:
            age = self.seen_before(key)
        if age is None:
            return True, "signature valid (first use)"
        return False, f"replayed signature: nonce {nonce[:32]!r} was used {age:.1f} s ago"

    def seen_before(self, key: str) -> float | None:
        """How long ago `key` (a `replay_key`) was first used, or None (and now it is)."""
        if self.nonces is None:
            return None
        now = time.monotonic()
        first = self.nonces.first_seen(key, now)
        return None if first is None else now - first
