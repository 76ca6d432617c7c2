"""What one `world train` UNet step costs on this host, and whether a kernel, precision or compiler cuts it.

Each variant runs `train_unet` itself (tiny-sd's architecture and batch, captions from the world) in its
own process: a few warm-up steps, then ``--steps`` timed steps in a fresh work folder. Variants:
``default`` (what `world train` does: PyTorch's SDPA picks its CPU flash kernel), ``math`` (SDPA's
reference kernel), ``bf16`` (CPU autocast to bfloat16), ``compile`` (``torch.compile`` of the UNet,
inductor; its compile time is reported apart), ``heads-2-4`` and ``heads-8-8`` (2 and 4 attention heads
per UNet level, head size 16, the default since 2026-12-04; 8 and 8, head sizes 4 and 8, the default
before). ``vae`` and ``vae-crop32`` time `train_vae` steps on whole 64 px images (the default before
2026-12-04) and on 32 px crops (the default since); their ratio is to ``vae``. Writes per-step seconds and the ratio to ``default``
measured in the same run to benchmarks/results/train_step_cost.json. None of the variants is
bit-identical to ``default``, so none could replace it without retraining and re-checking the world.

    .venv/bin/python benchmarks/train_step_cost.py [--steps 30] [--variants default math bf16 compile]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

VARIANTS = ("default", "math", "bf16", "compile", "heads-2-4", "heads-8-8", "vae", "vae-crop32")


def _context(variant: str):
    import torch

    if variant == "math":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(SDPBackend.MATH)
    if variant == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def measure(variant: str, steps: int, warmup: int) -> dict:
    """Seconds per `train_unet` step under ``variant`` (run in a process of its own)."""
    import torch

    from immunobench.architecture import build_components
    from immunobench.progress import Progress
    from immunobench.world.train import WorldTrainConfig, pretraining_examples, train_unet

    cfg = WorldTrainConfig()
    if variant.startswith("heads-"):
        heads = tuple(int(n) for n in variant.removeprefix("heads-").split("-"))
        cfg = replace(cfg, arch=replace(cfg.arch, attention_head_dim=heads))
    if variant.startswith("vae"):
        return measure_vae(replace(cfg, vae_crop=32 if variant == "vae-crop32" else 0), variant, steps, warmup)
    components = build_components(cfg.arch, seed=cfg.seed)
    examples = pretraining_examples(2, seed=cfg.seed)
    captions = [caption for _, caption in examples]
    latent_size = cfg.arch.resolution // cfg.arch.vae_scale_factor
    latents = torch.randn(len(captions), cfg.arch.latent_channels, latent_size, latent_size,
                          generator=torch.Generator().manual_seed(0))
    compile_seconds = None
    if variant == "compile":
        components["unet"] = torch.compile(components["unet"])
    quiet = Progress(enabled=False)
    with tempfile.TemporaryDirectory() as work, _context(variant):
        (Path(work) / "warmup").mkdir(), (Path(work) / "timed").mkdir()
        started = time.perf_counter()
        train_unet(components, latents, captions, replace(cfg, unet_steps=warmup), Path(work) / "warmup", quiet)
        warmup_seconds = time.perf_counter() - started
        started = time.perf_counter()
        train_unet(components, latents, captions, replace(cfg, unet_steps=steps), Path(work) / "timed", quiet)
        seconds = time.perf_counter() - started
    if variant == "compile":
        compile_seconds = round(warmup_seconds, 1)
    return {"variant": variant, "seconds_per_step": round(seconds / steps, 4), "steps": steps,
            "warmup_steps": warmup, "compile_seconds": compile_seconds, "batch": cfg.unet_batch,
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def measure_vae(cfg, variant: str, steps: int, warmup: int) -> dict:
    """Seconds per `train_vae` step (batch 32) on random images of the world's size."""
    import torch

    from immunobench.architecture import build_components
    from immunobench.progress import Progress
    from immunobench.world.train import train_vae

    size = cfg.arch.resolution
    images = torch.rand(256, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    quiet = Progress(enabled=False)
    with tempfile.TemporaryDirectory() as work:
        (Path(work) / "warmup").mkdir(), (Path(work) / "timed").mkdir()
        train_vae(build_components(cfg.arch, seed=0), images, replace(cfg, vae_steps=warmup), Path(work) / "warmup", quiet)
        components = build_components(cfg.arch, seed=0)
        started = time.perf_counter()
        train_vae(components, images, replace(cfg, vae_steps=steps), Path(work) / "timed", quiet)
        seconds = time.perf_counter() - started
    return {"variant": variant, "seconds_per_step": round(seconds / steps, 4), "steps": steps,
            "warmup_steps": warmup, "compile_seconds": None, "batch": cfg.vae_batch,
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--result", default="benchmarks/results/train_step_cost.json")
    ap.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)  # the child process's variant
    args = ap.parse_args()
    if args.steps < 1 or args.warmup < 1:
        print("train_step_cost: --steps and --warmup must be >= 1; pass e.g. --steps 30 --warmup 5", file=sys.stderr)
        sys.exit(2)
    if args.one:
        print(json.dumps(measure(args.one, args.steps, args.warmup)))
        return
    Path(args.result).parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for variant in args.variants:
        child = subprocess.run([sys.executable, __file__, "--one", variant, "--steps", str(args.steps),
                                "--warmup", str(args.warmup)], capture_output=True, text=True)
        if child.returncode:
            sys.exit(f"train_step_cost: variant {variant} failed:\n{child.stderr[-2000:]}")
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    base = next((r["seconds_per_step"] for r in rows if r["variant"] == "default"), None)
    vae_base = next((r["seconds_per_step"] for r in rows if r["variant"] == "vae"), None)
    for row in rows:
        ref = vae_base if row["variant"].startswith("vae") else base
        row["ratio_to_default"] = round(row["seconds_per_step"] / ref, 3) if ref else None
    result = {"date": time.strftime("%Y-%m-%d"), "host": {"platform": platform.platform(), "cpus": os.cpu_count()},
              "what": "seconds per `world train` UNet + text-encoder step (batch 32), one process per variant; "
                      "vae variants: seconds per VAE step (batch 32), ratio to `vae`",
              "variants": rows}
    Path(args.result).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
