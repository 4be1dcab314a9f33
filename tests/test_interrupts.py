"""Interrupts: the command line started as a subprocess, signalled once it has started a notebook
kernel (issue 21, item 3).

Oracles: the exit code the signal asks for (128 + signum), the lines the user sees (only the
command's own ``[conelib]`` lines and the kernel's start-up notice; exactly one saying what was
interrupted, last), the process table (the kernel and every process it started are gone), the
temporary folder (each test gives the command its own ``TMPDIR``: no connection file, no
checkpoint folder left), and for a ``--book`` run the chapter's stale mark that ``conelib book``
reports.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest

from conelib.tools import book, nbrun

ROOT = Path(__file__).resolve().parent.parent
#: a kernel-dynamics run on digits long enough to be interrupted (minutes), and a switching run
#: with two worker processes
LONG_KD = dict(profile="quick", model="lenet_300_100", dataset="digits", steps=200000, snapshot_every=10000,
               dts="[10000]", taus="[10000]", probe_size=16, batch_size=32, device="cpu", seeds="[0]")
SWITCHING = dict(profile="quick", model="lenet_300_100", dataset="digits", steps=300, eval_every=50,
                 switch_steps="[0, 50, 100, 150, 200, 250]", compare_from=100, batch_size=32, device="cpu",
                 processes=2)
#: the kernel's own start-up notice (ipykernel's, not ours): the only other line allowed
KERNEL_NOTICE = "Kernel is running over TCP without encryption"

pytestmark = pytest.mark.slow


def _start(tmp_path: Path, command: list[str], params: dict, *, prefix: list[str] | None = None) -> subprocess.Popen:
    args = [sys.executable, *(prefix or ["-m", "conelib"]), *command, "--quiet"]
    for k, v in {**params, "results_root": str(tmp_path / "res")}.items():
        args += ["-p", k, str(v)]
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=env)


def _kernel(proc: subprocess.Popen, *, children: int = 0, settle: float = 2, timeout: float = 300) -> psutil.Process:
    """The notebook kernel the command started (once it has ``children`` processes of its own),
    ``settle`` seconds later."""
    deadline = time.monotonic() + timeout
    runner = psutil.Process(proc.pid)
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        for child in runner.children(recursive=True):
            try:
                cmd = " ".join(child.cmdline())
                if ("conelib.tools.nbkernel" in cmd or "ipykernel" in cmd) and len(child.children(recursive=True)) >= children:
                    time.sleep(settle)  # let it get into the cell's work
                    return child
            except psutil.Error:
                continue
        time.sleep(0.3)
    pytest.fail("no kernel started")


def _gone(pids: list[int], timeout: float = 30) -> list[int]:
    """The processes among ``pids`` still alive after ``timeout`` s (zombies count as gone)."""
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if psutil.pid_exists(p) and _status(p) != psutil.STATUS_ZOMBIE]
        time.sleep(0.3)
    return alive


def _status(pid: int) -> str:
    try:
        return psutil.Process(pid).status()
    except psutil.Error:
        return psutil.STATUS_ZOMBIE


def _interrupt(proc: subprocess.Popen, sig: int) -> tuple[int, list[str]]:
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, out.splitlines()


#: a Python warning (printed by a process as it starts: before the interrupt) and its source line
WARNING = re.compile(r"^\S+:\d+: \w*Warning: |^  warnings\.warn\($")


def _check_one_line(lines: list[str], sig: int, notebook: str) -> str:
    noise = [ln for ln in lines if ln.strip() and not ln.startswith("[conelib] ") and KERNEL_NOTICE not in ln
             and not WARNING.search(ln)]
    assert noise == [], "\n".join(lines)
    said = [ln for ln in lines if "interrupted" in ln]
    assert len(said) == 1 and said[0] == lines[-1], "\n".join(lines)
    assert said[0].startswith(f"[conelib] interrupted ({signal.Signals(sig).name}) while running notebook {notebook}")
    assert "kept: " in said[0] and "Traceback" not in "\n".join(lines)
    return said[0]


def _leftovers(tmp_path: Path) -> list[str]:
    """What conelib and Jupyter left in the command's TMPDIR: connection files (``*.json``),
    checkpoint folders and temporary files (``conelib-*``). (torch's ``torchinductor_*`` cache and
    multiprocessing's ``pymp-*`` folders are left by an uninterrupted run too.)"""
    return sorted(p.name for p in (tmp_path / "tmp").iterdir()
                  if p.name.endswith(".json") or p.name.startswith(("conelib-", "tmp")))


def test_ctrl_c_stops_the_kernel_and_says_so_in_one_line(tmp_path):
    proc = _start(tmp_path, ["run", "kernel_dynamics", "-o", "out.ipynb"], LONG_KD)
    kernel = _kernel(proc)
    code, lines = _interrupt(proc, signal.SIGINT)
    assert code == 130
    line = _check_one_line(lines, signal.SIGINT, "kernel_dynamics")
    assert f"{tmp_path / 'out.ipynb'} not written" in line and not (tmp_path / "out.ipynb").exists()
    assert _gone([kernel.pid]) == [] and _leftovers(tmp_path) == []
    assert not list((tmp_path / "res").rglob("*.nc"))  # no partial result


def test_sigterm_of_a_book_run_marks_the_chapter_stale(tmp_path):
    generated = tmp_path / "book" / "generated"
    generated.mkdir(parents=True)
    chapter = generated / "kernel_dynamics.ipynb"
    old = nbformat.v4.new_notebook()
    old.cells = [nbformat.v4.new_markdown_cell("# Old chapter"), nbformat.v4.new_markdown_cell("old numbers")]
    nbformat.write(old, chapter)
    # the command line, with the book's folder moved to tmp_path (the checkout's is left alone)
    prefix = ["-c", "import sys; from pathlib import Path; from conelib import paths; from conelib.tools import cli, nbrun; "
                    f"g = Path({str(generated)!r}); paths.generated_dir = lambda: g; "
                    "nbrun._is_chapter = lambda out: out.parent == g; sys.exit(cli.main(sys.argv[1:]))"]
    proc = _start(tmp_path, ["run", "kernel_dynamics", "--book"], LONG_KD, prefix=prefix)
    kernel = _kernel(proc)
    code, lines = _interrupt(proc, signal.SIGTERM)
    assert code == 143
    line = _check_one_line(lines, signal.SIGTERM, "kernel_dynamics")
    assert f"the previous chapter {chapter} (marked stale)" in line
    marker = json.loads(nbrun.failure_marker(chapter).read_text())
    assert marker["error"] == "interrupted by SIGTERM" and marker["notebook"] == "kernel_dynamics"
    nb = nbformat.read(chapter, as_version=4)
    assert [c.source for c in nb.cells if nbrun.STALE_TAG not in c.metadata.get("tags", [])] == \
        ["# Old chapter", "old numbers"]
    assert nbrun.STALE_TAG in nb.cells[1].metadata["tags"] and "interrupted by SIGTERM" in nb.cells[1].source
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/generated/kernel_dynamics\n")
    assert book.stale_chapters(tmp_path) == ["kernel_dynamics"]  # `conelib book` warns and exits 1
    assert _gone([kernel.pid]) == [] and _leftovers(tmp_path) == []


def test_sigterm_of_a_run_with_worker_processes_is_quiet_and_leaves_no_process(tmp_path):
    proc = _start(tmp_path, ["run", "switching", "-o", "out.ipynb"], SWITCHING)
    kernel = _kernel(proc, children=3)  # multiprocessing's resource tracker and two workers
    family = [kernel.pid, *(c.pid for c in kernel.children(recursive=True))]
    code, lines = _interrupt(proc, signal.SIGTERM)
    assert code == 143
    _check_one_line(lines, signal.SIGTERM, "switching")
    assert _gone(family) == []
    assert _leftovers(tmp_path) == []  # no checkpoint folder, no connection file


def test_sigkill_of_the_command_takes_the_kernel_and_its_workers_along(tmp_path):
    proc = _start(tmp_path, ["run", "switching", "-o", "out.ipynb"], SWITCHING)
    kernel = _kernel(proc, children=3)
    family = [kernel.pid, *(c.pid for c in kernel.children(recursive=True))]
    proc.kill()
    proc.communicate(timeout=120)  # returns once every process holding the output pipe is gone
    assert _gone(family) == []
    assert _leftovers(tmp_path) == []  # no connection file, no checkpoint folder
    assert not (tmp_path / "out.ipynb").exists()


def test_sigkill_while_the_kernel_starts_leaves_no_kernel_and_no_connection_file(tmp_path):
    proc = _start(tmp_path, ["run", "kernel_dynamics", "-o", "out.ipynb"], LONG_KD)
    kernel = _kernel(proc, settle=0)  # killed while the kernel is still starting up
    proc.kill()
    proc.communicate(timeout=120)
    assert _gone([kernel.pid]) == []
    assert _leftovers(tmp_path) == []
