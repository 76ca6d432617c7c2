"""The LoRA attack's step against a loop written the way diffusers' `train_text_to_image_lora.py` writes it.

Both train the same peft LoRA (rank 4, lr 1e-3: the tiny-sd preset) on tiny-sd's UNet from the same
seed, on the same data (the relearn-style 2c-1 targets' 40 attack images, drawn by the base model)
with the same batch size (4). The only difference is what diffusers' script does every step and ours
does once: encode the batch's images with the VAE (``latent_dist.sample()``) and its prompts with the
text encoder. ``attacks/lora.py`` is timed through its own ``adapt`` generator.

Timing: ``--pairs`` paired runs (ours, then the reference, one process, one intra-op thread as the
runner's workers compute), ``--steps`` steps each after ``--warmup``; the ratio of per-step
medians per pair, then its median, min and max. A 400-step run of each gives the loss curves,
plotted side by side in benchmarks/results/bench_attack_step.png. Also reports the achieved
FLOP/s of our step (``torch.utils.flop_counter``) as a fraction of the 1-thread matmul peak.

    .venv/bin/python benchmarks/bench_attack_step.py [--pairs 5] [--steps 40] [--curve-steps 400]
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import RESULTS, host, matmul_peak, stage_flops  # noqa: E402

GROUP = "2c-1"


def _data(model, runner_seed: int = 0):
    """The group's attack images as the runner draws them (base model, the card's prompts and seeds)."""
    from immunobench.cards import get_card
    from immunobench.data import ConceptImages, TaskData
    from immunobench.diffusion import sample
    from immunobench.runner import SEED_OFFSETS, SEED_STRIDE

    card = get_card("relearn-style")
    group = card.group(GROUP)
    data = TaskData()
    n = card.data.attack_images
    seeds = [runner_seed * SEED_STRIDE + SEED_OFFSETS["attack"] + i for i in range(n)]
    for c in group.targets:
        prompt = group.prompt(c, phase="attack")
        data.attack[c] = ConceptImages(sample(model, [prompt] * n, seeds, batch_size=16), [prompt] * n)
    return group, data


class Ours:
    """attacks/lora.py's own loop, one step per ``next``."""

    def __init__(self, model, group, data, cfg):
        from immunobench.attacks.lora import LoRA

        self.steps = LoRA().adapt(model, group, data, cfg, checkpoints=range(1, 100_000))  # a step per yield
        self.unet = None

    def step(self) -> float:
        _, adapted = next(self.steps)
        self.unet = adapted.unet
        return float("nan")  # the loss is read from the hook below


class DiffusersStyle:
    """The per-step body of diffusers' train_text_to_image_lora.py (v0.3x), on our model and data."""

    def __init__(self, model, group, data, cfg):
        from peft import LoraConfig

        from immunobench.finetune import lora_parameters

        self.model, self.cfg = model, cfg
        self.images = torch.cat([data.attack[c].images for c in group.targets if c in data.attack])
        self.prompts = [p for c in group.targets if c in data.attack for p in data.attack[c].prompts]
        self.unet = copy.deepcopy(model.unet).requires_grad_(False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.unet.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.rank, init_lora_weights="gaussian",
                                             target_modules=list(cfg.target_modules)))
        self.params = lora_parameters(self.unet, frozenset())
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
        self.g = torch.Generator().manual_seed(cfg.seed)
        self.order, self.cursor = torch.randperm(len(self.images), generator=self.g), 0
        self.unet.train()

    def step(self) -> float:
        import torch.nn.functional as F

        m, cfg = self.model, self.cfg
        if self.cursor + cfg.batch_size > len(self.order):
            self.order, self.cursor = torch.randperm(len(self.images), generator=self.g), 0
        idx = self.order[self.cursor : self.cursor + cfg.batch_size]
        self.cursor += cfg.batch_size
        # diffusers: latents = vae.encode(pixel_values).latent_dist.sample() * scaling_factor
        latents = m.vae.encode(self.images[idx]).latent_dist.sample(self.g) * m.vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=self.g)
        t = torch.randint(0, m.scheduler.config.num_train_timesteps, (len(idx),), generator=self.g)
        noisy = m.scheduler.add_noise(latents, noise, t)
        # diffusers: encoder_hidden_states = text_encoder(batch["input_ids"], return_dict=False)[0]
        ids = m.tokenizer([self.prompts[i] for i in idx], padding="max_length", truncation=True,
                          max_length=m.tokenizer.model_max_length, return_tensors="pt").input_ids
        cond = m.text_encoder(ids, return_dict=False)[0]
        pred = self.unet(noisy, t, cond, return_dict=False)[0]
        loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
        self.opt.step()
        self.opt.zero_grad()
        return float(loss.detach())


def _loss_recorder():
    """Records every loss ``immunobench.diffusion.diffusion_loss`` returns (our loop's losses)."""
    import immunobench.diffusion as diffusion
    import immunobench.attacks.lora as lora

    losses: list[float] = []
    original = diffusion.diffusion_loss

    def recorded(*args, **kwargs):
        loss = original(*args, **kwargs)
        losses.append(float(loss.detach()))
        return loss

    lora.diffusion_loss = recorded
    return losses


def _timed(loop, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        loop.step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        loop.step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    from immunobench.attacks.lora import LoRAConfig
    from immunobench.backbones import load_backbone

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--curve-steps", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(1)

    model = load_backbone("tiny-sd")
    group, data = _data(model)
    cfg = LoRAConfig(lr=1e-3)  # the tiny-sd preset
    losses = _loss_recorder()

    pairs = []
    for i in range(args.pairs):
        ours = _timed(Ours(model, group, data, cfg), args.steps, args.warmup)
        ref = _timed(DiffusersStyle(model, group, data, cfg), args.steps, args.warmup)
        pairs.append({"ours_s": round(ours, 5), "diffusers_style_s": round(ref, 5), "speedup": round(ref / ours, 3)})
        print(f"pair {i + 1}/{args.pairs}: ours {ours * 1e3:.1f} ms, diffusers-style {ref * 1e3:.1f} ms, "
              f"{ref / ours:.2f}×", flush=True)

    losses.clear()
    ours = Ours(model, group, data, cfg)
    for _ in range(args.curve_steps):
        ours.step()
    curve_ours = list(losses)
    ref = DiffusersStyle(model, group, data, cfg)
    curve_ref = [ref.step() for _ in range(args.curve_steps)]

    warm = Ours(model, group, data, cfg)
    warm.step()  # the first step also encodes the dataset once; count a later one
    flops = stage_flops(warm.step)
    ours_s = statistics.median(p["ours_s"] for p in pairs)
    peak = matmul_peak(threads=1)
    speedups = [p["speedup"] for p in pairs]
    result = {
        "what": "LoRA attack step (rank 4, batch 4, tiny-sd, relearn-style 2c-1 attack images), ours vs a "
                "diffusers train_text_to_image_lora.py-style loop; one intra-op thread",
        "date": time.strftime("%Y-%m-%d"), "host": host(), "pairs": pairs, "steps_per_run": args.steps,
        "speedup": {"median": statistics.median(speedups), "min": min(speedups), "max": max(speedups)},
        "flops_per_step": flops, "ours_gflops_per_s": round(flops / ours_s / 1e9, 2),
        "matmul_peak_1_thread_gflops_per_s": peak, "fraction_of_peak": round(flops / ours_s / 1e9 / peak, 3),
        "loss_curves": {"ours": curve_ours, "diffusers_style": curve_ref},
    }
    out = RESULTS / "bench_attack_step.json"
    out.write_text(json.dumps(result, indent=1))
    _plot(curve_ours, curve_ref, RESULTS / "bench_attack_step.png")
    print(f"speedup median {result['speedup']['median']:.2f}× (min {min(speedups):.2f}, max {max(speedups):.2f}); "
          f"{result['ours_gflops_per_s']} GFLOP/s = {result['fraction_of_peak']:.0%} of the 1-thread matmul peak → {out}")


def _plot(ours: list[float], ref: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    def smooth(x, k=20):
        x = np.asarray(x)
        return np.convolve(x, np.ones(k) / k, mode="valid")

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for curve, label in ((ours, "immunobench (latents, text cached)"), (ref, "diffusers-style (encodes every step)")):
        ax.plot(np.arange(len(curve)), curve, alpha=0.15)
        ax.plot(np.arange(len(smooth(curve))) + 10, smooth(curve), label=label)
    ax.set_xlabel("LoRA step")
    ax.set_ylabel("ε-prediction loss (20-step mean)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
