"""DINO similarity (metric D): ``dino`` (timm ``vit_small_patch16_224.dino``) and ``dino-world``.

M(a, b) is the mean over pairs of the cosine similarity of DINO features: the CLS token after
the final norm (timm with ``num_classes=0``), as DreamBooth's and MIMA's DINO metric uses it.
DINO takes ImageNet's mean/std — not CLIP's, which the public IMMA evaluation gave it.
The real model loads from the local cache only (Hugging Face ``timm/vit_small_patch16_224.dino``
or torch hub's copy of the original DINO checkpoint).
"""
from __future__ import annotations

from typing import Any

import torch

from immunobench.plugins import Similarity, register_metric

from ._preprocess import (
    IMAGENET_MEAN, IMAGENET_STD, CachedWeightsBackend, EmbeddingSimilarity, Preprocess, hf_cached, torch_hub_cached,
)
from ._world import WorldJudgeBackend

DINO_MODEL = "vit_small_patch16_224.dino"
DINO_HF_REPO = "timm/vit_small_patch16_224.dino"
DINO_HF_FILES = ("model.safetensors", "pytorch_model.bin")
DINO_URL = "https://dl.fbaipublicfiles.com/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth"


@register_metric("dino")
class Dino(CachedWeightsBackend, EmbeddingSimilarity, Similarity):
    """DINO ViT-S/16 CLS-feature cosine similarity (timm, local cache only)."""

    version = "1"
    label = "DINO"
    higher_is_better = True
    preprocess = Preprocess(
        size=224, interpolation="bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD,
        source="DINO ViT-S/16 (timm vit_small_patch16_224.dino): Resize(224, bicubic) + CenterCrop(224) + ImageNet mean/std",
    )

    missing_hint = (
        f"{DINO_MODEL} weights are not in the local cache; on a machine with network run "
        f"`python -c \"import timm; timm.create_model('{DINO_MODEL}', pretrained=True)\"` "
        "(or use the offline judges: dino-world)"
    )

    def cached_weights(self) -> str | None:
        return hf_cached(DINO_HF_REPO, DINO_HF_FILES) or torch_hub_cached(DINO_URL)

    def _load(self) -> torch.nn.Module:
        import timm

        path = self.weights_path()
        return timm.create_model(DINO_MODEL, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": path})

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def weights_info(self) -> dict[str, Any]:
        return {"model": DINO_MODEL, "feature": "CLS token after the final norm"}


@register_metric("dino-world")
class WorldDino(WorldJudgeBackend, EmbeddingSimilarity, Similarity):
    """The world's DINO stand-in: a small timm ViT trained by DINO self-distillation on the world's renders."""

    version = "1"
    label = "DINO"
    higher_is_better = True
    judge_name = "dino-world"

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
