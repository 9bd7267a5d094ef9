"""Where a W1 call and a W2 training step spend their time: ``python -m bench.profile [--device cuda] [--only W2]``.

Runs each workload a few times under ``torch.profiler`` (after a warm-up) with kdekit's default backends and prints,
per workload: wall time per call, kernel launches and device synchronisations per call, and the ops that take most
of the time (device time on a GPU, CPU time otherwise). Inputs are the benchmark's own (:mod:`bench.workloads`).
"""
from __future__ import annotations

import argparse
import time
from collections import Counter

import torch
from torch.profiler import ProfilerActivity, profile

from bench import registry, workloads

SYNC_EVENTS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpyAsync", "cudaEventSynchronize")


def _calls(device: str, only):
    """(name, closure) pairs: W1 on the whole workload (pooled in the call), W2 steps at float32 and float16."""
    out = []
    if "W1" in only:
        sizes = registry.MODES["full"]
        x, y = (t.to(device) for t in workloads.label_points(sizes.w1_corpus))
        out.append((f"W1 {sizes.w1_corpus} x 200 points, grid {sizes.w1_grid}, float64",
                    lambda: registry.kdekit_labels(x, y, sizes.w1_grid)))
    if "W2" in only:
        for dtype in (torch.float32, torch.float16):
            step = registry.w2_kdekit_step(32, 8, dtype, 64, device)
            out.append((f"W2 32 x 8, grid 64, {str(dtype)[6:]}, fwd+bwd", step))
    return out


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def profile_call(name: str, fn, device: str, repeats: int, rows: int) -> str:
    fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    wall = (time.perf_counter() - start) / repeats
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        for _ in range(repeats):
            fn()
        _sync(device)
    events = prof.events()
    counts = Counter(e.name for e in events)
    launches = sum(c for n, c in counts.items() if n in ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel",
                                                          "cuLaunchKernelEx"))
    syncs = {n: counts[n] / repeats for n in SYNC_EVENTS if counts[n]}
    on_gpu = device.startswith("cuda")
    key = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60)
    head = (f"### {name}\n\nwall {wall * 1e3:.3f} ms per call (mean of {repeats}, outside the profiler); "
            f"kernel launches {launches / repeats:.0f} per call; host-device waits per call: "
            + (", ".join(f"{n} {c:.0f}" for n, c in syncs.items()) or "none"))
    return f"{head}\n\n```\n{table}\n```\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", default="W1,W2")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args(argv)
    only = {w.strip().upper() for w in args.only.split(",")}
    for name, fn in _calls(args.device, only):
        print(profile_call(name, fn, args.device, args.repeats, args.rows), flush=True)


if __name__ == "__main__":
    main()
