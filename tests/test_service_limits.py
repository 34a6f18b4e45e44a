"""API keys, rate limits, the bounded pool and the address rules, without an app."""

from __future__ import annotations

import ipaddress
import threading
from pathlib import Path

import pytest

from geosleuth.errors import AuthenticationError, ConfigError, RateLimitedError, ServiceBusyError
from geosleuth.service.fetch import refusal
from geosleuth.service.jobs import BoundedPool
from geosleuth.service.limits import APIKeys, RateLimiter, key_hash


def test_key_file_keeps_only_hashes(tmp_path: Path):
    path = tmp_path / "keys"
    path.write_text(
        "alpha  # the web page\n\n" + key_hash("beta").upper().replace("SHA256:", "sha256:") + "\n"
    )
    keys = APIKeys.load(path)
    assert keys.hashes == {key_hash("alpha"), key_hash("beta")}
    assert all(h.startswith("sha256:") and "alpha" not in h for h in keys.hashes)
    assert keys.check("Bearer alpha") == key_hash("alpha")
    assert keys.check("bearer beta") == key_hash("beta")
    for header in (None, "", "Bearer", "Basic alpha", "Bearer gamma"):
        with pytest.raises(AuthenticationError):
            keys.check(header)
    assert APIKeys.load(None).check(None) is None  # no file: open


@pytest.mark.parametrize(
    ("text", "message"), [("# none\n", "holds no key"), ("sha256:abc\n", "64 hex digits")]
)
def test_bad_key_files_are_refused(tmp_path: Path, text: str, message: str):
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        APIKeys.load(path)
    with pytest.raises(ConfigError, match="cannot read the API key file"):
        APIKeys.load(tmp_path / "missing")


def test_rate_limiter_refills_and_says_when():
    now = [0.0]
    limiter = RateLimiter(per_minute=6, clock=lambda: now[0])  # one token every 10 s
    for _ in range(6):
        limiter.take("a")
    with pytest.raises(RateLimitedError) as err:
        limiter.take("a")
    assert err.value.retry_after == 10
    limiter.take("b")  # another caller is not affected
    now[0] = 10.0
    limiter.take("a")
    with pytest.raises(RateLimitedError):
        limiter.take("a")
    RateLimiter(per_minute=0).take("a")  # off


def test_rate_limiter_forgets_full_buckets():
    now = [0.0]
    limiter = RateLimiter(per_minute=60, max_callers=3, clock=lambda: now[0])
    for who in "abc":
        limiter.take(who)
    now[0] = 120.0
    limiter.take("d")
    assert set(limiter._buckets) == {"d"}


def test_bounded_pool_refuses_beyond_its_queue():
    pool = BoundedPool(workers=1, queue_size=2)
    gate = threading.Event()
    first, second = pool.submit(gate.wait), pool.submit(lambda: 7)
    assert pool.depth == 2
    with pytest.raises(ServiceBusyError, match="queue_size 2"):
        pool.submit(lambda: 8)
    gate.set()
    assert first.result(5) is True and second.result(5) == 7
    assert pool.submit(lambda: 9).result(5) == 9
    pool.shutdown()
    assert pool.depth == 0


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not globally routable"),  # carrier-grade NAT
        ("93.184.215.14", None),
        ("2606:4700::1111", None),
    ],
)
def test_address_rules(address: str, why: str | None):
    assert refusal(ipaddress.ip_address(address)) == why
