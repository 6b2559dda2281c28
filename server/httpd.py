"""The HTTP front door's server: uvicorn (httptools, uvloop) in a thread of each worker process,
on a socket the worker binds itself with SO_REUSEPORT, as its gRPC server does.

The stack was chosen by measurement (README, "Serving over HTTP"). uvicorn has no timeout for
headers that trickle in, so the protocol below adds one: a client that has not finished its
headers within READ_TIMEOUT seconds of starting a request loses its connection, and only that.
Nor has httptools a limit on the size of a head (request line and headers): it gathers a header
value whole before handing it over, so the protocol counts a head's bytes before the parser sees
them, and answers 431 past HEAD_LIMIT.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .hosts import bare, family
from .options import ServeOptions
from .rest import READ_TIMEOUT, RestApp, _error

HEAD_LIMIT = 64 * 1024  # bytes of a request line and its headers, as nginx's large_client_header_buffers
HEAD_TOO_LARGE = _error(f"the request line and headers are above {HEAD_LIMIT} bytes")


class _TimedProtocol(HttpToolsProtocol):
    """httptools' protocol with a deadline and a size limit for each request's headers."""

    _header_timer: asyncio.TimerHandle | None = None
    _head_left: int | None = HEAD_LIMIT  # bytes the head being read may still take; None within a body

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_timer()

    def data_received(self, data: bytes) -> None:
        left = self._head_left
        if left is None:
            super().data_received(data)
        elif len(data) <= left:
            self._head_left = left - len(data)
            super().data_received(data)
        else:
            super().data_received(data[:left])  # the parser never holds more than HEAD_LIMIT of a head
            if self._head_left is not None:
                self._refuse_head()
            elif not self.transport.is_closing():
                super().data_received(data[left:])

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_left = HEAD_LIMIT  # a pipelined request's head may follow

    def _refuse_head(self) -> None:
        if self.transport.is_closing():
            return
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(HEAD_TOO_LARGE), HEAD_TOO_LARGE)
        )
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_header_timer()

    def on_headers_complete(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._head_left = None
        super().on_headers_complete()

    def connection_lost(self, exc) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def _start_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(READ_TIMEOUT, self.transport.close)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket shared with sibling workers (SO_REUSEPORT)."""
    sock = socket.socket(family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((bare(host), port))
    sock.listen(1024)
    return sock


class HttpServer:
    """uvicorn serving a RestApp on a pre-bound socket, in a daemon thread."""

    def __init__(self, app: RestApp, sock: socket.socket, options: ServeOptions) -> None:
        tls = {}
        if options.tls:
            tls = {"ssl_certfile": str(options.tls_cert), "ssl_keyfile": str(options.tls_key)}
            if options.tls_client_ca:
                tls |= {"ssl_ca_certs": str(options.tls_client_ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
        config = uvicorn.Config(
            app,
            http=_TimedProtocol,
            loop="uvloop",
            lifespan="off",
            access_log=False,
            server_header=False,
            log_level="warning",
            timeout_keep_alive=5,
            timeout_graceful_shutdown=max(1, round(options.grace)),
            **tls,
        )
        self.sock, self.server = sock, uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, name="http", daemon=True)

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def start(self) -> None:
        self.thread.start()

    def stop(self, grace: float) -> None:
        """Answer health (not ready) and refuse new calls while those in flight finish, within
        `grace` seconds; then close. Keeping the port open until then lets probes see "not ready"
        instead of a refused connection."""
        app: RestApp = self.server.config.app
        app.draining = True
        deadline = time.monotonic() + grace
        while app.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        # What is left of the grace bounds uvicorn's own wait for open connections.
        self.server.config.timeout_graceful_shutdown = max(1, round(deadline - time.monotonic()))
        self.server.should_exit = True
        self.thread.join(max(1.0, deadline - time.monotonic()) + 2)
