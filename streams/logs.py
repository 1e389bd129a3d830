"""How every salespulse process logs: text for people, or one JSON object per line
(``SALESPULSE_LOG_FORMAT=json``) for a log pipeline, with python-json-logger."""

from __future__ import annotations

import logging

from pythonjsonlogger.json import JsonFormatter

from config.settings import Settings

TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Fields of every JSON record; ``extra`` values of a call are added to it.
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"


def formatter(settings: Settings, text: str = TEXT) -> logging.Formatter:
    if settings.log_format == "json":
        return JsonFormatter(JSON_FIELDS, rename_fields={"asctime": "time", "levelname": "level"})
    return logging.Formatter(text)


def configure_logging(settings: Settings, text: str = TEXT) -> None:
    """The root logger: one stderr handler, the level and format of the settings. Like
    ``logging.basicConfig``, it leaves a root that has handlers already (an embedding
    program's, or a test's) alone."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(settings, text))
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
