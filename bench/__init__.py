"""kdekit benchmarks: side-by-side timings of kdekit against the tools a researcher would otherwise use.

Run from the repository root:

* ``python -m bench`` -- W1-W4, full sizes (< 10 min on 2 cores), prints a markdown table and appends it with a
  machine line to ``bench/RESULTS.md``; ``--quick`` (~1-2 min), ``--only W1,W3``, ``--threads 1`` (steadier on a
  shared CPU), ``--no-memory``, ``--no-record``.
* On a CUDA machine the same command times the torch contenders on the GPU (``--device cuda`` is the default there)
  with ``torch.cuda.Event`` pairs and reports ``torch.cuda.max_memory_allocated``; numpy contenders stay on the CPU.
* ``pytest bench --benchmark-only`` -- the same cases through pytest-benchmark (``KDEKIT_BENCH_MODE=quick|full``);
  ``pytest bench --benchmark-disable`` runs each case once on tiny inputs (CI smoke test).

Workloads and contenders: :mod:`bench.registry`; inputs (fixed seeds): :mod:`bench.workloads`; the seed-style
baseline: :mod:`bench.baselines.seed`; timing, memory and the report: :mod:`bench.runner`.
"""
