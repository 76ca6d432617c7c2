"""The tiny-sd presets of ``textual_inversion`` and ``custom_diffusion``: one sweep each, no defense.

Protocol (the same for every attack): personalization instances purse and castle, each attacked alone
from its reference views under its card prompt (``group("2c-1"/"2c-4").prompt(instance)``: "a photo of
ktn purse", "a photo of pll castle"); per config, 8 generations with seeds 20000+ (disjoint from the
runner's evaluation seeds 10000+) at steps 0, 40 (the card's reporting step) and 200, scored by the
DINO-role judge's pairwise mean similarity to the references; the preset is the config with the highest
mean gain at step 40. Appends one JSON line per (attack, config, instance) to the output and skips the
ones already there, so an interrupted sweep keeps what it measured.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/token_attack_presets.py   # 2 threads on a shared 2-core machine spin ~8× slower
    .venv/bin/python benchmarks/token_attack_presets.py --attacks custom_diffusion
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from statistics import fmean

import torch

from immunobench.backbones import load_backbone
from immunobench.cards import get_card
from immunobench.data import ConceptImages, TaskData
from immunobench.diffusion import sample
from immunobench.finetune import drawn_once
from immunobench.plugins import configure, discover, get_attack, get_metric, judges_for
from immunobench.world.common import reference_images

INSTANCES = {"purse": "2c-1", "castle": "2c-4"}
STEPS = (0, 40, 200)
EVAL_SEED0, N_EVAL = 20_000, 8
# ≤ 6 configs each around the paper default: lr × {1, 10, 100} (tiny-sd's token embeddings are ~60× SD's
# per coordinate: std 1.0 against ~0.015), plus one more lr step or the prior term
GRIDS = {
    "textual_inversion": {"lr=2e-3": {"lr": 2e-3}, "lr=2e-2": {"lr": 2e-2}, "lr=2e-1": {"lr": 2e-1},
                          "lr=2e-1,bs=1": {"lr": 2e-1, "batch_size": 1}},
    "custom_diffusion": {"lr=1e-5": {"lr": 1e-5}, "lr=1e-4": {"lr": 1e-4}, "lr=1e-3": {"lr": 1e-3},
                         "lr=1e-2": {"lr": 1e-2}, "lr=1e-3,no-prior": {"lr": 1e-3, "prior_loss_weight": 0.0},
                         # DreamBooth's tiny-sd class-image count (the runner then draws one set per model and class)
                         "lr=1e-3,20-class": {"lr": 1e-3, "class_images": 20}},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--attacks", nargs="+", default=list(GRIDS))
    ap.add_argument("--out", default="benchmarks/results/token_attack_presets.json")
    args = ap.parse_args()
    discover()
    model = load_backbone("tiny-sd")
    draw_class_images = drawn_once(model)  # the same un-defended model for every config
    dino = get_metric(judges_for(model.spec.metric_family)["D"])()
    card = get_card("personalization")
    out = Path(args.out)
    done = set()
    if out.exists():
        done = {(r["attack"], r["config"], r["instance"]) for r in map(json.loads, out.read_text().splitlines())}
    seeds = list(range(EVAL_SEED0, EVAL_SEED0 + N_EVAL))
    for name in args.attacks:
        attack = get_attack(name)
        for label, over in GRIDS[name].items():
            for instance, group_name in INSTANCES.items():
                if (name, label, instance) in done:
                    continue
                started = time.time()
                group = card.group(group_name)
                prompt = group.prompt(instance)
                refs = reference_images(instance)
                data = TaskData(attack={instance: ConceptImages(refs, [prompt] * len(refs))},
                                draw_class_images=draw_class_images)
                cfg = replace(configure(get_attack(name), model.name, card.kind), **over)
                sims = {}
                for step, adapted in attack().adapt(model, group, data, cfg, checkpoints=list(STEPS)):
                    with torch.no_grad():
                        x = sample(adapted, [prompt] * N_EVAL, seeds, batch_size=N_EVAL)
                        sims[step] = round(float(dino.pairwise(x, refs).mean()), 4)
                row = {"attack": name, "config": label, "overrides": over, "instance": instance, "prompt": prompt,
                       "similarity": sims, "gain_at_40": round(sims[40] - sims[0], 4),
                       "gain_at_200": round(sims[200] - sims[0], 4), "n_eval": N_EVAL, "eval_seed0": EVAL_SEED0,
                       "fingerprint": model.fingerprint, "seconds": round(time.time() - started, 1),
                       "torch_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}
                print(json.dumps(row), flush=True)
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    summarize(out)


def summarize(out: Path) -> None:
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for name in GRIDS:
        table = {}
        for r in rows:
            if r["attack"] == name:
                table.setdefault(r["config"], []).append(r)
        if not table:
            continue
        print(f"\n{name}: DINO-role similarity to the references (mean over {', '.join(INSTANCES)})")
        print(f"{'config':<20}" + "".join(f"{'step ' + str(s):>10}" for s in STEPS) + f"{'gain@40':>10}{'gain@200':>10}")
        for label, rs in table.items():
            means = [fmean(r["similarity"][str(s)] for r in rs) for s in STEPS]
            print(f"{label:<20}" + "".join(f"{m:>10.3f}" for m in means)
                  + f"{means[1] - means[0]:>10.3f}{means[2] - means[0]:>10.3f}  (n={len(rs)})")
        best = max(table, key=lambda k: fmean(r["gain_at_40"] for r in table[k]))
        print(f"highest gain at step 40: {best}")


if __name__ == "__main__":
    main()
