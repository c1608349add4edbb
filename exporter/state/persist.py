"""first_seen rules' memory kept across restarts without a shared store.

One JSON file (``state.first_seen_file``, by default ``first-seen.json``
beside the Loki spool or the log file's checkpoint) holds, per rule id, what
the rule's in-memory state dumps. It is written atomically (a temporary
file in the same directory, fsync, rename), so a kill -9 leaves the old
file or the new one, never half of one. It is bounded like the state itself
(``detect.max_state_entries`` per rule) and read once at start-up: a
missing file is a first start, an unreadable or malformed one is logged and
ignored (the rules learn afresh), never fatal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from typing import Any

import orjson

log = logging.getLogger(__name__)

VERSION = 1


class FirstSeenFile:
    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> dict[str, Any]:
        """Rule id -> the state's dump; empty when there is nothing usable."""
        try:
            with open(self.path, "rb") as f:
                data = orjson.loads(f.read())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as e:
            log.warning(
                "first_seen state not restored: the rules learn afresh",
                extra={"path": self.path, "error": f"{type(e).__name__}: {e}"[:200]},
            )
            return {}
        if not isinstance(data, dict) or data.get("version") != VERSION:
            log.warning(
                "first_seen state not restored (unknown format): the rules learn afresh",
                extra={"path": self.path},
            )
            return {}
        rules = data.get("rules")
        return rules if isinstance(rules, dict) else {}

    def save(self, rules: dict[str, Any]) -> bool:
        """Replaces the file atomically; False (logged) when writing fails."""
        directory = os.path.dirname(os.path.abspath(self.path))
        body = orjson.dumps({"version": VERSION, "rules": rules})
        tmp = ""
        try:
            fd, tmp = tempfile.mkstemp(prefix=".first-seen.", dir=directory)
            with os.fdopen(fd, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            tmp = ""
            dfd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as e:
            log.warning(
                "first_seen state not saved",
                extra={"path": self.path, "error": f"{type(e).__name__}: {e}"[:200]},
            )
            return False
        finally:
            if tmp:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        return True
