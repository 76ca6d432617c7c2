"""What the memorization rows cost: the score stage of one relearn-style cell with and without them.

One cell of ``relearn-style`` group 2c-1 on tiny-sd at the card's sizes: the targets at every checkpoint
(9 × 2 × 8 generations), the others at step 0 and the report step, 8 references per concept and the
20 attack-training images per target. The score stage (``Runner.score``) runs on the world judges, one
intra-op thread as the runner's CPU stages do, (a) without training images — the stage as it was before
the memorization rows — and (b) with them and the reference baseline (the no-defense cell, the dearer
case). Judges cost the same whatever the pixels, so the images are random; each variant is timed on
a fresh store key, best of ``--repeats``. Writes benchmarks/results/memorization_cost.json.

    .venv/bin/python benchmarks/memorization_cost.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import RESULTS, host  # noqa: E402

GROUP = "2c-1"


def _images(n: int, resolution: int, generator: torch.Generator) -> torch.Tensor:
    # through uint8 as the store keeps them
    x = torch.randint(0, 256, (n, 3, resolution, resolution), generator=generator, dtype=torch.uint8)
    return x.float() / 127.5 - 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from immunobench.data import ConceptImages
    from immunobench.progress import Progress
    from immunobench.runner import RunConfig, Runner
    from immunobench.store import ImageKey

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        runner = Runner(RunConfig(task="relearn-style", groups=(GROUP,), out=f"{tmp}/runs", store=f"{tmp}/store"),
                        Progress(False), log=lambda _: None)
        runner.prepare()
        group, card, res = runner.card.group(GROUP), runner.card, runner.model.resolution
        n_eval, n_train = card.data.eval_images, card.data.attack_images
        g = torch.Generator().manual_seed(0)
        images = {ImageKey(step, c): _images(n_eval, res, g) for step in card.checkpoints for c in group.targets}
        images.update({ImageKey(step, c): _images(n_eval, res, g) for step in (0, card.report_step) for c in group.others})
        references = {c: _images(n_eval, res, g) for c in group.scored}
        training = {c: ConceptImages(_images(n_train, res, g), ["p"] * n_train) for c in group.targets}
        ref_keys, train_keys = ["refs"], ["train"]

        def timed(label: str, i: int, **memorization) -> tuple[float, int]:
            started = time.perf_counter()
            rows = runner.score(f"{label}-{i}", images, references, ref_keys, **memorization)
            return time.perf_counter() - started, len(rows)

        timed("warm", 0, training=training, training_keys=train_keys, baselines=True)  # judges load lazily
        before = [timed("before", i) for i in range(args.repeats)]
        after = [timed("after", i, training=training, training_keys=train_keys, baselines=True)
                 for i in range(args.repeats)]

    best_before, best_after = min(s for s, _ in before), min(s for s, _ in after)
    out = {
        "what": __doc__.splitlines()[0],
        "date": time.strftime("%Y-%m-%d"),
        "host": host(),
        "cell": {"task": "relearn-style", "group": GROUP, "checkpoints": card.checkpoints,
                 "eval_images": n_eval, "attack_images": n_train, "targets": list(group.targets),
                 "others": list(group.others), "resolution": res, "judges": runner.judge_versions},
        "score_seconds": {"before": round(best_before, 3), "after": round(best_after, 3),
                          "added": round(best_after - best_before, 3),
                          "all_before": [round(s, 3) for s, _ in before],
                          "all_after": [round(s, 3) for s, _ in after]},
        "rows": {"before": before[0][1], "after": after[0][1]},
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "memorization_cost.json"
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps(out["score_seconds"]), out["rows"], "→", path)


if __name__ == "__main__":
    main()
