"""What every fine-tuning attack shares, written once: its encoded training set, epoch-shuffled
batches, the step loop that yields the card's checkpoints, and the rule that frozen tensors stay
frozen.

An attack file keeps only its update rule (which parameters, which loss, which optimizer); the
loop here does the rest the same way for all of them, so attacks differ only where the methods do.

Constraints (``plugins.Constraints.frozen``) name UNet parameters as ``unet.named_parameters()``
gives them and text-encoder parameters with the prefix ``text_encoder.``. A frozen tensor is never
given to an optimizer (so neither its gradient nor AdamW's weight decay touches it) and stays
bit-identical; adapter methods (LoRA) give no adapter to a frozen base tensor.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import torch

from .diffusion import encode_images, encode_prompts, select_parameters

if TYPE_CHECKING:  # pragma: no cover
    from .backbones import Backbone
    from .cards import ConceptGroup

TEXT_ENCODER_PREFIX = "text_encoder."


@dataclass
class TrainingSet:
    """Images of the concepts an attacker adapts to, as VAE latents, with their prompts.

    ``concept[i]`` names the concept of image ``i``; text conditioning is encoded per step by the
    attack (methods that train the text encoder or a token need it fresh) or once (``conditioning``).
    """

    latents: torch.Tensor
    prompts: list[str]
    concepts: list[str]

    def __len__(self) -> int:
        return len(self.latents)

    def conditioning(self, model: "Backbone") -> torch.Tensor:
        """Text embeddings of every image's prompt, each distinct prompt encoded once (frozen text encoder)."""
        unique = sorted(set(self.prompts))
        with torch.no_grad():
            table = encode_prompts(model, unique)
        return table[torch.tensor([unique.index(p) for p in self.prompts])]


def attack_training_set(model: "Backbone", group: "ConceptGroup", data, concepts: Sequence[str] | None = None) -> TrainingSet:
    """The attack split of ``concepts`` (default: the group's targets that have one), encoded once
    (the VAE is frozen in every attack)."""
    concepts = [c for c in (concepts or group.targets) if c in data.attack]
    if not concepts:
        raise ValueError(f"no attack images for {', '.join(concepts or group.targets)}")
    images = torch.cat([data.attack[c].images for c in concepts])
    with torch.no_grad():
        latents = encode_images(model, images)
    return TrainingSet(latents, [p for c in concepts for p in data.attack[c].prompts],
                       [c for c in concepts for _ in data.attack[c].prompts])


class Batches:
    """Indices of epoch-shuffled batches drawn from ``generator`` (diffusers' DataLoader with
    ``shuffle=True``, ``drop_last``-free): a new permutation when the current one runs short."""

    def __init__(self, size: int, batch_size: int, generator: torch.Generator):
        self.size, self.batch_size, self.generator = size, min(batch_size, size), generator
        self.order, self.cursor = torch.randperm(size, generator=generator), 0

    def next(self) -> torch.Tensor:
        if self.cursor + self.batch_size > self.size:
            self.order, self.cursor = torch.randperm(self.size, generator=self.generator), 0
        idx = self.order[self.cursor : self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return idx


def unfrozen_parameters(module: torch.nn.Module, selection: str | Iterable[str], frozen: Iterable[str] = (),
                        prefix: str = "") -> dict[str, torch.nn.Parameter]:
    """``select_parameters(module, selection)`` less the frozen ones; every parameter of ``module``
    gets ``requires_grad`` True exactly when it is returned."""
    frozen = set(frozen)
    chosen = {n: p for n, p in select_parameters(module, selection).items() if prefix + n not in frozen}
    for name, p in module.named_parameters():
        p.requires_grad_(name in chosen)
    if not chosen:
        raise ValueError(f"every parameter of the selection {selection!r} is frozen by the defense's constraints")
    return chosen


def train(
    name: str,
    adapted: "Backbone",
    modules: Sequence[torch.nn.Module],
    parameters: Sequence[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    loss_at: Callable[[int], torch.Tensor],
    checkpoints: Iterable[int],
    *,
    max_grad_norm: float | None = None,
    before_step: Callable[[], None] | None = None,
    after_step: Callable[[], None] | None = None,
) -> Iterator[tuple[int, "Backbone"]]:
    """The loop of every attack: ``loss_at(step)`` → backward → clip → (``before_step``) → optimizer
    step → (``after_step``), yielding ``adapted`` (live: valid until the generator resumes) at each
    checkpoint in eval mode; step 0 is the model before any update.

    A non-finite loss raises ``FloatingPointError`` naming the attack and the step (the runner
    records the cell as failed and goes on).
    """
    checkpoints = set(checkpoints)
    last = max(checkpoints)

    def mode(train_mode: bool) -> None:
        for m in modules:
            m.train(train_mode)

    if 0 in checkpoints:
        mode(False)
        yield 0, adapted
    mode(True)
    for step in range(1, last + 1):
        loss = loss_at(step)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{name}: loss is {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
        if before_step is not None:
            before_step()
        optimizer.step()
        if after_step is not None:
            after_step()
        if step in checkpoints:
            mode(False)
            yield step, adapted
            mode(True)
    mode(False)
