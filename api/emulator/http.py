"""HTTP plumbing: the threaded loopback server, request reading, recorded requests, answers.

Keep-alive HTTP/1.1: every answer carries Content-Length. API errors are DashScope's JSON
``{"request_id", "code", "message"}``; the storage side (result downloads, the upload host)
answers errors in OSS's XML instead.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .errors import ApiError

log = logging.getLogger(__name__)

JSON = "application/json; charset=utf-8"


@dataclass
class RecordedRequest:
    """One request as the emulator received it; the API key itself is never kept."""

    method: str
    path: str  # without the query string
    query: str
    region: str | None  # None outside the API prefixes (result downloads, the upload host)
    headers: Headers  # Authorization redacted; look-ups ignore case
    body: bytes
    json: Any  # the parsed body, or None
    time: float
    key_id: str | None  # short hash of the bearer token, or None
    status: int | None = None  # the status answered; None while running or when none was sent
    notes: list[str] = field(default_factory=list)  # what the service did silently (truncation)


class Headers(dict):
    """A plain dict of request headers whose look-ups ignore case, like HTTP's."""

    def _key(self, name: object) -> str | None:
        return next((k for k in self if k.lower() == str(name).lower()), None)

    def __getitem__(self, name: str) -> str:
        key = self._key(name)
        if key is None:
            raise KeyError(name)
        return super().__getitem__(key)

    def get(self, name: str, default: Any = None) -> Any:
        key = self._key(name)
        return default if key is None else super().__getitem__(key)

    def __contains__(self, name: object) -> bool:
        return self._key(name) is not None


@dataclass
class Response:
    """An answer to send: status, body, Content-Type and extra headers."""

    status: int
    body: bytes = b""
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)


def request_id() -> str:
    return str(uuid.uuid4())


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(obj, ensure_ascii=False).encode())


def error_response(err: ApiError) -> Response:
    """The service's JSON error body for *err*, with a fresh request id."""
    body = {"request_id": request_id(), "code": err.code, "message": err.message}
    return Response(err.status, json.dumps(body, ensure_ascii=False).encode(), headers=err.headers)


def oss_error(status: int, code: str, message: str, **extra: str) -> Response:
    """An error as OSS writes it: XML, not DashScope's JSON."""
    items = {"Code": code, "Message": message, "RequestId": uuid.uuid4().hex[:24].upper(),
             "HostId": "emulator.oss", **extra}
    xml = "".join(f"  <{k}>{_xml_escape(str(v))}</{k}>\n" for k, v in items.items())
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n{xml}</Error>\n'.encode()
    return Response(status, body, "application/xml")


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def redacted_headers(headers: Iterable[tuple[str, str]]) -> Headers:
    """The request headers with the Authorization value reduced to its last 4 characters."""
    out = Headers()
    for name, value in headers:
        if name.lower() == "authorization":
            scheme, _, token = value.strip().partition(" ")
            tail = token.strip()[-4:] if len(token.strip()) >= 8 else ""
            value = f"Bearer sk-…{tail}" if scheme.lower() == "bearer" else "…"
        out[name] = value
    return out


def content_length(headers: Any) -> int:
    """The announced body length; -1 for chunked transfer coding; ValueError if garbled."""
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        return -1
    length = int(headers.get("Content-Length") or 0)
    if length < 0:
        raise ValueError(length)
    return length


def read_body(h: BaseHTTPRequestHandler, length: int, cap: int = 0) -> bytes | None:
    """Read a body of *length* bytes, or a chunked one (length -1) to its end; None when a
    chunked body passes *cap* bytes (0: no cap): the rest is read and dropped, so that the
    client is still reading when the refusal comes."""
    if length >= 0:
        return h.rfile.read(length) if length else b""
    chunks, total = [], 0  # chunked transfer coding: size line, data, CRLF ... until a 0 size
    while True:
        size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
        if not size:
            while h.rfile.readline().strip():  # trailers
                pass
            return None if cap and total > cap else b"".join(chunks)
        total += size
        if cap and total > cap:
            chunks.clear()  # over the cap: memory stays bounded whatever the client sends
            _skip(h, size)
        else:
            chunks.append(h.rfile.read(size))
        h.rfile.readline()


def _skip(h: BaseHTTPRequestHandler, size: int) -> None:
    while size > 0:
        data = h.rfile.read(min(size, 1 << 16))
        if not data:
            return
        size -= len(data)


def drain(h: BaseHTTPRequestHandler, length: int) -> None:
    """Read and discard an unread body so closing does not reset the client before it reads."""
    try:
        h.connection.settimeout(2.0)
        while length > 0:
            chunk = h.rfile.read1(min(length, 1 << 16))
            if not chunk:
                break
            length -= len(chunk)
    except OSError:
        pass
    h.close_connection = True


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def send(h: BaseHTTPRequestHandler, response: Response, *, truncate: bool = False,
         linger: int = 0, close: bool = False, drip: tuple[float, int] | None = None) -> None:
    """Write *response*; truncate: announce the full length, send half and close; linger:
    drain that many unread body bytes first, then close; drip (seconds, bytes): the body a
    few bytes at a time, spread over that many seconds."""
    body = response.body
    h.send_response(response.status)
    h.send_header("Content-Type", response.content_type)
    h.send_header("Content-Length", str(len(body)))
    for name, value in response.headers.items():
        h.send_header(name, value)
    if truncate or linger or close:
        h.send_header("Connection", "close")
    h.end_headers()
    if h.command != "HEAD" and drip:
        _drip(h, body, *drip)
    elif h.command != "HEAD":
        h.wfile.write(body[: len(body) // 2] if truncate else body)
    h.wfile.flush()
    if linger:
        drain(h, linger)


def _drip(h: BaseHTTPRequestHandler, body: bytes, duration: float, chunk: int) -> None:
    started = time.monotonic()
    for offset in range(0, len(body), max(1, chunk)):
        h.wfile.write(body[offset:offset + chunk])
        h.wfile.flush()
        due = started + duration * min(len(body), offset + chunk) / len(body)
        time.sleep(max(0.0, due - time.monotonic()))


def require_loopback(host: str) -> None:
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"the emulator listens on loopback addresses only, not {host!r}")


class Server(ThreadingHTTPServer):
    """A threaded server handing every request to *handle*; it can close idle connections."""

    daemon_threads = True
    block_on_close = False  # stop() closes connections itself; do not wait for idle ones
    allow_reuse_address = True

    def __init__(self, host: str, port: int, handle: Callable[[Handler], None],
                 clock: Callable[[], float] = time.time) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.handle = handle
        self.clock = clock  # the service's time: the Date header of every answer
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__((host, port), Handler)

    def track(self, conn: socket.socket, alive: bool) -> None:
        with self._connections_lock:
            (self._connections.add if alive else self._connections.discard)(conn)

    def close_connections(self) -> None:
        """Shut every open connection: idle keep-alive ones would block their threads."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up early (timeouts, tests of faults) are routine, not tracebacks.
        log.debug("connection from %s ended abnormally", client_address, exc_info=True)


class Handler(BaseHTTPRequestHandler):
    """Passes every method to the server's handle function."""

    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries Content-Length
    server_version = "DashScopeEmulator"
    timeout = 60  # an idle keep-alive connection is closed after this
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stall
    server: Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        super().finish()

    def _dispatch(self) -> None:
        self.server.handle(self)

    def date_time_string(self, timestamp: float | None = None) -> str:
        return super().date_time_string(self.server.clock() if timestamp is None else timestamp)

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = _dispatch

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's signature
        log.debug("%s " + format, self.address_string(), *args)
