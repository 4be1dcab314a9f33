"""One eNTK evaluation at n = 256 (time, peak RSS) for MODEL KIND METHOD; run once per process:
    for m in lenet_300_100 lenet5 resnet20; do for k in trace full; do for x in auto jacobian ntvp structured; do
      python benchmarks/ntk_n256.py $m $k $x; done; done; done
"""
import sys, time, resource, torch
from conelib import build_model
from conelib.ntk import empirical_ntk, profile_model, choose_method
name, kind, method = sys.argv[1:4]
shape = (3, 32, 32) if name == "resnet20" else (1, 28, 28)
kw = {"norm": "layernorm"} if name == "resnet20" else {}
m = build_model(name, input_shape=shape, seed=0, **kw).eval()
x = torch.randn(256, *shape, generator=torch.Generator().manual_seed(0))
empirical_ntk(m, x[:8], kind=kind, method=method)  # warm-up
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter(); k = empirical_ntk(m, x, kind=kind, method=method); dt = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
picked = choose_method(profile_model(m, x[:1]), 256, 256, kind, True) if method == "auto" else method
print(f"| {name} | {kind} | {method}{' → ' + picked if method == 'auto' else ''} | {dt:.2f} | {rss/1024:.0f} |", flush=True)
