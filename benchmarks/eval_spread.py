"""How many evaluation images per concept? The spread of a group's accuracy over evaluation seeds.

For one group per card (selection seed 7, which the reported tables do not use) it draws 64
images per concept from the start model and from the MIMA-immunized model (both from the store),
judges each, and measures the std of the group's mean accuracy (targets, others) over disjoint
evaluation-seed sets of n = 4, 8, 16 images per concept, beside the binomial std that the
per-concept hit rates predict for n = 4 … 64 (the images are independent draws, so the binomial
model is exact given the model; the disjoint sets check it). That is the spread the evaluation
count alone puts into every accuracy of the tables, to set against the spread over run seeds
(relearn_three_seeds.py). The cards run in parallel processes. Writes
benchmarks/results/eval_spread.json.

    .venv/bin/python benchmarks/eval_spread.py [--store DIR]
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from statistics import fmean, pstdev

import torch

from immunobench.diffusion import sample
from immunobench.progress import Progress
from immunobench.runner import SEED_STRIDE, RunConfig, Runner

IMAGES = 64
SIZES = (4, 8, 16)
PREDICTED = (4, 8, 16, 32, 64)
SEED = 7
SPREAD_OFFSET = 50_000  # image seeds no other role uses (runner.SEED_OFFSETS go up to 10_000 + eval count)


def correct(runner: Runner, model, group, concepts) -> dict[str, torch.Tensor]:
    """Per concept, whether the judge recognizes each of IMAGES generations (bool vector)."""
    seeds = [SEED * SEED_STRIDE + SPREAD_OFFSET + i for i in range(IMAGES)]
    out = {}
    for c in concepts:
        x = sample(model, [group.prompt(c)] * IMAGES, seeds, batch_size=16, **runner._sampling)
        judge = runner.judges["acc"]
        out[c] = judge.logits(x).argmax(dim=1) == judge.index_of(c)
    return out


def spread(hits: dict[str, torch.Tensor], concepts, n: int) -> dict:
    """Mean accuracy of ``concepts`` over IMAGES // n disjoint seed sets of n images per concept."""
    sets = IMAGES // n
    means = [fmean(float(hits[c][k * n:(k + 1) * n].float().mean()) for c in concepts) for k in range(sets)]
    return {"n_per_concept": n, "sets": sets, "mean": round(fmean(means), 4), "std": round(pstdev(means), 4)}


def binomial_std(hits: dict[str, torch.Tensor], concepts, n: int) -> float:
    """Std of the group's mean accuracy with n images per concept, from the per-concept hit rates."""
    rates = [float(hits[c].float().mean()) for c in concepts]
    return round(math.sqrt(sum(p * (1 - p) / n for p in rates)) / len(rates), 4)


def measure(cell: str, store: str) -> list[dict]:
    torch.set_num_threads(1)
    task, group_name = cell.split(":")
    runner = Runner(RunConfig(task=task, groups=(group_name,), seeds=(SEED,), store=store), Progress(False),
                    log=print)
    runner.prepare()
    group = runner.card.group(group_name)
    start_key, start = runner.start_model(group)
    data, keys = runner.task_data(group, SEED)
    _, immunized, _ = runner.immunize("mima", group, SEED, start_key, start, data, keys)
    results = []
    for label, model in (("start model", start), ("mima immunized", immunized)):
        hits = correct(runner, model, group, [*group.targets, *group.others])
        for which, concepts in (("targets", group.targets), ("others", group.others)):
            results.append({"task": task, "group": group_name, "model": label, "concepts": which,
                            "per_concept": {c: round(float(hits[c].float().mean()), 4) for c in concepts},
                            "disjoint_sets": [spread(hits, concepts, n) for n in SIZES],
                            "binomial_std": {n: binomial_std(hits, concepts, n) for n in PREDICTED}})
            print(json.dumps(results[-1]), flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=str(Path.home() / ".cache" / "immunobench" / "store"))
    ap.add_argument("--cells", nargs="+", default=["relearn-style:2c-1", "relearn-object:2c-1"])
    ap.add_argument("--out", default="benchmarks/results/eval_spread.json")
    args = ap.parse_args()
    started = time.time()
    with ProcessPoolExecutor(len(args.cells), mp_context=multiprocessing.get_context("spawn")) as pool:
        results = [r for part in pool.map(measure, args.cells, [args.store] * len(args.cells)) for r in part]
    Path(args.out).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "seed": SEED, "images": IMAGES,
                                          "seconds": round(time.time() - started, 1), "results": results}, indent=2))


if __name__ == "__main__":
    main()
