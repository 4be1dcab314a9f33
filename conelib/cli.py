"""The ``conelib`` command: run the experiment notebooks with papermill and build the book.

Examples::

    conelib all --profile quick                 # every notebook, then the HTML book
    conelib run kernel_dynamics --profile paper -p seed 1 -p device cuda
    conelib run switching -y overrides.yaml     # list-valued parameters go through YAML
    conelib book                                # build the book from the executed notebooks
    conelib profiles                            # list the parameter profiles
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from conelib.profiles import available_profiles, profile_path

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO / "notebooks"
GENERATED_DIR = REPO / "book" / "generated"


def available_notebooks() -> list[str]:
    """Experiment notebooks in ``notebooks/``, in the order the book tells the story."""
    order = ["kernel_dynamics", "switching", "counterexample"]
    found = [p.stem for p in NOTEBOOKS_DIR.glob("*.ipynb")]
    return [n for n in order if n in found] + sorted(n for n in found if n not in order)


def run_notebook(name: str, parameters: dict[str, Any], *, output_dir: Path = GENERATED_DIR,
                 log_output: bool = True) -> Path:
    """Execute ``notebooks/<name>.ipynb`` with papermill into ``output_dir/<name>.ipynb``.

    The notebook runs with the repository root's ``notebooks/`` as working directory. The output
    is written to a temporary name and renamed when execution succeeded, so a failed run never
    leaves a half-executed notebook where the book looks for it.
    """
    import papermill as pm

    known = available_notebooks()
    if name not in known:
        raise ValueError(f"notebook {name!r} not found in {NOTEBOOKS_DIR}; available: {known}")
    output_dir.mkdir(parents=True, exist_ok=True)
    out = output_dir / f"{name}.ipynb"
    tmp = output_dir / f".{name}.running.ipynb"
    pm.execute_notebook(str(NOTEBOOKS_DIR / f"{name}.ipynb"), str(tmp), parameters=parameters,
                        cwd=str(NOTEBOOKS_DIR), log_output=log_output, progress_bar=False, kernel_name="python3")
    tmp.replace(out)
    return out


def _parse_value(text: str) -> Any:
    """``-p key value``: the value is read as YAML (numbers, booleans, lists like [1, 2])."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _parameters(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {"profile": args.profile}
    for path in args.yaml or []:
        with open(path) as fh:
            extra = yaml.safe_load(fh) or {}
        if not isinstance(extra, dict):
            raise SystemExit(f"error: -y {path}: expected a mapping of parameter names to values")
        params.update(extra)
    for key, value in args.param or []:
        params[key] = _parse_value(value)
    return params


def _cmd_run(args: argparse.Namespace) -> int:
    names = args.notebooks or available_notebooks()
    params = _parameters(args)
    for name in names:
        t0 = time.perf_counter()
        print(f"[conelib] running notebook {name} with {params}", flush=True)
        out = run_notebook(name, params, log_output=not args.quiet)
        print(f"[conelib] {name}: done in {time.perf_counter() - t0:.0f} s -> {out}", flush=True)
    return 0


def _cmd_book(args: argparse.Namespace) -> int:
    from conelib.book import build_book

    t0 = time.perf_counter()
    index = build_book(REPO, strict=args.strict)
    print(f"[conelib] book built in {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"[conelib] open {index}  (file://{index})", flush=True)
    return 0


def _cmd_all(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    _cmd_run(args)
    _cmd_book(args)
    print(f"[conelib] all done in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


def _cmd_profiles(_args: argparse.Namespace) -> int:
    for name in available_profiles():
        print(f"{name}: {profile_path(name)}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from conelib.sweep import run_sweep_file

    summary = run_sweep_file(args.grid, address=args.address, workers=args.workers, results_root=args.results_root)
    print(summary)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="conelib", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def add_run_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--profile", default="quick", help=f"parameter profile (default quick; available: {available_profiles()})")
        sp.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                        help="override one notebook parameter; VALUE is read as YAML")
        sp.add_argument("-y", "--yaml", action="append", metavar="FILE", help="YAML file of parameter overrides")
        sp.add_argument("--quiet", action="store_true", help="do not stream the notebooks' output")

    run = sub.add_parser("run", help="execute experiment notebooks with papermill into book/generated/")
    run.add_argument("notebooks", nargs="*", help=f"notebook names (default: all of {available_notebooks()})")
    add_run_args(run)
    run.set_defaults(func=_cmd_run)

    book = sub.add_parser("book", help="build the HTML book from the executed notebooks")
    book.add_argument("--strict", action="store_true", help="turn Sphinx warnings into errors")
    book.set_defaults(func=_cmd_book)

    allp = sub.add_parser("all", help="run every notebook, then build the book")
    allp.add_argument("--strict", action="store_true", help="turn Sphinx warnings into errors")
    add_run_args(allp)
    allp.set_defaults(func=_cmd_all, notebooks=None)

    prof = sub.add_parser("profiles", help="list the parameter profiles")
    prof.set_defaults(func=_cmd_profiles)

    sweep = sub.add_parser("sweep", help="run the kernel-dynamics experiment over a grid (Dask)")
    sweep.add_argument("grid", help="YAML file describing the grid")
    sweep.add_argument("--address", default=None, help="address of a running Dask scheduler (default: a LocalCluster)")
    sweep.add_argument("--workers", type=int, default=2, help="LocalCluster workers (default 2)")
    sweep.add_argument("--results-root", default=None, help="where results are stored")
    sweep.set_defaults(func=_cmd_sweep)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
