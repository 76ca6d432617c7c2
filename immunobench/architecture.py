"""Build SD-architecture models of any size from the same diffusers/transformers classes as SD v1-4.

Used for the tiny random models the tests load through the real loader, and as the starting
point of the embedded ``tiny-sd``. Saved folders have SD's layout (``model_index.json`` +
``unet/ vae/ text_encoder/ tokenizer/ scheduler/``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .tokenizer import CLIP_MAX_LENGTH, CLIP_VOCAB_SIZE, clip_tokenizer_from_open_clip


@dataclass(frozen=True)
class SDArchitecture:
    unet_channels: tuple[int, ...] = (32, 64)
    unet_layers_per_block: int = 1
    # levels with cross-attention, from the top; None = all but the lowest, as SD v1 (3 of 4)
    cross_attention_levels: int | None = None
    # diffusers' name for the number of heads per level (one number, or one per level from the top)
    attention_head_dim: int | tuple[int, ...] = 8
    vae_channels: tuple[int, ...] = (16, 32, 32)  # three levels: latents are 4× smaller than pixels
    latent_channels: int = 4
    text_dim: int = 32
    text_layers: int = 2
    text_heads: int = 2
    resolution: int = 64
    num_train_timesteps: int = 1000

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)


def build_components(arch: SDArchitecture, seed: int = 0) -> dict:
    """Randomly initialised UNet, VAE, text encoder, SD's tokenizer and SD's DDPM schedule."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    levels = len(arch.unet_channels)
    xattn = levels - 1 if arch.cross_attention_levels is None else arch.cross_attention_levels
    groups = min(8, min(arch.unet_channels))
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
        latent_channels=arch.latent_channels,
        norm_num_groups=min(8, min(arch.vae_channels)),
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
    scheduler = DDPMScheduler(
        num_train_timesteps=arch.num_train_timesteps,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        prediction_type="epsilon",
        steps_offset=1,
    )
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder,
            "tokenizer": clip_tokenizer_from_open_clip(), "scheduler": scheduler}


def save_components(components: dict, folder: str | Path) -> Path:
    """Write the components in the diffusers layout that SD v1-4 ships in (safetensors)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)
