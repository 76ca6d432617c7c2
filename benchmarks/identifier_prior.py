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
from immunobench.world.check import EVAL_SEED0, _generate, _Judges, instance_group
from immunobench.world.concepts import get_concept

from uce_residual import tiny_sd

KINDS = ("attack", "defense", "none")


def personalization_instances() -> list[str]:
    """The personal instances that some personalization group targets (11 of the card's 13)."""
    card = get_card("personalization")
    return [c for c in card.concepts if any(c in members for members in card.groups.values())]


def prompt_with_identifier(instance: str, identifier: str) -> str:
    """The card's prompt for ``instance`` with another identifier token, or none ('none')."""
    prompt = get_card("personalization").prompt_for(instance, "" if identifier == "none" else identifier)
    return " ".join(prompt.split())


def prompts(instance: str) -> dict[str, str]:
    group = instance_group(instance)
    return {"attack": group.prompt(instance, "attack"), "defense": group.prompt(instance, "defense"),
            "none": prompt_with_identifier(instance, "none")}


def category_drawn(model, judges: _Judges, n: int) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Per instance and prompt kind, the share of ``n`` generations judged the category; and the means."""
    per = {}
    for instance in personalization_instances():
        asked = prompts(instance)
        images = _generate(model, list(asked.values()), EVAL_SEED0, n)
        category = get_concept(instance).category_id
        per[instance] = {kind: round(judges.accuracy(x, category), 3) for kind, x in zip(asked, images)}
    return per, {kind: round(sum(r[kind] for r in per.values()) / len(per), 3) for kind in KINDS}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", nargs="+", default=["shipped"], help="'shipped' or `world train --out` folders")
    ap.add_argument("--n", type=int, default=10, help="generations per prompt")
    ap.add_argument("--out", default="benchmarks/results/identifier_prior.json")
    args = ap.parse_args()
    discover()
    copies = []
    for weights in args.weights:
        model = tiny_sd(weights)
        per, mean = category_drawn(model, _Judges(model.spec.metric_family), args.n)
        rows = {instance: {"prompts": prompts(instance)} | drawn for instance, drawn in per.items()}
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
