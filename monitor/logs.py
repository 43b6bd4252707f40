"""Logging set-up: logfmt (default, like Prometheus' own tools) or JSON lines, to stderr.

One format for every logger in the process: uvicorn's records go through the same handler as
hallmon's (``hallmon run`` passes ``log_config=None``). Two things of uvicorn's own console
format are dropped on the way: the ``color_message`` extra (the message again, with ANSI colour
escapes) and any ANSI escape in a value, so the log stays plain text for journald and grep.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

_RESERVED = set(vars(logging.makeLogRecord({})))
# Extras that only serve a colour console (uvicorn sets color_message on its server records).
_DROPPED = frozenset({"message", "color_message"})
# uvicorn names its general logger "uvicorn.error" although it logs start-up and shutdown there.
_LOGGER_NAMES = {"uvicorn.error": "uvicorn"}
# CSI sequences (colours, cursor moves) and other two-byte ESC sequences.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])")


def _plain(value: object) -> object:
    return _ANSI.sub("", value) if isinstance(value, str) else value


def _fields(record: logging.LogRecord) -> dict[str, object]:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    out: dict[str, object] = {
        "ts": f"{ts}.{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "logger": _LOGGER_NAMES.get(record.name, record.name),
        "msg": record.getMessage(),
    }
    out.update({k: v for k, v in vars(record).items() if k not in _RESERVED | _DROPPED})
    if record.exc_info:
        out["exc"] = logging.Formatter().formatException(record.exc_info)
    return {k: _plain(v) for k, v in out.items()}


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\n\t'):
        return text
    return json.dumps(text, ensure_ascii=False)


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), ensure_ascii=False, default=str)


def setup(level: str = "info", fmt: str = "logfmt") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Access logs and library chatter belong at DEBUG.
    for noisy in ("uvicorn.access", "httpx", "httpcore", "pysnmp", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
