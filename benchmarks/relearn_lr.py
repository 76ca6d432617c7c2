"""LoRA re-learning in the embedded world at the papers' lr (1e-4) and at tiny-sd's preset (1e-3).

The world check's re-learning target, per group and lr: UCE (tiny-sd preset) erases the group,
LoRA re-learns it from 20 images of the un-erased model, and the world classifier judges 10
generations per target at step 400. Writes benchmarks/results/relearn_lr.json.

    .venv/bin/python benchmarks/relearn_lr.py [--lr 1e-4 1e-3] [--weights DIR]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from immunobench.cards import get_card
from immunobench.plugins import configure, discover, get_attack
from immunobench.world.check import RELEARN_GROUPS, _Judges, attack_data, relearn, uce_erased

from uce_residual import tiny_sd


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lr", type=float, nargs="+", default=[1e-4, 1e-3])
    ap.add_argument("--n-eval", type=int, default=10)
    ap.add_argument("--weights", default="shipped", help="'shipped' or a `world train --out` folder")
    ap.add_argument("--out", default="benchmarks/results/relearn_lr.json")
    args = ap.parse_args()
    discover()
    model = tiny_sd(args.weights)
    judges = _Judges(model.spec.metric_family)
    lora = get_attack("lora")
    rows = []
    for task, group_names in RELEARN_GROUPS.items():
        card = get_card(task)
        for name in group_names:
            group = card.group(name)
            erased, data = uce_erased(model, group), attack_data(model, group)
            for lr in args.lr:
                started = time.time()
                cfg = configure(lora, model.name, card.kind, {"lr": lr})
                acc = relearn(erased, data, judges, group, cfg, card.report_step, args.n_eval)
                rows.append({"task": task, "group": name, "lr": lr, "step": card.report_step,
                             "accuracy": round(sum(acc.values()) / len(acc), 3),
                             "per_concept": {c: round(v, 2) for c, v in acc.items()},
                             "seconds": round(time.time() - started, 1)})
                print(json.dumps(rows[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "model": model.provenance(),
                                          "n_eval": args.n_eval, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
