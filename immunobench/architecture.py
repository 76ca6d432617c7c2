"""Build SD-architecture models of any size from the same diffusers/transformers classes as SD v1-4.

Used for the tiny random models the tests load through the real loader, as the starting point of
the embedded ``tiny-sd``, and (``SDArchitecture.sd_v1_4``) for SD v1-4's own structure at full or
reduced width. Saved folders have SD's layout (``model_index.json`` + ``unet/ vae/ text_encoder/
tokenizer/ scheduler/``).
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from .tokenizer import CLIP_MAX_LENGTH, CLIP_VOCAB_SIZE, clip_tokenizer_from_open_clip


# Stable Diffusion v1-4 as published: the fields of huggingface.co/CompVis/stable-diffusion-v1-4's
# unet/config.json, vae/config.json, text_encoder/config.json and scheduler/scheduler_config.json that fix its
# structure (unlisted fields are the classes' defaults there too). ``SDArchitecture.sd_v1_4`` builds from these.
SD_V1_4 = {
    "unet": {
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "block_out_channels": [320, 640, 1280, 1280],
        "layers_per_block": 2,
        "attention_head_dim": 8,  # diffusers' name for 8 heads per level (head size 40, 80, 160)
        "cross_attention_dim": 768,
        "in_channels": 4,
        "out_channels": 4,
        "sample_size": 64,
        "norm_num_groups": 32,
        "norm_eps": 1e-05,
        "act_fn": "silu",
        "center_input_sample": False,
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "mid_block_scale_factor": 1,
    },
    "vae": {
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [128, 256, 512, 512],
        "layers_per_block": 2,
        "latent_channels": 4,
        "in_channels": 3,
        "out_channels": 3,
        "norm_num_groups": 32,
        "act_fn": "silu",
        "sample_size": 512,
    },
    "text_encoder": {  # CLIPTextModel of openai/clip-vit-large-patch14
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "max_position_embeddings": 77,
        "vocab_size": 49408,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-05,
    },
    "scheduler": {
        "_class_name": "PNDMScheduler",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000,
        "clip_sample": False,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "trained_betas": None,
    },
}


@dataclass(frozen=True)
class SDArchitecture:
    unet_channels: tuple[int, ...] = (32, 64)
    unet_layers_per_block: int = 1
    # levels with cross-attention, from the top; None = all but the lowest, as SD v1 (3 of 4)
    cross_attention_levels: int | None = None
    # diffusers' name for the number of heads per level (one number, or one per level from the top)
    attention_head_dim: int | tuple[int, ...] = 8
    vae_channels: tuple[int, ...] = (16, 32, 32)  # three levels: latents are 4× smaller than pixels
    vae_layers_per_block: int = 1
    latent_channels: int = 4
    text_dim: int = 32
    text_layers: int = 2
    text_heads: int = 2
    resolution: int = 64
    num_train_timesteps: int = 1000
    norm_groups: int | None = None  # GroupNorm groups of the UNet and VAE; None = min(8, narrowest level)
    # the schedule file: "ddpm" (DDPMScheduler) or "pndm" (PNDMScheduler, as SD v1-4 ships it); same betas
    scheduler: str = "ddpm"

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)

    def record(self) -> dict:
        """The fields as records keep them (``world train``'s run.json and report): fields added after tiny-sd
        was first trained are left out at their defaults, so a record written before they existed still matches."""
        defaults = {f.name: f.default for f in fields(self)}
        return {k: v for k, v in asdict(self).items() if not (k in LATER_FIELDS and v == defaults[k])}

    @classmethod
    def sd_v1_4(cls, unet_width: int = 320, vae_width: int = 128, text_dim: int = 768, norm_groups: int = 32,
                resolution: int = 512) -> "SDArchitecture":
        """SD v1-4's structure (``SD_V1_4``) at any width: its block types and counts, layers per block,
        8 attention heads per level, cross-attention at the three upper levels and in the mid block, a
        12-layer 12-head CLIP text encoder, a four-level VAE (latents 8× smaller than pixels) and its PNDM
        schedule file; only the widths (first level's channels, text hidden size) and the resolution are
        free. The defaults are SD v1-4 itself (860M-parameter UNet at 512 px)."""
        unet, vae, text = SD_V1_4["unet"], SD_V1_4["vae"], SD_V1_4["text_encoder"]
        heads, text_heads = unet["attention_head_dim"], text["num_attention_heads"]
        latent_levels = 2 ** (len(unet["block_out_channels"]) - 1)
        scale = 2 ** (len(vae["block_out_channels"]) - 1)
        problems = []
        if unet_width % norm_groups or unet_width % heads:
            problems.append(f"unet_width {unet_width} is not a multiple of norm_groups {norm_groups} and of {heads} heads")
        if vae_width % norm_groups:
            problems.append(f"vae_width {vae_width} is not a multiple of norm_groups {norm_groups}")
        if text_dim % text_heads:
            problems.append(f"text_dim {text_dim} is not a multiple of {text_heads} heads")
        if resolution % (scale * latent_levels):
            problems.append(f"resolution {resolution} is not a multiple of {scale * latent_levels} "
                            f"(VAE x{scale}, then x{latent_levels} down the UNet)")
        if problems:
            raise ValueError(f"SD v1-4 structure: {'; '.join(problems)}")
        return cls(
            unet_channels=tuple(c * unet_width // unet["block_out_channels"][0] for c in unet["block_out_channels"]),
            unet_layers_per_block=unet["layers_per_block"],
            cross_attention_levels=unet["down_block_types"].count("CrossAttnDownBlock2D"),
            attention_head_dim=heads,
            vae_channels=tuple(c * vae_width // vae["block_out_channels"][0] for c in vae["block_out_channels"]),
            vae_layers_per_block=vae["layers_per_block"],
            latent_channels=vae["latent_channels"],
            text_dim=text_dim,
            text_layers=text["num_hidden_layers"],
            text_heads=text_heads,
            resolution=resolution,
            num_train_timesteps=SD_V1_4["scheduler"]["num_train_timesteps"],
            norm_groups=norm_groups,
            scheduler="pndm",
        )


LATER_FIELDS = ("vae_layers_per_block", "norm_groups", "scheduler")


def build_components(arch: SDArchitecture, seed: int = 0) -> dict:
    """Randomly initialised UNet, VAE, text encoder, SD's tokenizer and SD's schedule (``arch.scheduler``)."""
    from diffusers import AutoencoderKL, DDPMScheduler, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if arch.scheduler not in ("ddpm", "pndm"):
        raise ValueError(f"scheduler must be 'ddpm' or 'pndm', got {arch.scheduler!r}")
    torch.manual_seed(seed)
    levels = len(arch.unet_channels)
    xattn = levels - 1 if arch.cross_attention_levels is None else arch.cross_attention_levels
    groups = arch.norm_groups or min(8, min(arch.unet_channels))
    unet = UNet2DConditionModel(
        sample_size=arch.resolution // arch.vae_scale_factor,
        in_channels=arch.latent_channels,
        out_channels=arch.latent_channels,
        down_block_types=("CrossAttnDownBlock2D",) * xattn + ("DownBlock2D",) * (levels - xattn),
        up_block_types=("UpBlock2D",) * (levels - xattn) + ("CrossAttnUpBlock2D",) * xattn,
        block_out_channels=arch.unet_channels,
        layers_per_block=arch.unet_layers_per_block,
        cross_attention_dim=arch.text_dim,
        attention_head_dim=arch.attention_head_dim,
        norm_num_groups=groups,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(arch.vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(arch.vae_channels),
        block_out_channels=arch.vae_channels,
        layers_per_block=arch.vae_layers_per_block,
        latent_channels=arch.latent_channels,
        norm_num_groups=arch.norm_groups or min(8, min(arch.vae_channels)),
        sample_size=arch.resolution,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=CLIP_VOCAB_SIZE,
            hidden_size=arch.text_dim,
            intermediate_size=4 * arch.text_dim,
            num_hidden_layers=arch.text_layers,
            num_attention_heads=arch.text_heads,
            max_position_embeddings=CLIP_MAX_LENGTH,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    # SD v1's training schedule (scaled_linear betas 0.00085 → 0.012).
    betas = dict(num_train_timesteps=arch.num_train_timesteps, beta_start=0.00085, beta_end=0.012,
                 beta_schedule="scaled_linear", prediction_type="epsilon", steps_offset=1)
    if arch.scheduler == "pndm":
        # SD v1-4's file: PNDM, and clip_sample false for the schedulers a pipeline swaps in (DDIM's default is true)
        scheduler = PNDMScheduler(**betas, skip_prk_steps=True, set_alpha_to_one=False)
        scheduler.register_to_config(clip_sample=False)
    else:
        scheduler = DDPMScheduler(**betas, clip_sample=False)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder,
            "tokenizer": clip_tokenizer_from_open_clip(), "scheduler": scheduler}


def save_components(components: dict, folder: str | Path) -> Path:
    """Write the components in the diffusers layout that SD v1-4 ships in (safetensors)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def sd_v1_4_components(seed: int = 0, device: str | torch.device | None = None) -> dict:
    """SD v1-4 at its exact configs (``SDArchitecture.sd_v1_4()``), randomly initialised: its shapes, FLOPs
    and memory, not its outputs. ``device="meta"`` builds shapes only (no memory, instant): for counting."""
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return build_components(SDArchitecture.sd_v1_4(), seed)
