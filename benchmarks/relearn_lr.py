"""LoRA re-learning in the embedded world under other attack settings and start models.

The world check's re-learning target, per group and setting: UCE (its config for tiny-sd) erases the group,
LoRA re-learns it from 20 images of the un-erased model, and the world classifier judges 10
generations per target at step 400. Settings: the lr (the papers' 1e-4, tiny-sd's preset 1e-3),
the LoRA rank and seed (``--seed``: how much of a copy's figure is the attack's luck), the start model (``--start pretrained``: no UCE, the control), and whether the
group's targets are re-learned jointly, as the card's attacker does, or one LoRA per target
(``--alone``: which separates "LoRA cannot re-learn it" from "the targets interfere"), and UCE's
config (``--uce style_guide=``: the start model under another erasure, here the empty-prompt style guide
that tiny-sd's UCE preset used until 2026-11-30; each UCE start's accuracy
on the group's targets and the mean over its others is recorded beside the re-learning).
Writes benchmarks/results/relearn_lr.json (or ``--out``).

    .venv/bin/python benchmarks/relearn_lr.py [--lr 1e-4 1e-3] [--weights DIR]
    .venv/bin/python benchmarks/relearn_lr.py --weights DIR --groups relearn-style/3c-4 --lr 1e-3 --rank 4 16 --alone
    .venv/bin/python benchmarks/relearn_lr.py --weights DIR --lr 1e-3 --seed 0 1 2 --uce style_guide=
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from immunobench.cards import get_card
from immunobench.errors import UnknownNameError
from immunobench.plugins import configure, discover, get_attack, get_defense
from immunobench.world.check import RELEARN_GROUPS, _accuracies, _Judges, _mean, attack_data, relearn, uce_erased

from uce_residual import tiny_sd


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lr", type=float, nargs="+", default=[1e-4, 1e-3])
    ap.add_argument("--rank", type=int, nargs="+", default=[4])
    ap.add_argument("--seed", type=int, nargs="+", default=[0],
                    help="LoRA seeds (A init, batch order, noise; 0 is the world check's)")
    ap.add_argument("--start", nargs="+", choices=["uce", "pretrained"], default=["uce"])
    ap.add_argument("--alone", action="store_true", help="also re-learn each target with its own LoRA")
    ap.add_argument("--groups", nargs="+", default=None, help="task/group, e.g. relearn-style/3c-4 (default: all)")
    ap.add_argument("--n-eval", type=int, default=10)
    ap.add_argument("--weights", default="shipped", help="'shipped' or a `world train --out` folder")
    ap.add_argument("--uce", nargs="+", default=[], metavar="KEY=VALUE",
                    help="UCE config overrides, e.g. style_guide= (the empty prompt) or style_guide=art")
    ap.add_argument("--out", default="benchmarks/results/relearn_lr.json")
    args = ap.parse_args()
    discover()
    uce_overrides = {}
    for item in args.uce:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--uce {item}: write KEY=VALUE, e.g. style_guide=art")
        try:  # numbers as numbers, anything else as text
            uce_overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            uce_overrides[key] = value
    try:  # a bad key or value: one line, before the model loads
        configure(get_defense("uce"), "tiny-sd", "style", uce_overrides)
    except (TypeError, ValueError) as e:
        ap.error(f"--uce: {e}")
    groups = []
    for task_group in args.groups or [f"{task}/{name}" for task, names in RELEARN_GROUPS.items() for name in names]:
        task, _, name = task_group.partition("/")
        try:
            card = get_card(task)
            groups.append((card, card.group(name)))
        except UnknownNameError as e:  # unknown task or group: one line, before any work
            ap.error(f"--groups {task_group}: {e} (write task/group, e.g. relearn-style/3c-4)")
    model = tiny_sd(args.weights)
    judges = _Judges(model.spec.metric_family)
    lora = get_attack("lora")
    rows, starts = [], []
    for card, group in groups:
        task, name = card.task, group.name
        data = attack_data(model, group)
        for start in args.start:
            start_model = uce_erased(model, group, uce_overrides) if start == "uce" else model
            start_acc = _accuracies(start_model, judges, group, list(card.concepts), args.n_eval)
            start_row = {"task": task, "group": name, "start": start, "uce": uce_overrides if start == "uce" else None,
                         "targets": round(_mean(start_acc[c] for c in group.targets), 3),
                         "others": round(_mean(start_acc[c] for c in group.others), 3),
                         "per_concept": {c: round(v, 2) for c, v in start_acc.items()}}
            starts.append(start_row)
            print(json.dumps(start_row), flush=True)
            # joint: the card's attacker, one LoRA for the group; alone: one LoRA per target
            runs = [("joint", group, data)] + ([(c, replace(group, targets=(c,)), replace(data, attack={c: data.attack[c]}))
                                                for c in group.targets] if args.alone else [])
            for lr in args.lr:
                for rank, seed in [(r, s) for r in args.rank for s in args.seed]:
                    cfg = configure(lora, model.name, card.kind, {"lr": lr, "rank": rank, "seed": seed})
                    for trained, run_group, run_data in runs:
                        started = time.time()
                        acc = relearn(start_model, run_data, judges, run_group, cfg, card.report_step, args.n_eval)
                        rows.append({"task": task, "group": name, "start": start, "uce": start_row["uce"],
                                     "trained": trained, "lr": lr,
                                     "rank": rank, "seed": seed, "step": card.report_step,
                                     "accuracy": round(sum(acc.values()) / len(acc), 3),
                                     "per_concept": {c: round(v, 2) for c, v in acc.items()},
                                     "seconds": round(time.time() - started, 1)})
                        print(json.dumps(rows[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "model": model.provenance(),
                                          "n_eval": args.n_eval, "starts": starts, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
