"""What every fine-tuning attack shares, written once: its encoded training set, epoch-shuffled
batches, the step loop that yields the card's checkpoints, and the rule that frozen tensors stay
frozen.

An attack file keeps only its update rule (which parameters, which loss, which optimizer); the
loop here does the rest the same way for all of them, so attacks differ only where the methods do.

Constraints (``plugins.Constraints.frozen``) name UNet parameters as ``unet.named_parameters()``
gives them and text-encoder parameters with the prefix ``text_encoder.``. A frozen tensor is never
given to an optimizer (so neither its gradient nor AdamW's weight decay touches it) and stays
bit-identical; adapter methods (LoRA) give no adapter to a frozen base tensor.

Also here: PEFT LoRA on the UNet (``lora``, ``dreambooth_lora``) and DreamBooth's prior preservation
(class images drawn by the attacked model; L = L_inst + λ·L_prior), which ``dreambooth`` and
``dreambooth_lora`` share.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import torch

from .diffusion import diffusion_loss, encode_images, encode_prompts, sample, select_parameters

if TYPE_CHECKING:  # pragma: no cover
    from .backbones import Backbone
    from .cards import ConceptGroup

TEXT_ENCODER_PREFIX = "text_encoder."
CLASS_IMAGE_SEED_OFFSET = 7_000  # of cfg.seed · 100 000, beside the runner's offsets (attack 0 … eval 10 000)
ClassImageDraw = Callable[[str, list[int]], torch.Tensor]  # (class prompt, seeds) → images in [-1, 1]


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

    def state_dict(self) -> dict:  # for snapshot.LoopSnapshot
        return {"order": self.order.clone(), "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.order, self.cursor = state["order"].clone(), state["cursor"]


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


def add_lora(unet: torch.nn.Module, rank: int, target_modules, seed: int, frozen=frozenset()) -> list[torch.nn.Parameter]:
    """PEFT LoRA (α = r, "gaussian" A, B = 0) on ``target_modules`` of ``unet``, in place; returns the
    factors to train (none for a frozen base tensor). Used by ``lora`` and ``dreambooth_lora``."""
    from peft import LoraConfig as PeftLoraConfig

    unet.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):  # peft draws the "gaussian" A factors from the global RNG
        torch.manual_seed(seed)
        unet.add_adapter(PeftLoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                        target_modules=list(target_modules)))
    return lora_parameters(unet, frozen)


def lora_parameters(unet: torch.nn.Module, frozen: frozenset[str]) -> list[torch.nn.Parameter]:
    """LoRA factors to train, skipping those that adapt a frozen base tensor."""
    params = []
    for name, p in unet.named_parameters():
        if "lora_" not in name:
            continue
        base = name.split(".lora_")[0] + ".weight"
        if base.replace(".base_layer", "") in frozen:
            p.requires_grad_(False)
            continue
        p.requires_grad_(True)
        params.append(p)
    return params


def class_images(model: "Backbone", group: "ConceptGroup", concepts: Sequence[str], count: int, seed: int,
                 on_batch: Callable[[int], None] | None = None, draw: "ClassImageDraw | None" = None) -> TrainingSet:
    """DreamBooth's prior-preservation set: ``count`` images per concept drawn by ``model`` (the attacked,
    possibly immunized model, as train_dreambooth.py draws them with the pipeline it fine-tunes) from
    the concept's class prompt (``group.class_prompt``), deterministic in ``seed``, encoded once.

    ``draw`` (``TaskData.draw_class_images``; the runner's store stage) draws them for ``model``, so one
    model's images of a class prompt are drawn once for every attack and group that needs them; without
    it they are sampled here."""
    seeds = [seed * 100_000 + CLASS_IMAGE_SEED_OFFSET + i for i in range(count)]
    prompts = [group.class_prompt(c) for c in concepts for _ in seeds]
    if draw is None:
        images = sample(model, prompts, seeds * len(concepts), batch_size=16, on_batch=on_batch)
    else:
        images = torch.cat([draw(group.class_prompt(c), seeds) for c in concepts])
    with torch.no_grad():
        latents = encode_images(model, images)
    return TrainingSet(latents, prompts, [c for c in concepts for _ in seeds])


def drawn_once(model: "Backbone") -> ClassImageDraw:
    """A ``ClassImageDraw`` for ``model`` that keeps what it drew in memory (sweeps over one unchanging
    model outside the runner, whose store does this across runs)."""
    drawn: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}

    def draw(prompt: str, seeds: list[int]) -> torch.Tensor:
        key = (prompt, tuple(seeds))
        if key not in drawn:
            drawn[key] = sample(model, [prompt] * len(seeds), list(seeds), batch_size=16)
        return drawn[key]

    return draw


def prior_preservation_loss(unet: torch.nn.Module, instance_latents: torch.Tensor, instance_cond: torch.Tensor,
                            class_latents: torch.Tensor, class_cond: torch.Tensor, scheduler, prior_loss_weight: float,
                            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """train_dreambooth.py's objective: instance and class examples in one batch (one forward pass,
    one noise/timestep draw), L = L_inst + λ·L_prior, each term the mean over its half. Returns
    (L, L_inst, L_prior)."""
    n = len(instance_latents)
    per_example = diffusion_loss(unet, torch.cat([instance_latents, class_latents]),
                                 torch.cat([instance_cond, class_cond]), scheduler, generator=generator,
                                 reduction="none")
    instance, prior = per_example[:n].mean(), per_example[n:].mean()
    return instance + prior_loss_weight * prior, instance, prior


def instance_objective(model: "Backbone", group: "ConceptGroup", unet: torch.nn.Module, train_set: TrainingSet, *,
                       batch_size: int, seed: int, prior_loss_weight: float | None = None, num_class_images: int = 0,
                       progress=None, draw: ClassImageDraw | None = None) -> Callable[[int], torch.Tensor]:
    """``loss_at`` for ``train``: the ε-loss of ``unet`` on epoch-shuffled batches of ``train_set``
    (frozen text encoder), plus, when ``prior_loss_weight`` is given, DreamBooth's prior term on as
    many class images per step (``class_images``, drawn once here or by ``draw``; diffusers pairs one class
    image with each instance image of a batch; ``progress`` shows their sampling). Batches and noise come from
    one generator seeded by ``seed``."""
    cond = train_set.conditioning(model)
    g = torch.Generator().manual_seed(seed)
    batches = Batches(len(train_set), batch_size, g)
    if prior_loss_weight is None:
        def loss_at(step: int) -> torch.Tensor:
            idx = batches.next()
            return diffusion_loss(unet, train_set.latents[idx], cond[idx], model.scheduler, generator=g)
        return loss_at

    if num_class_images < 1:
        raise ValueError("prior preservation needs num_class_images >= 1")
    concepts = list(dict.fromkeys(train_set.concepts))
    bar = (progress.task(f"class images {group.name}", total=len(concepts) * num_class_images)
           if progress and draw is None else None)  # a ``draw`` shows its own
    prior = class_images(model, group, concepts, num_class_images, seed, on_batch=bar.advance if bar else None, draw=draw)
    if bar is not None:
        bar.close()
    prior_cond = prior.conditioning(model)
    class_batches = Batches(len(prior), batch_size, g)

    def loss_with_prior(step: int) -> torch.Tensor:
        idx, cls = batches.next(), class_batches.next()
        return prior_preservation_loss(unet, train_set.latents[idx], cond[idx], prior.latents[cls], prior_cond[cls],
                                       model.scheduler, prior_loss_weight, g)[0]
    return loss_with_prior
