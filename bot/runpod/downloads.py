"""Output image downloads: SSRF-safe (public addresses, pinned once resolved), size-capped."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Collection
from typing import Protocol

import httpx

from bot.runpod.budget import RetryPolicy, Sleep
from bot.runpod.errors import OutputError, RunPodError, RunPodTransportError

MAX_OUTPUT_IMAGE_BYTES = 50 * 2**20
MAX_OUTPUT_TOTAL_BYTES = 100 * 2**20
MAX_REDIRECTS = 3
MAX_URL_LENGTH = 8192
HOST_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")

Resolve = Callable[[str, int], Awaitable[list[str]]]


class Fetch(Protocol):
    """Downloads one output URL, refusing more than `max_bytes`."""

    def __call__(self, url: str, *, max_bytes: int) -> Awaitable[bytes]: ...


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, through the system resolver."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class OutputDownloader:
    """Fetches the worker's `s3_url` outputs with the client's HTTP pool, never its API key."""

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        retry: RetryPolicy,
        sleep: Sleep,
        output_http_hosts: Collection[str],
        resolve: Resolve,
        download_timeout: float,
    ) -> None:
        self._http = http
        self._retry = retry
        self._sleep = sleep
        self._output_http_hosts = frozenset(h.lower() for h in output_http_hosts)
        self._resolve = resolve
        self._download_timeout = download_timeout

    async def download(self, url: str, *, max_bytes: int = MAX_OUTPUT_IMAGE_BYTES) -> bytes:
        """Fetch an `s3_url` output: https to public addresses only, no credentials, capped."""
        target = self._output_url(url)
        for attempt in range(self._retry.attempts):
            try:
                async with asyncio.timeout(self._download_timeout):
                    return await self._follow(target, max_bytes)
            except (httpx.TransportError, OSError, TimeoutError) as exc:
                if attempt + 1 >= self._retry.attempts:
                    raise RunPodTransportError(
                        f"image download failed: {type(exc).__name__}", sent=True
                    ) from None
                await self._sleep(self._retry.delay(attempt))
            except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
                # A hostile answer (bad encoding, unusable Location...) is an output problem.
                raise OutputError(
                    f"the worker's image URL gave an unusable answer ({type(exc).__name__})",
                    kind="bad_output",
                ) from None
        raise AssertionError("unreachable")

    async def _follow(self, url: httpx.URL, max_bytes: int) -> bytes:
        """GET `url`, following at most MAX_REDIRECTS redirects, each hop checked afresh."""
        for _ in range(MAX_REDIRECTS + 1):
            address = await self._public_address(url)
            request = httpx.Request(
                "GET",
                url.copy_with(host=address),
                # Hand-built: no client cookies or default headers, no key; one use per connection,
                # so a connection pinned for one host name is never reused for another.
                headers={"Host": url.netloc.decode("ascii"), "Connection": "close"},
                extensions={
                    "timeout": self._http.timeout.as_dict(),
                    **(
                        {"sni_hostname": url.raw_host.decode("ascii")}
                        if url.scheme == "https"
                        else {}
                    ),
                },
            )
            response = await self._http.send(request, stream=True, follow_redirects=False)
            try:
                if response.is_redirect:
                    url = self._output_url(str(url.join(response.headers.get("Location", ""))))
                    continue
                if response.status_code >= 400:
                    raise RunPodError(
                        f"image download answered {response.status_code}",
                        status=response.status_code,
                    )
                return await read_capped(response, max_bytes, too_large_image)
            finally:
                await response.aclose()
        raise OutputError("the worker's image URL redirects too many times", kind="bad_output")

    def _output_url(self, text: str) -> httpx.URL:
        """The URL if it may be fetched at all: https (or http to an allowed host), no userinfo."""
        if not text.startswith(("https://", "http://")):
            raise OutputError(
                "the worker returned a local path instead of a URL", kind="bad_output"
            )
        try:
            if len(text) > MAX_URL_LENGTH:
                raise ValueError("too long")
            url = httpx.URL(text)
            host = url.raw_host.decode("ascii").lower()
            port = url.port
        except (httpx.InvalidURL, ValueError, UnicodeError):
            raise OutputError(
                "the worker returned an image URL that cannot be parsed", kind="bad_output"
            ) from None
        if url.userinfo:
            raise OutputError("the worker's image URL carries credentials", kind="bad_output")
        if not (_hostname(host) or _ip_literal(host)) or not 0 < (port or 1) < 65536:
            raise OutputError("the worker's image URL names no valid host", kind="bad_output")
        if url.scheme == "http" and host not in self._output_http_hosts:
            raise OutputError(
                "the worker's image URL is plain http to a host not in WORKER_OUTPUT_HTTP_HOSTS",
                kind="forbidden_url",
            )
        return url

    async def _public_address(self, url: httpx.URL) -> str:
        """The address to connect to: resolved once and checked, so DNS cannot change it after."""
        host = url.raw_host.decode("ascii").lower()
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = await self._resolve(host, port)
        if not addresses:
            raise OSError(f"{host} resolved to no address")
        if host not in self._output_http_hosts and not all(map(_public_ip, addresses)):
            raise OutputError(
                "the worker's image URL points at a private or local address",
                kind="forbidden_url",
            )
        return addresses[0]


async def read_capped(
    response: httpx.Response, limit: int, too_large: Callable[[int], RunPodError]
) -> bytes:
    """The body, refused as soon as its running total passes `limit` (or its length says so)."""
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large(limit)
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def too_large_image(limit: int) -> OutputError:
    return OutputError(f"an output image is over the {megabytes(limit)} cap", kind="too_large")


def megabytes(size: int) -> str:
    return f"{size / 2**20:.0f} MB" if size >= 2**20 else f"{size} bytes"


def _hostname(host: str) -> bool:
    """A DNS name, checked label by label (linear time whatever the input)."""
    labels = host.removesuffix(".").split(".")
    return len(host) <= 253 and all(HOST_LABEL.fullmatch(label) for label in labels)


def _ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# Well-known NAT64 prefix: its addresses reach whatever IPv4 address they embed.
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _public_ip(address: str) -> bool:
    """Whether `address` is a global unicast address (IPv4 inside IPv6 judged as IPv4)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            ip = embedded
    return ip.is_global and not ip.is_multicast
