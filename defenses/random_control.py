"""Random — a control none of the papers report: MIMA's update with its direction replaced by noise.

A defense that immunizes must do better than a perturbation of the same size in no particular
direction: if an attack re-learns the targets as slowly after this control as after MIMA, MIMA's
merit is its step size, not its objective.

How: run MIMA itself (``get_defense("mima")``) on the same ``DefenseData`` with MIMA's config as
the grid resolves it — its paper defaults, then its presets for this backbone and task kind, then
the overrides in this config's ``mima`` field (``--set 'random.mima={steps: 100}'``) — with the
cell's seed. For every tensor MIMA returns, Δ_i = θ_MIMA,i − θ_i is replaced by

    Δ̃_i = ‖Δ_i‖_F · r_i / ‖r_i‖_F,   r_i ~ N(0, I) (seeded, one draw per tensor in name order)

so the same tensors move (MIMA's S^u, all ``attn2`` tensors by default; a tensor MIMA left alone
stays), each by the norm MIMA moved it, and hence the total norm √Σ‖Δ_i‖² is MIMA's too.

Per-tensor norms (default) rather than one Gaussian over all tensors scaled to the total norm
(``norm="total"``): a single draw allocates the norm among tensors by their *size*, which matches
MIMA's allocation only where MIMA's happens to follow size (AdamW's early steps roughly do; clipped
gradients, the merge and weight decay need not). Matching every tensor's norm makes the direction
within each tensor the only difference from MIMA, by construction; the total norm follows.

Cost: this control pays MIMA's full cost (it runs MIMA; the noise itself is free), and its store
artifact does not share MIMA's: a grid with ``--defense mima,random`` computes MIMA twice per cell.
With the same overrides, seed and start model it is the very update the ``mima`` row reports
(MIMA is deterministic in its seed on a CPU), so the two rows pair cell by cell.

The ``task_kind`` field only tells which of MIMA's presets apply: this plugin's own presets set it
per task kind, as the runner resolves them. The version carries MIMA's version and a digest of
MIMA's defaults and presets, so a change there recomputes this control too.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import torch
from pydantic import AfterValidator

from immunobench.config import task_kinds, validate
from immunobench.defenses.mima import MIMA, MIMAConfig
from immunobench.errors import ConfigError
from immunobench.plugins import Defense, Immunized, register_defense, resolve_config


def _mima_digest() -> str:
    text = json.dumps([dataclasses.asdict(MIMAConfig()), MIMA.presets], sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _checked_mima(overrides: dict[str, Any]) -> dict[str, Any]:
    """A typo in the overrides fails when the config is built, naming the field, not mid-grid; values are
    coerced ("1e-3" → 0.001), so one config has one store key."""
    checked = validate(MIMAConfig, overrides, "defense mima (random.mima)", lambda n, v: f"random.mima.{n}={v!r}")
    if "seed" in checked:
        raise ConfigError("random.mima.seed: MIMA runs with this control's seed; set random.seed (the runner "
                          "sets it per cell)")
    return checked


@dataclass(frozen=True)
class RandomConfig:
    mima: Annotated[dict[str, Any], AfterValidator(_checked_mima)] = field(default_factory=dict, metadata={
        "help": "overrides of MIMA's config (its defaults and presets apply first), e.g. {steps: 100}"})
    task_kind: Literal["relearn", "personalization"] = field(default="relearn", metadata={
        "help": "whose MIMA presets apply; set per task kind by this plugin's presets"})
    norm: Literal["tensor", "total"] = field(default="tensor", metadata={
        "help": "tensor: each tensor's noise has its MIMA update's norm; total: one draw scaled to the total norm"})
    seed: int = field(default=0, metadata={
        "help": "seed of MIMA's run and of the noise (the runner sets it per cell)"})



@register_defense("random")
class RandomControl(Defense):
    """MIMA's per-tensor update norms in seeded Gaussian directions: the no-immunization control."""

    version = f"1+mima{MIMA.version}.{_mima_digest()}"
    Config = RandomConfig
    presets = {kind: {"task_kind": kind} for kind in task_kinds()}
    needs_regularization = MIMA.needs_regularization

    def immunize(self, model, data, cfg: RandomConfig = RandomConfig()) -> Immunized:
        resolved = mima_config(model.name, cfg)
        mima = MIMA()
        mima.progress, mima.snapshot = self.progress, self.snapshot
        updated = mima.immunize(model, data, resolved.config)
        unet = randomize(dict(model.unet.named_parameters()), updated.unet, cfg.seed, cfg.norm)
        text = randomize(dict(model.text_encoder.named_parameters()), updated.text_encoder, cfg.seed + 1, cfg.norm)
        return Immunized(unet=unet, text_encoder=text, constraints=updated.constraints, info={
            "mima_config": resolved.manifest()["config"], "mima_presets_in_force": resolved.presets_in_force,
            "mima": updated.info, "norm": cfg.norm, **update_stats(dict(model.unet.named_parameters()), updated.unet, unet)})


def mima_config(backbone: str, cfg: RandomConfig):
    """MIMA's config as the grid would resolve it on ``backbone`` for ``cfg.task_kind`` (paper defaults,
    presets, then ``cfg.mima``), with this control's seed (a ``config.Resolved``)."""
    return resolve_config(MIMA, backbone, cfg.task_kind, {**cfg.mima, "seed": cfg.seed},
                          origin=lambda n, v: f"random.mima.{n}={v!r}")


@torch.no_grad()
def randomize(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], seed: int,
              norm: str = "tensor") -> dict[str, torch.Tensor]:
    """``after``'s tensors with each update Δ_i = after_i − before_i replaced by a seeded Gaussian
    direction of the same Frobenius norm (``norm="tensor"``), or one Gaussian over all of them scaled
    to the total norm (``norm="total"``)."""
    if not after:
        return {}
    g = torch.Generator().manual_seed(seed)
    names = sorted(after)
    deltas = {n: (after[n].detach().double() - before[n].detach().double()) for n in names}
    noise = {n: torch.randn(deltas[n].shape, generator=g, dtype=torch.float64) for n in names}
    if norm == "tensor":
        scale = {n: deltas[n].norm() / noise[n].norm() for n in names}
    elif norm == "total":
        total = torch.sqrt(sum(d.norm() ** 2 for d in deltas.values()))
        s = total / torch.sqrt(sum(r.norm() ** 2 for r in noise.values()))
        scale = {n: s for n in names}
    else:
        raise ValueError(f"norm must be 'tensor' or 'total', got {norm!r}")
    return {n: (before[n].detach().double() + scale[n] * noise[n]).to(after[n].dtype) for n in names}


@torch.no_grad()
def update_stats(before: dict, mima: dict, control: dict) -> dict:
    """Total norms of both updates and their cosine, for the record."""
    if not mima:
        return {}
    a = torch.cat([(mima[n].double() - before[n].double()).flatten() for n in sorted(mima)])
    b = torch.cat([(control[n].double() - before[n].double()).flatten() for n in sorted(mima)])
    return {"update_norm_mima": float(a.norm()), "update_norm_random": float(b.norm()),
            "cosine_to_mima": float(a @ b / (a.norm() * b.norm()).clamp_min(1e-300)),
            "tensors": len(mima), "tensors_moved": sum(int(not torch.equal(mima[n], before[n])) for n in mima)}
