"""kdekit benchmarks: kdekit side by side with the tools a researcher would otherwise use, on the same items.

Run from the repository root:

* ``python -m bench`` -- the results table: W1-W6 at full size, every contender of a (workload, variant) group on
  ONE item set, timed in interleaved rounds (:mod:`bench.runner`), peak memory per W1/W2 row in fresh processes;
  prints a report (a summary of the targets, met / not met, with the machine line, then the table) and appends it to
  ``bench/RESULTS.md``. A full run takes ~15-20 min on 2 cores. Options: ``--quick`` (smaller W1 item set on the
  CPU, shorter budgets, no memory: ~2 min), ``--only W1,W5``, ``--items N`` (W1 utterances, spread over the 1300-
  utterance corpus), ``--loop-items N`` (W1 slow contenders' subset), ``--budget S`` (seconds per group),
  ``--threads N`` (use 1 on a machine shared with other jobs: torch's worker threads spin-wait on a busy core),
  ``--memory`` / ``--no-memory``, ``--out FILE`` (append there instead), ``--no-record``, ``--device cuda``.
* On a CUDA machine the torch contenders run on the GPU (``--device cuda`` is the default there), timed with
  ``torch.cuda.Event`` pairs, memory from ``torch.cuda.max_memory_allocated``; numpy contenders stay on the CPU.
  ``bash bench/gpu_check.sh`` runs ``python -m bench --device cuda --quick`` (W1 on the whole 1300 utterances there).
* ``pytest bench --benchmark-only`` -- the same cases through pytest-benchmark, one case after the other (no
  interleaving, no memory; ``KDEKIT_BENCH_MODE=quick|full``): for tracking one case across commits, not for the
  ratios. ``pytest bench --benchmark-disable`` runs each case once on tiny inputs (the CI smoke test, seconds).

Workloads (:mod:`bench.registry`): W1 distribution labels (1300 utterances x 200 pseudo-observations, hard histogram,
grid 512, float64, pooled 4 x 4), W2 a training step (32 utterances x 8 / 50 / 1434 predictions, soft histogram, grid
64, float32 / float16, forward + backward), W3 metrics (CCC, JSD, TVD), W4 kdekit's scaling in B, N and n, W5 single
``kde2d`` calls (the drop-in ``kdekit.kde2d`` vs ``kde_diffusion.kde2d``, one item per call, grids 64 and 256), W6
``import kdekit`` over ``import torch``. Targets: :data:`bench.registry.TARGETS`. Inputs (fixed seeds):
:mod:`bench.workloads`; the seed-style baseline: :mod:`bench.baselines.seed`; where kdekit's time goes:
``python -m bench.profile``. bench/ uses kdekit's public API only.
"""
