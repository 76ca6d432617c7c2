"""How well each tiny-sd copy's VAE reconstructs the held-out personal instances' reference views.

Personalization can only reach what the VAE can decode: LoRA fits the references' latents, and
the generations are those latents decoded. Pre-training never shows the instances, so this is the
VAE's generalization. Per copy and instance: DINO-role similarity of the reconstructions to the
references (the world check's personalization measure) and pixel MSE (images in [-1, 1]).

    .venv/bin/python benchmarks/vae_reconstruction.py --weights shipped /tmp/v2s1/tiny-sd
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from immunobench.cards import get_card
from immunobench.plugins import discover
from immunobench.world.check import _Judges, reconstruct, reconstruction_similarity, reference_images

from uce_residual import tiny_sd


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", nargs="+", default=["shipped"], help="'shipped' or `world train --out` folders")
    ap.add_argument("--out", default="benchmarks/results/vae_reconstruction.json")
    args = ap.parse_args()
    discover()
    judges = _Judges("world")
    rows = []
    for weights in args.weights:
        model = tiny_sd(weights)
        per_instance = {}
        for instance in get_card("personalization").concepts:
            refs = reference_images(instance)
            rec = reconstruct(model, refs)
            per_instance[instance] = {"dino_similarity": round(reconstruction_similarity(judges, refs, rec), 3),
                                      "mse": round(float(((rec - refs) ** 2).mean()), 4)}
        rows.append({"weights": weights, "model": model.provenance(), "per_instance": per_instance,
                     "mean_dino_similarity": round(sum(v["dino_similarity"] for v in per_instance.values()) / len(per_instance), 3),
                     "mean_mse": round(sum(v["mse"] for v in per_instance.values()) / len(per_instance), 4)})
        print(json.dumps({k: rows[-1][k] for k in ("weights", "mean_dino_similarity", "mean_mse")}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "models": rows}, indent=2))


if __name__ == "__main__":
    main()
