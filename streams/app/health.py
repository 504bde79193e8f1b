"""The worker's HTTP endpoints: ``/metrics`` (Prometheus) and ``/ready`` next to it.

``/ready`` answers 200 while the worker reaches its broker and has its partitions
(a consumer-group generation it took part in), 503 otherwise, with one line saying why.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

__all__ = ["HealthServer", "Readiness"]


class Readiness:
    """Why a worker is or is not ready; set by the app, read by ``/ready``."""

    def __init__(self) -> None:
        self.broker_connected = False
        self.assigned = False
        self.stopping = False

    def reason(self) -> str | None:
        """None when ready, else why not."""
        if self.stopping:
            return "stopping"
        if not self.broker_connected:
            return "broker unreachable"
        if not self.assigned:
            return "waiting for a partition assignment"
        return None


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log on stderr."""


class HealthServer:
    """Serves ``/metrics`` and ``/ready`` on addr:port from a daemon thread."""

    def __init__(self, addr: str, port: int, registry: CollectorRegistry, readiness: Readiness) -> None:
        metrics_app = make_wsgi_app(registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == "/ready":
                why = readiness.reason()
                status = "200 OK" if why is None else "503 Service Unavailable"
                start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
                return [b"ready\n" if why is None else f"not ready: {why}\n".encode()]
            body: Iterable[bytes] = metrics_app(environ, start_response)
            return body

        self._server = make_server(addr, port, app, server_class=_Server, handler_class=_QuietHandler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="liqmon-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
