"""Readers' access to the exporter (``config/reader_access.py`` has the token rules).

With ``SALESPULSE_READER_TOKEN_FILE`` set, every route of the exporter (``/metrics``, the
API, ``/openapi.json``, the wallboard and its files) answers 401 without the token; unset,
the exporter is open. Browsers prompt once at the 401's basic challenge, then resend the
credentials with every same-origin request the wallboard makes.
"""

from __future__ import annotations

import logging
from collections import Counter

import orjson
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client.core import CounterMetricFamily, Metric

from config.reader_access import MISSING, REFUSAL, REFUSAL_HEADERS, WRONG, refusal

log = logging.getLogger(__name__)


class ReaderAuth:
    """Checks each request's credentials against the token and counts the refusals."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()
        self.refused: Counter[str] = Counter()

    def refusal(self, header: str | None) -> str | None:
        """Why a request with this ``Authorization`` header is refused, or None if it is not."""
        return refusal(header, self._token)

    def middleware(self) -> Middleware:
        @web.middleware
        async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
            reason = self.refusal(request.headers.get(hdrs.AUTHORIZATION))
            if reason is None:
                return await handler(request)
            self.refused[reason] += 1
            log.debug("refused %s %s: %s reader token", request.method, request.path, reason)
            return web.Response(
                body=orjson.dumps({"error": {"message": REFUSAL}}),
                status=401,
                content_type="application/json",
                headers=REFUSAL_HEADERS,
            )

        return require_token

    def families(self) -> list[Metric]:
        refused = CounterMetricFamily(
            "salespulse_exporter_refused_requests",
            "Requests refused with 401 because the reader token was missing or wrong",
            labels=["reason"],
        )
        for reason in (MISSING, WRONG):
            refused.add_metric([reason], float(self.refused[reason]))
        return [refused]
