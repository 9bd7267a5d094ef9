"""``python -m kdekit``: distribution labels for a synthetic batch of utterances, with timings.

Each utterance gets 3-12 annotators rating activation and valence on a 1-5 Likert scale (min-max scaled to
[-1, 1]); kdekit builds the papers' 4x4 distribution labels (200 pseudo-observations, hard-histogram diffusion KDE
on a 512 grid in float64, pooled) for the whole batch at once and prints a few tables, the status counts and timings.
"""
from __future__ import annotations

import argparse
import time

import torch

import kdekit


def synthetic_ratings(n_utterances: int, generator: torch.Generator) -> torch.Tensor:
    """``(U, 12, 2)`` Likert ratings scaled to [-1, 1], NaN-padded to 3-12 annotators per utterance."""
    latent = torch.rand(n_utterances, 1, 2, generator=generator) * 4 + 1
    noise = torch.randn(n_utterances, 12, 2, generator=generator) * 0.8
    likert = (latent + noise).round().clamp(1, 5)
    ratings = (likert - 3) / 2
    n_annot = torch.randint(3, 13, (n_utterances,), generator=generator)
    missing = torch.arange(12)[None, :] >= n_annot[:, None]
    return ratings.masked_fill(missing[..., None], float("nan"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kdekit", description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--grid", type=int, default=512, help="KDE grid size (default 512)")
    parser.add_argument("--k", type=int, default=4, help="pooled table size k x k (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    gen = torch.Generator().manual_seed(args.seed)
    ratings = synthetic_ratings(args.utterances, gen)
    t0 = time.perf_counter()
    labels = kdekit.labels_from_ratings(
        ratings, k=args.k, grid=args.grid, generator=torch.Generator().manual_seed(args.seed)
    )
    elapsed = time.perf_counter() - t0

    print(f"kdekit {kdekit.__version__}: {args.k}x{args.k} distribution labels for {args.utterances} utterances "
          f"(200 pseudo-observations each, grid {args.grid}, float64)\n")
    for i in range(3):
        n = int((~ratings[i, :, 0].isnan()).sum())
        print(f"utterance {i} ({n} annotators), rows = activation low->high, columns = valence low->high:")
        for row in labels.probs[i].tolist():
            print("   " + "  ".join(f"{p:6.3f}" for p in row))
    counts = torch.bincount(labels.status, minlength=len(kdekit.KDEStatus))
    print("\n| status | items |\n|---|---|")
    for status in kdekit.KDEStatus:
        print(f"| {status.name} | {int(counts[status])} |")
    print(f"\n| step | seconds | ms per utterance |\n|---|---|---|")
    print(f"| labels_from_ratings (batched) | {elapsed:.3f} | {1000 * elapsed / args.utterances:.2f} |")
    print(f"\nbackends available: {', '.join(name for name, (ok, _) in kdekit.backends().items() if ok)}")


if __name__ == "__main__":
    main()
