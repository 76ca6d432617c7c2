"""The world check's personalization target across model copies and LoRA learning rates.

Per copy (shipped or `world train --out` folders), instance, lr and LoRA seed: LoRA (tiny-sd preset, lr
overridden) on the instance's reference views, and the DINO-role similarity of 10 generations to
the references at each checkpoint; the target is the gain at step 200 over step 0 (≥ 0.05).
Appends one JSON line per run to the output, so an interrupted sweep keeps what it measured. Each
line also holds, per checkpoint, the similarity to the references under the other two judges (CLIP-
and LPIPS-role) and the share of generations the world classifier calls the instance's category;
``--grids DIR`` saves, per run, the references and then each checkpoint's generations; ``--guidance``
samples (every checkpoint, the un-adapted model included) at other guidance scales than the model's;
``--identifier`` trains and samples with other identifier tokens than the card's attack token ("none":
"a photo of {category}").

    .venv/bin/python benchmarks/personalization_lora.py --weights shipped /tmp/v2/tiny-sd --lr 1e-3 3e-3
    .venv/bin/python benchmarks/personalization_lora.py --weights /tmp/v2/tiny-sd --instances castle --seed 1 --grids /tmp/grids
    .venv/bin/python benchmarks/personalization_lora.py --instances castle --checkpoints 0 200 --guidance 1 2 3
    .venv/bin/python benchmarks/personalization_lora.py --instances castle --seed 0 1 2 --identifier none sks
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from pathlib import Path

from immunobench.plugins import configure, discover, get_attack, get_metric, judges_for
from immunobench.world.check import PERSONAL_INSTANCES, _grid, _Judges, personalize
from immunobench.world.concepts import get_concept

from identifier_prior import prompt_with_identifier
from uce_residual import tiny_sd


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", nargs="+", default=["shipped"], help="'shipped' or `world train --out` folders")
    ap.add_argument("--lr", type=float, nargs="+", default=[1e-3])
    ap.add_argument("--seed", type=int, nargs="+", default=[0], help="LoRA seeds (0 is the world check's)")
    ap.add_argument("--instances", nargs="+", default=list(PERSONAL_INSTANCES))
    ap.add_argument("--checkpoints", type=int, nargs="+", default=[0, 40, 100, 200])
    ap.add_argument("--n-eval", type=int, default=10)
    ap.add_argument("--guidance", type=float, nargs="+", help="sampling guidance scales (default: the model's)")
    ap.add_argument("--identifier", nargs="+", help="identifier tokens instead of the card's ('none': no token)")
    ap.add_argument("--out", default="benchmarks/results/personalization_lora.jsonl")
    ap.add_argument("--grids", help="folder for one PNG per run: references, then each checkpoint's generations")
    args = ap.parse_args()
    discover()
    lora = get_attack("lora")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for weights in args.weights:
        loaded = tiny_sd(weights)
        judges = _Judges(loaded.spec.metric_family)
        others = {role: get_metric(judges_for(loaded.spec.metric_family)[role])() for role in ("C", "L")}
        runs = [(i, lr, s, g, t) for i in args.instances for lr in args.lr for s in args.seed
                for g in args.guidance or [loaded.spec.guidance_scale] for t in args.identifier or [None]]
        for instance, lr, seed, guidance, identifier in runs:
            started = time.time()
            model = copy.copy(loaded)
            model.spec = replace(loaded.spec, guidance_scale=guidance)
            cfg = configure(lora, model.name, "personalization", {"lr": lr, "seed": seed})
            generations = {}
            prompt = None if identifier is None else prompt_with_identifier(instance, identifier)
            sims, refs, _ = personalize(model, instance, judges, cfg, sorted(set(args.checkpoints)), args.n_eval,
                                        on_checkpoint=generations.__setitem__, prompt=prompt)
            category = get_concept(instance).category_id
            as_category = {step: round(judges.accuracy(x, category), 2) for step, x in generations.items()}
            by_judge = {step: {role: round(float(m.pairwise(x, refs).mean()), 3) for role, m in others.items()}
                        for step, x in generations.items()}
            row = {"weights": weights, "fingerprint": model.provenance()["fingerprint"], "instance": instance,
                   "lr": lr, "seed": seed, "guidance": guidance, **({"prompt": prompt} if prompt else {}),
                   "similarity": {s: round(v, 3) for s, v in sims.items()},
                   "similarity_clip_lpips": by_judge, "judged_as_category": as_category,
                   "gain_at_last": round(sims[max(sims)] - sims[0], 3), "n_eval": args.n_eval,
                   "seconds": round(time.time() - started, 1), "date": time.strftime("%Y-%m-%d")}
            print(json.dumps(row), flush=True)
            if args.grids:
                Path(args.grids).mkdir(parents=True, exist_ok=True)
                _grid([refs, *generations.values()],
                      Path(args.grids) / f"{row['fingerprint']}-{instance}-lr{lr:g}-seed{seed}-g{guidance:g}"
                                         f"{'' if identifier is None else '-' + identifier}.png")
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
