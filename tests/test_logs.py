"""One log format for hallmon and uvicorn alike: plain logfmt or JSON lines, no colour.

Found by reading a daemon's log: every uvicorn line carried ``color_message="... \\u001b[36m%d
\\u001b[0m ..."`` (uvicorn's console extra) and the logger name ``uvicorn.error`` for start-up.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import pytest

from monitor.logs import JsonFormatter, LogfmtFormatter
from tests.agents.daemon import HallmonProcess, node, small_inventory

# ts, level, logger, msg first, then key=value pairs (a value is bare or a JSON string).
LOGFMT_LINE = re.compile(
    r'^ts=\S+Z level=(debug|info|warning|error|critical) logger=\S+ msg=("([^"\\]|\\.)*"|\S+)'
    r'( [a-z_]+=("([^"\\]|\\.)*"|\S*))*$'
)


def _daemon_lines(tmp_path: Path, fmt: str) -> list[str]:
    inv = small_inventory([node("sw-1", "127.30.0.1")])
    with HallmonProcess(tmp_path, inv, args=(f"--log.format={fmt}",)) as d:
        d.wait_for(lambda: d.status("sw-1") == "up", 30, "sw-1 up")
    assert d.proc is not None and d.proc.returncode == 0, d.log_tail()
    # the harness writes one "==== start" line of its own before each start
    return [line for line in d.log().splitlines() if line and not line.startswith("==== ")]


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_daemon_log_is_one_plain_format(tmp_path: Path, fmt: str) -> None:
    lines = _daemon_lines(tmp_path, fmt)
    text = "\n".join(lines)
    assert "\x1b" not in text and "\\u001b" not in text, text
    assert "color_message" not in text, text
    records = []
    for line in lines:
        if fmt == "json":
            rec = json.loads(line)
            assert list(rec)[:4] == ["ts", "level", "logger", "msg"], line
        else:
            assert LOGFMT_LINE.match(line), line
            rec = dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)', line))
            rec = {k: json.loads(v) if v.startswith('"') else v for k, v in rec.items()}
        records.append(rec)
    loggers = {r["logger"] for r in records}
    # uvicorn's own records went through the same formatter, under a plain name
    assert "uvicorn" in loggers and "uvicorn.error" not in loggers, loggers
    assert any(r["logger"] == "uvicorn" and r["msg"].startswith("Started server process")
               for r in records)
    assert any(r["logger"] == "hallmon" and r["msg"] == "first cycle complete: ready"
               for r in records)


def _record(msg: str, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "uvicorn.error", "levelname": "INFO",
                                    "levelno": logging.INFO, "msg": msg, "args": None})
    record.__dict__.update(extra)
    return record


def test_colour_extras_and_escapes_are_dropped() -> None:
    record = _record("Uvicorn running on \x1b[1mhttp://127.0.0.1:1\x1b[0m",
                     color_message="Uvicorn running on \x1b[1m%s\x1b[0m", device="sw-\x1b[31m1")
    try:
        raise ValueError("\x1b[31mred\x1b[0m")
    except ValueError:
        record.exc_info = sys.exc_info()
    line = LogfmtFormatter().format(record)
    assert ' logger=uvicorn msg="Uvicorn running on http://127.0.0.1:1" device=sw-1 exc="' in line
    assert line.endswith('ValueError: red"'), line
    assert "\x1b" not in line and "\\u001b" not in line and "color_message" not in line
    data = json.loads(JsonFormatter().format(record))
    assert data["msg"] == "Uvicorn running on http://127.0.0.1:1"
    assert data["device"] == "sw-1" and "color_message" not in data
    assert data["exc"].endswith("ValueError: red")
