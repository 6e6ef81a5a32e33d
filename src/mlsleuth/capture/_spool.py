"""The spool of ``HttpSink``: unsent batch bodies, oldest first, in memory or one file per batch on disk.

On disk, every spool (one per ``HttpSink`` per process) owns a sub-folder ``<spool_dir>/<pid>-<random>/``
that it holds an exclusive ``flock`` on for its life. The lock dies with the process, kill -9 included, so a
sub-folder whose lock can be taken belongs to a dead process: the next spool opened on the same
``spool_dir`` adopts its files (moves them into its own folder) and resends them. Several processes
(gunicorn workers) can share one ``spool_dir`` this way without sending each other's batches.

A file is ``<ns timestamp, 20 digits>-<rows>.arrows`` holding the exact body the sink POSTs. It is written to
a dot-named temporary file, fsynced and renamed, so a crash leaves either the whole batch or nothing; the
names sort in the order the batches were spooled, across processes too.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path

try:  # POSIX; without it a spool folder cannot be adopted from a dead process
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__: list[str] = []

_NAME = re.compile(r"^(\d{20})-(\d+)\.arrows$")
_LOCK = "lock"


@dataclass(frozen=True)
class _Entry:
    name: str
    rows: int
    size: int


class _Spool:
    """A byte-capped FIFO of batch bodies; not thread-safe (``HttpSink`` serialises calls under its lock).

    ``root`` None keeps the bodies in memory (lost with the process). :meth:`put` evicts the oldest entries
    (except the one being resent, ``busy``) to make room, and returns what it evicted.
    """

    def __init__(self, root: Path | None, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.entries: deque[_Entry] = deque()
        self.bodies: dict[str, bytes] = {}
        self.bytes = 0
        self.rows = 0
        self.busy: str | None = None
        self.dir: Path | None = None
        self._lock_fd: int | None = None
        self._pid: int | None = None
        self._last_ns = 0

    # -- the process's own folder ---------------------------------------------------------------------

    def open(self) -> None:
        """Make sure this process has its folder (a new one after a fork) and adopt dead processes' files."""
        if self._pid == os.getpid():
            return
        if self._pid is not None:  # a forked child: the parent's batches (and lock) stay the parent's
            if self._lock_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._lock_fd)
                self._lock_fd = None
            self.entries.clear()
            self.bodies.clear()
            self.bytes = self.rows = 0
            self.busy = None
        if self.root is None:
            self._pid = os.getpid()
            return
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging = self.root / f".{name}"
        staging.mkdir(mode=0o700)
        fd = os.open(staging / _LOCK, os.O_CREAT | os.O_RDWR, 0o600)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # locked before it gets a name other spools look at, so nobody adopts a live folder
        os.rename(staging, self.root / name)
        self.dir, self._lock_fd, self._pid = self.root / name, fd, os.getpid()
        self.adopt()

    def adopt(self) -> int:
        """Move the batches of folders whose owner died into this spool; returns how many batches."""
        if self.root is None or self.dir is None or fcntl is None:
            return 0
        moved = 0
        for d in sorted(self.root.iterdir()):
            if d == self.dir or d.name.startswith(".") or not d.is_dir():
                continue
            try:
                fd = os.open(d / _LOCK, os.O_RDWR)
            except OSError:
                continue  # being removed by another adopter, or not ours
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # its owner is alive
                for f in d.iterdir():
                    m = _NAME.match(f.name)
                    if m:
                        target = self.dir / f.name
                        if target.exists():  # same nanosecond in two processes: keep both
                            target = self.dir / f"{self._next_ns():020d}-{m.group(2)}.arrows"
                        os.replace(f, target)
                        moved += 1
                    elif f.name != _LOCK:
                        f.unlink(missing_ok=True)  # a temporary file a crash left half written
                (d / _LOCK).unlink(missing_ok=True)
                d.rmdir()
            except OSError:
                continue
            finally:
                os.close(fd)
        self._rescan()
        return moved

    def release(self) -> None:
        """Unlock the folder, leaving its files for the next spool on ``root`` to adopt (after ``close``)."""
        if self._lock_fd is None:
            return
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)
        self._lock_fd = self._pid = self.dir = self.busy = None
        self.entries.clear()
        self.bytes = self.rows = 0

    def _rescan(self) -> None:
        assert self.dir is not None
        found = []
        for f in self.dir.iterdir():
            m = _NAME.match(f.name)
            if m:
                found.append(_Entry(f.name, int(m.group(2)), f.stat().st_size))
        found.sort(key=lambda e: e.name)
        self.entries = deque(found)
        self.bytes = sum(e.size for e in found)
        self.rows = sum(e.rows for e in found)

    def _next_ns(self) -> int:
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        return self._last_ns

    # -- the queue --------------------------------------------------------------------------------------

    def put(self, body: bytes, rows: int) -> list[_Entry]:
        """Append one batch; returns the entries evicted to stay under ``max_bytes`` (the new one, if too big)."""
        self.open()
        name = f"{self._next_ns():020d}-{rows}.arrows"
        entry = _Entry(name, rows, len(body))
        if entry.size > self.max_bytes:
            return [entry]
        evicted: list[_Entry] = []
        while self.bytes + entry.size > self.max_bytes:
            victim = next((e for e in self.entries if e.name != self.busy), None)
            if victim is None:
                return [entry]
            self.remove(victim)
            evicted.append(victim)
        if self.dir is None:
            self.bodies[name] = body
        else:
            tmp = self.dir / f".{name}.tmp"
            try:
                with open(tmp, "wb") as f:
                    f.write(body)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.dir / name)
            except OSError:
                tmp.unlink(missing_ok=True)
                raise
        self.entries.append(entry)
        self.bytes += entry.size
        self.rows += entry.rows
        return evicted

    def oldest(self) -> _Entry | None:
        self.open()
        return self.entries[0] if self.entries else None

    def read(self, entry: _Entry) -> bytes:
        if self.dir is None:
            return self.bodies[entry.name]
        return (self.dir / entry.name).read_bytes()

    def remove(self, entry: _Entry) -> None:
        with contextlib.suppress(ValueError):
            self.entries.remove(entry)
            self.bytes -= entry.size
            self.rows -= entry.rows
        if self.dir is None:
            self.bodies.pop(entry.name, None)
        else:
            (self.dir / entry.name).unlink(missing_ok=True)

    def has_orphans(self) -> bool:
        """Whether ``root`` holds batch files at all (cheap: decides whether to start resending at once)."""
        if self.root is None or not self.root.is_dir():
            return False
        try:
            return any(_NAME.match(f.name) for d in self.root.iterdir() if d.is_dir() for f in d.iterdir())
        except OSError:  # a folder went away while we looked (another process adopted it): let the resender see
            return True
