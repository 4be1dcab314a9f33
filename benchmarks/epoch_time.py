"""Wall time of one full-data training epoch (SGD, batch 128) of a model on a dataset, on CPU or GPU.

    python benchmarks/epoch_time.py --model lenet5 --dataset mnist5k --repeats 5
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from conelib import build_model, load_dataset
from conelib.train import TrainConfig, train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="lenet5")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    data = load_dataset(a.dataset, device=a.device)
    steps = math.ceil(data.x_train.shape[0] / a.batch_size)
    cfg = TrainConfig(steps=steps, batch_size=a.batch_size, lr=0.05, momentum=0.9, weight_decay=5e-4)
    times = []
    for r in range(a.repeats + 1):  # the first run warms up
        model = build_model(a.model, input_shape=data.input_shape, seed=r).to(a.device)
        t0 = time.perf_counter()
        train(model, data, cfg, progress=False, snapshot_steps=[])
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    t = times[1:]
    print(f"{a.model} on {a.dataset}: one epoch = {steps} steps of {a.batch_size} "
          f"({data.x_train.shape[0]} images), {torch.get_num_threads()} threads, device {a.device}: "
          f"median {statistics.median(t):.2f} s (min {min(t):.2f}, max {max(t):.2f}, {len(t)} runs)")


if __name__ == "__main__":
    main()
