"""Files written so that a crash or a concurrent reader never sees half of one, and directories one process at a time."""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LOCK_NAME = ".tsrl.lock"


def _umask() -> int:
    """The process's umask; reading it means setting it, so it is set back at once (at import, before any thread)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()
"""The mode of a file written here: what ``open()`` would give it (``mkstemp`` makes its files 0600)."""

logger = logging.getLogger(__name__)


class DirectoryInUse(RuntimeError):
    """Another live process holds the lock of a directory."""


def write_atomically(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file beside it, synced, then renamed over the old file.

    A crash or a kill at any point leaves the old file or the new one, never a mix; a failed write (a full disk)
    removes its temporary file and raises an OSError, the old file left as it was. Each write has a temporary file of
    its own, so processes writing the same path at once (two runs generating the same cached dataset) do not mix.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            os.fchmod(file.fileno(), FILE_MODE)
            file.write(data.encode() if isinstance(data, str) else data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    """Make the rename durable (POSIX); platforms that cannot open directories skip it."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


@contextmanager
def directory_lock(directory: Path, holder: str) -> Iterator[None]:
    """Hold the advisory lock of ``directory`` while the block runs: a file ``.tsrl.lock`` naming this process (its pid
    and host) and ``holder``, what it runs there (``"tsrl benchmark"``).

    A lock of another live process raises :class:`DirectoryInUse` naming it; a lock left by a process of this host
    that no longer runs (killed) is taken over with a logged warning. A lock of another host cannot be checked: it is
    refused, and the message says to delete it if that process is gone.
    """
    path = Path(directory) / LOCK_NAME
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "holder": holder, "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    _take_lock(path, mine)
    try:
        yield
    finally:
        if path.is_file() and _lock_holder(path) == mine:
            path.unlink()


def _take_lock(path: Path, mine: dict[str, Any]) -> None:
    # The lock is written whole beside it and then linked in place: a link fails if the lock exists, so no other
    # process ever reads a lock half written.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp")
    try:
        try:
            with os.fdopen(handle, "w") as file:
                json.dump(mine, file)
        except OSError as error:
            raise OSError(
                error.errno, f"cannot write the lock file {str(path)!r} ({error.strerror or error}): free space on its disk"
            ) from error
        while True:
            try:
                os.link(temporary, path)
                return
            except FileExistsError:
                try:
                    holder = _lock_holder(path)
                except FileNotFoundError:
                    continue  # released meanwhile
                _forget_stale_lock(path, holder, mine["host"])
    finally:
        os.unlink(temporary)


def _forget_stale_lock(path: Path, holder: dict[str, Any] | None, host: str) -> None:
    """Delete the lock at ``path`` if its holder is gone; refuse while it may run."""
    if holder is None:
        stale = "an unreadable lock"
    elif holder.get("host") == host and not _process_runs(holder.get("pid")):
        stale = f"the lock of {holder.get('holder')} (pid {holder.get('pid')}, no longer running, since {holder.get('since')})"
    else:
        elsewhere = "" if holder.get("host") == host else f" on host {holder.get('host')}"
        raise DirectoryInUse(
            f"{path.parent} is in use by {holder.get('holder')} (pid {holder.get('pid')}{elsewhere}, since "
            f"{holder.get('since')}; lock file {path}): wait for it to end or give another output directory. If no "
            "such process runs any more, delete the lock file"
        )
    logger.warning("taking over %s on %s", stale, path.parent)
    path.unlink(missing_ok=True)


def _lock_holder(path: Path) -> dict[str, Any] | None:
    """The holder a lock file names; None for one that cannot be read (damaged: no process can be named)."""
    try:
        holder = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _process_runs(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
