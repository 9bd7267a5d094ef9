"""``python -m bench``: time every registry case in one process, print a markdown table, append it to RESULTS.md.

Timing: CPU contenders with ``time.perf_counter``; contenders on a CUDA device with ``torch.cuda.Event`` pairs
around each call (after a synchronise). Each case gets one untimed warm-up call (unless it is a plain loop), then
timed calls until its time budget is spent (at least one). Times of sub-sampled cases are scaled to the whole
workload. Peak memory: each W1 case and the W2 cases with the fewest annotators once more in a fresh subprocess, peak
RSS during the call minus RSS before it (Linux ``/proc/self/clear_refs``), plus ``tracemalloc``'s peak (numpy's
allocations, not torch's); ``torch.cuda.max_memory_allocated`` on a GPU.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import gc
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from bench import registry

RESULTS = Path(__file__).with_name("RESULTS.md")
REPO = Path(__file__).resolve().parent.parent
MAX_SAMPLES = 200


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_call(fn, device: str):
    """Seconds for one call of ``fn`` and its return value (CUDA events on a GPU device)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3, out
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def measure(fn, device: str, budget_s: float, warmup: bool):
    """Timed samples (seconds) of ``fn`` and the facts returned by its first call."""
    samples: List[float] = []
    facts = None
    if warmup:
        _, facts = time_call(fn, device)
    spent = 0.0
    while not samples or (spent < budget_s and len(samples) < MAX_SAMPLES):
        t, out = time_call(fn, device)
        facts = facts if isinstance(facts, dict) else out
        samples.append(t)
        spent += t
    return samples, facts if isinstance(facts, dict) else None


def fmt_time(seconds: Optional[float]) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def fmt_bytes(n: Optional[float]) -> str:
    return "n/a" if n is None else f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


# ---- memory ----


def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux ``clear_refs`` 5); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_of_case(case: registry.Case, device: str) -> Dict[str, float]:
    """Peak memory of one (first) call above what the process held before it: CUDA allocator peak on a GPU, else
    the peak RSS (``VmHWM`` after resetting it) and ``tracemalloc``'s peak (numpy/Python allocations only)."""
    fn = case.setup()
    if device.startswith("cuda") and case.on_device:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return {"cuda_peak": torch.cuda.max_memory_allocated() - before}
    gc.collect()
    measured_rss = _reset_peak_rss()
    rss0 = _proc_status_kib("VmRSS") if measured_rss else 0
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out = {"tracemalloc_peak": peak}
    if measured_rss:
        out["rss_peak"] = (_proc_status_kib("VmHWM") - rss0) * 1024
    return out


def _memory_child(case_id: str, mode: str, device: str) -> None:
    sizes = registry.MODES[mode]
    case = next(c for c in registry.all_cases(sizes, device, [case_id.split("|")[0]]) if c.id == case_id)
    print(json.dumps(memory_of_case(case, device)))


def memory_in_subprocess(case: registry.Case, mode: str, device: str) -> Optional[Dict[str, float]]:
    if device.startswith("cuda") and case.on_device:
        return memory_of_case(case, device)
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--memory-case", case.id, "--mode", mode, "--device", device,
         "--threads", str(torch.get_num_threads())],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    if proc.returncode != 0:
        print(f"  memory of {case.id} failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- machine line ----


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True)
    except OSError:
        return "unknown"
    commit = head.stdout.strip() if head.returncode == 0 else "no commit"
    return commit + (" + uncommitted changes" if dirty.stdout.strip() else "")


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        if dist == "kdekit":  # a source checkout that is not pip-installed
            import kdekit

            return f"{kdekit.__version__} (source tree)"
        return "not installed"


def machine_info(device: str) -> Dict[str, str]:
    info = {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": f"{_cpu_model()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "load average": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "device": device,
        "python": platform.python_version(),
        "versions": ", ".join(
            f"{m} {_version(m)}"
            for m in ("torch", "numpy", "scipy", "kdekit", "KDE-diffusion", "lightkde", "torch-dct", "torchmetrics")
        ),
        "commit": _git_commit(),
    }
    return info


# ---- W1-W3 ----


def _wants_memory(case: registry.Case, sizes: registry.Sizes) -> bool:
    """Peak memory for every W1 contender and for W2 at the smallest annotator count (both dtypes)."""
    smallest = f" x {sizes.w2_annotators[0]} predictions"
    return case.workload == "W1" or (case.workload == "W2" and smallest in case.variant)


def run_cases(cases: List[registry.Case], sizes: registry.Sizes, device: str, memory: bool) -> List[dict]:
    rows = []
    for case in cases:
        dev = device if case.on_device else "cpu"
        print(f"  {case.id} ...", file=sys.stderr, flush=True)
        row = {"case": case, "median": None, "min": None, "facts": None, "memory": None, "error": None}
        try:
            fn = case.setup()
            samples, facts = measure(fn, dev, sizes.budget_s, case.warmup)
        except ImportError as exc:
            row["error"] = f"not available: {exc}"
        except Exception as exc:  # noqa: BLE001 - a failing contender is reported, not fatal
            row["error"] = f"{type(exc).__name__}: {str(exc)[:120]}"
        else:
            scale = case.total / case.items
            row.update(median=statistics.median(samples) * scale, min=min(samples) * scale, facts=facts,
                       samples=len(samples))
            if memory and _wants_memory(case, sizes):
                row["memory"] = memory_in_subprocess(case, sizes.name, device)
        rows.append(row)
    return rows


def _ratio_reference(rows: List[dict]) -> Dict[tuple, float]:
    ref: Dict[tuple, float] = {}
    for r in rows:
        c = r["case"]
        if c.is_kdekit and r["median"] is not None:
            key = (c.workload, c.variant)
            ref[key] = min(ref.get(key, math.inf), r["median"])
    return ref


def _memory_cell(mem: Optional[dict]) -> str:
    if not mem:
        return ""
    if "cuda_peak" in mem:
        return f"{fmt_bytes(mem['cuda_peak'])} (CUDA)"
    cells = [f"{fmt_bytes(mem['rss_peak'])} RSS"] if "rss_peak" in mem else []
    if mem["tracemalloc_peak"] >= 2**16:
        cells.append(f"{fmt_bytes(mem['tracemalloc_peak'])} traced")
    return " / ".join(cells)


def cases_table(rows: List[dict]) -> str:
    ref = _ratio_reference(rows)
    lines = [
        "| workload | variant | contender | median | min | ÷ kdekit | peak memory / call | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["case"]
        notes = []
        if r["error"]:
            notes.append(r["error"])
        if c.items != c.total and r["median"] is not None:
            notes.append(f"timed on {c.items} of {c.total} items, scaled ×{c.total / c.items:g}")
        if r["facts"]:
            facts = dict(r["facts"])
            if "raised" in facts:
                notes.append(f"{facts.pop('raised')} of {c.items} timed items raised")
            notes += [f"{k}={v}" for k, v in facts.items()]
        if c.note:
            notes.append(c.note)
        if r.get("samples"):
            notes.append(f"{r['samples']} samples")
        key = (c.workload, c.variant)
        ratio = f"{r['median'] / ref[key]:.2f}×" if r["median"] is not None and key in ref else "n/a"
        lines.append(
            f"| {c.workload} | {c.variant} | {c.contender} | {fmt_time(r['median'])} | {fmt_time(r['min'])} | "
            f"{ratio} | {_memory_cell(r['memory'])} | {'; '.join(notes)} |"
        )
    return "\n".join(lines)


# ---- W4 ----


def _predicted(times: Dict[int, float], value: int, axis: str) -> float:
    last = max(times)
    power = 2.0 if axis == "n" else 1.0
    return times[last] * (value / last) ** power


def run_sweeps(sweeps: List[registry.Sweep], sizes: registry.Sizes, device: str) -> List[dict]:
    rows = []
    for sweep in sweeps:
        print(f"  W4 {sweep.workload} {sweep.axis} ...", file=sys.stderr, flush=True)
        times: Dict[int, float] = {}
        skipped = []
        error = None
        for value in sweep.values:
            if times and _predicted(times, value, sweep.axis) > sizes.w4_point_s:
                skipped.append(value)
                continue
            try:
                fn = sweep.make(value)
                samples, _ = measure(fn, device, sizes.budget_s / 3, warmup=True)  # each point: new shapes, new kernels
            except Exception as exc:  # noqa: BLE001
                error = f"{type(exc).__name__}: {str(exc)[:100]}"
                break
            times[value] = statistics.median(samples)
        rows.append({"sweep": sweep, "times": times, "skipped": skipped, "error": error})
    return rows


def fit_exponent(times: Dict[int, float]) -> Optional[float]:
    """Least-squares slope of log(time) against log(value); None with fewer than two points."""
    if len(times) < 2:
        return None
    xs, ys = np.log(list(times)), np.log(list(times.values()))
    return float(np.polyfit(xs, ys, 1)[0])


def sweeps_table(rows: List[dict]) -> str:
    lines = [
        "| workload | grows | base point | times (value: median) | fitted exponent | last-pair exponent | expected |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s, times = r["sweep"], r["times"]
        points = ", ".join(f"{v}: {fmt_time(t)}" for v, t in times.items())
        if r["skipped"]:
            points += f"; skipped {', '.join(map(str, r['skipped']))} (predicted over the per-point limit)"
        if r["error"]:
            points += f"; {r['error']}"
        slope = fit_exponent(times)
        last = fit_exponent(dict(list(times.items())[-2:])) if len(times) >= 2 else None
        base = ", ".join(f"{k}={v}" for k, v in s.base.items() if k != s.axis)
        lines.append(
            f"| {s.workload} | {s.axis} | {base} | {points} | {'n/a' if slope is None else f'{slope:.2f}'} | "
            f"{'n/a' if last is None else f'{last:.2f}'} | {s.expected} |"
        )
    return "\n".join(lines)


# ---- entry point ----


def report(info: Dict[str, str], mode: str, argv: List[str], table: str, sweeps: str, loaded: bool) -> str:
    head = [f"## {info['date']} · {mode} run · `python -m bench {' '.join(argv)}`".rstrip(), ""]
    head += [f"- {k}: {v}" for k, v in info.items() if k != "date"]
    if loaded:
        head.append(
            f"- **Loaded machine:** the load average exceeded the {os.cpu_count()} cores during this run (other jobs "
            "shared the CPU), so absolute times are inflated and noisy; ratios within a row group are more reliable."
        )
    head.append("- W1 columns: time for the whole workload; sub-sampled contenders are scaled (see notes). "
                "W2: per training step. W3: per call. "
                "÷ kdekit: median / median of the fastest kdekit row of the group (> 1: kdekit is faster).")
    parts = ["\n".join(head)]
    if table:
        parts.append(table)
    if sweeps:
        parts.append("W4 scaling (kdekit, default backend; W1 = hard/float64/forward, W2 = soft/float32/fwd+bwd):\n\n"
                     + sweeps)
    return "\n\n".join(parts) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sub-samples and sweeps (~1-2 min on 2 cores)")
    parser.add_argument("--mode", choices=sorted(registry.MODES), help="size preset (overrides --quick)")
    parser.add_argument("--only", default="W1,W2,W3,W4", help="comma-separated workloads, e.g. W1,W3")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's); 1 is steadier on a "
                        "machine shared with other jobs")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--no-record", action="store_true", help=f"do not append to {RESULTS.name}")
    parser.add_argument("--memory-case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    mode = args.mode or ("quick" if args.quick else "full")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_case:
        _memory_child(args.memory_case, mode, args.device)
        return
    sizes = registry.MODES[mode]
    only = [w.strip().upper() for w in args.only.split(",") if w.strip()]
    memory = sizes.memory and not args.no_memory
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    rows = run_cases(registry.all_cases(sizes, args.device, only), sizes, args.device, memory)
    sweep_rows = run_sweeps(registry.w4_sweeps(sizes, args.device), sizes, args.device) if "W4" in only else []
    info = machine_info(args.device)
    info["wall time"] = f"{time.perf_counter() - start:.0f} s"
    loaded = max(load_before, os.getloadavg()[0]) > (os.cpu_count() or 1)
    text = report(info, mode, argv, cases_table(rows) if rows else "", sweeps_table(sweep_rows) if sweep_rows else "",
                  loaded)
    print(text)
    if not args.no_record:
        new = not RESULTS.exists()
        with RESULTS.open("a") as fh:
            if new:
                fh.write("# kdekit benchmark results\n\nAppended by `python -m bench` (newest last). "
                         "How to run: `python -m bench [--quick] [--only W1,W2,W3,W4] [--device cuda]`.\n\n")
            fh.write(text + "\n")
