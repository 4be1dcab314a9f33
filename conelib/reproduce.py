"""Rerun every experiment the book shows and compare with the stored reference results.

``conelib reproduce`` (``make reproduce``) recomputes, into a scratch results folder, the runs the
book's chapters are drawn from (the profile's kernel-dynamics and switching runs, and the atlas
sweep) and prints, per run, the stored and the recomputed measures side by side with a pass/fail
mark. The table is also written to ``book/reproducibility_table.md`` (shown on the book's
"Reproducibility" page) and to ``<scratch>/reproduce.json``.

Tolerance. On the same machine, with the same torch version and thread count, a recomputation is
bitwise identical to the stored run (the data order, augmentation and initialisation are pure
functions of the seed; the tests check it). Across torch versions, builds or thread counts the
floating-point sums differ in their last bits, and 10^4 SGD steps amplify such differences into a
different trajectory: a recomputed run is then *another sample*, not the same numbers. Each
measure of both runs carries a 95% bootstrap interval (:func:`conelib.measures.assess`), which says
how much that measure moves with the run's own noise; a measure passes when the two values differ by
no more than :math:`\\sqrt{h_s^2 + h_r^2}` (the half-widths of the stored and the recomputed
intervals: the difference of two independent estimates), with a small floor (:data:`FLOORS`). A
stable measure therefore gets a tight tolerance and an unstable one a wide one, whatever the run
length. A verdict must be the same, unless either run's verdict is itself unstable (fewer than
:data:`STABLE` of the bootstrap draws agree with it): then the row says so and does not fail.
The final test accuracy, which has no bootstrap, is compared within the binomial standard error of
two independent test-set estimates times 3 (at least :data:`FLOORS`).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["reproduce", "ReproduceReport", "FLOORS", "STABLE", "compare", "compare_assessed", "accuracy_tolerance",
           "KD_MEASURES"]

#: the kernel-dynamics measures compared (version 3), with their tolerance floors
KD_MEASURES: dict[str, float] = {
    "phase_one_end": 50.0,         # one snapshot of the mnist profile
    "total_movement": 0.005,
    "laziness": 0.005,
    "jitter_ratio": 0.005,
    "growth_exponent": 0.02,
    "drift_decay": 0.02,
}
#: tolerance floors for the accuracies
SW_MEASURES: dict[str, float] = {"final_test_acc": 0.001}
FLOORS = {**KD_MEASURES, **SW_MEASURES}
#: a verdict counts as stable when at least this share of its bootstrap draws agree with it
STABLE = 0.8


@dataclass
class ReproduceReport:
    """Rows of (experiment, run, measure, stored, recomputed, tolerance, passed), and timings."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    scratch: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.missing and all(r["passed"] for r in self.rows)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def markdown(self) -> str:
        import torch

        from conelib import __version__

        head = (f"Last run: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, conelib {__version__}, torch "
                f"{torch.__version__}, {torch.get_num_threads()} threads; time: "
                + ", ".join(f"{k} {v / 60:.0f} min" for k, v in self.seconds.items()) + ". "
                + ("All measures within tolerance." if self.ok else
                   f"{sum(not r['passed'] for r in self.rows)} of {len(self.rows)} measures outside tolerance"
                   + (f"; not stored: {self.missing}" if self.missing else "") + "."))
        lines = [head, "", "| experiment | run | measure | stored | recomputed | tolerance | |",
                 "|---|---|---|---:|---:|---:|---|"]
        for r in self.rows:
            lines.append(f"| {r['experiment']} | {r['run']} | {r['measure']} | {_fmt(r['stored'])} | "
                         f"{_fmt(r['recomputed'])} | {_fmt(r['tolerance'])} | {'pass' if r['passed'] else '**FAIL**'} |")
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        df = self.frame()
        text = df.to_string(index=False, float_format=lambda x: f"{x:.4g}") if len(df) else "(nothing compared)"
        status = "PASS" if self.ok else "FAIL"
        return f"{text}\n[conelib] reproduce: {status}; " + ", ".join(f"{k} {v:.0f} s" for k, v in self.seconds.items())


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "—" if not math.isfinite(v) else f"{v:.4g}"
    return "—" if v is None else str(v)


def compare(experiment: str, run: str, stored: dict[str, Any], recomputed: dict[str, Any],
            spread: dict[str, float], floors: dict[str, float]) -> list[dict[str, Any]]:
    """The rows for one run: every measure of ``floors`` (and the verdict, when present)."""
    rows = []
    if "verdict" in stored:
        rows.append({"experiment": experiment, "run": run, "measure": "verdict", "stored": stored["verdict"],
                     "recomputed": recomputed.get("verdict"), "tolerance": "equal",
                     "passed": stored["verdict"] == recomputed.get("verdict")})
    for m, floor in floors.items():
        a, b = _num(stored.get(m)), _num(recomputed.get(m))
        tol = max(floor, spread.get(m, 0.0))
        both_missing = not math.isfinite(a) and not math.isfinite(b)
        passed = both_missing or (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= tol + 1e-12)
        rows.append({"experiment": experiment, "run": run, "measure": m, "stored": a, "recomputed": b,
                     "tolerance": tol, "passed": bool(passed)})
    return rows


def _num(v: Any) -> float:
    try:
        return float(v) if v is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def compare_assessed(experiment: str, run: str, stored: Any, recomputed: Any, *,
                     floors: dict[str, float] = KD_MEASURES) -> list[dict[str, Any]]:
    """The rows for one kernel-dynamics run from the :class:`~conelib.measures.bootstrap.Assessment`
    of the stored and of the recomputed run (see the module docstring)."""
    rows = []
    vs, vr = stored.point.verdict, recomputed.point.verdict
    unstable = min(stored.agreement, recomputed.agreement) < STABLE
    rows.append({"experiment": experiment, "run": run, "measure": "verdict", "stored": vs, "recomputed": vr,
                 "tolerance": (f"unstable ({100 * stored.agreement:.0f}% / {100 * recomputed.agreement:.0f}% of "
                               "draws agree): not compared") if unstable and vs != vr else "equal",
                 "passed": vs == vr or unstable})
    for m, floor in floors.items():
        a, b = _num(getattr(stored.point, m)), _num(getattr(recomputed.point, m))
        ha, hb = stored.half_width(m), recomputed.half_width(m)
        hw = math.sqrt((ha if math.isfinite(ha) else 0.0) ** 2 + (hb if math.isfinite(hb) else 0.0) ** 2)
        tol = max(floor, hw)
        both_missing = not math.isfinite(a) and not math.isfinite(b)
        passed = both_missing or (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= tol + 1e-12)
        rows.append({"experiment": experiment, "run": run, "measure": m, "stored": a, "recomputed": b,
                     "tolerance": tol, "passed": bool(passed)})
    return rows


def accuracy_tolerance(acc: float, n_test: int, floor: float = SW_MEASURES["final_test_acc"]) -> float:
    """3 standard errors of the difference of two independent accuracies on ``n_test`` images."""
    if not math.isfinite(acc) or n_test <= 0:
        return floor
    return max(floor, 3.0 * math.sqrt(2.0 * acc * (1.0 - acc) / n_test))


def _kernel_dynamics(report: ReproduceReport, profile: str, scratch: Path) -> None:
    from conelib.experiments import kernel_dynamics, kernel_dynamics_configs
    from conelib.measures import assess
    from conelib.results import load_result, result_path

    for cfg in kernel_dynamics_configs(profile):
        path = result_path("kernel_dynamics", cfg.identity())
        if not path.exists():
            report.missing.append(f"kernel_dynamics {cfg.model} seed {cfg.seed}")
            continue
        old, new = load_result(path), kernel_dynamics(cfg, results_root=scratch, progress=True)
        run = f"{cfg.model} seed {cfg.seed}"
        report.rows += compare_assessed("kernel_dynamics", run, assess(old), assess(new))
        a, b = float(old["test_acc"].isel(step=-1)), float(new["test_acc"].isel(step=-1))
        tol = accuracy_tolerance(a, int(old.attrs.get("n_test", 10000)))
        report.rows.append({"experiment": "kernel_dynamics", "run": run, "measure": "final_test_acc", "stored": a,
                            "recomputed": b, "tolerance": tol, "passed": abs(a - b) <= tol + 1e-12})


def _switching(report: ReproduceReport, profile: str, scratch: Path) -> None:
    from conelib.experiments import switching, switching_configs
    from conelib.results import load_result, result_path

    for cfg in switching_configs(profile):
        path = result_path("switching", cfg.identity())
        if not path.exists():
            report.missing.append(f"switching {cfg.model}")
            continue
        old = load_result(path)
        new = switching(cfg, results_root=scratch, progress=True)
        n_test = int(old.attrs.get("n_test", 10000))
        for t in old["switch_step"].values:
            for s in old["seed"].values:
                a = float(old["final_test_acc"].sel(switch_step=t, seed=s))
                report.rows += compare(
                    "switching", f"{cfg.model} t={int(t)} seed {int(s)}", {"final_test_acc": a},
                    {"final_test_acc": float(new["final_test_acc"].sel(switch_step=t, seed=s))},
                    {"final_test_acc": accuracy_tolerance(a, n_test)}, SW_MEASURES)


def _atlas(report: ReproduceReport, scratch: Path) -> None:
    from conelib.analysis.atlas_summary import summarize, summary_path
    from conelib.paths import default_results_root, sweeps_dir
    from conelib.results import load_result
    from conelib.sweep import load_grid, run_sweep

    grid = load_grid(sweeps_dir() / "atlas.yaml")
    path = summary_path(grid, default_results_root())
    if not path.exists():
        report.missing.append("atlas summary")
        return
    old = load_result(path)
    new = run_sweep(grid, results_root=scratch, workers=2, progress=True, summarize=summarize).summary
    for r in old["run"].values:
        o, n = old.sel(run=r), new.sel(run=r)
        label = ", ".join(f"{d}={o[d].values}" for d in json.loads(old.attrs["swept_fields"]))
        vo, vn = str(o["verdict"].values), str(n["verdict"].values)
        unstable = min(float(o.get("verdict_agreement", 1.0)), float(n.get("verdict_agreement", 1.0))) < STABLE
        report.rows.append({"experiment": "atlas", "run": label, "measure": "verdict", "stored": vo,
                            "recomputed": vn, "tolerance": "unstable: not compared" if unstable and vo != vn
                            else "equal", "passed": vo == vn or unstable})
        a = float(o["final_test_acc"])
        report.rows += compare("atlas", label, {"final_test_acc": a}, {"final_test_acc": float(n["final_test_acc"])},
                               {"final_test_acc": accuracy_tolerance(a, 10000)}, SW_MEASURES)


def _spawning(report: ReproduceReport, profile: str, scratch: Path) -> None:
    """Spawning (linear mode connectivity): per model, spawn step and seed, the error barrier within
    3 binomial standard errors of the children's test error on the test set (percentage points), the
    loss barrier within 3 standard errors of a mean test loss (from the per-image spread), and the
    children's mean test accuracy within :func:`accuracy_tolerance`. On the same machine and thread
    count the recomputation is bitwise equal; elsewhere it is another sample, and a barrier that
    varies from run to run by more than the test set's resolution (early spawn steps) may fail."""
    from conelib.analysis.spawning import error_tolerance, loss_tolerance
    from conelib.experiments import spawning, spawning_configs
    from conelib.results import load_result, result_path

    floors = {"error_barrier": 0.01, "loss_barrier": 1e-4, "child_test_acc": SW_MEASURES["final_test_acc"]}
    for cfg in spawning_configs(profile):
        path = result_path("spawning", cfg.identity())
        if not path.exists():
            report.missing.append(f"spawning {cfg.model}")
            continue
        old, new = load_result(path), spawning(cfg, results_root=scratch, progress=True)
        n_test = int(old.attrs.get("n_test", 10000))
        for t in old["spawn_step"].values:
            for s in old["seed"].values:
                o, r = old.sel(spawn_step=t, seed=s), new.sel(spawn_step=t, seed=s)
                acc = float(o["child_test_acc"].mean())
                values = [{m: float(x[m].mean()) for m in floors} for x in (o, r)]
                spread = {"error_barrier": error_tolerance(100 * (1 - acc), n_test),
                          "loss_barrier": loss_tolerance(float(o["child_test_loss_sd"].mean()), n_test),
                          "child_test_acc": accuracy_tolerance(acc, n_test)}
                report.rows += compare("spawning", f"{cfg.model} t={int(t)} seed {int(s)}", values[0], values[1],
                                       spread, floors)


#: the experiments :func:`reproduce` knows, in the order it runs them
EXPERIMENTS = ("kernel_dynamics", "switching", "atlas", "spawning")


def reproduce(*, scratch: str | Path | None = None, profile: str = "mnist", only: Sequence[str] | None = None,
              write_page: bool = True) -> ReproduceReport:
    """Recompute the book's runs into ``scratch`` (default: a new temporary folder) and compare.

    Raises:
        ValueError: an unknown experiment in ``only``.
    """
    only = list(only or EXPERIMENTS)
    unknown = [e for e in only if e not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"unknown experiment(s) {unknown} for reproduce; choose from {list(EXPERIMENTS)}")
    scratch = Path(scratch) if scratch is not None else Path(tempfile.mkdtemp(prefix="conelib-reproduce-"))
    scratch.mkdir(parents=True, exist_ok=True)
    report = ReproduceReport(scratch=scratch)
    steps = {"kernel_dynamics": lambda: _kernel_dynamics(report, profile, scratch),
             "switching": lambda: _switching(report, profile, scratch),
             "atlas": lambda: _atlas(report, scratch),
             "spawning": lambda: _spawning(report, profile, scratch)}
    for name in only:
        t0 = time.perf_counter()
        steps[name]()
        report.seconds[name] = time.perf_counter() - t0
    (scratch / "reproduce.json").write_text(json.dumps({"rows": report.rows, "seconds": report.seconds,
                                                         "missing": report.missing}, indent=1, default=str))
    if write_page:
        from conelib.paths import repo_root

        root = repo_root()
        if root is not None:
            (root / "book" / "reproducibility_table.md").write_text(report.markdown(), encoding="utf-8")
    return report
