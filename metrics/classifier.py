"""Classifier judges for the accuracy metric: ``resnet50`` (torchvision, ImageNet) and ``classifier-world``.

``logits(images)`` → (N, len(classes)) for [-1, 1] images; ``index_of(concept)`` maps a world
concept (id, alias or prompt name) to its class index, or None when the classifier has no such
class (the real ResNet50 knows the ten Imagenette objects but no artist). The real weights
(``ResNet50_Weights.IMAGENET1K_V2``) load from the local torch hub cache only.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from immunobench.plugins import Classifier, register_metric

from ._preprocess import (
    IMAGENET_MEAN, IMAGENET_STD, Backend, CachedWeightsBackend, Preprocess, batches, torch_hub_cached,
)
from ._world import WorldJudgeBackend

RESNET50_URL = "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"  # ResNet50_Weights.IMAGENET1K_V2


def _imagenet_categories() -> tuple[str, ...]:
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


class _ClassifierBackend(Backend):
    classes: tuple[str, ...] = ()

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        x = self.prepare(images)
        return torch.cat([self.net(chunk).float() for chunk in batches(x, self.batch_size)]).cpu()

    def predict(self, images: torch.Tensor) -> list[str]:
        """Top-1 class names."""
        return [self.classes[i] for i in self.logits(images).argmax(1).tolist()]

    def accuracy(self, images: torch.Tensor, concept: str) -> float:
        """Top-1 accuracy of ``images`` against world concept ``concept`` (ValueError if it has no class)."""
        from .scores import top1_accuracy

        value = top1_accuracy(self, images, concept)
        if value is None:
            raise ValueError(f"{self.name}: no class for concept {concept!r}")
        return value

    def index_of(self, concept: str) -> int | None:  # pragma: no cover - abstract
        raise NotImplementedError


@register_metric("resnet50")
class ResNet50(CachedWeightsBackend, _ClassifierBackend, Classifier):
    """ImageNet ResNet50 (torchvision IMAGENET1K_V2) top-1, as in MIMA's object accuracy (local cache only)."""

    version = "1"
    preprocess = Preprocess(
        size=224, resize=232, interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD,
        source="torchvision ResNet50_Weights.IMAGENET1K_V2.transforms(): Resize(232, bilinear) + CenterCrop(224) + ImageNet mean/std",
    )

    @property
    def classes(self) -> tuple[str, ...]:  # type: ignore[override]
        return _imagenet_categories()

    missing_hint = (
        f"torchvision ResNet50 IMAGENET1K_V2 weights ({os.path.basename(RESNET50_URL)}) are not in the "
        "torch hub cache; on a machine with network run `python -c \"import torchvision; "
        "torchvision.models.resnet50(weights='IMAGENET1K_V2')\"` (or use the offline judges: classifier-world)"
    )

    def cached_weights(self) -> str | None:
        return torch_hub_cached(RESNET50_URL)

    def _load(self) -> torch.nn.Module:
        from torchvision.models import resnet50

        path = self.weights_path()
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        model = resnet50(weights=None)
        model.load_state_dict(state)
        return model

    def index_of(self, concept: str) -> int | None:
        from immunobench.world.concepts import get_concept

        try:
            name = get_concept(concept).name
        except KeyError:
            name = concept
        lowered = [c.lower() for c in self.classes]
        return lowered.index(name.lower()) if name.lower() in lowered else None

    def weights_info(self) -> dict[str, Any]:
        return {"model": "torchvision resnet50", "weights": "IMAGENET1K_V2", "file": os.path.basename(RESNET50_URL)}


@register_metric("classifier-world")
class WorldClassifier(WorldJudgeBackend, _ClassifierBackend, Classifier):
    """The world's classifier stand-in: a small torchvision ResNet trained on every object and artist of the world."""

    version = "1"
    judge_name = "classifier-world"

    @property
    def classes(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self.judge.classes)

    def index_of(self, concept: str) -> int | None:
        from immunobench.world.concepts import get_concept

        cid = get_concept(concept).id
        return self.classes.index(cid) if cid in self.classes else None
