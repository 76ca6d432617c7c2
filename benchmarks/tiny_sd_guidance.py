"""Which classifier-free guidance scale makes tiny-sd draw its concepts most recognizably?

Judge (classifier-world) accuracy on tiny-sd generations of every card concept, per guidance
scale; writes benchmarks/results/tiny_sd_guidance.json, which informs tiny-sd's default scale.
Usage: python benchmarks/tiny_sd_guidance.py [--n 4] [--scales 1.5 3 5 7.5]
"""
import argparse
import json
import time
from pathlib import Path

from immunobench.backbones import load_backbone
from immunobench.diffusion import sample
from immunobench.plugins import get_metric
from immunobench.world.captions import prompt
from immunobench.world.concepts import INSTANCES, TARGET_ARTISTS, TARGET_OBJECTS, get_concept


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--scales", type=float, nargs="+", default=[1.5, 3.0, 5.0, 7.5])
    args = ap.parse_args()
    model = load_backbone("tiny-sd")
    judge = get_metric("classifier-world")()
    concepts = list(TARGET_ARTISTS) + list(TARGET_OBJECTS) + [get_concept(i).category_id for i in INSTANCES]
    prompts = [prompt(c) for c in concepts for _ in range(args.n)]
    seeds = [10_000 + i for _ in concepts for i in range(args.n)]
    labels = [judge.classes.index(c) for c in concepts for _ in range(args.n)]
    results = {}
    for scale in args.scales:
        t = time.time()
        images = sample(model, prompts, seeds, steps=args.steps, guidance_scale=scale, batch_size=16)
        pred = judge.logits(images).argmax(1).tolist()
        acc = sum(p == y for p, y in zip(pred, labels)) / len(labels)
        results[str(scale)] = {"accuracy": round(acc, 4), "seconds": round(time.time() - t, 1)}
        print(scale, results[str(scale)], flush=True)
    out = Path(__file__).parent / "results" / "tiny_sd_guidance.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"model": model.provenance(), "n_per_concept": args.n, "steps": args.steps,
                               "concepts": len(concepts), "date": time.strftime("%Y-%m-%d"),
                               "results": results}, indent=2))


if __name__ == "__main__":
    main()
