"""Log records of an unattended run (``--log-format``): one JSON object per line, or ``level: message``.

Imported by a run that logs (``ocigc.gc.unattended`` with ``--log-format json``), not by every run.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import IO, Any

from ocigc.gc.report import LOGGER_NAME, iso

_STANDARD = frozenset(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None)).keys()) | {"message", "asctime"}


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and every ``extra=`` field."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"time": iso(record.created), "level": record.levelname.lower(),
                               "logger": record.name, "message": record.getMessage()}
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


class TextLogFormatter(logging.Formatter):
    """``level: message`` (the text form of the same events)."""

    def format(self, record: logging.LogRecord) -> str:
        level = record.levelname.lower()
        return f"{level}: {record.getMessage()}" if level != "info" else record.getMessage()


def run_logger(fmt: str, stream: IO[str] | None = None, level: int = logging.INFO) -> logging.Logger:
    """A logger for one run writing to ``stream`` (stderr) in ``fmt`` ("text" or "json")."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonLogFormatter() if fmt == "json" else TextLogFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger
