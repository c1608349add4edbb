"""The exporter's own log lines: control characters from clients are escaped
in both formats, in every field and the message, and parse back intact."""

from __future__ import annotations

import json
import logging
import re

import pytest

from exporter.logs import JSONFormatter, LogfmtFormatter

# NUL, ESC, newline, carriage return, tab, DEL, C1 (NEL, CSI), and a quote.
PATH = '/api/v1/namespaces/de\x00fault/pods/x\x1b[31mred\nlevel=error msg="forged"\r\t\x7f\x85\x9b'
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def record(msg: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("exporter.test", logging.WARNING, __file__, 1, msg, (), None)
    rec.__dict__.update(extra)
    return rec


def parse_logfmt(line: str) -> dict[str, str]:
    """A logfmt reader: key=bare or key="JSON string escapes"."""
    out: dict[str, str] = {}
    decoder = json.JSONDecoder()
    i = 0
    while i < len(line):
        eq = line.index("=", i)
        key = line[i:eq]
        assert key and " " not in key, line
        if line.startswith('"', eq + 1):
            value, end = decoder.raw_decode(line, eq + 1)
        else:
            end = line.find(" ", eq + 1)
            end = len(line) if end < 0 else end
            value = line[eq + 1 : end]
        out[key] = value
        i = end + 1 if end < len(line) and line[end] == " " else end
    return out


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_control_characters_in_a_request_path_are_escaped(fmt: str) -> None:
    formatter = LogfmtFormatter() if fmt == "logfmt" else JSONFormatter()
    rec = record(
        "refused " + PATH,
        path=PATH,
        detail={"uri": PATH},
        peer="10.0.0.1\x00",
        count=3,
    )
    line = formatter.format(rec)
    assert not CONTROL.search(line), repr(line)
    assert "\n" not in line and "\x00" not in line
    fields = parse_logfmt(line) if fmt == "logfmt" else json.loads(line)
    assert fields["msg"] == "refused " + PATH
    assert fields["path"] == PATH
    assert fields["peer"] == "10.0.0.1\x00"
    detail = json.loads(fields["detail"]) if fmt == "logfmt" else fields["detail"]
    assert detail == {"uri": PATH}
    assert fields["level"] == "warning"  # the forged level= inside the path stays inside it
    assert str(fields["count"]) == "3"


def test_plain_values_stay_bare_in_logfmt() -> None:
    line = LogfmtFormatter().format(record("ready", address="127.0.0.1:9784"))
    assert " msg=ready address=127.0.0.1:9784" in line
