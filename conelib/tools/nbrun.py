"""Execute an experiment notebook with papermill: its one source, its parameters, its output.

The source of each notebook is ``notebooks/<name>.md``, a MyST-markdown notebook paired by
jupytext: people edit it (as text, or in JupyterLab, where jupytext opens it as a notebook and
saves it back without outputs). Nothing generates it. :func:`run_notebook`

1. checks the parameters (:func:`conelib.tools.nbparams.check`): a bad name or value stops here,
   before a kernel starts, with the parameter named;
2. reads the source with jupytext and turns every inline expression ``{eval}`expr``` in its
   markdown into a myst-nb glue: a hidden code cell just before that markdown cell runs
   ``glue(key, expr)`` and the role becomes ``{glue:text}`key```. In JupyterLab the same
   ``{eval}`` roles are evaluated live by jupyterlab-myst; in the book they are glued values.
   Either way, the number in the prose is computed from the data when the notebook runs;
3. executes it with papermill in ``notebooks/`` (cell output streamed unless ``quiet``), into a
   temporary file beside the output, renamed into place only on success and signed as trusted
   (so JupyterLab shows its HTML outputs);
4. for a chapter of the book (an output in ``book/generated/``): on failure it keeps the previous
   executed chapter but marks it at the top as stale (what failed, when, with which parameters)
   and leaves a ``<name>.failed.json`` marker that the book build reports; success removes both.

Interrupts (SIGINT, Ctrl-C, SIGTERM) while the notebook runs are handled by
:class:`conelib.tools.nbkernel.Supervisor`: the output stops, the kernel's process group is interrupted
(then killed if it does not stop), no output file is written, a chapter is marked stale as after
a failure, and :class:`NotebookInterrupted` says what was kept. The kernel also goes when the
runner is killed outright (SIGKILL), taking the processes it started with it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from conelib import paths
from conelib.atomic import TMP_MARK, apply_umask, atomic_write, sweep_stale
from conelib.tools.nbkernel import Cancelled, Supervisor
from conelib.tools.nbparams import NOTEBOOKS, absolute_paths, check, preflight

__all__ = ["run_notebook", "read_source", "inline_to_glue", "source_path", "failure_marker", "STALE_TAG",
           "NotebookFailed", "NotebookInterrupted"]

#: the tag of the warning cell put at the top of a stale chapter
STALE_TAG = "conelib-stale"
#: ``{eval}`expr``` in MyST markdown
_EVAL = re.compile(r"\{eval\}`([^`]+)`")
#: set in the kernel's environment by :func:`run_notebook`: charts as HTML with the local bundle
RENDERER_ENV = "CONELIB_RENDERER"


class NotebookFailed(RuntimeError):
    """A notebook raised while it ran; the message has the cell's error and where the output is."""


class NotebookInterrupted(KeyboardInterrupt):
    """A notebook run was stopped by SIGINT or SIGTERM. Its kernel (and every process it started)
    is gone, no output was written, a chapter of the book keeps its previous run marked stale.

    Attributes:
        signum: the signal; ``exit_code`` is ``128 + signum`` (130 for SIGINT, 143 for SIGTERM).
        notebook, output: what was running and where its output would have gone.
        kept: what is left, in words.
    """

    def __init__(self, signum: int, notebook: str, output: Path, kept: str, seconds: float) -> None:
        self.signum, self.notebook, self.output, self.kept, self.seconds = signum, notebook, output, kept, seconds
        super().__init__(self.line())

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)

    def line(self) -> str:
        """The one line the command line prints."""
        return (f"[conelib] interrupted ({signal.Signals(self.signum).name}) while running notebook {self.notebook} "
                f"after {self.seconds:.0f} s; kernel stopped; kept: {self.kept}")


def source_path(name: str) -> Path:
    """``notebooks/<name>.md`` of the checkout."""
    if name not in NOTEBOOKS:
        raise ValueError(f"unknown notebook {name!r}; the notebooks are {list(NOTEBOOKS)}")
    return paths.notebooks_dir() / f"{name}.md"


def read_source(path: str | os.PathLike) -> Any:
    """A notebook source (MyST markdown, or .ipynb) as an ``nbformat`` notebook."""
    import jupytext

    return jupytext.read(str(path))


def inline_to_glue(nb: Any) -> Any:
    """Turn the ``{eval}`expr``` roles of the markdown cells into myst-nb glue (in place).

    Before each markdown cell with such roles a code cell (tagged ``remove-cell``) is inserted
    that glues every expression, evaluated at that point of the notebook; the roles become
    ``{glue:text}`` roles of the same values. Returns ``nb``.
    """
    import nbformat

    cells = []
    n = 0
    for cell in nb.cells:
        if cell.cell_type == "markdown" and _EVAL.search(cell.source):
            lines = ["from myst_nb import glue as _conelib_glue"]
            keys: dict[str, str] = {}

            def swap(m: re.Match) -> str:
                nonlocal n
                expr = m.group(1).strip()
                if expr not in keys:
                    keys[expr] = f"_eval_{n}"
                    n += 1
                    lines.append(f"_conelib_glue({keys[expr]!r}, ({expr}), display=False)")
                return f"{{glue:text}}`{keys[expr]}`"

            cell.source = _EVAL.sub(swap, cell.source)
            code = nbformat.v4.new_code_cell("\n".join(lines))
            code.metadata["tags"] = ["remove-cell"]
            cells.append(code)
        cells.append(cell)
    nb.cells = cells
    return nb


def failure_marker(output: Path) -> Path:
    """The ``<name>.failed.json`` beside an executed chapter."""
    return output.with_name(output.stem + ".failed.json")


def _is_chapter(output: Path) -> bool:
    root = paths.repo_root()
    return root is not None and output.resolve().parent == (root / "book" / "generated").resolve()


def _stale_cell(info: dict[str, Any]) -> Any:
    import nbformat

    params = ", ".join(f"{k}={v!r}" for k, v in info["parameters"].items()) or "none"
    text = (f":::{{warning}}\n**This chapter is out of date.** Its last run failed on {info['when']} "
            f"(parameters: {params}) with\n\n```text\n{info['error']}\n```\n\nWhat follows is the output of the "
            f"previous successful run. Fix the cause and run `conelib run {info['notebook']} --book` "
            f"(or `make main`) to replace it.\n:::")
    cell = nbformat.v4.new_markdown_cell(text)
    cell.metadata["tags"] = [STALE_TAG]
    return cell


def _mark_stale(output: Path, info: dict[str, Any]) -> None:
    """Write the failure marker and, if a previous chapter exists, a warning cell at its top."""
    import nbformat


    marker = failure_marker(output)
    atomic_write(marker, lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8"))
    if output.is_file():
        nb = nbformat.read(output, as_version=4)
        nb.cells = [c for c in nb.cells if STALE_TAG not in c.metadata.get("tags", [])]
        at = 1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0  # after the title
        nb.cells.insert(at, _stale_cell(info))
        atomic_write(output, lambda tmp: nbformat.write(nb, tmp))


def _sign(path: Path) -> None:
    """Mark the executed notebook as trusted (its HTML outputs show in JupyterLab)."""
    with contextlib.suppress(Exception):  # a missing signature database is not worth failing a run for
        import nbformat
        from nbformat.sign import NotebookNotary

        nb = nbformat.read(path, as_version=4)
        NotebookNotary().sign(nb)


def run_notebook(
    name: str,
    parameters: dict[str, Any],
    *,
    output: str | os.PathLike,
    quiet: bool = False,
    kernel_name: str = "python3",
) -> Path:
    """Execute notebook ``name`` with ``parameters`` into ``output`` (see the module docstring).

    Relative paths among the parameters (``results_root``, ``data_root``, a profile's file) are
    taken from the current directory and passed to the kernel as absolute paths
    (:func:`conelib.tools.nbparams.absolute_paths`); so is ``output``.

    Raises:
        conelib.config.ParameterError: a bad parameter, a missing device or a batch that cannot
            fit (nothing was run or written).
        NotebookFailed: a cell raised; for a chapter of the book, the previous chapter is kept and
            marked stale.
        NotebookInterrupted: SIGINT or SIGTERM (or Ctrl-C) stopped the run: the kernel and its
            processes are gone, nothing was written, a chapter is marked stale.
    """
    import papermill as pm


    parameters = absolute_paths(name, parameters)
    preflight(check(name, parameters))
    output = Path(output).expanduser().absolute()
    output.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(output.parent)
    nb = inline_to_glue(read_source(source_path(name)))
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}{TMP_MARK}{os.getpid()}.", suffix=".ipynb", dir=output.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    old = os.environ.get(RENDERER_ENV)
    os.environ[RENDERER_ENV] = "html"
    pm_logger = logging.getLogger("papermill")
    level = pm_logger.level
    pm_logger.setLevel(logging.ERROR)  # "Passed unknown parameter": the notebook checks its parameters itself
    t0 = time.perf_counter()
    supervisor = Supervisor(quiet=quiet)

    def stale(error: str) -> None:
        if _is_chapter(output):
            _mark_stale(output, {"notebook": name, "parameters": {k: _jsonable(v) for k, v in parameters.items()},
                                 "error": error, "when": datetime.now(timezone.utc).isoformat(timespec="seconds")})

    try:
        with supervisor:
            try:
                pm.execute_notebook(nb, str(tmp_path), parameters=parameters, cwd=str(source_path(name).parent),
                                    kernel_name=kernel_name, progress_bar=False, log_output=False,
                                    **supervisor.engine_kwargs())
            except (KeyboardInterrupt, SystemExit) as err:  # a signal outside the supervisor's handlers
                if supervisor.signum is None:
                    supervisor.signum = signal.SIGINT if isinstance(err, KeyboardInterrupt) else _signum(err)
                supervisor.mute()
            except (Exception, Cancelled) as err:
                if supervisor.signum is None:
                    message = _error_text(err)
                    stale(message)
                    raise NotebookFailed(f"notebook {name} failed: {message}") from None
            if supervisor.signum is not None:
                raise _interrupted(name, output, supervisor.signum, time.perf_counter() - t0, stale)
            _tidy_output(tmp_path)
            apply_umask(tmp_path)
            os.replace(tmp_path, output)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        pm_logger.setLevel(level)
        if old is None:
            os.environ.pop(RENDERER_ENV, None)
        else:
            os.environ[RENDERER_ENV] = old
    _sign(output)
    with contextlib.suppress(FileNotFoundError):
        failure_marker(output).unlink()
    return output


def _signum(err: SystemExit) -> int:
    """The signal behind a ``SystemExit(128 + signum)`` (the CLI's SIGTERM handler); else SIGTERM."""
    code = err.code if isinstance(err.code, int) else 0
    return code - 128 if 128 < code < 128 + 65 else int(signal.SIGTERM)


def _interrupted(name: str, output: Path, signum: int, seconds: float, stale: Any) -> NotebookInterrupted:
    """Mark a chapter stale and say what is left."""
    sig = signal.Signals(signum).name
    results = "results stored before the interrupt (each complete; none partial)"
    if _is_chapter(output):
        stale(f"interrupted by {sig}")
        kept = (f"{results}; the previous chapter {output} (marked stale)" if output.is_file() else
                f"{results}; no chapter yet (the book shows a placeholder saying the last run was interrupted)")
    else:
        kept = f"{results}; {output} " + ("unchanged" if output.is_file() else "not written")
    return NotebookInterrupted(signum, name, output, kept, seconds)


def _tidy_output(path: Path) -> None:
    """Hide papermill's injected-parameters cell's input in the book (like the parameters cell)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "hide-input" not in tags:
            cell.metadata["tags"] = [*tags, "hide-input"]
    nbformat.write(nb, path)


def _error_text(err: Exception) -> str:
    ename, evalue = getattr(err, "ename", None), getattr(err, "evalue", None)
    if ename:
        return f"{ename}: {evalue}"
    return f"{type(err).__name__}: {err}"


def _jsonable(v: Any) -> Any:
    try:
        json.dumps(v)
    except TypeError:
        return repr(v)
    return v
