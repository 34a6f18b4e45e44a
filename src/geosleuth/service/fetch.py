"""Fetching a photo from a URL without letting the caller reach what the server can reach (SSRF).

Only ``http`` and ``https``. The host is resolved here and every address it resolves to must be
public (not loopback, private, link-local, multicast, reserved or unspecified); the request then
goes to the checked address itself (the name kept in ``Host`` and for TLS), so a second DNS answer
cannot swap in another. Redirects are followed by hand, at most :data:`MAX_REDIRECTS`, each target
checked the same way. One deadline covers the whole fetch, and the body stops at ``max_bytes``.
``allow_private`` (``--allow-private-urls``) lifts the address check for closed deployments.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from geosleuth.errors import UploadTooLargeError, URLFetchError, URLRefusedError

if TYPE_CHECKING:
    import httpx

    from geosleuth.config import ServeSettings

MAX_REDIRECTS = 3
_HOST_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]{0,252})", re.IGNORECASE)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system's resolver)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise URLFetchError(f"{host}: the name does not resolve ({exc.strerror})") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` may not be fetched from (None: it is a public address)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for what, hit in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("not globally routable", not address.is_global),
    ):
        if hit:
            return what
    return None


def _host_name(url: str, host: str) -> str:
    """``host`` as the ASCII name DNS and the ``Host`` header take (IDNA for a non-ASCII one), or
    :class:`URLRefusedError` when it cannot be one (spaces, control characters, stray symbols)."""
    try:
        name = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise URLRefusedError(f"{url!r}: {host!r} is not a valid host name") from exc
    if not _HOST_NAME.fullmatch(name):
        raise URLRefusedError(f"{url!r}: {host!r} is not a valid host name")
    return name


@dataclass(frozen=True)
class Fetched:
    url: str  # the last URL, after redirects
    data: bytes
    content_type: str | None


@dataclass
class URLFetcher:
    """Fetches photo URLs by the rules in the module docstring. ``transport`` and ``resolver`` are
    injectable (tests; a proxy)."""

    max_bytes: int
    timeout_s: float = 10.0
    allow_private: bool = False
    resolver: Resolver = system_resolver
    transport: httpx.BaseTransport | None = None

    @classmethod
    def from_settings(cls, serve: ServeSettings) -> URLFetcher:
        """The fetcher the service's settings describe (size and time limits, private addresses)."""
        return cls(
            max_bytes=serve.max_upload_bytes,
            timeout_s=serve.url_timeout_s,
            allow_private=serve.allow_private_urls,
        )

    def fetch(self, url: str) -> Fetched:
        import httpx

        deadline = time.monotonic() + self.timeout_s
        with httpx.Client(transport=self.transport, follow_redirects=False, trust_env=False) as client:
            for _hop in range(MAX_REDIRECTS + 1):
                request = self._request(client, url, deadline)
                try:
                    response = client.send(request, stream=True)
                except httpx.TimeoutException as exc:
                    raise URLFetchError(f"{url}: no answer within {self.timeout_s:g} s") from exc
                except httpx.HTTPError as exc:
                    raise URLFetchError(f"{url}: cannot fetch it ({type(exc).__name__}: {exc})") from exc
                try:
                    if response.is_redirect:
                        url = urljoin(url, response.headers.get("location", ""))
                        continue
                    if response.status_code >= 400:
                        raise URLFetchError(f"{url}: the server answered {response.status_code}")
                    data = self._body(response, url, deadline)
                    return Fetched(url, data, response.headers.get("content-type"))
                finally:
                    response.close()
        raise URLRefusedError(f"{url}: more than {MAX_REDIRECTS} redirects; give the photo's final URL")

    def _request(self, client: httpx.Client, url: str, deadline: float) -> httpx.Request:
        import httpx

        try:  # urlsplit and .port raise ValueError on a malformed host ("http://[") or port
            parts = urlsplit(url)
            given_port = parts.port
        except ValueError as exc:
            raise URLRefusedError(
                f"{url!r}: not a valid URL ({exc}); give an http(s) URL of the photo"
            ) from exc
        if parts.scheme not in ("http", "https"):
            raise URLRefusedError(
                f"{url!r}: only http and https URLs are fetched (upload the photo as the 'image' field instead)"
            )
        if not parts.hostname:
            raise URLRefusedError(f"{url!r}: the URL has no host")
        if parts.username or parts.password:
            raise URLRefusedError(f"{url!r}: URLs with a user name or password are not fetched")
        try:
            literal: IPAddress | None = ipaddress.ip_address(parts.hostname)
        except ValueError:
            literal = None
        host = str(literal) if literal is not None else _host_name(url, parts.hostname)
        port = given_port or (443 if parts.scheme == "https" else 80)
        addresses = [str(literal)] if literal is not None else self.resolver(host, port)
        if not addresses:
            raise URLFetchError(f"{host}: the name resolves to no address")
        if not self.allow_private:
            for addr in addresses:
                why = refusal(ipaddress.ip_address(addr))
                if why is not None:
                    raise URLRefusedError(
                        f"{url}: {host} is a {why} address ({addr}); the service fetches only public "
                        "addresses (a closed deployment can allow others with --allow-private-urls)"
                    )
        pinned = addresses[0]
        netloc = f"[{pinned}]" if ":" in pinned else pinned
        if given_port:
            netloc += f":{given_port}"
        target = parts._replace(netloc=netloc).geturl()
        left = max(0.1, deadline - time.monotonic())
        host_header = f"[{host}]" if ":" in host else host
        headers = {"Host": host_header + (f":{given_port}" if given_port else ""), "Accept": "image/*"}
        extensions: dict[str, object] = {
            "timeout": {"connect": left, "read": left, "write": left, "pool": left}
        }
        if parts.scheme == "https" and literal is None:
            extensions["sni_hostname"] = host
        try:
            return client.build_request("GET", target, headers=headers, extensions=extensions)
        except httpx.InvalidURL as exc:  # e.g. control characters in the path
            raise URLRefusedError(
                f"{url!r}: not a valid URL ({exc}); give an http(s) URL of the photo"
            ) from exc

    def _body(self, response: httpx.Response, url: str, deadline: float) -> bytes:
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise UploadTooLargeError(
                url, f"the photo has {int(declared):,} bytes, above the limit of {self.max_bytes:,}"
            )
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise UploadTooLargeError(
                    url, f"the photo is larger than the limit of {self.max_bytes:,} bytes"
                )
            if time.monotonic() > deadline:
                raise URLFetchError(f"{url}: not fetched within {self.timeout_s:g} s")
            chunks.append(chunk)
        return b"".join(chunks)


__all__ = ["MAX_REDIRECTS", "Fetched", "URLFetcher", "refusal", "system_resolver"]
