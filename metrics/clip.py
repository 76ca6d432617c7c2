"""CLIP similarity (metric C): ``clip`` (OpenAI ViT-B/32 via open_clip) and ``clip-world``.

M(a, b) is the mean over pairs of the cosine similarity of CLIP image features; ``pairwise``
gives every pair. The real model loads from the local cache only (Hugging Face
``timm/vit_base_patch32_clip_224.openai`` or open_clip's ``~/.cache/clip/ViT-B-32.pt``) and is
never downloaded here; ``clip-world`` is the world's stand-in (``immunobench.world.judges``).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from immunobench.plugins import Similarity, register_metric

from ._preprocess import (
    OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, CachedWeightsBackend, EmbeddingSimilarity, Preprocess, hf_cached,
)
from ._world import WorldJudgeBackend

CLIP_HF_REPO = "timm/vit_base_patch32_clip_224.openai"
CLIP_HF_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
CLIP_URL_FILE = os.path.join(os.path.expanduser("~"), ".cache", "clip", "ViT-B-32.pt")


@register_metric("clip")
class OpenAIClip(CachedWeightsBackend, EmbeddingSimilarity, Similarity):
    """CLIP ViT-B/32 (OpenAI) image-feature cosine similarity, as in MIMA/IMMA (open_clip, local cache only)."""

    version = "1"
    label = "CLIP"
    higher_is_better = True
    preprocess = Preprocess(
        size=224, interpolation="bicubic", mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD,
        source="open_clip ViT-B-32 'openai': Resize(224, bicubic, shorter side) + CenterCrop(224) + OpenAI CLIP mean/std",
    )

    missing_hint = (
        "CLIP ViT-B-32 'openai' weights are not in the local cache; on a machine with network run "
        "`python -c \"import open_clip; open_clip.create_model('ViT-B-32', pretrained='openai')\"` "
        "(or use the offline judges: clip-world)"
    )

    def cached_weights(self) -> str | None:
        return hf_cached(CLIP_HF_REPO, CLIP_HF_FILES) or (CLIP_URL_FILE if os.path.isfile(CLIP_URL_FILE) else None)

    def _load(self) -> torch.nn.Module:
        import open_clip

        path = self.weights_path()
        # A file path, never the 'openai' tag: open_clip cannot reach for the network from here.
        return open_clip.create_model("ViT-B-32", pretrained=path, force_quick_gelu=True, device="cpu")

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.encode_image(x)

    def weights_info(self) -> dict[str, Any]:
        return {"model": "open_clip ViT-B-32", "pretrained": "openai", "feature": "encode_image (projected)"}


@register_metric("clip-world")
class WorldClip(WorldJudgeBackend, EmbeddingSimilarity, Similarity):
    """The world's CLIP stand-in: a tiny open_clip CLIP trained on the world's image-caption pairs."""

    version = "1"
    label = "CLIP"
    higher_is_better = True
    judge_name = "clip-world"

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.encode_image(x)

    @torch.no_grad()
    def text_features(self, prompts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text features (P, D) of prompts, with open_clip's default tokenizer."""
        from immunobench.world.judges import tokenize

        ctx = self.judge.config["architecture"]["text_cfg"]["context_length"]
        return F.normalize(self.net.encode_text(tokenize(prompts, ctx).to(self.device)).float(), dim=-1).cpu()

    def zero_shot(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Cosine similarities (N, P) of images to prompts; argmax is the zero-shot class."""
        return self.embed(images) @ self.text_features(prompts).T
