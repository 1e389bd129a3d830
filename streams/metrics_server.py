"""The worker's ``/metrics``: prometheus-client's exposition, behind the reader token if set.

A thread of its own (as prometheus-client's ``start_http_server``), so that a scrape never
waits for the event loop; with SALESPULSE_READER_TOKEN_FILE set every request needs the
token (``config/reader_access.py``), as the exporter's do.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from config.reader_access import REFUSAL, REFUSAL_HEADERS, refusal

StartResponse = Callable[..., Any]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6  # SALESPULSE_METRICS_HOST=:: (all IPv6 and IPv4)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log: Prometheus scrapes every few seconds."""


def serve_metrics(host: str, port: int, token: str | None) -> WSGIServer:
    """Serve the default registry on ``host:port`` from a daemon thread; OSError if the port
    cannot be bound."""
    metrics = make_wsgi_app()
    secret = token.encode() if token is not None else None

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if secret is not None and refusal(environ.get("HTTP_AUTHORIZATION"), secret):
            headers = [("Content-Type", "text/plain; charset=utf-8"), *REFUSAL_HEADERS.items()]
            start_response("401 Unauthorized", headers)
            return [REFUSAL.encode() + b"\n"]
        return metrics(environ, start_response)

    server_class = _Server6 if ":" in host else _Server
    server = make_server(host, port, app, server_class, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
