"""What a re-learned target is drawn as: world-classifier verdicts through a LoRA re-learning run.

For one group (UCE as configured for tiny-sd, LoRA with its tiny-sd preset): the verdicts on the attacker's images
per target, then on generations per target at each checkpoint step. Writes the lines it prints.

    .venv/bin/python benchmarks/relearn_verdicts.py --weights /tmp/v2/tiny-sd --task relearn-style --group 3c-4
"""
from __future__ import annotations

import argparse
from pathlib import Path

from immunobench.cards import get_card
from immunobench.plugins import configure, discover, get_attack
from immunobench.world.check import EVAL_SEED0, _generate, _Judges, attack_data, uce_erased

from uce_residual import tiny_sd, verdicts


def group_arguments(out: str) -> argparse.ArgumentParser:
    """The arguments every re-learning probe takes: which weights, which group, how many images."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default="shipped", help="'shipped' or a `world train --out` folder")
    ap.add_argument("--task", default="relearn-style")
    ap.add_argument("--group", default="3c-4")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--out", default=out)
    return ap


def load_group(args: argparse.Namespace):
    """(world judges, tiny-sd with the given weights, the card, the group)."""
    discover()
    model = tiny_sd(args.weights)
    card = get_card(args.task)
    return _Judges("world"), model, card, card.group(args.group)


def main() -> None:
    ap = group_arguments("benchmarks/results/relearn_verdicts.txt")
    ap.add_argument("--steps", type=int, nargs="+", default=[400, 800])
    args = ap.parse_args()
    judges, model, card, group = load_group(args)
    erased, data = uce_erased(model, group), attack_data(model, group)
    lines = [f"# {args.task} {args.group} on {args.weights} ({model.fingerprint}): world-classifier verdicts"]
    lines += [f"attack data {c}: {verdicts(judges, x.images)}" for c, x in data.attack.items()]
    print("\n".join(lines), flush=True)
    lora = get_attack("lora")
    for step, adapted in lora().adapt(erased, group, data, configure(lora, model.name, card.kind), checkpoints=args.steps):
        images = _generate(adapted, [group.prompt(t) for t in group.targets], EVAL_SEED0, args.n)
        lines += [f"step {step} {c}: {verdicts(judges, x)}" for c, x in zip(group.targets, images)]
        print("\n".join(lines[-len(group.targets):]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
