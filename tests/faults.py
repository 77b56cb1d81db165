"""A fault-injecting HTTP reverse proxy to put between an S3 client (s3fs) and moto.

:func:`fault_proxy` binds ``127.0.0.1`` on a free port (listening before it yields: no polling
or sleeping needed), forwards every request (method, path, query, headers, body) to an upstream
server and relays the response, except where it injects a fault::

    with moto_server() as s3, fault_proxy(s3.url, seed=1, error_rate=0.5) as proxy:
        fs = s3fs.S3FileSystem(**s3_options(proxy.url))
        fs.pipe_file("bucket/key", b"x")  # botocore retries until one attempt gets through
        print(proxy.injected, proxy.log)  # Counter({'error': ...}), [("PUT", ...), ...]

Faults, decided in the order requests arrive by one ``random.Random(seed)``:

``error``
    Answer 500 ``InternalError``, 503 ``ServiceUnavailable`` or 503 ``SlowDown`` (with S3's
    XML error body; ``error_codes`` narrows the choice) without forwarding.
``drop``
    Read the request, then close the connection without answering and without forwarding.
``delay``
    Wait a little (``delay_s``, 20-50 ms) before forwarding. A fault, never a synchronisation.
``lost_ack``
    For a ``PUT`` carrying ``If-None-Match: *`` (put-if-absent): forward it and, when the
    upstream accepted it (2xx: the object now exists), lose the answer: close the connection
    (``lost_ack_as="drop"``) or answer a server error instead (``lost_ack_as`` one of its
    codes, e.g. ``"InternalError"``: real S3 does that now and then after storing the object).
    ``lost_ack_first=N`` does this to the first N accepted conditional PUTs (a large N: to
    every one; a retry then meets 412, which is relayed), ``lost_ack_rate`` to that fraction.
``denied``
    Answer 403 ``AccessDenied`` to every request about a bucket in ``denied_buckets``.

``max_streak`` bounds how many times in a row the same request (method and target) meets an
``error`` or a ``drop``: past it the request is forwarded, so bounded client retries always get
through and a test cannot fail by the luck of the draw (requests from concurrent tasks arrive
in no fixed order, so which request meets which fault varies from run to run).

``Proxy.injected`` counts the faults injected, per kind; ``Proxy.forwarded`` the requests
forwarded upstream; ``Proxy.log`` holds ``(method, path, fault or "")`` per request;
``Proxy.errors`` the proxy's own failures to reach the upstream (a test should find none).

A network, for tests and benchmarks (:func:`latency_proxy`: the same proxy without faults)::

    with moto_server() as s3, latency_proxy(s3.url, latency_s=0.05, bandwidth=100e6) as net:
        fs = s3fs.S3FileSystem(**s3_options(net.url))
        fs.cat_file("bucket/key")          # at least 50 ms, at most 100 MB/s for all clients
        exchanges, in_flight = net.take()  # every request answered, and the most at once

``latency_s`` (plus a seeded uniform draw from ``[0, jitter_s]``) is waited before each request
is handled, by that request's own handler thread: concurrent requests wait concurrently, as
round trips over a real network do. ``bandwidth`` (bytes/s) is one link shared by every
connection: response bodies go out in slices of 64 KiB, each sent once the link has carried
the slices reserved before it, so N bytes take at least ``N / bandwidth`` seconds whatever the
number of connections. ``Proxy.exchanges`` records each answer (:class:`Exchange`: method,
path, query, status, body size, network delay); ``max_in_flight`` the most requests handled
at once; ``connections`` the client connections accepted (keep-alive reuses them).
:func:`proxy_process` runs the proxy in a child process, for benchmarks, where handling
hundreds of requests a second must not take the measured client's interpreter lock.

The proxy speaks HTTP/1.1 with keep-alive to its clients (aiohttp, under botocore, reuses
connections), answers ``Expect: 100-continue`` itself (``http.server`` does), reads chunked
request bodies, and opens one upstream connection per request (werkzeug, under moto, closes
each after one response). Every answer it sends with a body has a ``Content-Length``; a HEAD
answer has the upstream's. On exit it stops serving, shuts down the connections clients still
hold open (so their handler threads end), joins every thread and closes the listening socket.
"""

from __future__ import annotations

import contextlib
import http.client
import multiprocessing
import random
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape

__all__ = [
    "FAULT_KINDS",
    "Exchange",
    "Proxy",
    "ProxyProcess",
    "fault_proxy",
    "latency_proxy",
    "proxy_process",
    "s3_error_body",
]

HOST = "127.0.0.1"
#: The kinds of fault the proxy injects (the keys of ``Proxy.injected``).
FAULT_KINDS = ("error", "drop", "delay", "lost_ack", "denied")
#: Server errors injected by ``error_rate``: (status, S3 error code, message).
SERVER_ERRORS = (
    (500, "InternalError", "We encountered an internal error. Please try again."),
    (503, "ServiceUnavailable", "Service is unable to handle request."),
    (503, "SlowDown", "Please reduce your request rate."),
)
ERROR_CODES = {code: (status, code, message) for status, code, message in SERVER_ERRORS}
#: Headers about one hop, not the message: neither forwarded nor relayed as they are.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "content-length",
        "expect",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
#: How often the server checks for shutdown (``shutdown()`` waits up to this long).
_POLL_S = 0.05
_UPSTREAM_TIMEOUT_S = 30
#: Bytes of a response body sent at a time under a bandwidth cap.
_SLICE = 64 * 2**10
#: Connections waiting to be accepted (``socketserver``'s default, 5, makes a client opening
#: dozens at once wait for SYN retransmits: a second each).
_BACKLOG = 256


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request the proxy answered (or dropped), as the client saw it."""

    #: The request's method (``GET``, ``HEAD``, ``PUT``, ...).
    method: str
    #: Its percent-decoded path, without the query (S3: ``/bucket/key``).
    path: str
    #: Its raw query string (S3's listings carry ``list-type=2``).
    query: str
    #: The status answered, ``None`` for a dropped connection.
    status: int | None
    #: The size of the body answered.
    body_bytes: int
    #: The simulated network delay waited before handling it (latency plus jitter).
    delay_s: float


def s3_error_body(code: str, message: str, resource: str = "") -> bytes:
    """S3's XML error document for ``code``."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        f"<Resource>{escape(resource)}</Resource><RequestId>hubzarr-fault-proxy</RequestId>"
        "</Error>"
    ).encode()


@dataclass
class Proxy:
    """A running fault proxy: its ``url``, its settings, and what it has done so far."""

    url: str
    seed: int
    error_rate: float = 0.0
    drop_rate: float = 0.0
    delay_rate: float = 0.0
    delay_s: tuple[float, float] = (0.02, 0.05)
    error_codes: tuple[str, ...] = tuple(code for _, code, _ in SERVER_ERRORS)
    lost_ack_rate: float = 0.0
    lost_ack_first: int = 0
    lost_ack_as: str = "drop"
    denied_buckets: frozenset[str] = frozenset()
    max_streak: int | None = None
    latency_s: float = 0.0
    jitter_s: float = 0.0
    bandwidth: float | None = None
    injected: Counter[str] = field(default_factory=Counter)
    forwarded: int = 0
    log: list[tuple[str, str, str]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    exchanges: list[Exchange] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    connections: int = 0
    _random: random.Random = field(init=False, repr=False)
    _jitter: random.Random = field(init=False, repr=False)
    _link_free_at: float = field(default=0.0, repr=False)
    _errors: list[tuple[int, str, str]] = field(init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _lost_acks: int = field(default=0, repr=False)
    _streaks: dict[tuple[str, str], int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        # A generator of its own: the faults drawn do not depend on the network's settings.
        self._jitter = random.Random(self.seed)
        if self.latency_s < 0 or self.jitter_s < 0:
            raise ValueError("latency_s and jitter_s must be >= 0")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise ValueError("bandwidth must be > 0 bytes/s, or None for no cap")
        self._errors = [e for e in SERVER_ERRORS if e[1] in self.error_codes]
        if not self._errors:
            raise ValueError(f"no server error among {self.error_codes}")
        if self.lost_ack_as != "drop" and self.lost_ack_as not in ERROR_CODES:
            raise ValueError(f"lost_ack_as must be 'drop' or one of {ERROR_CODES}")

    def _note(self, method: str, path: str, fault: str, *, delayed: bool = False) -> None:
        # Called under the lock: handler threads run concurrently.
        if fault:
            self.injected[fault] += 1
        if delayed:
            self.injected["delay"] += 1
        if fault not in ("denied", "error", "drop"):
            self.forwarded += 1
        self.log.append((method, path, fault or ("delay" if delayed else "")))

    def decide(self, method: str, target: str) -> tuple[str, Any]:
        """Choose what happens to a request before forwarding: ``(fault or "", detail)``.

        The fault is ``"denied"``, ``"error"`` (detail: status, code, message), ``"drop"``,
        ``"delay"`` (detail: seconds) or ``""``. Every request draws the same numbers from the
        seeded generator, whatever its fate, so a given order of requests meets the same faults
        on every run.
        """
        path = unquote(urlsplit(target).path)
        bucket = path.lstrip("/").split("/", 1)[0]
        key = (method, target)
        with self._lock:
            error, drop, delay = (self._random.random() for _ in range(3))
            pick = self._errors[self._random.randrange(len(self._errors))]
            seconds = self._random.uniform(*self.delay_s)
            may_fail = self.max_streak is None or self._streaks.get(key, 0) < self.max_streak
            fault: str
            detail: Any = None
            if bucket in self.denied_buckets:
                fault = "denied"
            elif may_fail and error < self.error_rate:
                fault, detail = "error", pick
            elif may_fail and drop < self.drop_rate:
                fault = "drop"
            elif delay < self.delay_rate:
                fault, detail = "delay", seconds
            else:
                fault = ""
            if fault in ("error", "drop"):
                self._streaks[key] = self._streaks.get(key, 0) + 1
                self._note(method, path, fault)
            elif fault == "denied":
                self._note(method, path, fault)
            else:  # forwarded: noted once the upstream has answered
                self._streaks.pop(key, None)
            return fault, detail

    def network_delay(self) -> float:
        """Seconds to wait before handling the next request: latency plus a jitter draw."""
        if not self.jitter_s:
            return self.latency_s
        with self._lock:
            return self.latency_s + self._jitter.uniform(0.0, self.jitter_s)

    def link_slot(self, nbytes: int) -> float:
        """Reserve the shared link for ``nbytes``; return when (``time.monotonic``) they are
        through it. Without a bandwidth cap, now."""
        now = time.monotonic()
        if self.bandwidth is None:
            return now
        with self._lock:
            self._link_free_at = max(now, self._link_free_at) + nbytes / self.bandwidth
            return self._link_free_at

    @contextlib.contextmanager
    def handling(self) -> Iterator[None]:
        """Count a request as in flight while the block runs (for ``max_in_flight``)."""
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1

    def record(self, exchange: Exchange) -> None:
        """Add ``exchange`` to ``exchanges``."""
        with self._lock:  # take() swaps the list
            self.exchanges.append(exchange)

    def take(self) -> tuple[list[Exchange], int]:
        """Return the exchanges since the last call and the most requests in flight at once
        since then; start counting both afresh."""
        with self._lock:
            exchanges, self.exchanges = self.exchanges, []
            most, self.max_in_flight = self.max_in_flight, self.in_flight
            return exchanges, most

    def answered(self, method: str, target: str, *, created: bool, delayed: bool) -> bool:
        """Note that a forwarded request was answered; return whether to lose the answer.

        ``created``: it is a conditional PUT the upstream accepted (only those lose answers).
        """
        path = unquote(urlsplit(target).path)
        with self._lock:
            lose = False
            if created:
                roll = self._random.random()
                lose = self._lost_acks < self.lost_ack_first or roll < self.lost_ack_rate
                if lose:
                    self._lost_acks += 1
            self._note(method, path, "lost_ack" if lose else "", delayed=delayed)
            return lose


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's aiohttp session expects
    disable_nagle_algorithm = True  # answers go out at once, not after the client's ACK
    server: _ProxyServer
    delay_s: float = 0.0

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()  # the CRLF ending the chunk
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _exchanged(self, status: int | None, body_bytes: int) -> None:
        parts = urlsplit(self.path)
        exchange = Exchange(
            self.command, unquote(parts.path), parts.query, status, body_bytes, self.delay_s
        )
        self.server.proxy.record(exchange)

    def _drop(self) -> None:
        """Close the connection without answering."""
        self._exchanged(None, 0)
        self.close_connection = True
        # Now, not when the handler returns: the client sees end-of-stream at once.
        self.connection.shutdown(socket.SHUT_RDWR)

    def _answer(self, status: int, headers: Iterable[tuple[str, str]], body: bytes) -> None:
        self.send_response_only(status)
        length = None
        for name, value in headers:
            if name.lower() == "content-length":
                length = value
            elif name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        if self.command == "HEAD" or status in (204, 304):
            if length is not None:  # a HEAD answer gives the size a GET would get
                self.send_header("Content-Length", length)
            body = b""
        else:
            self.send_header("Content-Length", str(len(body)))
        self._exchanged(status, len(body))
        if self.server.proxy.bandwidth is None:
            # Headers and body in one write: no wait for a delayed ACK between them.
            self._headers_buffer.extend((b"\r\n", body))
            self.flush_headers()
            return
        self.end_headers()
        view = memoryview(body)
        for start in range(0, len(body), _SLICE):
            piece = view[start : start + _SLICE]
            # The simulated link's transfer time, not a synchronisation.
            time.sleep(max(0.0, self.server.proxy.link_slot(len(piece)) - time.monotonic()))
            self.wfile.write(piece)

    def _error(self, status: int, code: str, message: str, path: str) -> None:
        xml = s3_error_body(code, message, path)
        self._answer(status, [("Content-Type", "application/xml")], xml)

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        upstream = self.server.upstream
        conn = http.client.HTTPConnection(
            upstream.hostname, upstream.port, timeout=_UPSTREAM_TIMEOUT_S
        )
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    conn.putheader(name, value)  # Host included: it is signed
            if body or self.command in ("PUT", "POST"):
                conn.putheader("Content-Length", str(len(body)))
            conn.putheader("Connection", "close")
            conn.endheaders(body or None)
            response = conn.getresponse()
            data = response.read()  # de-chunked; relayed with a Content-Length
            return response.status, response.getheaders(), data
        except Exception as exc:
            self.server.proxy.errors.append(exc)
            raise
        finally:
            conn.close()

    def _handle(self) -> None:
        with self.server.proxy.handling():
            self._exchange()

    def _exchange(self) -> None:
        proxy = self.server.proxy
        path = unquote(urlsplit(self.path).path)
        body = self._read_body()  # always: the next request on this connection follows it
        self.delay_s = proxy.network_delay()
        if self.delay_s:
            time.sleep(self.delay_s)  # the simulated network's round trip
        fault, detail = proxy.decide(self.command, self.path)
        if fault == "drop":
            self._drop()
            return
        if fault == "error":
            self._error(*detail, path)
            return
        if fault == "denied":
            self._error(403, "AccessDenied", "Access Denied", path)
            return
        if fault == "delay":
            time.sleep(detail)  # the injected fault itself
        status, headers, data = self._forward(body)
        conditional = self.command == "PUT" and self.headers.get("If-None-Match") == "*"
        lose = proxy.answered(
            self.command,
            self.path,
            created=conditional and 200 <= status < 300,
            delayed=fault == "delay",
        )
        if lose and proxy.lost_ack_as == "drop":
            self._drop()
        elif lose:
            self._error(*ERROR_CODES[proxy.lost_ack_as], path)
        else:
            self._answer(status, headers, data)

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = False  # so server_close() joins every handler thread
    block_on_close = True
    request_queue_size = _BACKLOG

    def __init__(self, proxy: Proxy, upstream: str) -> None:
        super().__init__((HOST, 0), _Handler)
        self.proxy = proxy
        self.upstream = urlsplit(upstream)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
            self.proxy.connections += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def hang_up(self) -> None:
        """End the connections clients still hold open, so their handler threads return."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):  # its handler closed it meanwhile
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up, or hung up on by hang_up(), is no error of the proxy's; failing
        # to reach the upstream is recorded in Proxy.errors.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


@contextlib.contextmanager
def fault_proxy(
    upstream_url: str,
    *,
    seed: int,
    error_rate: float = 0.0,
    drop_rate: float = 0.0,
    delay_rate: float = 0.0,
    delay_s: tuple[float, float] = (0.02, 0.05),
    error_codes: Iterable[str] = ("InternalError", "ServiceUnavailable", "SlowDown"),
    lost_ack_rate: float = 0.0,
    lost_ack_first: int = 0,
    lost_ack_as: str = "drop",
    denied_buckets: Iterable[str] = (),
    max_streak: int | None = None,
    latency_s: float = 0.0,
    jitter_s: float = 0.0,
    bandwidth: float | None = None,
) -> Iterator[Proxy]:
    """Run a fault-injecting proxy to ``upstream_url`` on ``127.0.0.1`` and a free port.

    Parameters
    ----------
    upstream_url : str
        ``http://host:port`` of the server to forward to.
    seed : int
        Seeds the generator that decides the faults.
    error_rate, drop_rate, delay_rate : float
        Fractions of requests answered 500/503, dropped, or delayed by ``delay_s`` seconds.
    error_codes : iterable of str
        The server errors to choose from: ``InternalError`` (500), ``ServiceUnavailable`` and
        ``SlowDown`` (503).
    lost_ack_rate, lost_ack_first : float, int
        Lose the answer of that fraction of, or of the first N, accepted conditional PUTs.
    lost_ack_as : str
        Lose an answer by closing the connection (``"drop"``), or by answering that server
        error instead (``"InternalError"``, ``"ServiceUnavailable"`` or ``"SlowDown"``).
    denied_buckets : iterable of str
        Buckets every request to which is answered 403 AccessDenied.
    max_streak : int, optional
        At most this many errors and drops in a row for one request (method and target).
    latency_s, jitter_s : float
        Seconds every request waits before it is handled: ``latency_s`` plus a uniform draw
        from ``[0, jitter_s]`` (seeded by ``seed``).
    bandwidth : float, optional
        Bytes per second that response bodies share, over all connections; ``None``: no cap.

    Yields
    ------
    Proxy
        The running proxy; the faults it injected are in ``injected``.
    """
    proxy = Proxy(
        url="",
        seed=seed,
        error_rate=error_rate,
        drop_rate=drop_rate,
        delay_rate=delay_rate,
        delay_s=delay_s,
        error_codes=tuple(error_codes),
        lost_ack_rate=lost_ack_rate,
        lost_ack_first=lost_ack_first,
        lost_ack_as=lost_ack_as,
        denied_buckets=frozenset(denied_buckets),
        max_streak=max_streak,
        latency_s=latency_s,
        jitter_s=jitter_s,
        bandwidth=bandwidth,
    )
    # The server binds and listens in its constructor: reachable at once.
    httpd = _ProxyServer(proxy, upstream_url)
    proxy.url = f"http://{HOST}:{httpd.server_port}"
    thread = threading.Thread(
        target=httpd.serve_forever, args=(_POLL_S,), name="fault-proxy", daemon=True
    )
    thread.start()
    try:
        yield proxy
    finally:
        httpd.shutdown()
        thread.join()
        httpd.hang_up()
        httpd.server_close()  # joins the handler threads


@contextlib.contextmanager
def latency_proxy(
    upstream_url: str,
    *,
    latency_s: float,
    jitter_s: float = 0.0,
    bandwidth: float | None = None,
    seed: int = 0,
) -> Iterator[Proxy]:
    """Run a proxy to ``upstream_url`` that simulates a network and injects no fault.

    Parameters
    ----------
    upstream_url : str
        ``http://host:port`` of the server to forward to.
    latency_s : float
        Seconds every request waits before it is forwarded (a round trip to the server).
    jitter_s : float
        Up to this many seconds more, drawn uniformly per request (seeded by ``seed``).
    bandwidth : float, optional
        Bytes per second that response bodies share, over all connections; ``None``: no cap.
    seed : int
        Seeds the jitter.

    Yields
    ------
    Proxy
        The running proxy: ``url``, and what it relayed (``exchanges``, ``max_in_flight``,
        ``connections``; :meth:`Proxy.take`).

    Raises
    ------
    ValueError
        If a latency or jitter is negative or the bandwidth not positive.
    """
    with fault_proxy(
        upstream_url, seed=seed, latency_s=latency_s, jitter_s=jitter_s, bandwidth=bandwidth
    ) as proxy:
        yield proxy


@dataclass
class ProxyProcess:
    """A proxy running in a child process (:func:`proxy_process`): its ``url``, and
    :meth:`take` to ask it what it relayed."""

    url: str
    _conn: Connection = field(repr=False)

    def take(self) -> tuple[list[Exchange], int]:
        """:meth:`Proxy.take` in the child: the exchanges since the last call and the most
        requests in flight at once since then."""
        self._conn.send("take")
        exchanges, most = self._conn.recv()
        return exchanges, most


def _serve_proxy(conn: Connection, upstream_url: str, settings: dict[str, Any]) -> None:
    with fault_proxy(upstream_url, **settings) as proxy:
        conn.send(proxy.url)
        while conn.recv() == "take":  # until told to stop
            conn.send(proxy.take())


@contextlib.contextmanager
def proxy_process(upstream_url: str, **settings: Any) -> Iterator[ProxyProcess]:
    """Run :func:`fault_proxy` (``seed`` defaults to 0) in a child process of its own.

    The child is spawned (not forked: the parent may hold threads and event loops), binds a
    free port and sends its URL back before this yields; on exit it is told to stop, which it
    does as :func:`fault_proxy` does, and is joined.

    Parameters
    ----------
    upstream_url : str
        ``http://host:port`` of the server to forward to.
    **settings
        :func:`fault_proxy`'s keyword arguments (``latency_s``, ``bandwidth``, ...).

    Yields
    ------
    ProxyProcess
        The proxy's ``url``, and :meth:`ProxyProcess.take` for what it relayed.

    Raises
    ------
    RuntimeError
        If the child exits before it is serving (its traceback is on stderr).
    """
    settings.setdefault("seed", 0)
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(
        target=_serve_proxy, args=(child, upstream_url, settings), name="latency-proxy"
    )
    process.start()
    child.close()  # the child's end lives in the child: recv() sees EOF if the child dies
    try:
        try:
            url = parent.recv()
        except EOFError:
            raise RuntimeError("the proxy process exited before serving") from None
        yield ProxyProcess(url, parent)
    finally:
        with contextlib.suppress(OSError):  # BrokenPipeError: the child is gone already
            parent.send("stop")
        process.join(_UPSTREAM_TIMEOUT_S)
        if process.is_alive():
            process.kill()
            process.join()
        parent.close()
