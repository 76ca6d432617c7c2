"""The VAE stage of `world train` alone: does a seed's VAE decode the held-out instances?

For each seed and step count, trains the VAE exactly as `world train` does (same renders, init,
batches and cosine schedule; the VAE reads no captions) and measures its reconstruction of the
13 personal instances' reference views: DINO-role similarity to the references and pixel MSE.
The VAE checkpoint is left in ``--work/seed{S}-steps{N}/vae.pt``; copied into a `world train
--work` folder with the same seed and ``--vae-steps``, the run resumes at the UNet stage.

    .venv/bin/python benchmarks/vae_steps.py --seeds 1 2 --steps 4000 [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from immunobench.architecture import build_components
from immunobench.backbones import Backbone
from immunobench.cards import get_card
from immunobench.plugins import discover
from immunobench.progress import Progress
from immunobench.world.check import _Judges, reconstruct, reconstruction_similarity, reference_images
from immunobench.world.train import (WorldTrainConfig, _mean, _to_tensor, latent_scale, pretraining_examples,
                                     reference_reconstruction_mse, train_vae)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--steps", type=int, nargs="+", default=[4000])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (two runs side by side: 1 each)")
    ap.add_argument("--work", default="/tmp/vae_steps")
    ap.add_argument("--out", default="benchmarks/results/vae_steps.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    discover()
    judges = _Judges("world")
    out = Path(args.out)
    rows = json.loads(out.read_text())["runs"] if out.exists() else []
    for seed in args.seeds:
        for steps in args.steps:
            cfg = replace(WorldTrainConfig(), seed=seed, vae_steps=steps)
            examples = pretraining_examples(cfg.images_per_concept, seed, cfg.arch.resolution, Progress())
            torch.manual_seed(seed)
            components = build_components(cfg.arch, seed=seed)
            images = _to_tensor([img for img, _ in examples])
            work = Path(args.work) / f"seed{seed}-steps{steps}"
            work.mkdir(parents=True, exist_ok=True)
            started = time.time()
            losses = train_vae(components, images, cfg, work, Progress())
            components["vae"].register_to_config(scaling_factor=latent_scale(components, images))
            model = Backbone.from_components(components)
            similarity = {}
            for instance in get_card("personalization").concepts:
                refs = reference_images(instance)
                similarity[instance] = round(reconstruction_similarity(judges, refs, reconstruct(model, refs)), 3)
            rows.append({"seed": seed, "vae_steps": steps, "vae_lr": cfg.vae_lr,
                         "loss_last_100": round(_mean(losses[-100:]), 4),
                         "reference_mse": round(reference_reconstruction_mse(model, cfg.arch.resolution), 4),
                         "mean_dino_similarity": round(sum(similarity.values()) / len(similarity), 3),
                         "dino_similarity": similarity, "seconds": round(time.time() - started),
                         "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")})
            print(json.dumps(rows[-1]), flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"runs": rows}, indent=2))


if __name__ == "__main__":
    main()
