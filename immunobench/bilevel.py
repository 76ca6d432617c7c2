"""Bi-level immunization machinery, written once: what MIMA, CP, IMMA and JT share.

- ``Batch``, ``draw``, ``draw_batch``, ``batch_losses``: a loss evaluation whose example, noise and
  timestep are drawn beforehand, so an objective built from them is a pure function of the weights
  (finite differences, unrolled steps and the first-order alternation all see the same draws).
- ``unroll``: one inner SGD step θ' = θ − α ∇_θ L(θ) on functional tensors; with ``create_graph``
  θ' stays a differentiable function of θ (the one-step unrolled lower level of MIMA Alg. 1 and of
  IMMA's ``unrolled`` variant).
- ``merged_objective``, ``merge_plan``: MIMA's upper objective through the Eq. (3)/(8) merge of the
  per-concept adapted weights (MIMA with S^l = S^u = attn2 K/V is CP).
- ``Adaptation``, ``lower_step``, ``upper_step``, ``unrolled_objective``, ``alternate``: IMMA's lower
  level as a set of tensors φ an attacker trains (LoRA factors, the whole UNet, one token row) beside
  the attention tensors θ_u the defense trains, and the two update rules (IMMA, JT).
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import torch

from .diffusion import (
    concept_rows, diffusion_loss, encode_prompts, second_order_attention, select_parameters, token_embeddings,
)
from .merge import MergeConditioningWarning, MergePlan
from .progress import Task
from .snapshot import LoopSnapshot

ADAPTATIONS = ("lora", "dreambooth", "ti")


# --- draws and losses -------------------------------------------------------------------------------

@dataclass
class Batch:
    """One loss evaluation with its noise and timestep drawn beforehand, so the objective is a pure function."""

    latents: torch.Tensor
    cond: torch.Tensor
    noise: torch.Tensor
    timesteps: torch.Tensor


def draw(latents: torch.Tensor, scheduler, generator: torch.Generator, batch_size: int = 1):
    """(example indices, noise, timesteps) of one step, from ``generator`` on the CPU."""
    i = torch.randint(0, len(latents), (batch_size,), generator=generator)
    noise = torch.randn(latents[i].shape, generator=generator).to(latents)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=generator)
    return i, noise, t


def draw_batch(latents: torch.Tensor, cond: torch.Tensor, scheduler, generator: torch.Generator) -> Batch:
    """A batch-1 ``Batch`` of (latents, conditioning)."""
    i, noise, t = draw(latents, scheduler, generator)
    return Batch(latents[i], cond[i], noise, t)


def batch_losses(unet, scheduler, params, batches: list[Batch]) -> torch.Tensor:
    """Per-batch losses of several batch-1 draws in one UNet call (each a mean over its own elements,
    so the same values as one call per draw, up to float reassociation)."""
    cat = {f: torch.cat([getattr(b, f) for b in batches]) for f in ("latents", "cond", "noise", "timesteps")}
    return diffusion_loss(unet, cat["latents"], cat["cond"], scheduler, params=params, noise=cat["noise"],
                          timesteps=cat["timesteps"], reduction="none")


def unroll(params: Mapping[str, torch.Tensor], names: Sequence[str], loss: torch.Tensor, lr: float,
           create_graph: bool = True) -> dict[str, torch.Tensor]:
    """θ' = θ − α ∇_θ L(θ) on ``names`` (one plain SGD step). With ``create_graph`` each θ'_k keeps its
    dependence on every tensor the gradient depends on, so an outer loss at θ' differentiates through it.
    A tensor the loss does not reach keeps its value."""
    grads = torch.autograd.grad(loss, [params[k] for k in names], create_graph=create_graph, allow_unused=True)
    return {k: params[k] if gk is None else params[k] - lr * gk for k, gk in zip(names, grads)}


# --- MIMA's merged objective (MIMA Alg. 1; CP = its K/V-only case) -------------------------------------

def merged_objective(unet, scheduler, theta: dict, lower: list[str], kv: list[str], plan: MergePlan,
                     batches: list[tuple], cfg, stop_gradient: bool = False) -> torch.Tensor:
    """(1/N) Σ_n [−L(x^u_n; φ) + λ L(prior; φ)], φ = Merge({θ − α_in ∇L_inner,n(θ)}), differentiable in θ.

    ``cfg`` gives ``inner_lr`` (α_in) and ``prior_weight`` (λ). ``batches`` holds per concept (inner,
    inner prior, outer, outer prior); priors may be None. Each concept's inner loss (instance + prior)
    is one UNet call; the outer losses of all concepts share φ and are one call of batch ≤ 2N
    (measured: benchmarks/results/bench_mima.json). ``kv`` tensors are merged in closed form (Eq. 8),
    the other ``lower`` tensors averaged (Eq. 5). ``stop_gradient=True`` is the released MIMA code's
    gradient: the merged weights are used as values but the gradient reaches θ as if φ were θ
    (copied under no_grad).
    """
    adapted = []
    for inner, inner_prior, _, _ in batches:
        draws = [inner] + ([inner_prior] if inner_prior is not None else [])
        per = batch_losses(unet, scheduler, theta, draws)
        loss = per[0] + (cfg.prior_weight * per[1] if inner_prior is not None else 0.0)
        adapted.append(unroll(theta, lower, loss, cfg.inner_lr, create_graph=not stop_gradient))
    phi = dict(theta)
    for k in lower:
        if k in kv:
            phi[k] = plan.merge_linear(theta[k], [a[k] for a in adapted])
        else:
            phi[k] = torch.stack([a[k] for a in adapted]).mean(0)
        if stop_gradient:
            phi[k] = theta[k] + (phi[k] - theta[k]).detach()
    outer = [b[2] for b in batches]
    priors = [b[3] for b in batches if b[3] is not None]
    per = batch_losses(unet, scheduler, phi, outer + priors)
    total = -per[: len(outer)].sum() + cfg.prior_weight * per[len(outer):].sum()
    return total / len(batches)


def merge_plan(model, concepts, data, cfg) -> tuple[MergePlan, dict]:
    """C: per target, its own token rows in its defense prompt (or every row, ``cfg.merge_rows="prompt"``)
    and the rows of its bare name; C_reg: the regularization prompt and the first
    ``cfg.regularization_captions`` generic captions of the view → (plan, row counts for the record).
    ``cfg.ridge_rel`` is the merge's ridge."""
    C_list = []
    for c in concepts:
        prompt, name = data.prompts[c], data.names[c]
        in_prompt = concept_rows(model, prompt, name) if cfg.merge_rows == "concept" else token_embeddings(model, [prompt])[0]
        C_list.append(torch.cat([in_prompt, token_embeddings(model, [name])[0]]).double())
    reg_prompts = sorted(set(data.regularization.prompts)) if data.regularization is not None else [data.regularization_prompt]
    captions = list(data.captions[: cfg.regularization_captions])
    C_reg = torch.cat(token_embeddings(model, reg_prompts + captions)).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MergeConditioningWarning)  # its numbers land in the report instead
        plan = MergePlan.build(C_list, C_reg, ridge_rel=cfg.ridge_rel)
    rows = {"c_rows": sum(len(C) for C in C_list), "c_reg_rows": len(C_reg), "c_reg_captions": len(captions),
            "c_reg_prompts": reg_prompts}
    return _as_dtype(plan, model.unet.dtype), rows


def _as_dtype(plan: MergePlan, dtype: torch.dtype) -> MergePlan:
    """Solve in float64, apply in the model's dtype."""
    return replace(plan, P=plan.P.to(dtype), C=plan.C.to(dtype), C_unique=plan.C_unique.to(dtype),
                   counts=plan.counts.to(dtype))


# --- IMMA's lower level and update rules (IMMA, JT) -----------------------------------------------------

class Adaptation:
    """IMMA's lower level on a working UNet: the tensors φ an attacker trains (``lower``) beside the
    attention tensors θ_u the defense trains (``upper``, by their plain UNet names).

    - ``lora``: φ = PEFT LoRA factors on ``lora_targets`` (``finetune.add_lora``: seeded "gaussian" A,
      B = 0, α = r), added to ``unet`` in place; θ_u are the wrapped base tensors.
    - ``dreambooth``: φ = every UNet tensor, θ_u among them.
    - ``ti``: φ = one new token's embedding row (``tokens.add_tokens``, initialised from ``word``),
      bound to ``word`` in ``prompts``; the text encoder's other tensors are frozen.

    ``loss(φ, d)`` is L(θ_u, φ; x, c) on the draw ``d`` = (indices, noise, timesteps) of ``draw``,
    with θ_u the live tensors and φ any mapping of the ``lower`` names (live or unrolled).
    """

    def __init__(self, kind: str, model, unet: torch.nn.Module, upper: str, latents: torch.Tensor,
                 prompts: Sequence[str], *, word: str | None = None, lora_rank: int = 4,
                 lora_targets: Sequence[str] = ("to_q", "to_k", "to_v", "to_out.0"), seed: int = 0):
        if kind not in ADAPTATIONS:
            raise ValueError(f"unknown adaptation {kind!r}; choose one of {', '.join(ADAPTATIONS)}")
        if len(prompts) != len(latents):
            raise ValueError(f"{len(latents)} latents but {len(prompts)} prompts")
        self.kind, self.unet, self.scheduler = kind, unet, model.scheduler
        self.latents, self.prompts = latents, list(prompts)
        names = list(select_parameters(unet, upper))  # plain names, before adapters rename anything
        unet.requires_grad_(False)
        if kind == "lora":
            from .finetune import add_lora

            add_lora(unet, lora_rank, lora_targets, seed)
            named = dict(unet.named_parameters())
            self.upper = {n: named[_wrapped(n, named)] for n in names}
            self.lower = {n: p for n, p in named.items() if "lora_" in n}
        elif kind == "dreambooth":
            self.lower = dict(unet.named_parameters())
            self.upper = {n: self.lower[n] for n in names}
        else:
            named = dict(unet.named_parameters())
            self.upper = {n: named[n] for n in names}
            self._bind_token(model, word)
        for p in (*self.upper.values(), *self.lower.values()):
            p.requires_grad_(True)
        if kind != "ti":
            with torch.no_grad():
                self.cond = encode_prompts(model, self.prompts)

    def _bind_token(self, model, word: str | None) -> None:
        from .finetune import TEXT_ENCODER_PREFIX
        from .tokens import add_tokens, embedding_name

        if not word or not all(word.lower() in p.lower() for p in self.prompts):
            raise ValueError(f"ti: the token's word {word!r} must occur in every prompt ({self.prompts[:2]} ...)")
        learned = add_tokens(model, {word: word}, self.prompts)
        self.text = learned.model
        self.text.text_encoder.requires_grad_(False)
        self.embedding_key = embedding_name(self.text.text_encoder)[len(TEXT_ENCODER_PREFIX):]
        self.token_id = learned.ids[word]
        self.embedding = learned.embedding.detach()
        self.lower = {"token": torch.nn.Parameter(self.embedding[self.token_id].clone())}

    def loss(self, phi: Mapping[str, torch.Tensor], d) -> torch.Tensor:
        i, noise, t = d
        if self.kind == "ti":
            E = torch.cat([self.embedding[: self.token_id], phi["token"][None], self.embedding[self.token_id + 1:]])
            cond = encode_prompts(self.text, [self.prompts[j] for j in i.tolist()], text_params={self.embedding_key: E})
            params = None
        else:
            cond, params = self.cond[i], (None if phi is self.lower else phi)
        return diffusion_loss(self.unet, self.latents[i], cond, self.scheduler, params=params, noise=noise, timesteps=t)

    def draw(self, generator: torch.Generator, batch_size: int = 1):
        return draw(self.latents, self.scheduler, generator, batch_size)

    def release(self) -> dict[str, torch.Tensor]:
        """θ_u by plain UNet name (the adapters, the token and every other lower-level change are dropped)."""
        return {n: p.detach().clone() for n, p in self.upper.items()}


def _wrapped(name: str, named: Mapping) -> str:
    """The name of a UNet tensor after PEFT wrapped its module ("….to_q.weight" → "….to_q.base_layer.weight")."""
    if name in named:
        return name
    module, leaf = name.rsplit(".", 1)
    return f"{module}.base_layer.{leaf}"


def update(optimizer: torch.optim.Optimizer, params: Mapping[str, torch.Tensor], loss: torch.Tensor,
           max_grad_norm: float | None, label: str) -> None:
    """One optimizer step on ``params`` only, descending ``loss`` (ascent: pass −L)."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{label} loss is {loss.item()}; lower its learning rate")
    tensors = list(params.values())
    for p, g in zip(tensors, torch.autograd.grad(loss, tensors, allow_unused=True)):
        p.grad = g  # None for a tensor the loss does not reach: the optimizer skips it
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(tensors, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def lower_step(ad: Adaptation, optimizer, d, max_grad_norm: float | None = None) -> torch.Tensor:
    """φ ← AdamW(φ, ∇_φ L(θ_u, φ; x^l)): the attacker's step on the live model (φ persists)."""
    loss = ad.loss(ad.lower, d)
    update(optimizer, ad.lower, loss, max_grad_norm, "lower-level")
    return loss.detach()


def upper_step(ad: Adaptation, optimizer, d, max_grad_norm: float | None = None) -> torch.Tensor:
    """θ_u ← AdamW(θ_u, −∇_θu L(θ_u, φ; x^u)): ascent at the adapted φ, no derivative through φ."""
    loss = ad.loss(ad.lower, d)
    update(optimizer, ad.upper, -loss, max_grad_norm, "upper-level")
    return loss.detach()


def unrolled_objective(ad: Adaptation, d_inner, d_outer, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """L(θ_u, φ'(θ_u); x^u) with φ' = φ − α ∇_φ L(θ_u, φ; x^l), differentiable in θ_u through φ'
    (for ``dreambooth`` φ holds θ_u itself) → (outer loss, inner loss)."""
    inner = ad.loss(ad.lower, d_inner)
    adapted = unroll(ad.lower, list(ad.lower), inner, lr)
    return ad.loss(adapted, d_outer), inner.detach()


def alternate(ad: Adaptation, *, steps: int, variant: str, lower_lr: float, upper_lr: float, weight_decay: float,
              max_grad_norm: float | None, batch_size: int, generator: torch.Generator, task: Task | None = None,
              snapshot: LoopSnapshot | None = None, outer_state: dict | None = None,
              resume: bool = True) -> dict[str, list[float]]:
    """``steps`` IMMA iterations on ``ad`` in place → loss histories ``lower`` and ``adapted``.

    ``snapshot`` saves the loop's state with ``outer_state`` (a caller's own position, e.g. IMMA's
    concept) and, when ``resume``, restores it first: a killed run goes on where it stopped.

    ``first_order`` (IMMA's released code): a lower step then an upper step, each on a fresh draw,
    both AdamW; the adapted φ persists across iterations. ``unrolled``: per iteration one SGD step
    φ' = φ − α∇L from the lower level's start (LoRA's initial factors, the current UNet, the initial
    token row), then one AdamW ascent step on θ_u through φ' (``create_graph``).
    """
    if variant not in ("first_order", "unrolled"):
        raise ValueError(f"unknown variant {variant!r}; choose 'first_order' or 'unrolled'")
    opt_upper = torch.optim.AdamW(ad.upper.values(), lr=upper_lr, weight_decay=weight_decay)
    if variant == "first_order":
        opt_lower = torch.optim.AdamW(ad.lower.values(), lr=lower_lr, weight_decay=weight_decay)
    history: dict[str, list[float]] = {"lower": [], "adapted": []}
    snapshot = snapshot or LoopSnapshot()
    state = {**(outer_state or {}), "upper": ad.upper, "lower": ad.lower, "upper_optimizer": opt_upper,
             "generator": generator, "history": history}
    if variant == "first_order":
        state["lower_optimizer"] = opt_lower
    done = snapshot.restore(state) if resume else 0
    if task and done:
        task.advance(done)
    ad.unet.train()
    context = second_order_attention() if variant == "unrolled" else contextlib.nullcontext()
    try:
        with context:
            for step in range(done, steps):
                if variant == "first_order":
                    lower = lower_step(ad, opt_lower, ad.draw(generator, batch_size), max_grad_norm)
                    adapted = upper_step(ad, opt_upper, ad.draw(generator, batch_size), max_grad_norm)
                else:
                    d_inner, d_outer = ad.draw(generator, batch_size), ad.draw(generator, batch_size)
                    outer, lower = unrolled_objective(ad, d_inner, d_outer, lower_lr)
                    update(opt_upper, ad.upper, -outer, max_grad_norm, "upper-level")
                    adapted = outer.detach()
                history["lower"].append(float(lower))
                history["adapted"].append(float(adapted))
                snapshot.save(step + 1, state)
                if task:
                    task.advance(loss=history["adapted"][-1])
    finally:
        ad.unet.eval()
    return history


def first_last(xs: Sequence[float], n: int = 10) -> list[float]:
    """Means of the first and last ``n`` values of a loss history (NaN when empty)."""
    def mean(v):
        return sum(v) / len(v) if v else math.nan
    return [mean(xs[:n]), mean(xs[-n:])]
