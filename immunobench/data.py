"""What a cell's plugins are fed: per-concept image sets with their prompts.

Images are float tensors in [-1, 1], shape (N, 3, H, W), everywhere in the project.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ConceptImages:
    images: torch.Tensor
    prompts: list[str]

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got {tuple(self.images.shape)}")
        if len(self.prompts) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.prompts)} prompts")


@dataclass
class TaskData:
    """Disjoint splits per target concept (the defense never sees the attacker's images)."""

    defense: dict[str, ConceptImages] = field(default_factory=dict)
    attack: dict[str, ConceptImages] = field(default_factory=dict)
    references: dict[str, torch.Tensor] = field(default_factory=dict)
    regularization: ConceptImages | None = None
