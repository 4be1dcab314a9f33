"""The Jupyter kernel of a notebook that conelib runs: it stops when asked, and goes with its runner.

:func:`conelib.tools.nbrun.run_notebook` executes a notebook through papermill under a
:class:`Supervisor`, which differs from papermill's defaults in four ways:

* **Interrupts.** While the notebook runs, SIGINT and SIGTERM do not unwind the runner in the
  middle of papermill (which left the kernel printing tracebacks into closed sockets). The
  supervisor closes the output gates (nothing more is printed), interrupts the kernel's process
  group (the kernel and what it started, e.g. the switching experiment's workers: the running cell
  raises ``KeyboardInterrupt``), lets no further cell start, and, if the kernel has not stopped
  after :data:`GRACE_SECONDS` (or at a second signal), kills that process group. The runner then
  reports the interrupt (:class:`conelib.tools.nbrun.NotebookInterrupted`).
* **Connection file.** Named ``<tmp>/conelib-kernel.tmp.<runner pid>.<random>.json`` (not
  ``/tmp/tmp*.json``) and removed as soon as the kernel is ready (it has read it; the client keeps
  the ports in memory). If the runner is killed during the kernel's start-up, the launcher (below)
  removes it as it stops; failing that, the next run does (:func:`conelib.atomic.sweep_stale`, as
  for every temporary file of a dead process).
* **Parent watch.** The kernel runs under this module's launcher (``python -m conelib.tools.nbkernel``,
  in place of ``-m ipykernel_launcher``), which polls its parent: when the runner is gone (killed
  outright, SIGKILL) it stops the kernel's children, removes the connection file and the kernel's
  own temporary folders (the switching experiment's checkpoints), and exits. ipykernel's own watch
  (``JPY_PARENT_PID``) stops only the kernel and leaves its worker processes running.
* **Kernel diagnostics.** The kernel process's own stdout/stderr (its log lines, not the cells'
  output, which papermill streams) pass through a gate too, so an interrupt ends quietly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from conelib.atomic import TMP_MARK, sweep_stale

__all__ = ["Supervisor", "Gate", "GRACE_SECONDS", "CONNECTION_PREFIX", "sweep_connection_files", "main"]

#: seconds an interrupted kernel has to stop before its process group is killed
GRACE_SECONDS = 10.0
#: the connection files of conelib's kernels: ``<tmp>/conelib-kernel.tmp.<pid>.<random>.json``
CONNECTION_PREFIX = "conelib-kernel"
#: how often the launcher checks that its parent is alive (seconds)
WATCH_INTERVAL = 0.5
#: the signal that ends a kernel that does not stop when interrupted
_KILL = getattr(signal, "SIGKILL", signal.SIGTERM)
#: the runner's process id, handed to the launcher (which may start after the runner died)
PARENT_ENV = "CONELIB_KERNEL_PARENT"


class Gate:
    """A text stream that forwards to ``target`` until :meth:`close` (then drops everything).

    Thread-safe; ``target`` ``None`` drops everything from the start.
    """

    def __init__(self, target: IO[str] | None) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._open_line = False  # the last text written did not end a line (a progress bar)

    def write(self, text: str) -> int:
        with self._lock:
            if self.target is not None and text:
                with contextlib.suppress(ValueError, OSError):
                    self.target.write(text)
                self._open_line = not text.endswith("\n")
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self.target is not None:
                with contextlib.suppress(ValueError, OSError):
                    self.target.flush()

    def close(self) -> None:
        """Forward nothing more (after ending a line left open, so what follows starts on its own)."""
        with self._lock:
            if self.target is not None and self._open_line:
                with contextlib.suppress(ValueError, OSError):
                    self.target.write("\n")
                    self.target.flush()
            self.target = None


class Cancelled(Exception):
    """Raised before a cell starts once the run was interrupted (stops papermill's loop)."""


def sweep_connection_files() -> list[Path]:
    """Remove the connection files that conelib runners killed outright left in the temp folder."""
    return sweep_stale(tempfile.gettempdir(), f"{CONNECTION_PREFIX}{TMP_MARK}*")


def _kernel_manager_base() -> type:
    from jupyter_client.manager import AsyncKernelManager

    return AsyncKernelManager


class Supervisor:
    """One notebook run's kernel: its interrupts, its output gates and its connection file.

    Use as a context manager around ``papermill.execute_notebook(..., **supervisor.engine_kwargs())``.
    Inside, SIGINT and SIGTERM (main thread only) go to :meth:`on_signal`; ``signum`` is then the
    first signal received (``None`` while not interrupted).
    """

    def __init__(self, *, quiet: bool = False, grace: float = GRACE_SECONDS) -> None:
        self.stdout = Gate(None if quiet else sys.stdout)
        self.stderr = Gate(None if quiet else sys.stderr)
        self.kernel_log = Gate(sys.stderr)
        self.grace = grace
        self.signum: int | None = None
        self.kernel: Any = None  # the kernel manager, once the kernel is launched
        self._timer: threading.Timer | None = None
        self._previous: dict[int, Any] = {}
        self._logging: int | None = None  # the logging.disable level before mute()

    # -- the context: signal handlers ----------------------------------------------------------

    def __enter__(self) -> Supervisor:
        sweep_connection_files()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self.on_signal)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        if self._timer is not None:
            self._timer.cancel()
        if self._logging is not None:
            logging.disable(self._logging)
            self._logging = None

    def on_signal(self, signum: int, _frame: Any = None) -> None:
        """First signal: silence, interrupt the kernel, kill it after the grace period. Second: kill now."""
        first = self.signum is None
        if first:
            self.signum = signum
        self.mute()
        if first:
            self.signal_kernel(signal.SIGINT)
            self._timer = threading.Timer(self.grace, self.signal_kernel, args=(_KILL,))
            self._timer.daemon = True
            self._timer.start()
        else:
            self.signal_kernel(_KILL)

    def mute(self) -> None:
        """Nothing more from the notebook, the kernel or the libraries' logs reaches the terminal
        (nbclient logs a kernel that died on the way down; that is the interrupt, already said)."""
        for gate in (self.stdout, self.stderr, self.kernel_log):
            gate.close()
        if self._logging is None:
            self._logging = logging.root.manager.disable
            logging.disable(logging.CRITICAL)

    def signal_kernel(self, sig: int) -> None:
        """Send ``sig`` to the kernel's process group (the kernel and every process it started)."""
        provisioner = getattr(self.kernel, "provisioner", None)
        pgid = getattr(provisioner, "pgid", None) or getattr(provisioner, "pid", None)
        if pgid and hasattr(os, "killpg"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        elif provisioner is not None and hasattr(provisioner, "process"):  # no process groups (Windows)
            with contextlib.suppress(OSError, AttributeError):
                provisioner.process.send_signal(sig)

    # -- papermill / nbclient hooks ------------------------------------------------------------

    def engine_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``papermill.execute_notebook`` (passed on to nbclient)."""
        return {"kernel_manager_class": self.kernel_manager_class(), "on_notebook_start": self._ready,
                "on_cell_start": self._before_cell, "stdout_file": self.stdout, "stderr_file": self.stderr}

    def _ready(self, **_: Any) -> None:
        # the kernel has read its connection file: remove it now (the client keeps the ports)
        path = getattr(self.kernel, "connection_file", None)
        if path:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def _before_cell(self, **_: Any) -> None:
        if self.signum is not None:
            raise Cancelled("interrupted")

    def kernel_manager_class(self) -> type:
        """A kernel manager class bound to this supervisor (nbclient instantiates it)."""
        base = _kernel_manager_base()
        supervisor = self

        class SupervisedKernelManager(base):  # type: ignore[misc, valid-type]
            """jupyter_client's kernel manager with conelib's connection file, launcher and gates."""

            def __init__(self, **kw: Any) -> None:
                super().__init__(**kw)
                if not self.connection_file:
                    self.connection_file = os.path.join(
                        tempfile.gettempdir(), f"{CONNECTION_PREFIX}{TMP_MARK}{os.getpid()}.{secrets.token_hex(4)}.json")

            def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
                return launcher_command(super().format_kernel_cmd(extra_arguments))

            async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
                kw["env"] = {**(kw.get("env") or os.environ), PARENT_ENV: str(os.getpid())}
                kw.setdefault("stdout", subprocess.PIPE)
                kw.setdefault("stderr", subprocess.PIPE)
                supervisor.kernel = self
                await super()._async_launch_kernel(kernel_cmd, **kw)
                process = getattr(self.provisioner, "process", None)
                for stream in (getattr(process, "stdout", None), getattr(process, "stderr", None)):
                    if stream is not None:
                        threading.Thread(target=_forward, args=(stream, supervisor.kernel_log), daemon=True,
                                         name="conelib-kernel-output").start()
                if supervisor.signum is not None:  # interrupted while the kernel was starting
                    supervisor.signal_kernel(_KILL)

        return SupervisedKernelManager


def _forward(stream: IO[bytes], gate: Gate) -> None:
    with contextlib.suppress(OSError, ValueError):
        for line in iter(stream.readline, b""):
            gate.write(line.decode("utf-8", "replace"))
            gate.flush()


def launcher_command(cmd: list[str]) -> list[str]:
    """``cmd`` with ``-m ipykernel_launcher`` replaced by ``-m conelib.tools.nbkernel`` (other kernels:
    unchanged)."""
    out = list(cmd)
    for i in range(len(out) - 1):
        if out[i] == "-m" and out[i + 1] == "ipykernel_launcher":
            out[i + 1] = "conelib.tools.nbkernel"
    return out


# --------------------------------------------------------------------------------------------
# the launcher: python -m conelib.tools.nbkernel -f <connection file>
# --------------------------------------------------------------------------------------------


def _connection_file(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "-f" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--f=") or arg.startswith("--IPKernelApp.connection_file="):
            return arg.split("=", 1)[1]
    return None


def _stop_children_and_exit(connection_file: str | None) -> None:
    """The runner is gone: remove the connection file, stop every process this kernel started
    (SIGTERM, then SIGKILL after 3 s), then exit. multiprocessing's resource tracker is left to
    exit by itself once the kernel is gone (it then releases the workers' semaphores)."""
    if connection_file:
        with contextlib.suppress(OSError):
            os.unlink(connection_file)
    try:
        import psutil

        children = []
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "multiprocessing.resource_tracker" not in " ".join(child.cmdline()):
                    child.terminate()
                    children.append(child)
        _, alive = psutil.wait_procs(children, timeout=3)
        for child in alive:
            with contextlib.suppress(psutil.Error):
                child.kill()
    except ImportError:  # no psutil: the whole process group, this kernel included
        with contextlib.suppress(OSError, AttributeError):
            os.killpg(os.getpgrp(), _KILL)
    # this kernel's own temporary files and folders (the switching experiment's checkpoints; the
    # kernel's main thread may be removing them too, as its workers stopped: errors are expected)
    for own in Path(tempfile.gettempdir()).glob(f"*{TMP_MARK}{os.getpid()}.*"):
        if own.is_dir():
            shutil.rmtree(own, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                own.unlink()
    os._exit(1)


def watch_parent(parent: int, on_gone: Callable[[], None], interval: float = WATCH_INTERVAL) -> None:
    """Call ``on_gone()`` once the process's parent is no longer ``parent`` (it died; the kernel
    was re-parented), at once if it is not ``parent`` already."""
    while os.getppid() == parent:
        time.sleep(interval)
    on_gone()


def main() -> None:
    """Start an IPython kernel (as ``python -m ipykernel_launcher`` does) that goes with its parent."""
    if sys.path and sys.path[0] == "":
        del sys.path[0]
    # this watch replaces ipykernel's (which stops the kernel only, and would race this one): ipykernel
    # starts no watch of its own for parent 1, and, unlike with no parent, prints no "Ctrl-C will not work"
    os.environ["JPY_PARENT_PID"] = "1"
    connection_file = _connection_file(sys.argv[1:])
    # the runner's id as it launched the kernel: if the runner died while this module was being
    # imported, the parent has already changed and the watch stops the kernel at once
    parent = int(os.environ.pop(PARENT_ENV, "") or os.getppid())
    threading.Thread(target=watch_parent, args=(parent, lambda: _stop_children_and_exit(connection_file)),
                     daemon=True, name="conelib-parent-watch").start()
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


if __name__ == "__main__":
    main()
