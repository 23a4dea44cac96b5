"""CPU options for the tiny preset on one 256 x 256 slice: eager, channels-last, torch.compile (with compile time).

    python benchmarks/bench_cpu_options.py

Prints seconds per slice (5 repeats after a warm-up) for each option and the one-off compilation time.
"""

import time, torch
from fusionmamba_med.networks import build_fusionmamba
net = build_fusionmamba("tiny").eval()
x = torch.rand(1, 2, 256, 256)
def bench(f, n=5):
    with torch.inference_mode():
        f(x); t = time.perf_counter()
        for _ in range(n): f(x)
        return (time.perf_counter() - t) / n
print("eager s/slice", round(bench(net), 3), flush=True)
xc = x.contiguous(memory_format=torch.channels_last)
netc = build_fusionmamba("tiny").eval().to(memory_format=torch.channels_last); netc.load_state_dict(net.state_dict())
with torch.inference_mode():
    f = lambda _: netc(xc)
    f(None); t = time.perf_counter(); [f(None) for _ in range(5)]; print("channels_last s/slice", round((time.perf_counter()-t)/5, 3), flush=True)
t0 = time.perf_counter()
comp = torch.compile(net)
with torch.inference_mode():
    comp(x)
print("compile time s", round(time.perf_counter() - t0, 1), flush=True)
print("compiled s/slice", round(bench(comp), 3), flush=True)
