"""Logging setup for every fedcredit process: plain text or one JSON object per line."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import TextIO


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "process": record.process,
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def setup_logging(level: str = "info", json_format: bool | None = None, stream: TextIO | None = None) -> None:
    """Configure the root logger once. ``FEDCREDIT_LOG_JSON=1`` switches to JSON lines."""
    if json_format is None:
        json_format = os.environ.get("FEDCREDIT_LOG_JSON", "") in ("1", "true", "yes")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if json_format
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("FEDCREDIT_LOG_LEVEL", level).upper())
