"""JupyterLab on the experiment notebooks: MyST sources open as notebooks (jupytext), offline.

``conelib lab [ARGS...]`` (``make lab``) writes the settings that make JupyterLab open the ``.md``
notebooks as notebooks for this environment (:func:`lab_settings`) and replaces itself with
``jupyter lab notebooks/ ARGS...``: every argument goes to JupyterLab unchanged (``--port 8899``,
``--no-browser``, ``-- --ServerApp.token=...``). Run as root, ``--allow-root`` is added (JupyterLab
refuses to start as root without it) unless given.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from conelib.paths import notebooks_dir

__all__ = ["lab_command", "lab_settings", "run_lab"]


def lab_settings(prefix: str | None = None) -> Path:
    """Make JupyterLab open MyST markdown notebooks as notebooks (jupytext), for this environment:
    writes ``<prefix>/share/jupyter/lab/settings/overrides.json`` (default prefix: ``sys.prefix``)."""
    path = Path(prefix or sys.prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        current = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        current = {}
    current.setdefault("@jupyterlab/docmanager-extension:plugin", {})["defaultViewers"] = {
        "markdown": "Jupytext Notebook", "myst": "Jupytext Notebook"}
    path.write_text(json.dumps(current, indent=2) + "\n")
    return path


def lab_command(extra: Sequence[str] = (), *, is_root: bool | None = None) -> list[str]:
    """The ``jupyter lab`` command line: the notebooks folder and ``extra`` (a leading ``--`` is
    dropped), plus ``--allow-root`` when running as root and not already given."""
    args = list(extra)
    if args and args[0] == "--":
        args = args[1:]
    root = (os.geteuid() == 0) if is_root is None and hasattr(os, "geteuid") else bool(is_root)
    if root and "--allow-root" not in args:
        args.append("--allow-root")
    return [sys.executable, "-m", "jupyter", "lab", str(notebooks_dir()), *args]


def run_lab(extra: Sequence[str] = ()) -> int:
    """Write the settings and replace this process with JupyterLab (does not return)."""
    lab_settings()
    cmd = lab_command(extra)
    os.execv(sys.executable, cmd)
    return 0  # not reached
