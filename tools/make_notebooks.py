"""Writes the experiment notebooks' sources (outputs stripped, one cell tagged `parameters`).

Each notebook's cells live in `tools/nb_<name>.py` (a `NAME` and a `CELLS` list built with
`tools/nbcells.py`). The .ipynb files under notebooks/ are the committed sources; this script keeps
their JSON tidy. Run it after editing cells: `python tools/make_notebooks.py [name ...]`.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import nbformat as nbf

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent / "notebooks"


def write(name: str, cells: list) -> Path:
    nb = nbf.v4.new_notebook()
    nb.cells = cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    if not any("parameters" in c.metadata.get("tags", []) for c in cells):
        raise ValueError(f"notebook {name} has no cell tagged 'parameters'")
    nbf.validate(nb)
    out = ROOT / f"{name}.ipynb"
    out.write_text(nbf.writes(nb))
    return out


def main(names: list[str]) -> None:
    sys.path.insert(0, str(HERE))
    modules = sorted(p.stem for p in HERE.glob("nb_*.py"))
    for mod_name in modules:
        mod = importlib.import_module(mod_name)
        if names and mod.NAME not in names:
            continue
        print("wrote", write(mod.NAME, mod.CELLS))


if __name__ == "__main__":
    main(sys.argv[1:])
