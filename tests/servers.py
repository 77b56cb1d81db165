"""In-process S3 (moto) and GCS (gcp-storage-emulator) servers for tests, recording requests.

Both context managers bind ``127.0.0.1`` on a free port (the listening socket is open before
they yield, so no polling or sleeping is needed), yield a :class:`Server`, and stop the server
and close its socket on exit::

    with moto_server() as s3:
        make_bucket(s3.url, "bucket")
        fs = s3fs.S3FileSystem(**s3_options(s3.url))
        fs.pipe_file("bucket/a/b", b"x")
        assert [(r.method, r.path) for r in s3.requests] == [("PUT", "/bucket/a/b")]

    with gcs_emulator() as gcs:
        make_gcs_bucket(gcs.url, "bucket")
        fs = gcsfs.core.GCSFileSystem(**gcs_options(gcs.url))
        fs.pipe_file("bucket/a/b", b"x", mode="create")
        assert gcs.requests[-1].query["ifGenerationMatch"] == "0"

Every HTTP request a server receives is appended to ``Server.requests`` (a :class:`Request`)
before it is handled; its body and response status are filled in as they become known.
``Server.reset()`` clears the list.

The emulator *ignores* GCS preconditions (``ifGenerationMatch=0`` does not stop an overwrite),
so GCS tests can assert only that the client sent one. moto enforces S3's ``If-None-Match: *``
(412, which s3fs raises as ``FileExistsError``).

moto's backends are process-global: every moto server (and ``mock_aws``) in one process shares
the same buckets. :func:`moto_server` resets moto when it stops; use distinct bucket names if
servers overlap. Each pytest-xdist worker is a separate process, with its own servers.

gcsfs chooses the class behind ``gcsfs.GCSFileSystem`` (and so behind ``fsspec.filesystem("gs")``)
once, when gcsfs is first imported, from the environment variable
``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT`` (unset means ``true``). The "true" class,
``ExtendedGcsFileSystem``, asks the Storage Control gRPC API for each bucket's layout and,
against the emulator, retries for 60 s or more per bucket. So either set the variable to
``false`` before anything imports gcsfs (at the top of ``conftest.py``, before importing
hubzarr; ``monkeypatch.setenv`` in a fixture is too late once gcsfs is imported, and the
variable is then inherited by spawned worker processes), or use ``gcsfs.core.GCSFileSystem``,
which is always the plain class: :func:`ensure_plain_gcsfs` registers it for ``gs``/``gcs``.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import socket
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from email.parser import BytesParser
from functools import partial
from http.server import HTTPServer
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

HOST = "127.0.0.1"
#: Credentials and region for moto (which checks neither).
S3_KEY = S3_SECRET = "testing"
S3_REGION = "us-east-1"
#: Project named to the GCS emulator (which records it and checks nothing).
GCS_PROJECT = "test-project"
#: How often a server checks for shutdown (``shutdown()`` waits up to this long).
_POLL_S = 0.05


@dataclass
class Request:
    """One HTTP request as the server saw it.

    ``path`` is percent-decoded and has no query (S3: ``/bucket/key``; GCS JSON API:
    ``/storage/v1/b/bucket/o/name``, ``/download/storage/v1/b/bucket/o/name`` or, for uploads,
    ``/upload/storage/v1/b/bucket/o`` with the name in the body or the ``name`` parameter; see
    :func:`gcs_object_name`). ``query`` maps each parameter to its last value, blank values
    kept (S3's ``?delete`` is ``{"delete": ""}``). ``headers`` has lower-case names. ``body`` is
    the raw request body, ``status`` the response status (``None`` until the response starts).
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""
    status: int | None = None


@dataclass
class Server:
    """A running server: its endpoint ``url`` and the ``requests`` it has received so far."""

    url: str
    requests: list[Request] = field(default_factory=list)

    def reset(self) -> None:
        """Forget the requests recorded so far."""
        self.requests.clear()

    def _record(self, method: str, target: str, headers: Iterable[tuple[str, str]]) -> Request:
        parts = urlsplit(target)
        request = Request(
            method=method.upper(),
            path=unquote(parts.path),
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers={k.lower(): v for k, v in headers},
        )
        self.requests.append(request)  # atomic under the GIL: safe from handler threads
        return request


# --------------------------------------------------------------------------------------- S3


@contextmanager
def serving(httpd: Any, name: str) -> Iterator[None]:
    """Serve ``httpd`` (already bound and listening) in a thread; shut it down on exit."""
    thread = threading.Thread(target=httpd.serve_forever, args=(_POLL_S,), name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        httpd.shutdown()
        thread.join()
        httpd.server_close()


def s3_options(url: str) -> dict[str, Any]:
    """s3fs ``storage_options`` for the moto server at ``url``.

    ``max_concurrency=1`` makes ``cat_file`` a single GET: with more, s3fs first HEADs the
    object for its size, and splits objects over ``default_block_size`` into ranged GETs.
    """
    return {
        "key": S3_KEY,
        "secret": S3_SECRET,
        "client_kwargs": {"endpoint_url": url, "region_name": S3_REGION},
        "max_concurrency": 1,
    }


class _RecordingApp:
    """WSGI middleware: record each request on ``server``, then hand it to ``app``."""

    def __init__(self, app: Callable[..., Any], server: Server) -> None:
        self.app = app
        self.server = server

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        target = environ.get("REQUEST_URI") or environ.get("RAW_URI")
        if not target:
            target = environ.get("PATH_INFO", "")
            if environ.get("QUERY_STRING"):
                target += "?" + environ["QUERY_STRING"]
        headers = [
            (key[5:].replace("_", "-"), value)
            for key, value in environ.items()
            if key.startswith("HTTP_")
        ]
        headers += [
            (key.replace("_", "-"), environ[key])
            for key in ("CONTENT_TYPE", "CONTENT_LENGTH")
            if environ.get(key)
        ]
        request = self.server._record(environ["REQUEST_METHOD"], target, headers)

        # Read the body here, and give the app a copy: werkzeug closes every connection after
        # one response, so nothing else reads the socket.
        stream = environ["wsgi.input"]
        if environ.get("wsgi.input_terminated"):  # chunked: read to the end
            request.body = stream.read()
        elif length := int(environ.get("CONTENT_LENGTH") or 0):
            request.body = stream.read(length)
        environ["wsgi.input"] = io.BytesIO(request.body)

        def recording_start_response(status: str, *args: Any) -> Any:
            request.status = int(status.split(" ", 1)[0])
            return start_response(status, *args)

        return self.app(environ, recording_start_response)


@contextmanager
def moto_server() -> Iterator[Server]:
    """Run moto (S3 and the rest) on ``127.0.0.1`` and a free port, in a thread of this process.

    This is what ``moto.server.ThreadedMotoServer`` does, with four changes: the app is wrapped
    to record requests; werkzeug's per-request log line on stderr is silenced; responses carry
    one ``Server`` header, not two; and the listening socket is closed on exit
    (``ThreadedMotoServer.stop`` leaves it open).
    """
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass

        def send_response(self, code: int, message: str | None = None) -> None:
            # http.server's version also sends "Server: Werkzeug/...", and moto adds its own
            # "server: amazon.com" to some responses; aiohttp's strict parser (on under
            # `python -X dev` or PYTHONASYNCIODEBUG=1) rejects the pair as a bad response.
            self.send_response_only(code, message)
            self.send_header("Date", self.date_time_string())

    server = Server(url="")
    app = _RecordingApp(DomainDispatcherApplication(create_backend_app), server)
    # make_server binds and listens before it returns: the server is reachable at once.
    httpd = make_server(HOST, 0, app, threaded=True, request_handler=QuietHandler)
    server.url = f"http://{HOST}:{httpd.server_port}"
    with serving(httpd, "moto-server"):
        try:
            yield server
        finally:
            moto_reset(server.url)  # moto's state is process-global: leave none behind


def moto_reset(url: str) -> None:
    """Drop every bucket and object moto holds in this process (``POST /moto-api/reset``)."""
    request = urllib.request.Request(f"{url}/moto-api/reset", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def make_bucket(url: str, name: str) -> None:
    """Create bucket ``name`` on the moto server at ``url``.

    Uses boto3 with no ``CreateBucketConfiguration``: a ``us-east-1`` bucket must have no
    location constraint, but ``s3fs.mkdir`` sends the client's region as one, which moto (like
    AWS) rejects with "The specified location-constraint is not valid".
    """
    with s3_client(url) as client:
        client.create_bucket(Bucket=name)


@contextmanager
def s3_client(url: str) -> Iterator[Any]:
    """A boto3 S3 client of the moto server at ``url``, with the test credentials; closed
    afterwards."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=url,
        region_name=S3_REGION,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
    )
    try:
        yield client
    finally:
        client.close()


def make_public_read(url: str, bucket: str) -> None:
    """Let anyone read and list ``bucket`` on the moto server at ``url`` (a bucket policy)."""
    statement = {
        "Effect": "Allow",
        "Principal": "*",
        "Action": ["s3:GetObject", "s3:ListBucket"],
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
    }
    policy = {"Version": "2012-10-17", "Statement": [statement]}
    with s3_client(url) as client:
        client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))


# -------------------------------------------------------------------------------------- GCS


def gcs_options(url: str) -> dict[str, Any]:
    """gcsfs ``storage_options`` for the emulator at ``url`` (see the module's note on gcsfs)."""
    return {"endpoint_url": url, "token": "anon", "project": GCS_PROJECT}


def ensure_plain_gcsfs() -> None:
    """Make fsspec's ``gs`` and ``gcs`` protocols use ``gcsfs.core.GCSFileSystem``.

    Needed only where gcsfs was imported without ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``
    (see the module's docstring). Changes fsspec's registry for the whole process.
    """
    import fsspec
    import gcsfs.core

    for protocol in ("gs", "gcs"):
        fsspec.register_implementation(protocol, gcsfs.core.GCSFileSystem, clobber=True)


class _TeeReader:
    """Pass reads through to ``raw``, appending what they return to ``request.body``."""

    def __init__(self, raw: Any, request: Request) -> None:
        self._raw = raw
        self._request = request

    def read(self, *args: Any) -> bytes:
        data: bytes = self._raw.read(*args)
        self._request.body += data
        return data

    def readline(self, *args: Any) -> bytes:
        data: bytes = self._raw.readline(*args)
        self._request.body += data
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class _QuietHTTPServer(HTTPServer):
    """An HTTPServer that does not print a traceback when a client hangs up mid-response."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _serve_moto(conn: Connection) -> None:
    with moto_server() as server:
        conn.send(server.url)
        conn.recv()  # until told to stop


@contextmanager
def moto_server_process() -> Iterator[str]:
    """Run :func:`moto_server` in a child process of its own; yield its URL.

    For benchmarks: in a thread of the measured process, moto would share its interpreter lock
    and take CPU time the client's own work is measured by. The child is spawned (not forked:
    the parent may hold threads and event loops) and sends the URL once its socket listens; on
    exit it is told to stop, stops as :func:`moto_server` does, and is joined. Its requests are
    recorded in the child, out of reach: count them at a proxy in front
    (``faults.latency_proxy`` or ``faults.proxy_process``).

    Raises
    ------
    RuntimeError
        If the child exits before it is serving (its traceback is on stderr).
    """
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_serve_moto, args=(child,), name="moto-server")
    process.start()
    child.close()  # the child's end lives in the child: recv() sees EOF if the child dies
    try:
        try:
            url: str = parent.recv()
        except EOFError:
            raise RuntimeError("the moto process exited before serving") from None
        yield url
    finally:
        with suppress(OSError):  # BrokenPipeError: the child is gone already
            parent.send("stop")
        process.join(30)
        if process.is_alive():
            process.kill()
            process.join()
        parent.close()


@contextmanager
def gcs_emulator() -> Iterator[Server]:
    """Run gcp-storage-emulator, in memory, on ``127.0.0.1`` and a free port, in this process.

    Equivalent to ``gcp_storage_emulator.server.create_server(host, port, in_memory=True)``,
    but building the HTTP server here, to bind port 0 and record requests. Like the emulator's
    own, the server handles one request at a time (its storage takes no locks) and closes each
    connection after one response (HTTP/1.0).
    """
    from gcp_storage_emulator.server import RequestHandler
    from gcp_storage_emulator.storage import Storage

    server = Server(url="")

    class RecordingHandler(RequestHandler):  # type: ignore[misc]
        recorded: Request | None = None

        def parse_request(self) -> bool:
            ok: bool = super().parse_request()
            if ok:
                self.recorded = server._record(self.command, self.path, self.headers.items())
                self.rfile = _TeeReader(self.rfile, self.recorded)
            return ok

        def send_response(self, code: int, message: str | None = None) -> None:
            if self.recorded is not None and self.recorded.status is None:
                self.recorded.status = int(code)
            super().send_response(code, message)

    storage = Storage(use_memory_fs=True)
    # HTTPServer binds and listens in its constructor: the server is reachable at once.
    httpd = _QuietHTTPServer((HOST, 0), partial(RecordingHandler, storage))
    server.url = f"http://{HOST}:{httpd.server_port}"
    with serving(httpd, "gcs-emulator"):
        yield server


def make_gcs_bucket(url: str, name: str) -> None:
    """Create bucket ``name`` on the emulator at ``url`` (JSON API ``buckets.insert``)."""
    request = urllib.request.Request(
        f"{url}/storage/v1/b?project={GCS_PROJECT}",
        data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


_GCS_OBJECT_PREFIXES = ("/storage/v1/b/", "/download/storage/v1/b/")


def gcs_object_name(request: Request) -> str | None:
    """The object a GCS JSON-API request is about, ``None`` for bucket-level requests.

    Object paths (``.../b/<bucket>/o/<name>``) give the name; uploads to
    ``/upload/storage/v1/b/<bucket>/o`` carry it in the ``name`` parameter (media and
    resumable uploads, as gcsfs sends them) or in the JSON part of a multipart body.
    """
    if request.path.startswith("/upload/"):
        if "name" in request.query:
            return request.query["name"]
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/") and request.body:
            message = BytesParser().parsebytes(
                b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + request.body
            )
            parts = message.get_payload()
            if isinstance(parts, list) and parts:
                name = json.loads(parts[0].get_payload()).get("name")
                return str(name) if name is not None else None
        return None
    for prefix in _GCS_OBJECT_PREFIXES:
        if request.path.startswith(prefix):
            _bucket, sep, name = request.path[len(prefix) :].partition("/o/")
            return name if sep and name else None
    return None


__all__ = [
    "GCS_PROJECT",
    "S3_REGION",
    "Request",
    "Server",
    "ensure_plain_gcsfs",
    "gcs_emulator",
    "gcs_object_name",
    "gcs_options",
    "make_bucket",
    "make_gcs_bucket",
    "moto_reset",
    "moto_server",
    "moto_server_process",
    "s3_options",
]


def accepts(url: str) -> bool:
    """Whether a server listens at ``url`` (a connection is accepted)."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=1):
            return True
    except OSError:
        return False
