"""One writing process per data folder: an exclusive lock on a file beside the database.

Why: two processes writing one store (a daemon and a ``feedservice once`` from cron, or two
daemons) race on what only one process may own. Each one's start-up voids the delivery leases
the other holds, so a notification in flight is sent again. Each moves the monitor's catch-up
mark past entries the other stored but has not matched, so their matches and notifications are
lost. The lock is ``flock(2)``: the kernel releases it when the process ends, so a killed
daemon leaves nothing to clean up.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from feedservice.errors import StorageError

LOCK_NAME = "feedservice.lock"


class DataLock:
    """An exclusive lock on ``folder``/``LOCK_NAME``, held from :meth:`acquire` to
    :meth:`release` (the file itself stays: removing it would let a third process lock a new
    file while the second still holds the old one)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock without waiting.

        Raises StorageError naming the lock file and, when it can tell, the pid of the
        process holding it; or when the file cannot be opened."""
        if self._fd is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot open the lock file: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "process"
            raise StorageError(
                f"{self.path}: another feedservice {who} is using this data folder; "
                "stop it first (one process writes a data folder; `feedservice status` "
                "only reads and may run beside it)"
            ) from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""
