"""Does the un-adapted model still draw an instance's category when the prompt carries an identifier?

DreamBooth's identifiers ("a photo of sks dog") work because SD's rare tokens are weak: SD still draws a
dog. Per copy and personal instance in a personalization group, the world classifier judges
``--n`` generations of the un-adapted model for the category under three prompts: the card's attack
prompt ("a photo of {attack token} {category}"), its defense prompt ("{defense token}"), and the same
prompt with no identifier ("a photo of {category}"). The personalization target's baseline (step 0)
is the first. Writes benchmarks/results/identifier_prior.json.

    .venv/bin/python benchmarks/identifier_prior.py [--weights shipped /tmp/v2/tiny-sd] [--n 10]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from immunobench.cards import get_card
from immunobench.plugins import discover
from immunobench.world.check import EVAL_SEED0, _generate, _Judges
from immunobench.world.concepts import get_concept

from uce_residual import tiny_sd


def prompts(instance: str) -> dict[str, str]:
    card = get_card("personalization")
    group = card.group(next(g for g, members in card.groups.items() if instance in members))
    return {"attack": group.prompt(instance, "attack"), "defense": group.prompt(instance, "defense"),
            "none": " ".join(card.prompt_for(instance, "").split())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", nargs="+", default=["shipped"], help="'shipped' or `world train --out` folders")
    ap.add_argument("--n", type=int, default=10, help="generations per prompt")
    ap.add_argument("--out", default="benchmarks/results/identifier_prior.json")
    args = ap.parse_args()
    discover()
    card = get_card("personalization")
    instances = [c for c in card.concepts if any(c in members for members in card.groups.values())]
    copies = []
    for weights in args.weights:
        model = tiny_sd(weights)
        judges = _Judges(model.spec.metric_family)
        rows = {}
        for instance in instances:
            asked = prompts(instance)
            images = _generate(model, list(asked.values()), EVAL_SEED0, args.n)
            category = get_concept(instance).category_id
            rows[instance] = {"prompts": asked} | {
                kind: round(judges.accuracy(x, category), 3) for kind, x in zip(asked, images)}
        mean = {kind: round(sum(r[kind] for r in rows.values()) / len(rows), 3) for kind in ("attack", "defense", "none")}
        copies.append({"weights": weights, "fingerprint": model.provenance()["fingerprint"], "mean": mean,
                       "instances": rows})
        print(json.dumps({"weights": weights, "mean": mean}), flush=True)
    result = {"date": time.strftime("%Y-%m-%d"), "n": args.n,
              "what": "world-classifier accuracy for the instance's category, un-adapted model, per prompt",
              "copies": copies}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
