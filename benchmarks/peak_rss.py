"""Peak resident memory of *this* process, for the benchmark workers (Linux).

``getrusage(RUSAGE_SELF).ru_maxrss`` is no good in a worker started by a large parent: Linux
keeps the high-water mark of the address space replaced at ``exec``, and Python's ``subprocess``
starts children with ``vfork`` (that space is the parent's), so a fresh worker already reports the
parent's peak. ``VmHWM`` in ``/proc/self/status`` belongs to the worker's own address space, and
writing ``5`` to ``/proc/self/clear_refs`` resets it (Linux >= 4.0), so the peak of one phase can
be read on its own. Elsewhere ``ru_maxrss`` is used (and may overstate the peak).
"""
from __future__ import annotations

import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """High-water mark of this process's resident memory (since the last :func:`reset_peak`)."""
    kib = _status_kib("VmHWM")
    if kib is None:
        scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    return kib * 1024


def current_rss_bytes() -> int:
    kib = _status_kib("VmRSS")
    return peak_rss_bytes() if kib is None else kib * 1024


def reset_peak() -> bool:
    """Reset the high-water mark to the current resident memory; False where that is impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@dataclass
class Usage:
    """Memory of the calls inside :func:`watch`: the process's peak (setup included) and the
    growth of resident memory during the calls (their own peak minus the memory before them)."""

    peak_bytes: int = 0
    extra_bytes: int = 0


@contextmanager
def watch() -> Iterator[Usage]:
    """Measure the calls in the ``with`` block; the :class:`Usage` is filled in when it ends."""
    usage = Usage()
    setup_peak, before = peak_rss_bytes(), current_rss_bytes()
    reset_peak()
    yield usage
    calls_peak = peak_rss_bytes()
    usage.peak_bytes, usage.extra_bytes = max(setup_peak, calls_peak), calls_peak - before
