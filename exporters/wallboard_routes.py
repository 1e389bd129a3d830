"""The wallboard page (exporters/wallboard/) served at / by the exporter: static files only."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

PAGE_DIR = Path(__file__).resolve().parent / "wallboard"


async def _index(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(PAGE_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def wallboard_routes() -> list[web.AbstractRouteDef]:
    return [web.get("/", _index), web.static("/wallboard", PAGE_DIR)]
