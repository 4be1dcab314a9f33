"""The time cost of a memory bound: conelib's eNTK under a caller-given ``memory_limit``.

``empirical_ntk(..., memory_limit=B)`` chunks its work (examples per backward pass, blocks of
the kernel, which Jacobians or layer features stay cached) so that the transient memory of one
chunk stays near ``B`` bytes. This script measures, for one model, size and kind, each bound in
a fresh process: the median time of ``--repeats`` calls after a warm-up call, the process's peak
resident memory and its growth during the calls (``extra``: what the eNTK itself allocated,
on top of Python, torch, the model and the inputs), and the relative Frobenius difference of the
kernel to the one computed without a bound (chunking must not change it beyond round-off).

    python benchmarks/ntk_memory.py --model resnet20 --n 256 --kind full \\
        --limits 64M 128M 256M 512M 1G 2G 4G 12G --out benchmarks/results/
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {"lenet_300_100": (1, 28, 28), "lenet5": (1, 28, 28), "resnet20": (3, 32, 32)}
UNITS = {"K": 2**10, "M": 2**20, "G": 2**30}


def parse_bytes(text: str) -> int:
    """'512M' -> 536870912; a plain number is bytes."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = UNITS.get(t[-1:], 1)
    try:
        value = float(t[:-1] if t[-1:] in UNITS else t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"--limits: {text!r} is not a byte count like 512M, 2G or 1000000") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"--limits: {text!r} must be positive")
    return int(value)


sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak_rss import watch  # noqa: E402  (same folder)


def worker(spec: dict) -> dict:
    """One bound in this (fresh) process."""
    import numpy as np
    import torch

    from conelib import build_model
    from conelib.ntk import empirical_ntk

    torch.manual_seed(0)
    shape = SHAPES[spec["model"]]
    model = build_model(spec["model"], input_shape=shape, seed=0, norm="none").eval()
    x = torch.randn(spec["n"], *shape, generator=torch.Generator().manual_seed(1))
    limit = spec["limit"]
    empirical_ntk(model, x[:8], kind=spec["kind"], memory_limit=limit)  # warm-up (kernels, allocator)
    times, k = [], None
    with watch() as mem:  # the bounded calls
        for _ in range(spec["repeats"]):
            t0 = time.perf_counter()
            k = empirical_ntk(model, x, kind=spec["kind"], memory_limit=limit)
            times.append(time.perf_counter() - t0)
    np.save(spec["kernel_out"], k.numpy())
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "peak_rss_mb": mem.peak_bytes / 2**20, "extra_rss_mb": mem.extra_bytes / 2**20}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet20", choices=list(SHAPES))
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--kind", default="full", choices=["full", "trace", "logit_sum"])
    ap.add_argument("--limits", nargs="+", type=parse_bytes,
                    default=[parse_bytes(s) for s in ("64M", "128M", "256M", "512M", "1G", "2G", "4G", "12G")])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        spec = json.loads(args.worker.read_text())
        args.worker.with_suffix(".out.json").write_text(json.dumps(worker(spec)))
        return
    if args.n < 8 or args.repeats < 1:
        ap.error(f"--n must be >= 8 and --repeats >= 1 (got {args.n}, {args.repeats})")
    import numpy as np

    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    work = Path(tempfile.mkdtemp(prefix="ntk_memory_"))
    rows = []
    limits = sorted(set(args.limits), reverse=True)  # the largest bound first: it is the reference
    for limit in limits:
        spec = {"model": args.model, "n": args.n, "kind": args.kind, "limit": limit, "repeats": args.repeats,
                "kernel_out": str(work / f"k_{limit}.npy")}
        path = work / f"spec_{limit}.json"
        path.write_text(json.dumps(spec))
        subprocess.run([sys.executable, __file__, "--worker", str(path)], check=True, env=env)
        row = {"model": args.model, "n": args.n, "kind": args.kind, "memory_limit_mb": limit / 2**20,
               **json.loads(path.with_suffix(".out.json").read_text())}
        k, ref = np.load(spec["kernel_out"]).astype(np.float64), np.load(work / f"k_{limits[0]}.npy").astype(np.float64)
        row["rel_diff"] = float(np.linalg.norm(k - ref) / np.linalg.norm(ref))
        row["time_vs_largest"] = row["median_s"] / rows[0]["median_s"] if rows else 1.0
        rows.append(row)
        print(f"limit {limit / 2**20:8.0f} MiB: {row['median_s']:7.2f} s  extra RSS {row['extra_rss_mb']:7.0f} MB  "
              f"peak {row['peak_rss_mb']:6.0f} MB  rel diff {row['rel_diff']:.1e}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"ntk_memory_{args.model}_{args.kind}_n{args.n}"
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    head = (f"# conelib eNTK under a memory bound: {args.model} (norm none), {args.kind} kernel, n = {args.n}, "
            f"float32\n\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average at the "
            f"end {os.getloadavg()[0]:.2f}; median of {args.repeats} calls after a warm-up, one process per bound.\n\n"
            "| memory_limit | median s | time vs largest bound | extra RSS MB | peak RSS MB | rel. diff to largest bound |\n"
            "|---:|---:|---:|---:|---:|---:|\n")
    body = "".join(f"| {r['memory_limit_mb']:.0f} MiB | {r['median_s']:.2f} | {r['time_vs_largest']:.2f}x | "
                   f"{r['extra_rss_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['rel_diff']:.1e} |\n" for r in rows)
    stem.with_suffix(".md").write_text(head + body)
    print(f"wrote {stem.with_suffix('.csv')} and {stem.with_suffix('.md')}")


if __name__ == "__main__":
    main()
