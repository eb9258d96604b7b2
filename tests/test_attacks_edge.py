"""Attacks on the HTTP/WebSocket edge, replayed against a real `liverec serve`.

Each test sends what an attacker sent (raw sockets where a client library would not
let us misbehave) and asserts the refusal or the bound; docs/security.md's table
"Attacks and defences" names them. The attacker connects from 127.0.0.2 where a
per-address bound is at stake, so that the shopper on 127.0.0.1 is someone else.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from .servers import LiverecServer, free_port
from .wsclient import Client

ATTACKER = "127.0.0.2"


@pytest.fixture(scope="module")
def server() -> Iterator[LiverecServer]:
    srv = LiverecServer(
        "memory://",
        allowed_origins="https://Shop.Example.com:443",
        header_timeout_s=1,
        body_timeout_s=1,
        max_pending_per_address=8,
        events_per_s=1000,
        events_burst=1000,
    ).start()
    yield srv
    srv.stop()


# --- raw HTTP helpers -----------------------------------------------------------------------


def connect(srv: LiverecServer, source: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=20, source_address=(source, 0))
    return s


def read_all(s: socket.socket) -> bytes:
    """Everything until the server closes (or resets) the connection."""
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def request(
    srv: LiverecServer,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    source: str = "127.0.0.1",
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request over a raw socket: (status, headers, body)."""
    lines = [f"{method} {path} HTTP/1.1", "Connection: close"]
    head = {"Host": f"127.0.0.1:{srv.port}", **(headers or {})}
    if body or method in ("POST", "PUT"):
        head["Content-Length"] = str(len(body))
    lines += [f"{k}: {v}" for k, v in head.items()]
    with connect(srv, source) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        reply = read_all(s)
    head_raw, _, payload = reply.partition(b"\r\n\r\n")
    status_line, *header_lines = head_raw.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, payload


def upgrade(srv: LiverecServer, headers: dict[str, str], path: str = "/v1/ws") -> int:
    """The status a WebSocket upgrade request with these headers gets."""
    head = {
        "Host": f"127.0.0.1:{srv.port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        **headers,
    }
    text = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items())
    with connect(srv) as s:
        s.sendall((text + "\r\n").encode())
        reply = s.recv(4096)
    return int(reply.split(b" ", 2)[1])


async def shopper_is_served(srv: LiverecServer) -> None:
    async with await Client.open(srv.ws_url) as c:
        await c.hello()
        _, recs = await c.event("item-a")
        assert recs["type"] == "recs"


# --- slow clients -----------------------------------------------------------------------------


def test_slow_request_head_is_cut_with_408(server: LiverecServer) -> None:
    # One header line at a time, for as long as the server lets us (slowloris).
    with connect(server, ATTACKER) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\n")
        s.settimeout(0.3)
        deadline = time.monotonic() + 30
        reply = b""
        while time.monotonic() < deadline and not reply:
            try:
                s.sendall(b"X-Slow: 1\r\n")
                reply = s.recv(4096)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:60]


def test_silent_connection_is_closed(server: LiverecServer) -> None:
    with connect(server, ATTACKER) as s:  # connects, then sends nothing at all
        assert read_all(s).startswith(b"HTTP/1.1 408 ")


def test_slow_head_on_a_kept_alive_connection_is_cut(server: LiverecServer) -> None:
    with connect(server, ATTACKER) as s:
        s.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
        first = s.recv(4096)
        assert first.startswith(b"HTTP/1.1 200 ")
        s.sendall(b"GET /healthz HTTP/1.1\r\n")  # the next request never completes its head
        rest = read_all(s)
    assert b"HTTP/1.1 408 " in rest and rest.count(b"HTTP/1.1 ") == 1, rest[:60]


def test_slow_body_is_cut(server: LiverecServer) -> None:
    with connect(server, ATTACKER) as s:
        s.sendall(
            f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{".encode()
        )
        reply = read_all(s)  # returns once the server closed the socket
    assert b" 200 " not in reply[:20]


def test_slow_websocket_upgrade_request_is_cut(server: LiverecServer) -> None:
    with connect(server, ATTACKER) as s:
        s.sendall(
            f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Upgrade: websocket\r\n".encode()
        )
        reply = read_all(s)
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:60]


async def test_pending_connections_capped_per_address_while_others_are_served(
    server: LiverecServer,
) -> None:
    # The attacker holds as many half-sent requests as it may (8), then one more.
    held = []
    try:
        for _ in range(8):
            s = connect(server, ATTACKER)
            s.sendall(b"GET /healthz HTTP/1.1\r\n")
            held.append(s)
        extra = connect(server, ATTACKER)
        held.append(extra)
        assert read_all(extra).startswith(b"HTTP/1.1 503 ")
        # Everyone else is served meanwhile: health checks and a real shopper.
        assert request(server, "GET", "/healthz")[0] == 200
        await shopper_is_served(server)
    finally:
        for s in held:
            s.close()
        # The server releases the attacker's count when it sees each close; the module's
        # other tests share this server, so wait for that before handing it on.
        attacker_admitted_again(server)
    assert "too many connections from this address" in server.log()


def attacker_admitted_again(srv: LiverecServer, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while request(srv, "GET", "/healthz", source=ATTACKER)[0] != 200:
        assert time.monotonic() < deadline, "the attacker's closed sockets were never released"
        time.sleep(0.05)


async def test_descriptor_limit_refuses_cleanly_and_keeps_existing_sockets() -> None:
    # A server with 768 descriptors (608 for sockets), and an attacker with 800 sockets
    # from one address whose per-address cap is out of the way: the limit at accept holds.
    srv = LiverecServer(
        "memory://",
        nofile=768,
        max_pending_per_address=10_000,
        header_timeout_s=120,
        accept_backlog=64,
        fd_reserve=160,
    ).start()
    held: list[socket.socket] = []
    try:
        async with await Client.open(srv.ws_url) as shopper:  # connected before the attack
            await shopper.hello()
            refused = 0
            for _ in range(800):
                s = connect(srv, ATTACKER)
                s.sendall(b"GET /healthz HTTP/1.1\r\n")
                held.append(s)
            for s in held[-100:]:  # the last ones came in above the limit
                s.settimeout(20)
                if s.recv(4096).startswith(b"HTTP/1.1 503 "):
                    refused += 1
            assert refused == 100
            _, recs = await shopper.event("item-b")  # the existing socket is still served
            assert recs["type"] == "recs"
        for s in held:
            s.close()
        held.clear()
        deadline = time.monotonic() + 30  # sockets free again: health checks answered
        while request(srv, "GET", "/healthz")[0] != 200:
            assert time.monotonic() < deadline
        log = srv.log()
        assert "out of system resource" not in log
        assert log.count("open sockets at the limit") <= 2  # rate-limited, not one per socket
    finally:
        for s in held:
            s.close()
        srv.stop()


def test_accept_errors_at_descriptor_exhaustion_are_logged_rate_limited() -> None:
    # Leave the limit at accept no room (fd_reserve 2, 64 descriptors), so that the
    # process really runs out: asyncio retries accept() every second and reports each
    # failure; the log gets one line per log_repeat_s, saying how many it left out.
    srv = LiverecServer(
        "memory://",
        nofile=64,
        max_pending_per_address=10_000,
        header_timeout_s=120,
        accept_backlog=1,
        fd_reserve=2,  # less than the process's own descriptors: accept() fails
        log_repeat_s=2,
    ).start()
    held: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 60
        while srv.log().count("out of system resource") < 2:
            assert time.monotonic() < deadline, srv.log()[-2000:]
            if len(held) < 120:  # one at a time: the accept queue is only 1 deep
                try:
                    held.append(
                        socket.create_connection(
                            ("127.0.0.1", srv.port), timeout=1, source_address=(ATTACKER, 0)
                        )
                    )
                except OSError:
                    pass  # not accepted (yet): the server is out of descriptors
            else:
                time.sleep(0.1)
        lines = [ln for ln in srv.log().splitlines() if "out of system resource" in ln]
        assert "(0 more not logged)" in lines[0]
        assert "more not logged" in lines[1] and "(0 more not logged)" not in lines[1]
        assert "Traceback" not in srv.log()
    finally:
        for s in held:
            s.close()
        srv.stop()


# --- Host, forwarding headers, origins ----------------------------------------------------


def test_dns_rebinding_host_is_refused(server: LiverecServer) -> None:
    evil = {"Host": "evil.example", "Origin": "http://evil.example"}
    assert request(server, "GET", "/healthz", evil)[0] == 400
    assert upgrade(server, evil) == 403
    assert upgrade(server, evil, "/v1/feed") == 403
    body = json.dumps({"items": [{"item_id": "x", "title": "X"}]}).encode()
    status, _, _ = request(server, "PUT", "/v1/catalog/items", evil, body)
    assert status == 400
    assert request(server, "GET", "/v1/catalog/items/x")[0] == 404  # nothing was written
    # The server's own origin, on an allowed host, still opens sockets.
    own = {"Host": f"localhost:{server.port}", "Origin": f"http://localhost:{server.port}"}
    assert upgrade(server, own) == 101


def test_spoofed_forwarding_headers_make_no_operator(server: LiverecServer) -> None:
    body = json.dumps({"items": [{"item_id": "spoof", "title": "Spoof"}]}).encode()
    for header in (
        {"X-Real-IP": "127.0.0.1"},
        {"X-Forwarded-For": "127.0.0.1"},
        {"Forwarded": "for=127.0.0.1"},
    ):
        status, _, _ = request(server, "PUT", "/v1/catalog/items", header, body)
        assert status == 403, header  # a proxy we do not trust is in the way
    assert request(server, "PUT", "/v1/catalog/items", {}, body)[0] == 200  # loopback itself


def test_a_trusted_proxy_forwards_the_client_for_every_header() -> None:
    srv = LiverecServer(
        "memory://", trusted_proxies="127.0.0.1", get_requests_per_s=0.01, get_requests_burst=2
    ).start()
    try:
        body = json.dumps({"items": [{"item_id": "p", "title": "P"}]}).encode()
        # A same-host proxy that sets only X-Real-IP no longer makes clients operators.
        for header in ({"X-Real-IP": "203.0.113.9"}, {"Forwarded": 'for="203.0.113.9"'}):
            assert request(srv, "PUT", "/v1/catalog/items", header, body)[0] == 403
        # Each forwarded client has its own GET bucket; the proxy's own is untouched.
        for client in ("203.0.113.1", "203.0.113.2"):
            codes = [
                request(srv, "GET", "/v1/recommendations", {"X-Real-IP": client})[0]
                for _ in range(3)
            ]
            assert codes == [200, 200, 429], (client, codes)
        assert request(srv, "GET", "/v1/recommendations")[0] == 200
        # From an untrusted peer, a forged client address does not buy a new bucket.
        forged = [
            request(
                srv, "GET", "/v1/recommendations", {"X-Real-IP": f"198.51.100.{i}"}, b"", ATTACKER
            )[0]
            for i in range(3)
        ]
        assert forged == [200, 200, 429]
    finally:
        srv.stop()


MALFORMED_ORIGINS = (
    "http://127.0.0.1:8000.evil.io",
    "http://[::1",
    "http://localhost:99999",
    "javascript:alert(1)",
    "http://" + "a" * 600,
    "https://user@shop.example.com",
)


def test_malformed_origins_are_refused_not_crashed(server: LiverecServer) -> None:
    for origin in MALFORMED_ORIGINS:
        assert upgrade(server, {"Origin": origin}) == 403, origin
        status, headers, _ = request(server, "GET", "/healthz", {"Origin": origin})
        assert status == 200 and "access-control-allow-origin" not in headers, origin
    assert "Traceback" not in server.log(), server.log()[-3000:]


def test_refused_origin_is_named_in_the_log_once_per_interval(server: LiverecServer) -> None:
    for _ in range(5):
        assert upgrade(server, {"Origin": "https://attacker.example"}) == 403
    assert server.log().count("refused origin 'https://attacker.example'") == 1


def test_origins_compare_in_one_normal_form_for_websocket_and_cors(
    server: LiverecServer,
) -> None:
    # Listed as https://Shop.Example.com:443; the browser sends the normal form.
    for origin in ("https://shop.example.com", "HTTPS://SHOP.EXAMPLE.COM:443"):
        assert upgrade(server, {"Origin": origin}) == 101
        _, headers, _ = request(server, "GET", "/healthz", {"Origin": origin})
        assert headers.get("access-control-allow-origin") == origin


# --- bad input ------------------------------------------------------------------------------


async def test_lone_surrogate_in_a_frame_gets_an_error_frame_and_the_socket_stays(
    server: LiverecServer,
) -> None:
    async with await Client.open(server.ws_url) as c:
        await c.hello()
        await c.ws.send('{"type":"event","id":"\\ud800","action":"view","item_id":"i1"}')
        frame = await c.recv()
        assert frame["type"] == "error" and frame["code"] == "bad_text", frame
        await c.ws.send('{"type":"event","id":"ok-1","action":"view","item_id":"\\ud83d"}')
        assert (await c.recv())["code"] == "bad_text"
        await c.event("item-c")  # still open and serving


async def test_deep_json_frame_gets_an_error_frame_and_the_socket_stays(
    server: LiverecServer,
) -> None:
    async with await Client.open(server.ws_url) as c:
        await c.hello()
        await c.ws.send("[" * 8000 + "]" * 8000)  # under max_frame_bytes
        frame = await c.recv()
        assert frame["type"] == "error" and frame["code"] == "bad_json", frame
        await c.event("item-d")


def test_bad_http_bodies_get_400(server: LiverecServer) -> None:
    surrogate_event = b'{"events":[{"id":"\\ud800","action":"view","item_id":"i"}]}'
    deep = b"[" * 30000 + b"]" * 30000  # valid JSON, under the body limits
    for path, method, body in (
        ("/v1/events", "POST", surrogate_event),
        ("/v1/events", "POST", deep),
        ("/v1/catalog/items", "PUT", deep),
    ):
        status, _, payload = request(
            server, method, path, {"Content-Type": "application/json"}, body
        )
        assert status == 400, (path, status, payload[:200])
    assert "Traceback" not in server.log(), server.log()[-3000:]


def test_catalog_text_with_a_lone_surrogate_is_refused(server: LiverecServer) -> None:
    for field in ("title", "description", "category", "image"):
        body = '{"items":[{"item_id":"sur","title":"T","' + field + '":"a\\udc00b"}]}'
        status, _, payload = request(server, "PUT", "/v1/catalog/items", {}, body.encode())
        assert status == 400, (field, status, payload[:200])
        assert json.loads(payload)["error"]["code"] == "bad_text"
    assert request(server, "GET", "/v1/catalog/items")[0] == 200
    assert request(server, "GET", "/v1/recommendations")[0] == 200


def test_get_endpoints_are_rate_limited_per_address() -> None:
    srv = LiverecServer("memory://", get_requests_per_s=0.01, get_requests_burst=3).start()
    try:
        codes = [request(srv, "GET", "/v1/recommendations", source=ATTACKER) for _ in range(4)]
        assert [c[0] for c in codes] == [200, 200, 200, 429]
        assert int(codes[-1][1]["retry-after"]) >= 1
        # Health checks are exempt, and other addresses have their own bucket.
        assert request(srv, "GET", "/healthz", source=ATTACKER)[0] == 200
        assert request(srv, "GET", "/v1/recommendations")[0] == 200
    finally:
        srv.stop()


# --- weak settings are refused at start ------------------------------------------------------


def _serve_fails(**env: str) -> str:
    """Start `liverec serve` with these settings; it must exit at once with one line."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LIVEREC_")}
    clean.update({"LIVEREC_" + k.upper(): v for k, v in env.items()})
    clean["LIVEREC_STORE_URL"] = "memory://"
    done = subprocess.run(
        [sys.executable, "-m", "liverec.cli", "serve", "--port", str(free_port())],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize("name", ["jwt_secret", "admin_token"])
def test_short_secrets_are_refused_at_start(name: str) -> None:
    line = _serve_fails(**{name: "x" * 31})
    assert f"{name} must be at least 32 bytes" in line


def test_scheme_less_allowed_origin_is_refused_at_start() -> None:
    line = _serve_fails(allowed_origins="127.0.0.2:8801")
    assert "allowed_origins: '127.0.0.2:8801' is not an origin" in line
