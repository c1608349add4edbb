"""The temporary spool of a one-off backfill (``replay --loki.url`` without
``spool.dir``).

Each run makes ``kube-audit-replay-spool-*`` in the temporary directory and
holds an exclusive ``flock`` on its ``lock`` file for as long as it runs;
the spool itself is the ``spool`` directory inside. The run removes it on the
way out, whatever the way. A run that was killed (SIGKILL, a power cut)
leaves its directory behind, unlocked: the next run removes such leftovers,
and never a directory whose lock is held, which is a run still going.

The lock is taken before the directory gets its final name (it is made
under a hidden name, locked, then renamed), so a cleaner never sees a live
run's directory unlocked.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile

PREFIX = "kube-audit-replay-spool-"
_MAKING = ".kube-audit-replay-making-"
LOCK = "lock"
SPOOL = "spool"

log = logging.getLogger(__name__)


class TempSpool:
    """A locked temporary spool directory; :meth:`remove` deletes it."""

    def __init__(self, parent: str | None = None) -> None:
        self.parent = parent or tempfile.gettempdir()
        self.removed_leftovers = remove_leftovers(self.parent)
        making = tempfile.mkdtemp(prefix=_MAKING, dir=self.parent)
        self._fd: int | None = os.open(os.path.join(making, LOCK), os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.root = os.path.join(self.parent, PREFIX + os.path.basename(making)[len(_MAKING) :])
        os.rename(making, self.root)
        self.spool_dir = os.path.join(self.root, SPOOL)
        os.mkdir(self.spool_dir, 0o700)

    def remove(self) -> None:
        """Delete the directory (the lock goes with it). Idempotent."""
        if self._fd is None:
            return
        shutil.rmtree(self.root, ignore_errors=True)
        os.close(self._fd)
        self._fd = None


def remove_leftovers(parent: str) -> list[str]:
    """Remove the spool directories of replays that are gone (their lock is
    free); the paths removed. A directory whose lock is held, or that has no
    lock file (made by another program or version), is left alone."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            fd = os.open(os.path.join(entry.path, LOCK), os.O_RDWR | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a running replay
        try:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
    if removed:
        log.warning(
            "removed the temporary spools of replays that were killed",
            extra={"count": len(removed), "parent": parent},
        )
    return removed
