#!/usr/bin/env python3
"""scanfleet lab responder: small stand-ins for services Debian does not package, and silent ports.

One process per target host serves every port listed in its JSON config (rendered by lab/targets.yml)::

    {"bind": "0.0.0.0", "ports": [{"port": 3000, "kind": "grafana"}, {"port": 81, "kind": "silent"}, ...]}

Kinds:

* ``silent``         accepts, reads and discards whatever the client sends, never writes, never closes
                     (the worst case of a version scan: every probe waits its full time);
* ``close``          accepts and closes at once (what nmap calls "tcpwrapped");
* ``grafana``        Grafana's HTTP server as an anonymous client sees it (302 to /login; the login page);
* ``k8s-dashboard``  Kubernetes Dashboard v2's plain-HTTP port (index.html of the web UI);
* ``hadoop-ipc``     a Hadoop IPC server port (its answer to an HTTP GET);
* ``cql``            a CQL native-protocol server (the ERROR frame it sends for an unsupported version).

Every byte string a stand-in sends is what the real software sends; where each comes from (upstream file and
version) is noted next to it and in docs/targets.md.  Only the replies an nmap version scan can elicit are
emulated; anything else is answered by closing the connection (said so per kind).

Run ``responder.py --config FILE [--user NAME]`` as root (ports below 1024; it becomes NAME once every port
is bound); ``--check`` only validates the config.  It runs in the foreground (the
playbook starts it with start-stop-daemon --background --make-pidfile) and ends on SIGTERM or SIGINT.
Only the Python 3 standard library is used: the lab hosts are Debian minbase.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import json
import logging
import os
import pwd
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

LOG = logging.getLogger("responder")

# How long a connection may take to send what a stand-in needs before it is dropped (silent ports excepted).
READ_TIMEOUT = 30.0
# Longest HTTP request head read (Go's net/http default limit is 1 MiB; nmap's probes are tiny).
MAX_HEAD = 64 * 1024

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# --------------------------------------------------------------------------------------------------
# Small helpers


def http_date() -> str:
    """The current time as an HTTP date (RFC 7231, IMF-fixdate), as Go's net/http writes it."""
    return email.utils.formatdate(usegmt=True)


async def finish(writer: asyncio.StreamWriter, data: bytes = b"") -> None:
    """Write DATA (if any), then close the connection."""
    try:
        if data:
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


class BadRequest(Exception):
    """The client's bytes are not an HTTP/1.x request head."""


async def read_http_head(reader: asyncio.StreamReader) -> tuple[str, str, str]:
    """Read an HTTP request head; return (method, target, protocol).  BadRequest if malformed.

    Like Go's net/http (textproto): the request line must be "METHOD SP TARGET SP HTTP/x.y"; an empty first
    line, as nmap's GenericLines probe ("\\r\\n\\r\\n") sends, is malformed.
    """
    line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
    parts = line.rstrip(b"\r\n").split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1.") or not parts[0].isalpha():
        raise BadRequest(line[:80])
    size = len(line)
    while True:  # headers, up to the blank line
        header = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
        size += len(header)
        if header in (b"\r\n", b"\n"):
            break
        if not header or size > MAX_HEAD:
            raise BadRequest(b"truncated head")
    method, target, proto = (p.decode("latin-1") for p in parts)
    return method, target, proto


# Go's net/http (server.go, func (c *conn) serve) answers a request it cannot parse with exactly these bytes
# and closes the connection (go1.12 and later; e.g. go1.21.x src/net/http/server.go: publicErr "400 Bad Request"
# with errorHeaders "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n").  Checked
# against a real Go server in the lab: Debian's prometheus-node-exporter 1.5.0 answers "\r\n\r\n" with it.
GO_BAD_REQUEST = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                  b"Connection: close\r\n\r\n400 Bad Request")


def go_response(proto: str, status: str, headers: list[tuple[str, str]], body: bytes,
                *, extra_length: bool = True) -> bytes:
    """An HTTP response laid out as Go's net/http writes it (src/net/http/server.go, chunkWriter.writeHeader).

    Go answers an HTTP/1.0 request with an HTTP/1.0 status line, writes the handler's headers sorted by name
    (Header.writeSubset), then its own: Date, then Content-Length when the handler set none and the whole
    body was written before the handler returned (extraHeader.Write).  HEADERS must be the handler's headers
    in sorted order.  Connection: close is not written for HTTP/1.0, where closing is the default.
    """
    version = "HTTP/1.0" if proto == "HTTP/1.0" else "HTTP/1.1"
    lines = [f"{version} {status}", *(f"{k}: {v}" for k, v in headers), f"Date: {http_date()}"]
    if extra_length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# --------------------------------------------------------------------------------------------------
# silent / close


async def serve_silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept, read and discard, never answer; close only when the client does."""
    try:
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass
    finally:
        writer.close()


async def serve_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept and close at once, without reading or writing a byte."""
    writer.close()


# --------------------------------------------------------------------------------------------------
# Grafana
#
# Source: grafana/grafana v10.4.x (also v9.5 - v11), pkg/middleware/auth.go, func notAuthorized: a request for a
# page that needs a signed-in user gets writeRedirectCookie (which writes no cookie when the request URI is
# "/") and c.Redirect(setting.AppSubUrl + "/login"), i.e. Go's http.Redirect with 302 Found, which sets
# "Content-Type: text/html; charset=utf-8" and, for GET, the body "<a href=\"/login\">Found</a>.\n" plus the
# newline of fmt.Fprintln (src/net/http/server.go, func Redirect).  The other headers come from
# pkg/middleware/middleware.go, func AddDefaultResponseHeaders with Grafana's defaults (conf/defaults.ini:
# x_content_type_options = true, x_xss_protection = true, allow_embedding = false): addNoCacheHeaders
# ("Cache-Control: no-store", Pragma and Expires deleted), addXFrameOptionsDenyHeader ("X-Frame-Options:
# deny"), addSecurityHeaders ("X-Content-Type-Options: nosniff", "X-XSS-Protection: 1; mode=block", which Go
# canonicalises to "X-Xss-Protection").  Go sorts them by name.  nmap 7.95's own nmap-service-probes has a
# rule for exactly this answer (GetRequest section, "p/Grafana http/").

GRAFANA_REDIRECT_HEADERS = [
    ("Cache-Control", "no-store"),
    ("Content-Type", "text/html; charset=utf-8"),
    ("Location", "/login"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "deny"),
    ("X-Xss-Protection", "1; mode=block"),
]
GRAFANA_REDIRECT_BODY = b'<a href="/login">Found</a>.\n\n'

# The login page itself (GET /login).  Not byte-exact: Grafana renders public/views/index.html (a long page of
# inline scripts and settings) through c.HTML ("Content-Type: text/html; charset=UTF-8", pkg/api/login.go,
# LoginView); this stand-in keeps only what names the product, the <title> of that template with the default
# AppTitle "Grafana".  No nmap probe asks for /login: the bytes nmap sees are the redirect above.
GRAFANA_LOGIN_HEADERS = [
    ("Cache-Control", "no-store"),
    ("Content-Type", "text/html; charset=UTF-8"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "deny"),
    ("X-Xss-Protection", "1; mode=block"),
]
GRAFANA_LOGIN_BODY = (
    b'<!DOCTYPE html>\n<html lang="en-US">\n  <head>\n    <meta charset="utf-8" />\n'
    b"    <title>Grafana</title>\n    <base href=\"/\" />\n  </head>\n"
    b'  <body class="theme-dark app-grafana">\n    <div id="reactRoot"></div>\n  </body>\n</html>\n'
)


async def serve_grafana(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        method, target, proto = await read_http_head(reader)
    except (BadRequest, asyncio.IncompleteReadError, TimeoutError):
        await finish(writer, GO_BAD_REQUEST)
        return
    path = target.split("?", 1)[0]
    if method in ("GET", "HEAD") and path == "/login":
        body = GRAFANA_LOGIN_BODY
        reply = go_response(proto, "200 OK", GRAFANA_LOGIN_HEADERS, b"" if method == "HEAD" else body)
    elif method == "GET":
        reply = go_response(proto, "302 Found", GRAFANA_REDIRECT_HEADERS, GRAFANA_REDIRECT_BODY)
    else:
        # http.Redirect writes no Content-Type and no body for other methods.
        headers = [h for h in GRAFANA_REDIRECT_HEADERS if h[0] != "Content-Type"]
        reply = go_response(proto, "302 Found", headers, b"")
    await finish(writer, reply)


# --------------------------------------------------------------------------------------------------
# Kubernetes Dashboard
#
# Source: kubernetes/dashboard v2.7.0.  src/app/backend/dashboard.go serves "/" with
# handler.MakeGzipHandler(handler.CreateLocaleHandler()) on the insecure port (--insecure-port, default 9090;
# no gzip unless the client asks for it); src/app/backend/handler/localehandler.go adds "Cache-Control:
# no-store" for "/" and "/index.html" and hands the request to Go's http.FileServer over ./public/en, which
# serves index.html with "Accept-Ranges: bytes", "Content-Length", "Content-Type: text/html; charset=utf-8"
# (from the extension) and "Last-Modified" (the file's time in the image; ours is a fixed date of our own).  The body is
# public/en/index.html of the kubernetesui/dashboard:v2.7.0 image: src/app/frontend/index.html after the
# Angular production build (license comment, then the minified head; the hashed asset names are those of
# v2.7.0's build).

K8S_DASHBOARD_INDEX = (
    b"<!--\nCopyright 2017 The Kubernetes Authors.\n\n"
    b'Licensed under the Apache License, Version 2.0 (the "License");\n'
    b"you may not use this file except in compliance with the License.\n"
    b"You may obtain a copy of the License at\n\n    http://www.apache.org/licenses/LICENSE-2.0\n\n"
    b"Unless required by applicable law or agreed to in writing, software\n"
    b'distributed under the License is distributed on an "AS IS" BASIS,\n'
    b"WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.\n"
    b"See the License for the specific language governing permissions and\n"
    b"limitations under the License.\n"
    b'--><!DOCTYPE html><html lang="en" dir="ltr"><head>\n'
    b'  <meta charset="utf-8">\n  <title>Kubernetes Dashboard</title>\n'
    b'  <link rel="icon" type="image/png" href="assets/images/kubernetes-logo.png">\n'
    b'  <meta name="viewport" content="width=device-width">\n'
    b"<style>html,body{height:100%;margin:0}*::-webkit-scrollbar{background:transparent;height:8px;width:8px}"
    b'</style><link rel="stylesheet" href="styles.243e6d874431c8e8.css" media="print" '
    b"onload=\"this.media='all'\"><noscript><link rel=\"stylesheet\" href=\"styles.243e6d874431c8e8.css\">"
    b"</noscript></head>\n\n<body>\n  <kd-root></kd-root>\n"
    b'<script src="runtime.134ad7745384bed8.js" type="module"></script>'
    b'<script src="polyfills.5c84b93f78682d4f.js" type="module"></script>'
    b'<script src="scripts.2c4f58d7c579cacb.js" defer></script>'
    b'<script src="en.main.3550e3edca7d0ed8.js" type="module"></script>\n\n\n</body></html>\n'
)
K8S_DASHBOARD_LAST_MODIFIED = "Fri, 19 Aug 2022 11:39:15 GMT"


async def serve_k8s_dashboard(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        method, target, proto = await read_http_head(reader)
    except (BadRequest, asyncio.IncompleteReadError, TimeoutError):
        await finish(writer, GO_BAD_REQUEST)
        return
    path = target.split("?", 1)[0]
    if method in ("GET", "HEAD") and path in ("/", "/index.html"):
        body = K8S_DASHBOARD_INDEX
        headers = [("Accept-Ranges", "bytes"), ("Cache-Control", "no-store"),
                   ("Content-Length", str(len(body))), ("Content-Type", "text/html; charset=utf-8"),
                   ("Last-Modified", K8S_DASHBOARD_LAST_MODIFIED)]
        reply = go_response(proto, "200 OK", headers, b"" if method == "HEAD" else body, extra_length=False)
    else:
        # http.FileServer's answer for a missing file: http.Error(w, "404 page not found", 404).
        body = b"404 page not found\n"
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff")]
        reply = go_response(proto, "404 Not Found", headers, body)
    await finish(writer, reply)


# --------------------------------------------------------------------------------------------------
# Hadoop IPC
#
# Source: apache/hadoop rel/release-3.3.6, hadoop-common-project/hadoop-common/src/main/java/org/apache/
# hadoop/ipc/Server.java.  Connection.readAndProcess reads the 4 bytes of the connection header's magic
# ("hrpc") and the 3 bytes after it (HEADER_LEN_AFTER_HRPC_PART), and only then looks at them: when the first
# 4 bytes are "GET " (HTTP_GET_BYTES) it answers with RECEIVED_HTTP_REQ_RESPONSE (below) and closes.  So it
# says nothing on connect, and nothing to a client that sends fewer than 7 bytes (nmap's GenericLines,
# "\r\n\r\n") until that client gives up.  Any other 7 bytes get a VersionMismatch RPC response
# (setupBadVersionResponse), which this stand-in does not emulate: it closes instead (nmap never gets that
# far: GetRequest, the first probe with 7 bytes or more sent to this port, is answered and matched).

HADOOP_HTTP_GET_BYTES = b"GET "
HADOOP_HEADER_LEN = 4 + 3
HADOOP_RECEIVED_HTTP_REQ_RESPONSE = (
    b"HTTP/1.1 404 Not Found\r\n"
    b"Content-type: text/plain\r\n\r\n"
    b"It looks like you are making an HTTP request to a Hadoop IPC port. "
    b"This is not the correct port for the web interface on this daemon.\r\n"
)


async def serve_hadoop_ipc(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await asyncio.wait_for(reader.readexactly(HADOOP_HEADER_LEN), READ_TIMEOUT)
    except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
        writer.close()
        return
    await finish(writer, HADOOP_RECEIVED_HTTP_REQ_RESPONSE if head[:4] == HADOOP_HTTP_GET_BYTES else b"")


# --------------------------------------------------------------------------------------------------
# CQL native protocol (the server of scanfleet's seed rule "cassandra-native")
#
# Source: scylladb/scylladb (CQL native protocol server; the same code from 2.x to 6.x, e.g.
# scylla-5.4.0), transport/server.cc, cql_server::connection::read_frame: before the first frame the server
# reads exactly ONE byte, takes it as the protocol version (_version, a cql_protocol_version_type = uint8_t,
# not masked) and, if it is not a supported version (3 to 4 in current releases), throws protocol_exception("Invalid or
# unsupported protocol version: {:d}").  connection::process answers it with make_error(stream 0,
# PROTOCOL_ERROR = 0x000A, message) in a frame of the current version 4 (response bit set: 0x84, header of
# protocol v3+: version, flags, 2-byte stream, opcode ERROR = 0x00, 4-byte length), then closes.  So every
# client byte that is not a CQL version gets this frame at once, the number being that byte (0-255).
# (Apache Cassandra says "Invalid or unsupported protocol version (N); supported versions are (...)"
# instead: that is what nmap's stock cassandra-native rules know.)

CQL_SUPPORTED_VERSIONS = (3, 4)
CQL_ERROR_FRAME_VERSION = 0x84  # response direction bit | protocol version 4
CQL_OPCODE_ERROR = 0x00
CQL_PROTOCOL_ERROR = 0x000A


def cql_error_frame(message: str, stream: int = 0) -> bytes:
    text = message.encode("utf-8")
    body = CQL_PROTOCOL_ERROR.to_bytes(4, "big") + len(text).to_bytes(2, "big") + text
    header = bytes([CQL_ERROR_FRAME_VERSION, 0]) + stream.to_bytes(2, "big") + bytes([CQL_OPCODE_ERROR])
    return header + len(body).to_bytes(4, "big") + body


async def serve_cql(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        first = await asyncio.wait_for(reader.readexactly(1), READ_TIMEOUT)
    except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
        writer.close()
        return
    version = first[0]
    if version in CQL_SUPPORTED_VERSIONS:
        # A real client's STARTUP/OPTIONS: not emulated (no nmap probe starts with these bytes).
        writer.close()
        return
    await finish(writer, cql_error_frame(f"Invalid or unsupported protocol version: {version}"))


# --------------------------------------------------------------------------------------------------
# Server

HANDLERS: dict[str, Handler] = {
    "silent": serve_silent,
    "close": serve_close,
    "grafana": serve_grafana,
    "k8s-dashboard": serve_k8s_dashboard,
    "hadoop-ipc": serve_hadoop_ipc,
    "cql": serve_cql,
}


def load_config(path: str) -> tuple[str, list[tuple[int, str]]]:
    """Read and check the config; return (bind address, [(port, kind), ...])."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"responder: cannot read config {path}: {exc}") from exc
    bind = data.get("bind", "0.0.0.0")
    ports: list[tuple[int, str]] = []
    for entry in data.get("ports", []):
        port, kind = entry.get("port"), entry.get("kind")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise SystemExit(f"responder: {path}: bad port {port!r}")
        if kind not in HANDLERS:
            raise SystemExit(f"responder: {path}: port {port}: unknown kind {kind!r} "
                             f"(one of {', '.join(sorted(HANDLERS))})")
        if any(p == port for p, _ in ports):
            raise SystemExit(f"responder: {path}: port {port} listed twice")
        ports.append((port, kind))
    if not ports:
        raise SystemExit(f"responder: {path}: no ports")
    return bind, ports


def logged(kind: str, port: int, handler: Handler) -> Handler:
    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        LOG.debug("%s:%d connection from %s", kind, port, peer)
        try:
            await handler(reader, writer)
        except Exception:  # one connection's failure must not end the server
            LOG.exception("%s:%d: error serving %s", kind, port, peer)
            writer.close()
    return run


def drop_privileges(user: str) -> None:
    """Become USER (after binding: some of the ports are below 1024)."""
    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


async def serve(bind: str, ports: list[tuple[int, str]], user: str | None) -> None:
    servers = []
    for port, kind in ports:  # backlog: the scale lab's silent host gets about a thousand connections at once
        servers.append(await asyncio.start_server(logged(kind, port, HANDLERS[kind]), bind, port,
                                                  reuse_address=True, backlog=1024))
    if user:
        drop_privileges(user)
    LOG.info("listening on %s: %s%s", bind, ", ".join(f"{p}/{k}" for p, k in ports),
             f" (as {user})" if user else "")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()
    LOG.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="scanfleet lab responder (see the module docstring)")
    parser.add_argument("--config", required=True, help="JSON config: bind address and ports")
    parser.add_argument("--check", action="store_true", help="only validate the config")
    parser.add_argument("--user", help="user to run as once every port is bound (started as root)")
    parser.add_argument("--debug", action="store_true", help="log every connection")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s responder %(levelname)s %(message)s")
    bind, ports = load_config(args.config)
    if args.check:
        print(f"{args.config}: {len(ports)} port(s) OK")
        return 0
    asyncio.run(serve(bind, ports, args.user))
    return 0


if __name__ == "__main__":
    sys.exit(main())
