"""Who may call the service and how often: API keys (kept only as hashes) and per-key rate limits."""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from geosleuth.errors import AuthenticationError, ConfigError, RateLimitedError

_PREFIX = "sha256:"


def key_hash(key: str) -> str:
    """How a key is kept: ``sha256:<hex>`` of it (what a key file may hold instead of the key)."""
    return _PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class APIKeys:
    """The accepted keys, as hashes. Empty: the service is open (no key asked for)."""

    hashes: frozenset[str] = frozenset()

    @classmethod
    def load(cls, path: Path | None) -> APIKeys:
        """Keys from ``path``, one a line: a key, or ``sha256:<hex>`` of one; ``#`` starts a comment.
        Keys read in plain are hashed at once and not kept."""
        if path is None:
            return cls()
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot read the API key file {str(path)!r} (serve.api_key_file): {exc}"
            ) from exc
        hashes: set[str] = set()
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith(_PREFIX):
                digest = line[len(_PREFIX) :].lower()
                if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                    raise ConfigError(f"{path}:{number}: 'sha256:' must be followed by 64 hex digits")
                hashes.add(_PREFIX + digest)
            else:
                hashes.add(key_hash(line))
        if not hashes:
            raise ConfigError(f"the API key file {str(path)!r} holds no key; add one a line, or leave it out")
        return cls(frozenset(hashes))

    @property
    def required(self) -> bool:
        return bool(self.hashes)

    def check(self, authorization: str | None) -> str | None:
        """The hash of the caller's key (its identity for rate limits), or None when keys are off.
        Raises :class:`AuthenticationError` for a missing or unknown key."""
        if not self.required:
            return None
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise AuthenticationError("this service needs an API key: send 'Authorization: Bearer <key>'")
        digest = key_hash(key.strip())
        if not any(hmac.compare_digest(digest, known) for known in self.hashes):
            raise AuthenticationError("the API key is not one this service accepts")
        return digest


@dataclass
class RateLimiter:
    """A token bucket per caller: ``per_minute`` requests a minute, bursts up to that many.
    ``per_minute`` 0 turns it off."""

    per_minute: float
    max_callers: int = 10_000  # buckets kept; full ones are dropped first (they hold no state)
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # caller -> (tokens, when)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, caller: str) -> None:
        """Count one request by ``caller``; :class:`RateLimitedError` (with ``retry_after``) when over."""
        if self.per_minute <= 0:
            return
        rate = self.per_minute / 60.0
        with self._lock:
            now = self.clock()
            tokens, then = self._buckets.get(caller, (self.per_minute, now))
            tokens = min(self.per_minute, tokens + (now - then) * rate)
            if tokens < 1.0:
                self._buckets[caller] = (tokens, now)
                wait = math.ceil((1.0 - tokens) / rate)
                raise RateLimitedError(
                    f"more than {self.per_minute:g} requests a minute; try again in {wait} s",
                    retry_after=wait,
                )
            self._buckets[caller] = (tokens - 1.0, now)
            if len(self._buckets) > self.max_callers:
                self._prune(now, rate)

    def _prune(self, now: float, rate: float) -> None:
        """Forget callers whose bucket has filled up again (they would start full anyway)."""
        for who, (tokens, then) in list(self._buckets.items()):
            if tokens + (now - then) * rate >= self.per_minute:
                del self._buckets[who]


__all__ = ["APIKeys", "RateLimiter", "key_hash"]
