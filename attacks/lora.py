"""LoRA fine-tuning of the UNet — the re-learning attack of IMMA and MIMA (MIMA §5.1: LoRA, rank 4,
batch size 4, reported at step 400), set up as diffusers' ``train_text_to_image_lora.py``:
PEFT ``LoraConfig(r, lora_alpha=r, init_lora_weights="gaussian")`` on ``to_q, to_k, to_v,
to_out.0`` of every attention (self and cross), AdamW(0.9, 0.999, wd 1e-2), lr 1e-4, grad-norm
clip 1.0, ε-prediction loss. The attacker re-learns all of the group's concepts in one model.

Latents and text embeddings are computed once per dataset (the VAE and text encoder are frozen).
A constraint's frozen tensors get no LoRA update: their adapters stay at zero (B = 0).

Preset: on tiny-sd the attacker's lr is 1e-3. The papers attack SD at its own pre-training lr
(SD v1: 1e-4; LoRA 1e-4); tiny-sd was pre-trained at 1e-3. Measured 2026-11-24
(benchmarks/relearn_lr.py, the world check's UCE start models): at 1e-4 LoRA re-learned 0.23–0.50
of each group by step 400, often drawing one target for all of them; at 1e-3, 0.73–1.00.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Annotated, Iterator

import torch
from pydantic import Field

from immunobench.finetune import add_lora, attack_training_set, instance_objective, train
from immunobench.plugins import Attack, Constraints, register_attack


@dataclass(frozen=True)
class LoRAConfig:
    rank: Annotated[int, Field(ge=1)] = field(default=4, metadata={"help": "LoRA rank (IMMA/MIMA scripts: 4)"})
    lr: Annotated[float, Field(gt=0)] = field(default=1e-4, metadata={
        "help": "learning rate (IMMA run_lora.sh, diffusers README)"})
    batch_size: Annotated[int, Field(ge=1)] = field(default=4, metadata={"help": "MIMA §5.1: batch size four"})
    target_modules: tuple[str, ...] = field(default=("to_q", "to_k", "to_v", "to_out.0"), metadata={
        "help": "attention projections that get an adapter (diffusers train_text_to_image_lora.py)"})
    weight_decay: Annotated[float, Field(ge=0)] = field(default=1e-2, metadata={
        "help": "AdamW weight decay (train_text_to_image_lora.py)"})
    max_grad_norm: Annotated[float, Field(gt=0)] = field(default=1.0, metadata={
        "help": "gradient-norm clip (train_text_to_image_lora.py)"})
    seed: int = field(default=0, metadata={"help": "seed of the adapters' init, batches and noise (the runner sets it per cell)"})


@register_attack("lora")
class LoRA(Attack):
    """LoRA (rank 4) on all attention projections of the UNet, as in IMMA/MIMA re-learning."""

    version = "1"
    Config = LoRAConfig
    presets = {"tiny-sd": {"lr": 1e-3}}

    def adapt(self, model, group, data, cfg: LoRAConfig = LoRAConfig(), constraints: Constraints = Constraints(),
              checkpoints: list[int] = (400,)) -> Iterator[tuple[int, object]]:
        train_set = attack_training_set(model, group, data)
        unet = copy.deepcopy(model.unet)
        trainable = add_lora(unet, cfg.rank, cfg.target_modules, cfg.seed, constraints.frozen)
        opt = torch.optim.AdamW(trainable, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
        adapted = model.with_weights()
        adapted.unet = unet
        loss_at = instance_objective(model, group, unet, train_set, batch_size=cfg.batch_size, seed=cfg.seed)
        yield from train("lora", adapted, [unet], trainable, opt, loss_at, checkpoints, max_grad_norm=cfg.max_grad_norm)

