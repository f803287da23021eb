"""Structured JSON logging to stdout, with secrets scrubbed from every line."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

_SECRET = re.compile(
    r"\b(sk_(?:live|test)_|whsec_)[A-Za-z0-9_+/=-]+"
    # An OAuth client secret (``cs_`` and 43 URL-safe characters; a session id is ``cs_`` and
    # 24 hex digits, which stays readable) and a JWT (three base64url parts, ``eyJ…``).
    r"|\b(cs_)[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])"
    r"|\b(eyJ)[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"
)
_RESERVED = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def redact(text: str) -> str:
    """Replace API keys, webhook and client secrets and tokens with their prefix and an
    ellipsis."""
    return _SECRET.sub(lambda m: f"{m.group(m.lastindex or 1)}…", text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any ``extra=`` fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str))


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "asyncio", "httpx", "web3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
