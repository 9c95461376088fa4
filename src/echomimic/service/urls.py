"""Inputs given by URL, fetched safely (server-side request forgery guard).

Only ``http`` and ``https`` URLs are accepted. The host is resolved and *every* address it
resolves to must be public: loopback, private (RFC 1918, unique-local), link-local (which holds
the cloud metadata address 169.254.169.254), carrier-grade NAT, multicast, reserved and
unspecified addresses are refused unless the host or the address is in the allow-list
(``ECHOMIMIC_URL_ALLOW``: host names and CIDR blocks).

The check is made at the moment of connecting, on the address actually connected to (a custom
network backend of ``httpcore``), so a DNS answer that changes between the check and the
connection (rebinding) cannot slip through, and every redirect hop is checked the same way.
Downloads are limited in size and time.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from typing import Iterable
from urllib.parse import urljoin, urlsplit

from .errors import InputTooLarge, UrlFetchFailed, UrlRefused

MAX_REDIRECTS = 5
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class AllowList:
    """Host names and networks that may be fetched although they are not public."""

    def __init__(self, entries: Iterable[str] = ()):
        self.hosts: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            entry = entry.strip().lower()
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.hosts.add(entry.rstrip("."))

    def allows(self, host: str, address: Address) -> bool:
        return host.lower().rstrip(".") in self.hosts or any(address in n for n in self.networks)


def is_public(address: Address) -> bool:
    """Whether an address is routable on the public internet (and not a metadata address)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return bool(address.is_global) and not (address.is_multicast or address.is_reserved
                                            or address.is_link_local or address.is_loopback
                                            or address.is_private)


def resolve(host: str, port: int) -> list[Address]:
    """The addresses of ``host`` (a literal address is returned as it is, without DNS)."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UrlFetchFailed(f"cannot resolve the host {host!r} ({exc})") from None
    seen: list[Address] = []
    for info in infos:
        addr = ipaddress.ip_address(info[4][0].split("%")[0])
        if addr not in seen:
            seen.append(addr)
    return seen


def checked_addresses(host: str, port: int, allow: AllowList) -> list[Address]:
    """Resolve ``host`` and refuse it when any address is not public and not allow-listed."""
    addresses = resolve(host, port)
    if not addresses:
        raise UrlFetchFailed(f"the host {host!r} has no address")
    for addr in addresses:
        if not is_public(addr) and not allow.allows(host, addr):
            raise UrlRefused(f"the URL's host {host!r} resolves to {addr}, a non-public address; "
                             f"only public addresses may be fetched")
    return addresses


def check_url(url: str, allow: AllowList | Iterable[str] = ()) -> tuple[str, str, int]:
    """Validate a URL without connecting: scheme, host, resolved addresses.

    Returns ``(scheme, host, port)``. Raises :class:`UrlRefused` for a refused URL.
    """
    allow = allow if isinstance(allow, AllowList) else AllowList(allow)
    parts = urlsplit(str(url))
    if parts.scheme not in ("http", "https"):
        raise UrlRefused(f"only http and https URLs are accepted, got {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise UrlRefused(f"the URL {url!r} has no host")
    if parts.username or parts.password:
        raise UrlRefused("URLs with credentials are not accepted")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UrlRefused(f"the URL {url!r} has an invalid port") from None
    checked_addresses(parts.hostname, port, allow)
    return parts.scheme, parts.hostname, port


def _guarded_backend(allow: AllowList):
    import httpcore

    class GuardedBackend(httpcore.SyncBackend):
        """Connects only to addresses that pass the guard (checked at connection time)."""

        def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
            addresses = checked_addresses(host, port, allow)
            last: Exception | None = None
            for addr in addresses:
                try:
                    return super().connect_tcp(str(addr), port, timeout=timeout,
                                               local_address=local_address,
                                               socket_options=socket_options)
                except httpcore.ConnectError as exc:
                    last = exc
            raise httpcore.ConnectError(str(last))

    return GuardedBackend()


def fetch(url: str, *, max_bytes: int, timeout: float = 30.0,
          allow: AllowList | Iterable[str] = ()) -> bytes:
    """Download ``url`` (following up to 5 redirects, each checked) into memory.

    Raises:
        UrlRefused: a URL or redirect target that is not allowed.
        InputTooLarge: more than ``max_bytes`` bytes (stops reading at the limit).
        UrlFetchFailed: connection errors, HTTP errors, or more than ``timeout`` seconds.
    """
    import httpcore

    allow = allow if isinstance(allow, AllowList) else AllowList(allow)
    deadline = time.monotonic() + timeout
    t = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
    with httpcore.ConnectionPool(network_backend=_guarded_backend(allow), retries=0) as pool:
        for _ in range(MAX_REDIRECTS + 1):
            check_url(url, allow)
            try:
                with pool.stream("GET", url, headers={"User-Agent": "echomimic",
                                                      "Accept-Encoding": "identity"},
                                 extensions={"timeout": t}) as resp:
                    if resp.status in (301, 302, 303, 307, 308):
                        location = dict((k.lower(), v) for k, v in resp.headers).get(b"location")
                        if not location:
                            raise UrlFetchFailed(f"{url} redirects without a location")
                        url = urljoin(url, location.decode("latin-1"))
                        continue
                    if resp.status != 200:
                        raise UrlFetchFailed(f"{url} answered HTTP {resp.status}")
                    headers = dict((k.lower(), v) for k, v in resp.headers)
                    length = headers.get(b"content-length")
                    if length is not None and length.isdigit() and int(length) > max_bytes:
                        raise InputTooLarge(f"{url} is {int(length)} bytes, over the limit of "
                                            f"{max_bytes} bytes")
                    chunks, size = [], 0
                    for chunk in resp.iter_stream():
                        size += len(chunk)
                        if size > max_bytes:
                            raise InputTooLarge(f"{url} is over the limit of {max_bytes} bytes")
                        if time.monotonic() > deadline:
                            raise UrlFetchFailed(f"{url} took more than {timeout:g} s")
                        chunks.append(chunk)
                    return b"".join(chunks)
            except httpcore.TimeoutException:
                raise UrlFetchFailed(f"{url} took more than {timeout:g} s") from None
            except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
                raise UrlFetchFailed(f"cannot fetch {url} ({exc or type(exc).__name__})") from None
    raise UrlFetchFailed(f"{url}: more than {MAX_REDIRECTS} redirects")
