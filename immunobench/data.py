"""What a cell's plugins are fed: per-concept image sets with their prompts.

Images are float tensors in [-1, 1], shape (N, 3, H, W), everywhere in the project.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

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
    """Disjoint splits per target concept, as the runner holds them; a defense gets a ``DefenseData``
    view of them (never this object: it carries the attack split and the references).

    ``draw_class_images(class_prompt, seeds)``, where set, draws the attacked model's class images
    (DreamBooth's and Custom Diffusion's prior); the runner binds it to the model under attack and its
    store, so they are drawn once per model and class prompt (``finetune.class_images``)."""

    defense: dict[str, ConceptImages] = field(default_factory=dict)
    attack: dict[str, ConceptImages] = field(default_factory=dict)
    references: dict[str, torch.Tensor] = field(default_factory=dict)
    regularization: ConceptImages | None = None
    draw_class_images: Callable[[str, list[int]], torch.Tensor] | None = None


@dataclass(frozen=True)
class DefenseData:
    """Everything a defense may see (built by the runner; DESIGN: "a defense never sees what it is
    scored on"): its targets' defense-phase prompts and images and the regularization data — not
    the attack split, the references, the card, or the group's scored "others".

    ``names[c]`` is how the defense prompt of target ``c`` writes the concept ("Claude Monet",
    "chain saw"); ``captions`` is a generic caption set disjoint from every card's concepts (for a
    start model: the card's declared preserve prompts), in a fixed order whose prefixes are balanced.
    """

    task: str
    group: str
    concept_type: str
    targets: tuple[str, ...]
    names: dict[str, str]
    prompts: dict[str, str]
    images: dict[str, ConceptImages] = field(default_factory=dict)
    regularization: ConceptImages | None = None
    regularization_prompt: str = ""
    captions: tuple[str, ...] = ()
    captions_source: str = ""


def defense_view(group, images: dict[str, ConceptImages] | None = None, regularization: ConceptImages | None = None,
                 captions: tuple[str, ...] = (), captions_source: str = "", regularization_prompt: str = "") -> DefenseData:
    """The view of ``group`` (a ``cards.ConceptGroup``) a defense gets: its targets only, nothing of the card."""
    images = images or {}
    return DefenseData(
        task=group.task, group=group.name, concept_type=group.card.concept_type, targets=tuple(group.targets),
        names={c: group.concept_text(c, phase="defense") for c in group.targets},
        prompts={c: group.prompt(c, phase="defense") for c in group.targets},
        images={c: images[c] for c in group.targets if c in images}, regularization=regularization,
        regularization_prompt=regularization_prompt or group.card.regularization.prompt,
        captions=tuple(captions), captions_source=captions_source)


def start_model_view(erased) -> DefenseData:
    """What the card's start model (UCE on the relearn cards) gets for erasing ``erased`` (a
    ``ConceptGroup``): the targets and, as captions, the card's declared ``start_model.preserve`` prompts."""
    preserve = erased.start_preserve_prompts()
    return defense_view(erased, captions=tuple(preserve),
                        captions_source=f"start_model.preserve: {erased.card.start_model.preserve}")
