"""Where callbacks may go: ``http(s)`` URLs without credentials, on public addresses only.

A ``callback_url`` is chosen by the caller, so it is checked twice: when the task is created
(its host must resolve, and only to public addresses) and again when each callback connects
(:class:`PublicResolver` drops non-public addresses from every lookup, so a name that was public
at creation and resolves to ``127.0.0.1`` later, DNS rebinding, connects nowhere). Loopback,
private, link-local (cloud metadata at ``169.254.169.254``), shared, multicast, reserved and
unspecified addresses are refused, IPv4-mapped IPv6 included. An operator running agents on
its own network (tests, the demo) sets ``SATROUTER_CALLBACK_ALLOW_PRIVATE=true``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

MAX_URL_LENGTH = 2048


class DestinationRefused(Exception):
    """The URL may not receive callbacks; the message says why."""


def is_public(address: str) -> bool:
    """Whether ``address`` (an IP literal) is on the public internet."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def parse(url: str) -> URL:
    """The URL if its shape may receive callbacks: ``http``/``https``, a host, no userinfo."""
    if len(url) > MAX_URL_LENGTH:
        raise DestinationRefused(f"callback_url is longer than {MAX_URL_LENGTH} characters")
    try:
        parsed = URL(url)
    except ValueError:
        raise DestinationRefused("callback_url is not a URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise DestinationRefused("callback_url must be an http or https URL with a host")
    if parsed.user is not None or parsed.password is not None:
        raise DestinationRefused("callback_url may not carry a user name or password")
    return parsed


def destination(url: str) -> str:
    """The key deliveries are queued by: scheme, host and port."""
    parsed = URL(url)
    return f"{parsed.scheme}://{(parsed.host or '').lower()}:{parsed.port}"


async def check(url: str, *, allow_private: bool) -> None:
    """Refuse (``DestinationRefused``) a URL that may not receive callbacks, resolving its
    host now unless private addresses are allowed."""
    parsed = parse(url)
    if allow_private:
        return
    host = parsed.host
    assert host is not None
    try:
        found = await asyncio.get_running_loop().getaddrinfo(
            host, parsed.port, type=socket.SOCK_STREAM
        )
    except (OSError, UnicodeError):
        raise DestinationRefused(f"callback_url's host {host!r} does not resolve") from None
    addresses = {str(info[4][0]) for info in found}
    if not addresses or not all(is_public(a) for a in addresses):
        raise DestinationRefused(
            f"callback_url's host {host!r} is not a public address (loopback, private, "
            "link-local and similar addresses cannot receive callbacks)"
        )


class PublicResolver(AbstractResolver):
    """A resolver for the callback session that returns public addresses only."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = [r for r in await self._inner.resolve(host, port, family) if is_public(r["host"])]
        if not found:
            raise OSError(f"{host} resolves to no public address")
        return found

    async def close(self) -> None:
        await self._inner.close()


def literal_refused(url: str) -> bool:
    """An IP-literal host is connected to without a lookup, so the resolver never sees it:
    checked here before each delivery."""
    host = URL(url).host or ""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return not is_public(host)
