"""Shared diffusion machinery, written once: prompt encoding, the ε-prediction loss, seeded DDIM
sampling, parameter selection by name and functional parameter swapping for unrolled steps.

Defenses and attacks import these; none of them re-implements a loss or a sampler.
"""
from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # pragma: no cover
    from .backbones import Backbone

# Named parameter sets (methods.md §0): (include patterns, exclude patterns), regexes on UNet names.
PARAMETER_SETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "xattn-kv": ((r"\.attn2\.to_[kv]\.",), ()),  # Custom Diffusion, UCE, the MIMA merge's W
    "xattn": ((r"\.attn2\.",), ()),  # ESD-x, MIMA's S^u: all cross-attention (q, k, v, out)
    "attn": ((r"\.attn[12]\.to_(q|k|v|out)",), ()),  # IMMA's θ_u: self- and cross-attention
    "non-xattn": ((r".*",), (r"\.attn2\.",)),  # everything but cross-attention (norms included)
    # ESD-u as esd_sd.py selects it: every Linear/Conv2d outside attn2 (weights and biases), no norm
    # layer (diffusers names every GroupNorm/LayerNorm "norm*"; tests/test_defense_esd.py checks by class)
    "esd-u": ((r".*",), (r"\.attn2\.", r"(^|\.)(conv_)?norm[^.]*\.")),
    "unet": ((r".*",), ()),  # DreamBooth, full fine-tuning
}


def select_parameters(
    module: torch.nn.Module, selection: str | Iterable[str], exclude: Iterable[str] = ()
) -> dict[str, torch.nn.Parameter]:
    """Parameters whose names match a named set (``PARAMETER_SETS``) or a list of regexes."""
    if isinstance(selection, str):
        if selection not in PARAMETER_SETS:
            raise ValueError(f"unknown parameter set {selection!r}; known: {', '.join(PARAMETER_SETS)}")
        include, default_exclude = PARAMETER_SETS[selection]
        exclude = (*default_exclude, *exclude)
    else:
        include = tuple(selection)
    inc = [re.compile(p) for p in include]
    exc = [re.compile(p) for p in exclude]
    chosen = {
        name: p
        for name, p in module.named_parameters()
        if any(r.search(name) for r in inc) and not any(r.search(name) for r in exc)
    }
    if not chosen:
        raise ValueError(f"parameter selection {selection!r} matches no parameter of {type(module).__name__}")
    return chosen


def call_with(module: torch.nn.Module, params: Mapping[str, torch.Tensor] | None, *args, **kwargs):
    """Run ``module`` with some parameters swapped for tensors (which may carry a graph)."""
    if not params:
        return module(*args, **kwargs)
    return torch.func.functional_call(module, dict(params), args, kwargs, strict=False)


@contextlib.contextmanager
def second_order_attention():
    """Unrolled steps differentiate a gradient; fused SDPA kernels (flash, memory-efficient) have
    no double backward, so run attention on the math kernel inside this context."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        yield


def tokenize(backbone: "Backbone", prompts: Sequence[str]) -> torch.Tensor:
    tok = backbone.tokenizer(
        list(prompts), padding="max_length", max_length=backbone.tokenizer.model_max_length,
        truncation=True, return_tensors="pt",
    )
    return tok.input_ids.to(backbone.device)


def encode_prompts(backbone: "Backbone", prompts: Sequence[str], text_params=None) -> torch.Tensor:
    """SD's conditioning: final hidden states of all 77 positions (B, 77, dim)."""
    return call_with(backbone.text_encoder, text_params, tokenize(backbone, prompts))[0]


def token_embeddings(backbone: "Backbone", prompts: Sequence[str]) -> list[torch.Tensor]:
    """Per prompt, the hidden states of its own tokens: BOS dropped, EOS kept, no padding.

    This is what Custom Diffusion's and MIMA's closed-form merges use as rows of C and C_reg.
    The text encoder is causal, so padding after EOS does not change these rows.
    """
    ids = tokenize(backbone, prompts)
    hidden = backbone.text_encoder(ids)[0]
    eos = backbone.tokenizer.eos_token_id
    rows = []
    for i in range(len(prompts)):
        end = int((ids[i] == eos).nonzero()[0]) if (ids[i] == eos).any() else ids.shape[1] - 1
        rows.append(hidden[i, 1 : end + 1])
    return rows


def concept_rows(backbone: "Backbone", prompt: str, words: str) -> torch.Tensor:
    """Hidden states of the tokens of ``words`` inside ``prompt`` (their last occurrence) and of its EOS.

    The rows of a merge constraint that belong to the concept: the template's own tokens ("an
    artwork of") are left out, so every other prompt that shares them keeps its base projection.
    """
    ids = tokenize(backbone, [prompt])[0]
    word_ids = backbone.tokenizer(words, add_special_tokens=False).input_ids
    eos = int((ids == backbone.tokenizer.eos_token_id).nonzero()[0])
    for start in range(eos - len(word_ids), 0, -1):
        if ids[start : start + len(word_ids)].tolist() == word_ids:
            hidden = backbone.text_encoder(ids[None])[0][0]
            return torch.cat([hidden[start : start + len(word_ids)], hidden[eos : eos + 1]])
    raise ValueError(f"{words!r} does not occur in the prompt {prompt!r}")


def encode_images(backbone: "Backbone", images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Images in [-1, 1] → scaled VAE latents; the posterior mean unless a generator asks for a sample."""
    dist = backbone.vae.encode(images.to(backbone.device, backbone.vae.dtype)).latent_dist
    z = dist.mode() if generator is None else dist.sample(generator)
    return z * backbone.vae.config.scaling_factor


def decode_latents(backbone: "Backbone", latents: torch.Tensor) -> torch.Tensor:
    x = backbone.vae.decode(latents / backbone.vae.config.scaling_factor).sample
    return x.clamp(-1, 1)


def diffusion_loss(
    unet: torch.nn.Module,
    latents: torch.Tensor,
    cond: torch.Tensor,
    scheduler,
    *,
    params: Mapping[str, torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    timesteps: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """L(θ; x, c) = E_{t,ε} ‖ε_θ(√ᾱ_t z + √(1−ᾱ_t) ε, c, t) − ε‖² (DDPM schedule of the checkpoint).

    Noise and timesteps are drawn on the CPU from ``generator`` so a seed gives the same draw on
    every device. ``params`` swaps UNet parameters functionally (unrolled steps).
    """
    b = latents.shape[0]
    if noise is None:
        noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32).to(latents)
    if timesteps is None:
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator)
    timesteps = timesteps.to(latents.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    pred = call_with(unet, params, noisy, timesteps, encoder_hidden_states=cond).sample
    if scheduler.config.prediction_type == "epsilon":
        target = noise
    elif scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise ValueError(f"unknown prediction type {scheduler.config.prediction_type!r}")
    dtype = torch.promote_types(pred.dtype, torch.float32)  # fp16 → fp32 for the loss; fp64 stays fp64
    per_sample = F.mse_loss(pred.to(dtype), target.to(dtype), reduction="none").mean(dim=(1, 2, 3))
    if reduction == "none":
        return per_sample
    if reduction == "mean":
        return per_sample.mean()
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def initial_latents(backbone: "Backbone", seeds: Sequence[int]) -> torch.Tensor:
    """One CPU generator per image: an image depends on its own seed, never on batch composition."""
    size = backbone.unet.config.sample_size
    shape = (backbone.unet.config.in_channels, size, size)
    z = [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(z).to(backbone.device, backbone.unet.dtype)


@torch.no_grad()
def sample(
    backbone: "Backbone",
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    steps: int | None = None,
    guidance_scale: float | None = None,
    negative_prompt: str = "",
    params: Mapping[str, torch.Tensor] | None = None,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Deterministic DDIM (η = 0) with classifier-free guidance → images in [-1, 1], (N, 3, H, W), CPU:
    ``partial_sample`` run to the last step, ``batch_size`` images at a time, decoded."""
    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds; give one seed per image")
    steps = steps or backbone.spec.sample_steps
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        latents, _ = partial_sample(backbone, chunk, seeds[start : start + batch_size], steps, steps=steps,
                                    guidance_scale=guidance_scale, negative_prompt=negative_prompt, params=params)
        out.append(decode_latents(backbone, latents).float().cpu())
        if on_batch is not None:
            on_batch(len(chunk))
    return torch.cat(out)


@torch.no_grad()
def partial_sample(
    backbone: "Backbone",
    prompts: Sequence[str],
    seeds: Sequence[int],
    done: int,
    *,
    steps: int | None = None,
    guidance_scale: float | None = None,
    negative_prompt: str = "",
    params: Mapping[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents after the first ``done`` of ``steps`` steps of ``sample``'s DDIM (η = 0, classifier-free
    guidance) and the timestep they sit at: ``(x_t, t)``, t = the schedule's ``done``-th timestep (0 once
    every step is done). ``sample`` runs it to the end: ``done=0`` is the seeds' noise, ``done=steps``
    decodes to ``sample``'s images. One batch, latents on the model's device and dtype.
    (ESD trains on x_t drawn this way; ``utils/sd_utils.py`` of rohitgandikota/erasing stops the pipeline
    loop at ``run_till_timestep``.)"""
    from diffusers import DDIMScheduler

    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds; give one seed per image")
    steps = steps or backbone.spec.sample_steps
    if not 0 <= done <= steps:
        raise ValueError(f"done must lie in [0, steps={steps}], got {done}")
    guidance_scale = backbone.spec.guidance_scale if guidance_scale is None else guidance_scale
    config = dict(backbone.scheduler.config)
    extra = {} if "set_alpha_to_one" in config else {"set_alpha_to_one": False}  # as SD's pipelines
    scheduler = DDIMScheduler.from_config(config, **extra)
    scheduler.set_timesteps(steps)
    latents = initial_latents(backbone, seeds) * scheduler.init_noise_sigma
    cond = torch.cat([encode_prompts(backbone, [negative_prompt] * len(prompts)), encode_prompts(backbone, list(prompts))])
    for t in scheduler.timesteps[:done]:
        model_in = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        eps_uncond, eps_cond = call_with(backbone.unet, params, model_in, t, encoder_hidden_states=cond).sample.chunk(2)
        eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
        latents = scheduler.step(eps, t, latents).prev_sample
    t = scheduler.timesteps[done] if done < steps else torch.zeros((), dtype=scheduler.timesteps.dtype)
    return latents, t


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNG (for modules that draw from it) and return a CPU generator."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
