"""What every request passes before a route: client address, Host, GET rate.

Owns: the one forwarded-header policy (`X-Forwarded-For`, `Forwarded`, `X-Real-IP`
and the forwarded scheme are believed only from a peer in `trusted_proxies`; then
the rightmost address that is not a trusted proxy is the client), the Host allowlist
(`allowed_hosts`: HTTP 400, or 403 before a WebSocket handshake), and per-address
token buckets on GET/HEAD requests (`get_requests_per_s`: HTTP 429). Routes read the
resolved client from `scope["client"]` and the peer's trust from `peer_trusted`.
"""

from __future__ import annotations

import ipaddress
import math
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from ..config import Settings
from ..errors import ConfigError
from ..live import TokenBucket

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")
PEER_TRUSTED = "liverec.peer_trusted"  # scope key: the peer is a trusted proxy
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
RATE_EXEMPT = ("/healthz", "/readyz")
_FOR_RE = re.compile(r'(?:^|[;,\s])for="?\[?([^\]";,\s]+)', re.IGNORECASE)
_PROTO_RE = re.compile(r'(?:^|[;,\s])proto="?(https?)"?', re.IGNORECASE)


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...] | None:
    """`trusted_proxies` as networks; None means every peer ("*")."""
    networks: list[Network] = []
    for entry in entries:
        if entry == "*":
            return None
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ConfigError(
                f"trusted_proxies: {entry!r} is not an IP address or network"
            ) from None
    return tuple(networks)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


class ForwardingPolicy:
    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self.networks = parse_networks(trusted_proxies)

    def trusted(self, peer: str) -> bool:
        if self.networks is None:
            return True
        address = _address(peer)
        return address is not None and any(address in n for n in self.networks)

    def resolve(self, peer: str, headers: Headers, scheme: str) -> tuple[str, str, bool]:
        """(client address, scheme, peer trusted) for a request from `peer`."""
        if not self.trusted(peer):
            return peer, scheme, False
        chain: list[str] = []
        xff = headers.get("x-forwarded-for")
        forwarded = headers.get("forwarded")
        if xff:
            chain = [p.strip() for p in xff.split(",") if p.strip()]
        elif forwarded:
            chain = _FOR_RE.findall(forwarded)
        elif headers.get("x-real-ip"):
            chain = [headers["x-real-ip"].strip()]
        client = peer
        for hop in reversed(chain):  # the rightmost hop not added by a proxy we trust
            if _address(hop) is None:
                break  # garbage or "unknown": keep the last address we could believe
            client = hop
            if not self.trusted(hop):
                break
        proto = headers.get("x-forwarded-proto", "")
        if not proto and forwarded:
            found = _PROTO_RE.findall(forwarded)
            proto = found[-1] if found else ""
        proto = proto.split(",")[-1].strip().lower()
        if proto in ("http", "https"):
            scheme = proto if scheme in ("http", "https") else ("wss" if proto == "https" else "ws")
        return client, scheme, True


def hostname(host: str) -> str:
    """The name in a Host header or an `allowed_hosts` entry: no port, no brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else ""
    if host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    return host.rstrip(".")


class HostList:
    """`allowed_hosts`: exact names, `*.domain` suffixes, or `*` (ports are ignored)."""

    def __init__(self, settings: Settings) -> None:
        entries = list(settings.allowed_hosts) or [*LOOPBACK_HOSTS, settings.host]
        self.any = "*" in entries
        names = {hostname(e) for e in entries if e and not e.startswith("*")}
        names -= {"", "0.0.0.0", "::"}  # a wildcard bind address names no host
        self.names = frozenset(names)
        self.suffixes = tuple(hostname(e)[1:] for e in entries if e.startswith("*."))

    def allows(self, host_header: str | None) -> bool:
        if self.any:
            return True
        if not host_header:
            return False
        host = hostname(host_header)
        return host in self.names or any(host.endswith(s) for s in self.suffixes)


class Gate:
    """ASGI middleware in front of every route (outermost but for CORS)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.forwarding = ForwardingPolicy(settings.trusted_proxies)
        self.hosts = HostList(settings)
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or await self.passes(scope, receive, send):
            await self.app(scope, receive, send)

    async def passes(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Resolve the client and scheme into `scope`; False after answering a request
        that may not pass (a Host not allowed, a GET over its rate)."""
        kind = scope["type"]
        headers = Headers(scope=scope)
        peer, port = scope.get("client") or ("", 0)
        client, scheme, trusted = self.forwarding.resolve(peer, headers, scope["scheme"])
        # in place, as Starlette sets its keys (a copy would be kept per open socket)
        scope["client"] = (client, port)
        scope["scheme"] = scheme
        scope[PEER_TRUSTED] = trusted
        if not self.hosts.allows(headers.get("host")):
            if kind == "websocket":  # before the handshake: HTTP 403
                await send({"type": "websocket.close", "code": 1008, "reason": "host not allowed"})
                return False
            response = PlainTextResponse("host not allowed (see allowed_hosts)\n", 400)
            await response(scope, receive, send)
            return False
        if kind == "http" and scope["method"] in ("GET", "HEAD"):
            wait = self._take(client, scope["path"])
            if wait > 0:
                response = PlainTextResponse(
                    "too many requests from this address; retry later\n",
                    429,
                    headers={"retry-after": str(math.ceil(wait))},
                )
                await response(scope, receive, send)
                return False
        return True

    def _take(self, client: str, path: str) -> float:
        """0 when a GET may pass, else the seconds until the bucket has a token."""
        if path in RATE_EXEMPT:
            return 0.0
        now = time.monotonic()
        bucket = self.buckets.get(client)
        if bucket is None:
            rate, burst = self.settings.get_requests_per_s, self.settings.get_requests_burst
            bucket = TokenBucket(rate, burst, now)
            self.buckets[client] = bucket
            if len(self.buckets) > self.settings.max_tracked_addresses:
                self.buckets.popitem(last=False)
        else:
            self.buckets.move_to_end(client)
        if bucket.take(now):
            return 0.0
        return (1.0 - bucket.tokens) / bucket.rate


class DirectSockets:
    """The outermost ASGI layer: a WebSocket on one of `endpoints`' paths goes to its
    endpoint once the gate's checks pass, with `scope["app"]` set to `starlette` as
    its router would; everything else (HTTP, other paths, a scope under a root_path,
    lifespan) goes to `app`, the whole stack.

    What it skips does nothing for a WebSocket (Starlette's error and exception
    layers, CORS, the router), but each layer is a suspended frame for as long as a
    socket is open and a call on every frame sent: about 5 KB per idle socket."""

    def __init__(
        self,
        app: ASGIApp,
        starlette: ASGIApp,
        settings: Settings,
        endpoints: Mapping[str, Callable[[WebSocket], Awaitable[None]]],
    ) -> None:
        self.app, self.starlette = app, starlette
        self.gate = Gate(app, settings)  # its GET buckets are never used here
        self.endpoints = dict(endpoints)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and not scope.get("root_path"):
            endpoint = self.endpoints.get(scope["path"])
            if endpoint is not None:
                scope["app"] = self.starlette
                if await self.gate.passes(scope, receive, send):
                    await endpoint(WebSocket(scope, receive, send))
                return
        await self.app(scope, receive, send)
