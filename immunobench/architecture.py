"""Build SD-architecture models of any size from the same diffusers/transformers classes as SD v1-4.

Used for the tiny random models the tests load through the real loader, and as the starting
point of the embedded ``tiny-sd``. Saved folders have SD's layout (``model_index.json`` +
``unet/ vae/ text_encoder/ tokenizer/ scheduler/``).
"""
from __future__ import annotations

import contextlib
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


# Stable Diffusion v1-4's exact component configs, as in the config.json files of
# huggingface.co/CompVis/stable-diffusion-v1-4 (unet/, vae/, text_encoder/ = openai/clip-vit-large-patch14's
# text tower). No weights: ``sd_v1_4_components`` builds them randomly initialised (shapes, FLOPs and memory
# are those of SD v1-4; its outputs are not). UNet 859,520,964 parameters; text encoder 123,060,480.
SD_V1_4_UNET = {
    "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False, "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
SD_V1_4_VAE = {
    "act_fn": "silu", "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3,
    "sample_size": 512, "up_block_types": ["UpDecoderBlock2D"] * 4,
}
SD_V1_4_TEXT_ENCODER = {  # bos/eos/pad 0/2/1 as shipped; transformers then finds EOS by argmax(input_ids)
    "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2, "hidden_act": "quick_gelu",
    "hidden_size": 768, "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": 3072,
    "layer_norm_eps": 1e-05, "max_position_embeddings": 77, "num_attention_heads": 12, "num_hidden_layers": 12,
    "pad_token_id": 1, "projection_dim": 768, "vocab_size": 49408,
}
# scheduler/scheduler_config.json ships a PNDMScheduler; the project trains on DDPM and samples with DDIM
# over the same schedule (build_components' scheduler has these values).
SD_V1_4_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                    "beta_schedule": "scaled_linear", "clip_sample": False, "steps_offset": 1,
                    "prediction_type": "epsilon"}


def sd_v1_4_components(seed: int = 0, device: str | torch.device | None = None) -> dict:
    """SD v1-4's UNet, VAE and text encoder at their exact configs, randomly initialised, with SD's tokenizer
    and DDPM schedule. ``device="meta"`` builds shapes only (no memory, instant): for counting."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        unet = UNet2DConditionModel.from_config(SD_V1_4_UNET)
        vae = AutoencoderKL.from_config(SD_V1_4_VAE)
        text_encoder = CLIPTextModel(CLIPTextConfig(**SD_V1_4_TEXT_ENCODER))
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": clip_tokenizer_from_open_clip(),
            "scheduler": DDPMScheduler(**SD_V1_4_SCHEDULE)}
