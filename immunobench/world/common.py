"""Pieces the world's training (``train``), judges (``judges``) and check (``check``) share.

They live here so that none of those three imports another for a helper: ``check`` uses the
judges, and nothing else crosses between them (``tests/test_imports.py`` keeps it so).
"""
from __future__ import annotations

import math

import torch

from ..backbones import Backbone
from ..diffusion import decode_latents, encode_images
from .render import reference_views


def cosine_with_warmup(step: int, total: int, warmup: int = 200) -> float:
    """LR factor: linear warm-up, then cosine decay to 0 at ``total`` (stateless, so resuming is exact)."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def reference_images(instance: str, size: int | None = None, n: int | None = None) -> torch.Tensor:
    """A personal instance's reference views as a batch in [-1, 1] (the renderer's size and view count
    by default)."""
    kwargs = {k: v for k, v in (("size", size), ("n", n)) if v is not None}
    return torch.stack([torch.tensor(v).permute(2, 0, 1).float() / 127.5 - 1 for v in reference_views(instance, **kwargs)])


def instance_views(concept_key: str, concept, count: int, size: int) -> tuple[torch.Tensor, str]:
    """``BackboneSpec.references`` of ``tiny-sd``: ``count`` rendered views of the world's instance
    (the renderer draws as many distinct views as asked: pose, light and backdrop vary per index)."""
    import hashlib

    views = reference_images(concept_key, size=size, n=count)
    return views, f"world views of {concept_key}: {count}, sha1 {hashlib.sha1(views.numpy().tobytes()).hexdigest()[:12]}"


@torch.no_grad()
def reconstruct(model: Backbone, images: torch.Tensor) -> torch.Tensor:
    """``images`` encoded and decoded by the model's VAE."""
    return decode_latents(model, encode_images(model, images))
