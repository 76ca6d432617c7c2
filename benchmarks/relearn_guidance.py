"""LoRA re-learning against the sampler's classifier-free guidance scale.

For one group, at each guidance scale g: the attacker's 20 images per target are drawn by the
un-erased model at g, LoRA (tiny-sd preset) trains on them from the UCE start model and, as a
control, from the un-erased model itself, and the world classifier judges 10 generations per
target at step 400, also drawn at g. Writes the figures and the verdicts (what each target is
drawn as) to JSON.

    .venv/bin/python benchmarks/relearn_guidance.py --weights /tmp/v2/tiny-sd --task relearn-style --group 3c-4
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from immunobench.data import ConceptImages, TaskData
from immunobench.diffusion import sample
from immunobench.plugins import configure, get_attack
from immunobench.world.check import ATTACK_SEEDS, EVAL_SEED0, uce_erased

from relearn_verdicts import group_arguments, load_group
from uce_residual import verdicts


def main() -> None:
    ap = group_arguments("benchmarks/results/relearn_guidance.json")
    ap.add_argument("--guidance", type=float, nargs="+", default=[3.0, 5.0])
    ap.add_argument("--step", type=int, default=400)
    args = ap.parse_args()
    judges, model, card, group = load_group(args)
    prompts = {t: group.prompt(t) for t in group.targets}
    lora = get_attack("lora")
    starts = {"uce": uce_erased(model, group), "un-erased": model}
    rows = []
    for g in args.guidance:
        def draw(m, seed0, n):
            return {t: sample(m, [p] * n, [seed0 + i for i in range(n)], batch_size=16, guidance_scale=g)
                    for t, p in prompts.items()}

        attack = draw(model, ATTACK_SEEDS.start, len(ATTACK_SEEDS))
        data = TaskData(attack={t: ConceptImages(x, [prompts[t]] * len(x)) for t, x in attack.items()})
        for start_name, start in starts.items():
            started = time.time()
            for _, adapted in lora().adapt(start, group, data, configure(lora, model.name, card.kind),
                                           checkpoints=[args.step]):
                drawn = draw(adapted, EVAL_SEED0, args.n)
            acc = {t: judges.accuracy(x, t) for t, x in drawn.items()}
            rows.append({"guidance": g, "start": start_name, "step": args.step,
                         "accuracy": round(sum(acc.values()) / len(acc), 3),
                         "per_target": {t: round(v, 2) for t, v in acc.items()},
                         "attack_verdicts": {t: verdicts(judges, x) for t, x in attack.items()},
                         "relearned_verdicts": {t: verdicts(judges, x) for t, x in drawn.items()},
                         "seconds": round(time.time() - started, 1)})
            print(json.dumps(rows[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "model": model.provenance(),
                                          "task": args.task, "group": args.group, "n_eval": args.n,
                                          "results": rows}, indent=2))


if __name__ == "__main__":
    main()
