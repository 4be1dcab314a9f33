"""Atomic file writes that respect the umask and leave nothing behind.

:func:`atomic_write` writes to a temporary file in the target's folder, then renames it over the
target (``os.replace``): a reader sees the old file or the complete new one, never a partial
file. The temporary file is removed on every exit path Python sees (an exception,
``KeyboardInterrupt``, ``SystemExit`` from SIGTERM under the CLI); a process killed outright
(SIGKILL) cannot clean up, so temporary names carry the writer's process id and
:func:`sweep_stale` removes those whose process is gone (every :func:`atomic_write` in a folder
does it first). Files are created with the permissions of the user's umask (as ``open`` would),
not the 0600 of :func:`tempfile.mkstemp`, so a shared results folder stays readable.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "sweep_stale", "umask", "apply_umask", "pid_alive", "check_writable", "TMP_MARK"]

#: temporary files are named ``<name>.tmp.<pid>.<random>``
TMP_MARK = ".tmp."
_TMP_RE = re.compile(r"\.tmp\.(\d+)\.[^/]*$")


@functools.cache
def umask() -> int:
    """The process's umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)  # elsewhere: set and restore (once per process)
    os.umask(old)
    return old


def apply_umask(path: str | os.PathLike, mode: int = 0o666) -> None:
    """Give ``path`` the permissions a plain ``open`` would have (``mode & ~umask``)."""
    os.chmod(path, mode & ~umask())


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(folder: str | os.PathLike, pattern: str = f"*{TMP_MARK}*") -> list[Path]:
    """Remove temporary files (and folders) under ``folder`` whose writer process is gone.

    Returns:
        What was removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for p in folder.glob(pattern):
        m = _TMP_RE.search(p.name)
        if m is None or pid_alive(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
    return removed


def check_writable(folder: str | os.PathLike, *, need_bytes: int = 0, what: str = "results") -> Path:
    """Make ``folder`` and check, before any work, that a file can be written there and that the
    disk has ``need_bytes`` free.

    Raises:
        PermissionError: the folder cannot be created or written.
        OSError: not enough free space (the message says how much is free and needed).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".write-check{TMP_MARK}{os.getpid()}.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise PermissionError(f"cannot write {what} to {folder} ({err.strerror or err}); choose another folder "
                              "(results_root / --results-root) or fix its permissions") from err
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise OSError(f"not enough free space for {what} in {folder}: {free / 2**20:.0f} MiB free, about "
                      f"{need_bytes / 2**20:.0f} MiB needed")
    return folder


def atomic_write(path: str | Path, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then ``os.replace`` it onto ``path``.

    A reader sees the old file or the complete new one, never a partial file; if ``write`` fails
    (or the process is interrupted) the temporary file is removed and ``path`` is untouched. The
    new file gets the umask's permissions.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path.parent, f"{path.name}{TMP_MARK}*")
    fd, tmp = tempfile.mkstemp(prefix=f"{path.name}{TMP_MARK}{os.getpid()}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path
