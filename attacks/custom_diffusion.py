"""Custom Diffusion (Kumari et al., CVPR 2023), set up as diffusers'
``examples/custom_diffusion/train_custom_diffusion.py`` (methods.md §3): the cross-attention key and
value projections (``attn2.to_k``/``to_v``, ``--freeze_model crossattn_kv``) plus one modifier token per
concept, all concepts of the group in one run, with prior preservation.

- Modifier tokens (``immunobench.tokens``): each concept's attack-prompt word becomes a new token —
  the attacker's identifier on the personalization card ("ktn" in "a photo of ktn purse": Custom
  Diffusion's own initializer, which the runner's prompts use; the script's "<new1>" initialised from
  "ktn" is the same thing under another name), the erased name itself on the re-learning cards
  ("Claude Monet", initialised from the mean of its pieces: how a CD attacker re-learns an erased name).
- Update: AdamW (0.9, 0.999, eps 1e-8, wd 1e-2), lr 1e-5 (script default; its README adds
  ``--scale_lr``: ×batch ×2 for the prior = 4e-5 at batch 2), gradient-norm clip 1.0 over K/V and the
  embedding matrix. The whole embedding matrix is in the optimizer; after each backward the gradient
  of every row but the modifiers' is zeroed *before* clipping, as the script does, with diffusers'
  mask over all modifier ids (the released repo's loop ``for i in range(len(ids[1:]))`` re-uses
  ids[0..n−2] and leaves the last concept's token untrained; MIMA copied it). AdamW's weight decay
  still moves the other rows during the script's run, but it saves only the modifier rows, so the
  model its users load has every other row as it was: we restore them after each step, so the model
  sampled at a checkpoint is that saved-and-loaded one.
- K/V of the first (BOS) token are stop-gradiented, as the script's ``CustomDiffusionAttnProcessor``
  does (forward hooks on to_k/to_v of the trained copy).
- Prior preservation: class images drawn by the attacked model itself (``finetune.class_images``, the
  card's class prompt ``group.class_prompt(c)``: "purse", "artwork", "object"), 200 per concept
  (README ``--num_class_images=200``), DreamBooth's seeds, so under the runner one model's images of a
  class prompt are drawn once for both attacks and every group (a store stage); each step takes a batch
  of instance images and one of class images, L = L_inst + 1.0 · L_prior (``--prior_loss_weight``).
  Batch 2 (README; the script's default is 4).

Left out, and why: the random-rescale augmentation and its loss mask (the script shrinks/zooms the
instance image, prefixes "a far away"/"very small"/"zoomed in"/"close up" to the caption and masks the
loss to the valid region — latents are encoded once from the split here, as in every attack of this
benchmark, and the world's 64 px views leave little to rescale); ``--hflip`` (off by default in the
script); real (retrieved) class images (``--real_prior``: no retrieval offline; the script's own
fallback is generated images); the closed-form multi-concept merge (a separate method; this is joint
training, the script's multi-concept mode).

Constraints: a frozen K/V tensor is not trained (stays bit-identical); if every K/V tensor is frozen the
modifier tokens still train (the attacker trains what the fine-tuning API lets them). If the token
embedding matrix is frozen, Custom Diffusion cannot run and says so.

Preset: on tiny-sd, lr 1e-3 (tiny-sd was pre-trained at 1e-3, SD at 1e-4; the LoRA preset is 1e-3 too),
20 class images per concept. The sweep (benchmarks/token_attack_presets.py, 2026-12-06, no defense, 8
generations per instance, DINO-role similarity to the references, mean of purse and castle; gain at step
40, with step 0 → 40 → 200): 0.030 (0.293 → 0.323 → 0.428) at 1e-5, 0.231 (→ 0.524 → 0.701) at 1e-4, 0.544
(→ 0.838 → 0.934) at 1e-3, 0.531 (→ 0.825 → 0.956) at 1e-2, 0.464 (→ 0.757 → 0.796) at 1e-3 without the
prior term, and 0.534 (→ 0.828 → 0.928) at 1e-3 with 20 class images instead of 200 — the preset: 0.010
below 200 (one seed, two instances), a tenth of the class images (200 per concept took ~110 s on one
shared core; a personalization run draws one set per attacked model and category: 10 groups × 13 categories
on the immunized models plus 13 on the undefended one, per seed), and DreamBooth's tiny-sd count, so the
two attacks share one draw.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Annotated, Iterator, Literal

import torch
from pydantic import Field

from immunobench.diffusion import diffusion_loss, encode_prompts, select_parameters
from immunobench.finetune import Batches, class_images, train
from immunobench.plugins import Attack, Constraints, register_attack
from immunobench.tokens import learn_concept_tokens, restore_rows, zero_other_grads

KV_SETS = {"crossattn_kv": "xattn-kv", "crossattn": "xattn"}


@dataclass(frozen=True)
class CustomDiffusionConfig:
    lr: Annotated[float, Field(gt=0)] = field(default=1e-5, metadata={
        "help": "learning rate (train_custom_diffusion.py default; README: ×batch ×2 with --scale_lr and prior)"})
    batch_size: Annotated[int, Field(ge=1)] = field(default=2, metadata={
        "help": "instance images per update, as many class images beside them (README: 2; script: 4)"})
    freeze_model: Literal["crossattn_kv", "crossattn"] = field(default="crossattn_kv", metadata={
        "help": "what trains in attn2: K/V (default) or all of q, k, v, out (train_custom_diffusion.py)"})
    class_images: Annotated[int, Field(ge=0)] = field(default=200, metadata={
        "help": "class images per concept, drawn by the attacked model (README --num_class_images 200; 0: no prior)"})
    prior_loss_weight: Annotated[float, Field(ge=0)] = field(default=1.0, metadata={
        "help": "λ in L_inst + λ·L_prior (train_custom_diffusion.py --prior_loss_weight)"})
    weight_decay: Annotated[float, Field(ge=0)] = field(default=1e-2, metadata={
        "help": "AdamW weight decay (train_custom_diffusion.py --adam_weight_decay)"})
    max_grad_norm: Annotated[float, Field(gt=0)] = field(default=1.0, metadata={
        "help": "gradient-norm clip (train_custom_diffusion.py)"})
    seed: int = field(default=0, metadata={
        "help": "seed of batches, noise and class images (the runner sets it per cell)"})


@register_attack("custom_diffusion")
class CustomDiffusion(Attack):
    """attn2 K/V and one modifier token per concept, jointly, with prior preservation."""

    version = "2"  # 2: class images through TaskData.draw_class_images (the runner's store stage)
    Config = CustomDiffusionConfig
    presets = {"tiny-sd": {"lr": 1e-3, "class_images": 20}}

    def adapt(self, model, group, data, cfg: CustomDiffusionConfig = CustomDiffusionConfig(),
              constraints: Constraints = Constraints(), checkpoints: list[int] = (40,)) -> Iterator[tuple[int, object]]:
        train_set, concepts, words, learned = learn_concept_tokens(model, group, data, constraints.frozen, "custom_diffusion")
        adapted, embedding = learned.model, learned.embedding

        unet = copy.deepcopy(model.unet).requires_grad_(False)
        kv = {n: p for n, p in select_parameters(unet, KV_SETS[cfg.freeze_model]).items()
              if n not in constraints.frozen}
        for p in kv.values():
            p.requires_grad_(True)
        adapted.unet = unet
        hooks = _detach_bos(unet)

        use_prior = cfg.class_images > 0 and cfg.prior_loss_weight > 0
        if use_prior:
            prior = class_images(model, group, concepts, cfg.class_images, cfg.seed, draw=data.draw_class_images)
            # the class prompts hold no modifier and only modifier rows change: encoded once
            class_latents, class_cond = prior.latents, prior.conditioning(model)
            class_batches = Batches(len(class_latents), cfg.batch_size, torch.Generator().manual_seed(cfg.seed + 1))
        trainable = [embedding, *kv.values()]
        opt = torch.optim.AdamW(trainable, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.weight_decay)
        g = torch.Generator().manual_seed(cfg.seed)
        batches = Batches(len(train_set), cfg.batch_size, g)
        zero_grads = zero_other_grads(embedding, learned.rows())

        def loss_at(step: int) -> torch.Tensor:
            idx = batches.next()
            latents = train_set.latents[idx]
            cond = encode_prompts(adapted, [train_set.prompts[i] for i in idx.tolist()])
            if not use_prior:
                return diffusion_loss(unet, latents, cond, model.scheduler, generator=g)
            cidx = class_batches.next()
            per_image = diffusion_loss(unet, torch.cat([latents, class_latents[cidx]]), torch.cat([cond, class_cond[cidx]]),
                                       model.scheduler, generator=g, reduction="none")
            return per_image[: len(idx)].mean() + cfg.prior_loss_weight * per_image[len(idx):].mean()

        def before_step() -> None:  # the script's order: mask the embedding's gradient, then clip
            zero_grads()
            torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)

        try:
            yield from train("custom_diffusion", adapted, [unet, adapted.text_encoder], trainable, opt, loss_at,
                             checkpoints, before_step=before_step, after_step=restore_rows(embedding, learned.rows()))
        finally:
            for h in hooks:
                h.remove()


def _detach_bos(unet: torch.nn.Module) -> list:
    """Stop the gradient through the K/V of the first (BOS) token, as CustomDiffusionAttnProcessor does."""

    def hook(module, inputs, output):
        return torch.cat([output[:, :1].detach(), output[:, 1:]], dim=1)

    return [m.register_forward_hook(hook) for name, m in unet.named_modules()
            if name.endswith(("attn2.to_k", "attn2.to_v"))]
