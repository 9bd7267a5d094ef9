"""``python -m bench``: time the registry side by side in interleaved rounds, print a report, append it to RESULTS.md.

Method (per (workload, variant) group of :mod:`bench.registry`; every contender of a group works on the same items):

1. Set-up: each contender builds its inputs (untimed).
2. Warm-up: each contender runs once, untimed (W1/W5 on the CPU: the same contender on a few items of the set; a
   contender whose ``warmup`` flag is off is not warmed up). A contender faster than 1 ms a call is then timed in
   samples of several calls (the sample is their mean; the note says how many).
3. Rounds: in round ``r`` every contender runs once, in the order rotated to start at contender ``r mod C``, so that
   load from other jobs hits every contender alike. Rounds continue while the group's time budget lasts (at most
   ``max_rounds``); every contender gets at least ``min_rounds`` rounds (3), slow contenders (per-item loops, the W1
   seed baseline) ``slow_min_rounds`` (3 in full runs, 1 in quick runs: they drop out of the later rounds of a quick
   run once the budget is spent).
4. Statistics over the rounds: median, min, IQR (inclusive quartiles); times of subset rows are scaled by
   ``total / items``; ratio = row median / median of the group's reference row (kdekit, default backend; > 1: kdekit
   is faster); W6 reports the median of the per-round differences to ``import torch`` instead.
5. Peak memory of one call per W1/W2 row, each in a fresh subprocess (``python -m bench --memory-case ID``): inputs
   built, ``VmRSS`` read, the peak reset (``/proc/self/clear_refs`` 5 resets ``VmHWM``), one call, ``VmHWM`` read:
   the peak minus the RSS before the call, "MiB above the inputs" (where the reset is not permitted: the process's
   ``ru_maxrss`` growth, an upper bound when the call did not raise the process's peak). CUDA rows on a GPU: the
   allocator's peak above what was allocated before (``torch.cuda.max_memory_allocated``). Plus a sweep of the kdekit
   default W1 row over ``Sizes.w1_memory_sweep`` utterances (flatness).

Timing: ``time.perf_counter`` on the CPU; on a CUDA device ``torch.cuda.Event`` pairs around each sample (after a
synchronise) for the rows that run there.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from bench import registry

RESULTS = Path(__file__).with_name("RESULTS.md")
REPO = Path(__file__).resolve().parent.parent
MIN_SAMPLE_S = 1e-3  # calls faster than this are timed in samples of several calls
MAX_INNER = 1000
MIB = 2**20


# ---- timing ----


def time_call(fn, device: str, inner: int = 1):
    """Seconds per call of ``fn`` (mean of ``inner`` back-to-back calls) and the first call's return value; CUDA
    events around the sample on a GPU device."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        for _ in range(inner - 1):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / inner, out
    start = time.perf_counter()
    out = fn()
    for _ in range(inner - 1):
        fn()
    return (time.perf_counter() - start) / inner, out


def round_order(contenders: int, r: int) -> List[int]:
    """Contender indices in round ``r``: all of them, starting at ``r mod contenders``."""
    return [(r + k) % contenders for k in range(contenders)]


def interleave(calls: Sequence[Callable[[], float]], min_rounds: Sequence[int], budget_s: float, max_rounds: int,
               clock: Callable[[], float] = time.perf_counter) -> Tuple[List[Dict[int, float]], List[Optional[str]]]:
    """Interleaved rounds: ``calls[i]()`` times contender ``i`` once and returns seconds.

    Round ``r`` runs the contenders in :func:`round_order`; rounds go on while ``budget_s`` (wall time of the rounds)
    is left and ``r < max_rounds``; after that only contenders with fewer than ``min_rounds[i]`` samples run, until
    every one has its minimum. A contender whose call raises is dropped (its error is returned). Returns per
    contender ``{round: seconds}`` and the errors.
    """
    count = len(calls)
    samples: List[Dict[int, float]] = [{} for _ in calls]
    errors: List[Optional[str]] = [None] * count
    start = clock()
    r = 0
    while True:
        alive = [i for i in range(count) if errors[i] is None]
        in_budget = clock() - start < budget_s and r < max_rounds
        runners = set(alive if in_budget else [i for i in alive if len(samples[i]) < min_rounds[i]])
        if not runners:
            break
        for i in round_order(count, r):
            if i in runners:
                try:
                    samples[i][r] = calls[i]()
                except Exception as exc:  # noqa: BLE001 - a failing contender is reported, not fatal
                    errors[i] = f"{type(exc).__name__}: {str(exc)[:120]}"
        r += 1
    return samples, errors


@dataclass
class Row:
    case: registry.Case
    samples: Dict[int, float] = field(default_factory=dict)  # round -> seconds per reported unit (scaled)
    facts: Optional[dict] = None
    inner: int = 1
    error: Optional[str] = None
    memory: Optional[dict] = None

    @property
    def values(self) -> List[float]:
        return list(self.samples.values())

    @property
    def median(self) -> Optional[float]:
        return statistics.median(self.values) if self.samples else None

    @property
    def min(self) -> Optional[float]:
        return min(self.values) if self.samples else None

    @property
    def iqr(self) -> Optional[float]:
        if len(self.samples) < 2:
            return None
        q1, _, q3 = statistics.quantiles(self.values, n=4, method="inclusive")
        return q3 - q1


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, ImportError):
        return f"not available: {exc}"
    return f"{type(exc).__name__}: {str(exc)[:120]}"


def run_group(cases: List[registry.Case], sizes: registry.Sizes, device: str) -> List[Row]:
    """Set-up, warm-up and interleaved rounds of one group (see the module docstring)."""
    rows = [Row(c) for c in cases]
    fns: List[Optional[Callable]] = []
    for row in rows:
        c = row.case
        dev = device if c.on_device else "cpu"
        try:
            fn = c.setup()
            if c.warmup_setup is not None:
                warm = c.warmup_setup()
                time_call(warm, dev)
            elif c.warmup:
                t, _ = time_call(fn, dev)
                if 0 < t < MIN_SAMPLE_S:
                    row.inner = min(MAX_INNER, math.ceil(MIN_SAMPLE_S / t))
        except Exception as exc:  # noqa: BLE001
            row.error = _describe_error(exc)
            fn = None
        fns.append(fn)
    live = [i for i, fn in enumerate(fns) if fn is not None]

    def timer(i):
        row, dev = rows[i], device if rows[i].case.on_device else "cpu"

        def call():
            t, out = time_call(fns[i], dev, row.inner)
            if row.facts is None and isinstance(out, dict):
                row.facts = out
            return t * row.case.scale / row.case.calls

        return call

    def minimum(c: registry.Case) -> int:
        if c.min_rounds is not None:
            return c.min_rounds
        return sizes.slow_min_rounds if c.slow else sizes.min_rounds

    samples, errors = interleave([timer(i) for i in live], [minimum(rows[i].case) for i in live],
                                 sizes.budget_s.get(cases[0].workload, 1.0), sizes.max_rounds)
    for i, s, e in zip(live, samples, errors):
        rows[i].samples, rows[i].error = s, e
    return rows


def group_cases(cases: List[registry.Case]) -> List[List[registry.Case]]:
    groups: Dict[Tuple[str, str], List[registry.Case]] = {}
    for c in cases:
        groups.setdefault(c.group, []).append(c)
    return list(groups.values())


def measure(fn, device: str, budget_s: float, min_samples: int = 3, max_samples: int = 200) -> List[float]:
    """Samples of one closure after a warm-up (W4 sweep points): until ``budget_s`` is spent, at least
    ``min_samples``."""
    time_call(fn, device)
    samples: List[float] = []
    start = time.perf_counter()
    while len(samples) < min_samples or (time.perf_counter() - start < budget_s and len(samples) < max_samples):
        samples.append(time_call(fn, device)[0])
    return samples


def fmt_time(seconds: Optional[float]) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    if abs(seconds) < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if abs(seconds) < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def fmt_bytes(n: Optional[float]) -> str:
    if n is None:
        return "n/a"
    return f"{n / MIB:.0f} MiB" if abs(n) >= MIB else f"{n / 2**10:.0f} KiB"


# ---- memory ----


def _proc_status_kib(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise KeyError(name)


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux ``clear_refs`` 5); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _proc_status_kib("VmHWM") <= _proc_status_kib("VmRSS") + 4
    except (OSError, KeyError):
        return False


def peak_of_call(fn: Callable[[], object]) -> Dict[str, float]:
    """Peak RSS of one call of ``fn`` above the RSS before it (bytes): ``{"rss_peak": bytes, "method": ...}``."""
    gc.collect()
    rss0 = _proc_status_kib("VmRSS")
    if _reset_peak_rss():
        fn()
        return {"rss_peak": (_proc_status_kib("VmHWM") - rss0) * 1024, "method": "VmHWM"}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux; the process's lifetime peak
    fn()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if after > before:
        return {"rss_peak": (after - rss0) * 1024, "method": "ru_maxrss"}
    return {"rss_peak": (before - rss0) * 1024, "method": "ru_maxrss upper bound"}


def memory_of_case(case: registry.Case, device: str) -> Dict[str, float]:
    """Peak memory of one (first) call of ``case`` above what the process held before it: the CUDA allocator's peak
    for a row on a GPU, else :func:`peak_of_call`."""
    fn = case.setup()
    if device.startswith("cuda") and case.on_device:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return {"cuda_peak": torch.cuda.max_memory_allocated() - before}
    return peak_of_call(fn)


def _find_case(case_id: str, sizes: registry.Sizes, device: str) -> registry.Case:
    if case_id.startswith("sweep:"):
        return registry.w1_memory_case(sizes, device, int(case_id.split(":", 1)[1]))
    workload = case_id.split("|")[0]
    return next(c for c in registry.all_cases(sizes, device, [workload]) if c.id == case_id)


def _memory_child(case_id: str, sizes: registry.Sizes, device: str) -> None:
    print(json.dumps(memory_of_case(_find_case(case_id, sizes, device), device)))


def memory_in_subprocess(case_id: str, child_args: List[str], device: str,
                         on_device: bool = False) -> Tuple[Optional[dict], Optional[str]]:
    """Run :func:`memory_of_case` in a fresh ``python -m bench --memory-case`` (in this process for a GPU row)."""
    proc = subprocess.run([sys.executable, "-m", "bench", "--memory-case", case_id, *child_args],
                          cwd=REPO, capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"memory subprocess failed: {tail[:120]}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), None


def measure_memory(rows: List[Row], child_args: List[str], device: str) -> None:
    for row in rows:
        c = row.case
        if not c.memory or row.error:
            continue
        print(f"  memory: {c.id} ...", file=sys.stderr, flush=True)
        if device.startswith("cuda") and c.on_device:
            try:
                row.memory = memory_of_case(c, device)
            except Exception as exc:  # noqa: BLE001
                row.memory = {"error": _describe_error(exc)}
            continue
        mem, err = memory_in_subprocess(c.id, child_args, device)
        row.memory = mem if mem is not None else {"error": err}


def memory_sweep(sizes: registry.Sizes, child_args: List[str], device: str) -> Dict[int, dict]:
    """Peak memory of the kdekit default W1 row at each utterance count of ``sizes.w1_memory_sweep``."""
    out = {}
    for items in sizes.w1_memory_sweep:
        print(f"  memory sweep: W1 kdekit default row, {items} utterances ...", file=sys.stderr, flush=True)
        if device.startswith("cuda"):
            case = registry.w1_memory_case(sizes, device, items)
            out[items] = memory_of_case(case, device)
            continue
        mem, err = memory_in_subprocess(f"sweep:{items}", child_args, device)
        out[items] = mem if mem is not None else {"error": err}
    return out


def _peak_bytes(mem: Optional[dict]) -> Optional[float]:
    if not mem or "error" in mem:
        return None
    return mem.get("cuda_peak", mem.get("rss_peak"))


def _memory_cell(mem: Optional[dict]) -> str:
    if not mem:
        return ""
    if "error" in mem:
        return mem["error"]
    if "cuda_peak" in mem:
        return f"{fmt_bytes(mem['cuda_peak'])} (CUDA allocator)"
    bound = "≤ " if mem.get("method", "").endswith("upper bound") else ""
    return f"{bound}{fmt_bytes(mem['rss_peak'])}"


# ---- machine ----


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
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=False)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=False)
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
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{_cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"torch threads: {torch.get_num_threads()}",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "device": device,
        "python": platform.python_version(),
        "versions": ", ".join(
            f"{m} {_version(m)}"
            for m in ("torch", "numpy", "scipy", "kdekit", "KDE-diffusion", "lightkde", "torch-dct", "torchmetrics")
        ),
        "commit": _git_commit(),
    }


# ---- targets ----


def _group_rows(rows: List[Row], target: registry.Target) -> List[Row]:
    groups: Dict[Tuple[str, str], List[Row]] = {}
    for r in rows:
        if r.case.workload == target.workload and all(s in r.case.variant for s in target.variant_has):
            groups.setdefault(r.case.group, []).append(r)
    return next(iter(groups.values()), [])


def _reference(group: List[Row]) -> Optional[Row]:
    return next((r for r in group if r.case.ref), None)


def paired_difference(row: Row, ref: Row) -> Optional[float]:
    """Median over the rounds both ran of ``row - ref`` (W6)."""
    common = sorted(set(row.samples) & set(ref.samples))
    return statistics.median(row.samples[r] - ref.samples[r] for r in common) if common else None


def evaluate_target(target: registry.Target, rows: List[Row], sweep: Dict[int, dict]) -> Tuple[str, str]:
    """(status, detail): status "met", "not met" or "not measured"."""
    group = _group_rows(rows, target)
    ref = _reference(group)
    if ref is None or ref.median is None:
        if group:
            return "not measured", f"reference row failed: {ref.error if ref else 'missing'}"
        ran = any(r.case.workload == target.workload for r in rows)
        return "not measured", "variant not in this run's sizes" if ran else f"{target.workload} not run"
    reduced = ""
    if target.full_items and ref.case.total < target.full_items:
        reduced = f"; indicative only: {ref.case.total} of {target.full_items} utterances"
    if target.kind == "speedup":
        other = next((r for r in group if r.case.contender.startswith(target.contender)), None)
        if other is None or other.median is None:
            return "not measured", f"{target.contender}: {other.error if other else 'not run'}"
        ratio = other.median / ref.median
        ok = ratio >= target.value
        return ("met" if ok else "not met"), f"{ratio:.1f}x ({fmt_time(other.median)} / {fmt_time(ref.median)}){reduced}"
    if target.kind == "overhead":
        other = next((r for r in group if r.case.contender.startswith(target.contender)), None)
        diff = paired_difference(other, ref) if other is not None else None
        if diff is None:
            return "not measured", "no paired rounds"
        return ("met" if diff <= target.value else "not met"), (f"{diff:+.3f} s (median of the differences in "
                                                                f"{len(other.samples)} paired rounds)")
    if target.kind == "memory":
        peaks = {u: _peak_bytes(m) for u, m in sweep.items() if _peak_bytes(m) is not None}
        full = target.full_items or ref.case.total
        at_full = peaks.get(full, _peak_bytes(ref.memory) if ref.case.total == full else None)
        if at_full is None:
            return "not measured", f"no memory measurement at {full} utterances (memory off, or a smaller item set)"
        ok = at_full <= target.value * 1e6
        detail = f"{at_full / 1e6:.0f} MB at {full} utterances"
        if len(peaks) >= 2:
            lo, hi = min(peaks), max(peaks)
            flat = peaks[hi] <= 1.25 * peaks[lo] + 32 * MIB
            ok = ok and flat
            detail += (f"; {'flat' if flat else 'NOT flat'}: " + ", ".join(f"{u}: {p / 1e6:.0f} MB"
                                                                          for u, p in sorted(peaks.items())))
        else:
            detail += "; flatness not measured (no sweep)"
        return ("met" if ok else "not met"), detail
    raise ValueError(f"unknown target kind {target.kind!r}")


# ---- report ----


def _notes(row: Row) -> str:
    c = row.case
    notes = []
    if row.error:
        notes.append(row.error)
    if c.items != c.total:
        which = f" ({c.subset})" if c.subset else ""
        notes.append(f"timed on {c.items} of the {c.total} items{which}, scaled ×{c.scale:g}")
        if row.memory and "error" not in row.memory:
            notes.append(f"memory: one call on those {c.items} items")
    elif c.kdekit and c.workload == "W1":
        notes.append(f"the whole set ({c.total} items) per call")
    if c.calls > 1:
        notes.append(f"per call: mean of {c.calls} calls (one item each) per round")
    if row.inner > 1:
        notes.append(f"a sample = mean of {row.inner} calls")
    if row.facts:
        facts = dict(row.facts)
        if "raised" in facts:
            notes.append(f"{facts.pop('raised')} of {c.items} items raised")
        if "raised batches" in facts:
            notes.append(f"{facts.pop('raised batches')} batches raised")
        if "not brentq" in facts:
            bad = facts.pop("not brentq")
            notes.append("every item solved by brentq" if bad == 0 else f"{bad} items on a fallback bandwidth")
        notes += [f"{k}={v}" for k, v in facts.items()]
    if c.note:
        notes.append(c.note)
    if row.memory and row.memory.get("method", "VmHWM") != "VmHWM":
        notes.append(f"memory by {row.memory['method']}")
    return "; ".join(notes)


def _compare_cell(row: Row, ref: Optional[Row]) -> str:
    if ref is None or ref.median is None or row.median is None:
        return "n/a"
    if row is ref:
        return "ref"
    if row.case.compare == "difference":
        diff = paired_difference(row, ref)
        return "n/a" if diff is None else f"+{fmt_time(diff)}" if diff >= 0 else f"−{fmt_time(-diff)}"
    return f"{row.median / ref.median:.2f}×"


def cases_table(rows: List[Row]) -> str:
    refs = {r.case.group: r for r in rows if r.case.ref}
    lines = [
        "| workload | variant | contender | median | min | IQR | rounds | ÷ kdekit | peak above inputs | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r.case
        lines.append(
            f"| {c.workload} | {c.variant} | {c.contender} | {fmt_time(r.median)} | {fmt_time(r.min)} | "
            f"{fmt_time(r.iqr)} | {len(r.samples)} | {_compare_cell(r, refs.get(c.group))} | "
            f"{_memory_cell(r.memory)} | {_notes(r).replace('|', '/')} |"
        )
    return "\n".join(lines)


def sweep_table(sweep: Dict[int, dict], case_name: str) -> str:
    lines = [f"W1 memory sweep ({case_name}, one call in a fresh process, peak RSS above the inputs):", "",
             "| utterances | peak above inputs |", "|---|---|"]
    lines += [f"| {u} | {_memory_cell(m)} |" for u, m in sorted(sweep.items())]
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
                samples = measure(sweep.make(value), device, sizes.budget_s.get("W4", 1.0),
                                  min_samples=sizes.min_rounds)
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

METHOD = (
    "Method: each (workload, variant) group is one item set and every contender runs on it; kdekit rows process the "
    "whole set in every timed call; rows noted 'timed on k of the N items' run every k-th item of the same set and "
    "are scaled by N/k. Each contender is warmed up once, then timed in interleaved rounds (round r starts at "
    "contender r mod C) until the group's budget is spent, at least {min_rounds} rounds ({slow} for slow loops). "
    "median / min / IQR over the rounds. ÷ kdekit = row median / median of the group's ref row (kdekit on its "
    "default backend; > 1: kdekit is faster); W6: median of the per-round differences to `import torch`. Peak above "
    "inputs: one call in a fresh process, VmHWM (reset before the call) minus VmRSS before it. W1: time for the "
    "whole item set; W2: per training step; W3, W5: per call; W6: per interpreter."
)


def report(info: Dict[str, str], sizes: registry.Sizes, argv: List[str], targets: List[Tuple[str, str, str]],
           table: str, sweep: str, sweeps: str, loaded: bool) -> str:
    head = [f"## {info['date']} · {sizes.name} run · `python -m bench {' '.join(argv)}`".rstrip(), ""]
    head.append(f"**Summary** ({info['machine']}; device {info['device']}; gpu {info['gpu']}; {info['date']}):")
    head.append("")
    for label, status, detail in targets:
        mark = {"met": "**met**", "not met": "**not met**"}.get(status, status)
        head.append(f"- {label}: {mark} — {detail}")
    head.append("")
    head += [f"- {k}: {v}" for k, v in info.items() if k not in ("date", "machine", "gpu", "device")]
    if loaded:
        head.append(
            f"- **Loaded machine:** the load average exceeded the {os.cpu_count()} cores during this run (other jobs "
            "shared the CPU): absolute times are inflated and noisy; the interleaved rounds spread the load over "
            "every contender of a group, so ratios are more reliable than times.")
    head.append("- " + METHOD.format(min_rounds=sizes.min_rounds, slow=sizes.slow_min_rounds))
    parts = ["\n".join(head)]
    for block in (table, sweep):
        if block:
            parts.append(block)
    if sweeps:
        parts.append("W4 scaling (kdekit, default backend; W1 = hard/float64/forward pooled in the call, W2 = "
                     "soft/float32/fwd+bwd):\n\n" + sweeps)
    return "\n\n".join(parts) + "\n"


def sizes_from_args(args) -> registry.Sizes:
    sizes = registry.MODES[args.mode or ("quick" if args.quick else "full")]
    if args.items:
        sizes = replace(sizes, w1_items=args.items, w1_items_gpu=args.items)
    if args.loop_items:
        sizes = replace(sizes, w1_loop_items=args.loop_items, w1_seed_items=args.loop_items)
    if args.budget is not None:
        sizes = replace(sizes, budget_s={w: args.budget for w in sizes.budget_s})
    if args.memory or args.no_memory:
        sizes = replace(sizes, memory=bool(args.memory))
    return sizes


def parse_args(argv: List[str]):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller item sets and budgets (~2 min on 2 cores)")
    parser.add_argument("--mode", choices=sorted(registry.MODES), help="size preset (overrides --quick)")
    parser.add_argument("--only", default=",".join(registry.WORKLOADS), help="comma-separated workloads, e.g. W1,W5")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--items", type=int, help="W1 item set: this many utterances spread over the corpus "
                        "(default: the mode's; 1300 = the whole workload)")
    parser.add_argument("--loop-items", type=int, help="W1 slow contenders (loops, seed baseline on the CPU): about "
                        "this many items of the set, every k-th")
    parser.add_argument("--budget", type=float, help="time budget per group in seconds (default: the mode's)")
    parser.add_argument("--memory", action="store_true", help="measure peak memory (default in full runs)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--out", type=Path, help=f"append the report to this file instead of {RESULTS.name}")
    parser.add_argument("--no-record", action="store_true", help="print the report only")
    parser.add_argument("--memory-case", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def child_arguments(args) -> List[str]:
    """The arguments that make a memory subprocess build the same cases as this run."""
    out = ["--device", args.device, "--threads", str(torch.get_num_threads())]
    out += ["--mode", args.mode or ("quick" if args.quick else "full")]
    for flag, value in (("--items", args.items), ("--loop-items", args.loop_items)):
        if value:
            out += [flag, str(value)]
    return out


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("python -m bench: --device cuda but torch.cuda.is_available() is False")
    sizes = sizes_from_args(args)
    if args.memory_case:
        _memory_child(args.memory_case, sizes, args.device)
        return
    only = [w.strip().upper() for w in args.only.split(",") if w.strip()]
    unknown = sorted(set(only) - set(registry.WORKLOADS))
    if unknown:
        sys.exit(f"python -m bench: unknown workload(s) {unknown}; choose from {registry.WORKLOADS}")
    child_args = child_arguments(args)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    rows: List[Row] = []
    for cases in group_cases(registry.all_cases(sizes, args.device, only)):
        print(f"  {cases[0].workload} | {cases[0].variant}: {len(cases)} contenders ...", file=sys.stderr, flush=True)
        group = run_group(cases, sizes, args.device)
        if sizes.memory and cases[0].workload in ("W1", "W2"):
            measure_memory(group, child_args, args.device)
        rows += group
    sweep = memory_sweep(sizes, child_args, args.device) if sizes.memory and "W1" in only else {}
    sweep_rows = run_sweeps(registry.w4_sweeps(sizes, args.device), sizes, args.device) if "W4" in only else []
    info = machine_info(args.device)
    info["wall time"] = f"{time.perf_counter() - start:.0f} s"
    info["load average"] = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    loaded = max(load_before, os.getloadavg()[0]) > (os.cpu_count() or 1)
    targets = [(t.label, *evaluate_target(t, rows, sweep)) for t in registry.TARGETS if t.workload in only]
    ref_w1 = next((r.case.contender for r in rows if r.case.workload == "W1" and r.case.ref), "kdekit default row")
    text = report(info, sizes, argv, targets, cases_table(rows) if rows else "",
                  sweep_table(sweep, ref_w1) if sweep else "", sweeps_table(sweep_rows) if sweep_rows else "", loaded)
    print(text)
    if args.no_record:
        return
    out = args.out or RESULTS
    new = not out.exists()
    with out.open("a") as fh:
        if new:
            fh.write("# kdekit benchmark results\n\nAppended by `python -m bench` (newest last).\n\n")
        fh.write(text + "\n")
