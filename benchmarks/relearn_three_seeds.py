"""Both re-learning cards, all ten groups each, MIMA beside no defense, seeds 0, 1, 2 — the tables
the docs discuss (issue [5/10]).

Runs ``immunobench run`` for each card through the runner, seed 0 alone first (its timings are
the card's cost for one seed; on an empty store, what ``make demo`` costs), then seeds 0, 1, 2
(one shared store, so seed 0 is reused and a rerun only re-renders), then copies each run's ``results.parquet``, ``leaderboard.md``/``.csv`` and
``manifest.json`` to ``benchmarks/results/relearn_3seeds/<task>/`` and writes the seed spread
(``spread.json``): per group, metric and defense the std over seeds beside the binomial std that
the evaluation images alone would give, which is what the evaluation image count was chosen with.

    .venv/bin/python benchmarks/relearn_three_seeds.py [--tasks relearn-style relearn-object] [--store DIR]
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import pandas as pd

from immunobench.progress import Progress
from immunobench.runner import RunConfig, Runner

OUT = Path(__file__).parent / "results" / "relearn_3seeds"
SEEDS = (0, 1, 2)


def spread(results: pd.DataFrame, manifest: dict) -> dict:
    """Std over seeds of each group's accuracies and MSGR/MRSGR, and the binomial std of one seed's accuracy."""
    step = manifest["resolved"]["report_step"]
    n_eval = manifest["resolved"]["eval_images"]
    star = results[(results.concept == "*") & results.step.isin([0, step])]
    out = []
    for (group, defense, s, metric), part in star.groupby(["group", "defense", "step", "metric"]):
        if len(part) < 2:
            continue
        row = {"group": group, "defense": defense, "step": int(s), "metric": metric, "mean": part.value.mean(),
               "std_over_seeds": part.value.std()}
        if metric.startswith("acc/"):
            concepts = manifest["groups"][group] if metric == "acc/targets" else manifest["resolved"]["others"][group]
            n = n_eval * len(concepts)
            p = min(max(part.value.mean(), 0.0), 1.0)
            row.update(images_per_seed=n, binomial_std=math.sqrt(p * (1 - p) / n))
        out.append(row)
    table = pd.DataFrame(out)
    acc = table[table.metric.str.startswith("acc/")]
    return {
        "eval_images": n_eval,
        "median_std_over_seeds": table.groupby("metric").std_over_seeds.median().round(4).to_dict(),
        "median_binomial_std": acc.groupby("metric").binomial_std.median().round(4).to_dict(),
        "rows": table.round(4).to_dict(orient="records"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["relearn-style", "relearn-object"])
    ap.add_argument("--store", default=str(Path.home() / ".cache" / "immunobench" / "store"))
    ap.add_argument("--runs", default="/tmp/immunobench-3seeds")
    args = ap.parse_args()
    for task in args.tasks:
        # seed 0 alone first: what `immunobench run` of the card costs (on an empty store, the demo's time)
        first = RunConfig(task=task, defenses=("mima",), seeds=(0,), out=args.runs, store=args.store, name=f"{task}-seed0")
        one_seed = json.loads((Runner(first, Progress()).run() / "manifest.json").read_text())["timings"]
        started = time.time()
        cfg = RunConfig(task=task, defenses=("mima",), seeds=SEEDS, out=args.runs, store=args.store, name=task)
        run_dir = Runner(cfg, Progress()).run()
        dest = OUT / task
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("results.parquet", "leaderboard.md", "leaderboard.csv", "manifest.json"):
            shutil.copy(run_dir / name, dest / name)
        manifest = json.loads((run_dir / "manifest.json").read_text())
        report = {"task": task, "seeds": list(SEEDS), "store": args.store, "seed0_first": one_seed,
                  "wall_seconds_this_call": round(time.time() - started, 1),
                  "run_seconds": manifest["timings"]["total_seconds"], "computed": manifest["timings"]["computed"],
                  **spread(pd.read_parquet(run_dir / "results.parquet"), manifest)}
        (dest / "spread.json").write_text(json.dumps(report, indent=2))
        print(f"{task}: {dest} ({report['wall_seconds_this_call']} s)", flush=True)


if __name__ == "__main__":
    main()
