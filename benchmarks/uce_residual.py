"""What an erased concept turns into: the world classifier's verdicts on UCE-erased targets.

"Accuracy on erased targets" only says a target is no longer drawn. This records what is drawn
instead, per model copy: for each world-check group, 20 generations per erased target after UCE
(as configured for tiny-sd), and, for comparison, 20 generations of the generic prompts the erased prompts
fall back to. Pass ``--weights DIR`` (repeatable) to compare a retrained copy with the shipped one.
Writes benchmarks/results/uce_residual.json.

    .venv/bin/python benchmarks/uce_residual.py [--weights shipped /tmp/retrain/tiny-sd]
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from immunobench.backbones import load_backbone
from immunobench.cards import get_card
from immunobench.plugins import discover
from immunobench.world.check import EVAL_SEED0, RELEARN_GROUPS, _generate, _Judges, uce_erased

GENERIC_PROMPTS = ("", "an artwork", "an artwork of art", "a photo")


def tiny_sd(weights: str):
    """tiny-sd with its spec: the shipped weights ('shipped') or a `world train --out` folder."""
    return load_backbone("tiny-sd", folder=None if weights == "shipped" else weights)


def verdicts(judges: _Judges, images) -> dict[str, int]:
    return dict(Counter(judges.classifier.predict(images)).most_common(4))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", nargs="+", default=["shipped"], help="'shipped' or `world train --out` folders")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--out", default="benchmarks/results/uce_residual.json")
    args = ap.parse_args()
    discover()
    judges = _Judges("world")
    models = []
    for weights in args.weights:
        model = tiny_sd(weights)
        generic = {p: verdicts(judges, x) for p, x in zip(GENERIC_PROMPTS, _generate(model, list(GENERIC_PROMPTS),
                                                                                        EVAL_SEED0, args.n))}
        erased = {}
        for task, group_names in RELEARN_GROUPS.items():
            card = get_card(task)
            for name in group_names:
                group = card.group(name)
                images = _generate(uce_erased(model, group), [group.prompt(c) for c in group.targets], EVAL_SEED0, args.n)
                erased[f"{task}/{name}"] = {c: verdicts(judges, x) for c, x in zip(group.targets, images)}
        models.append({"weights": weights, "model": model.provenance(), "generic": generic, "erased": erased})
        print(json.dumps(models[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "n": args.n,
                                          "verdicts": "top-4 world-classifier classes and counts",
                                          "models": models}, indent=2))


if __name__ == "__main__":
    main()
