"""A loopback HTTP server for tests, with scriptable misbehaviour per path.

It listens on 127.0.0.1 only, on a free port, in a background thread, and stops when its
``with`` block ends. It serves bytes from a ``{path: bytes}`` table and records every request,
so tests can assert what a client asked for.

    with LoopbackServer({"/a.bin": data}) as server:
        server.serve("/b.bin", other, truncate_after=1000)   # every answer cut after 1000 bytes
        server.configure("/a.bin", fail_times=2)             # first two requests get HTTP 500
        requests.get(server.url("/a.bin"))
        assert server.count("/a.bin") == 3

Behaviours (keyword arguments of :meth:`LoopbackServer.serve` and :meth:`configure`):

    honour_range=True     answer ``Range: bytes=N-`` with 206 and the rest; False: 200, whole body
    truncate_after=k      announce the full Content-Length but close (FIN) after k body bytes
    truncate_times=None   how many answers are truncated (None: all)
    reset_after=k         abort the connection with a TCP reset after k body bytes ...
    reset_times=1         ... for this many answers, then serve normally
    fail_times=n          answer the first n requests with ``fail_status`` (default 500)
    status=404            always answer this status, with no body
    delay=s               sleep s seconds before each body chunk (a "slow" server)
    chunk_size=8192       bytes per write
    headers={...}         extra response headers (on every answer, failures included)
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

__all__ = ["Behaviour", "RequestRecord", "LoopbackServer"]


@dataclass(frozen=True)
class Behaviour:
    """How the server answers requests for one path (see the module docstring)."""

    honour_range: bool = True
    truncate_after: Optional[int] = None
    truncate_times: Optional[int] = None
    reset_after: Optional[int] = None
    reset_times: int = 1
    fail_times: int = 0
    fail_status: int = 500
    status: Optional[int] = None
    delay: float = 0.0
    chunk_size: int = 8192
    headers: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it."""

    method: str
    path: str
    range: Optional[str]
    status: int
    accept_encoding: Optional[str] = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, owner: "LoopbackServer"):
        self.owner = owner
        self.to_reset: set[int] = set()  # ids of sockets to close with a TCP reset
        super().__init__(("127.0.0.1", 0), _Handler)

    def shutdown_request(self, request):  # noqa: D102 (socketserver hook)
        if id(request) in self.to_reset:
            self.to_reset.discard(id(request))
            request.close()  # SO_LINGER 0 is set: close sends RST, no FIN
            return
        super().shutdown_request(request)

    def handle_error(self, request, client_address):  # a client gone away is expected here
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format, *args):  # quiet
        pass

    def do_HEAD(self):
        self._answer(head=True)

    def do_GET(self):
        self._answer(head=False)

    def _answer(self, *, head: bool) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        range_header = self.headers.get("Range")
        with owner._lock:
            data = owner._files.get(path)
            behaviour = owner._behaviour.get(path, owner._default)
            nth = owner._counts.get(path, 0)  # answers given before this one
            owner._counts[path] = nth + 1

        def record(status: int) -> None:
            with owner._lock:
                owner.requests.append(RequestRecord(self.command, path, range_header, status,
                                                    self.headers.get("Accept-Encoding")))

        if data is None or behaviour.status is not None or nth < behaviour.fail_times:
            status = 404 if data is None else (behaviour.status or behaviour.fail_status)
            record(status)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            for key, value in behaviour.headers.items():
                self.send_header(key, value)
            self.end_headers()
            return

        start = 0
        if range_header and behaviour.honour_range:
            spec = range_header.strip()
            if spec.startswith("bytes=") and spec[6:].split("-", 1)[0].isdigit():
                start = int(spec[6:].split("-", 1)[0])
            if start >= len(data):
                record(416)
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = data[start:]
        status = 206 if start else 200
        record(status)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes" if behaviour.honour_range else "none")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        for key, value in behaviour.headers.items():
            self.send_header(key, value)
        self.end_headers()
        if head:
            return

        cut, reset = len(body), False
        if behaviour.truncate_after is not None and (
                behaviour.truncate_times is None or nth - behaviour.fail_times < behaviour.truncate_times):
            cut = min(cut, behaviour.truncate_after)
        if behaviour.reset_after is not None and nth - behaviour.fail_times < behaviour.reset_times:
            cut, reset = min(cut, behaviour.reset_after), True
        try:
            for offset in range(0, cut, behaviour.chunk_size):
                if behaviour.delay:
                    time.sleep(behaviour.delay)
                    if owner._stopping.is_set():
                        self.close_connection = True
                        return
                self.wfile.write(body[offset:min(offset + behaviour.chunk_size, cut)])
            self.wfile.flush()
        except OSError:  # the client went away
            self.close_connection = True
            return
        if cut < len(body):
            self.close_connection = True
            if reset:
                time.sleep(0.1)  # let the client read what was sent before the reset
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.server.to_reset.add(id(self.connection))


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 serving ``files``; use it as a context manager.

    Args:
        files: ``{path: bytes}``; paths start with ``/`` (query strings are ignored).
        **behaviour: the default :class:`Behaviour` for every path.

    Attributes:
        requests: every request, in order, as :class:`RequestRecord`.
    """

    def __init__(self, files: Optional[dict[str, bytes]] = None, **behaviour):
        self._files: dict[str, bytes] = dict(files or {})
        self._default = Behaviour(**behaviour)
        self._behaviour: dict[str, Behaviour] = {}
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self.requests: list[RequestRecord] = []

    def __enter__(self) -> "LoopbackServer":
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="LoopbackServer", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        assert self._server is not None, "the server is not running (use it in a with block)"
        return self._server.server_address[1]

    def url(self, path: str) -> str:
        """The full URL of ``path`` on this server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(self, path: str, data: bytes, **behaviour) -> str:
        """Serve ``data`` at ``path`` with the given behaviour; returns the URL."""
        with self._lock:
            self._files[path] = bytes(data)
            self._behaviour[path] = replace(self._default, **behaviour)
        return self.url(path) if self._server is not None else path

    def configure(self, path: str, **behaviour) -> None:
        """Change the behaviour of ``path`` from now on (counts are kept)."""
        with self._lock:
            self._behaviour[path] = replace(self._behaviour.get(path, self._default), **behaviour)

    def reset_counts(self) -> None:
        """Forget past requests (so ``fail_times`` etc. apply afresh)."""
        with self._lock:
            self._counts.clear()
            self.requests.clear()

    def count(self, path: str, method: str = "GET") -> int:
        """How many ``method`` requests ``path`` received."""
        with self._lock:
            return sum(1 for r in self.requests if r.path == path and r.method == method)

    def records(self, path: str) -> list[RequestRecord]:
        """The requests for ``path``, in order."""
        with self._lock:
            return [r for r in self.requests if r.path == path]
