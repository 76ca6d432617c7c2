"""Declared preprocessing for the similarity and classifier backends.

Every backend takes images as float tensors (N, 3, H, W) in [-1, 1] — the range diffusion
models decode to — and applies its *own* backbone's preprocessing, declared as a
``Preprocess`` value so that it is visible, tested and written into run manifests:

1. check the input contract (``check_images``): a value outside [-1.01, 1.01] is an error
   (uint8 or [0, 255] images), a non-constant batch with no negative value draws a
   ``RangeWarning`` (probably [0, 1] images handed to a [-1, 1] contract);
2. map [-1, 1] → [0, 1];
3. resize the shorter side to ``resize`` with ``interpolation`` (antialiased, like PIL) and
   centre-crop ``size`` × ``size`` — ``size=None`` keeps the native resolution;
4. clamp to [0, 1] (bicubic overshoot; PIL clamps by storing uint8) and normalise with the
   backbone's ``mean`` / ``std``, which are given for [0, 1] inputs.

The public IMMA evaluation resized images to 64 px, fed [0, 1] images to a normalisation meant
for [-1, 1] inputs and gave DINO CLIP's statistics; declaring the numbers per backbone and
testing them (``tests/test_judges.py``) is what keeps that class of mistake out.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from immunobench.errors import BackboneError

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RANGE_TOLERANCE = 0.01


class RangeWarning(UserWarning):
    """Images that look like [0, 1] data were given where [-1, 1] is the contract."""


def check_images(images: torch.Tensor, who: str = "metric") -> torch.Tensor:
    """Validate the [-1, 1] float contract; returns the images as float32.

    Raises ``ValueError`` for a wrong shape or dtype, or values outside [-1.01, 1.01]; warns
    (``RangeWarning``) when a non-constant batch has no negative value at all.
    """
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{who}: images must be a torch.Tensor (N, 3, H, W) in [-1, 1], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{who}: images must have shape (N, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(
            f"{who}: images must be floats in [-1, 1], got dtype {images.dtype}; convert uint8 with x / 127.5 - 1"
        )
    if images.numel() == 0:
        return images.float()
    lo, hi = float(images.min()), float(images.max())
    if lo != lo or hi != hi:  # NaN
        raise ValueError(f"{who}: images contain NaN")
    if lo < -1 - RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise ValueError(
            f"{who}: images must be in [-1, 1], got values in [{lo:.3g}, {hi:.3g}]; "
            "convert [0, 1] images with x * 2 - 1 and [0, 255] images with x / 127.5 - 1"
        )
    if lo >= 0.0 and hi > lo:
        warnings.warn(
            f"{who}: no image value is negative (range [{lo:.3g}, {hi:.3g}]); the contract is [-1, 1] — "
            "were [0, 1] images passed? convert them with x * 2 - 1",
            RangeWarning,
            stacklevel=3,
        )
    return images.float()


@dataclass(frozen=True)
class Preprocess:
    """One backbone's preprocessing, from [-1, 1] images to the tensor its network sees."""

    size: int | None  # side of the square crop the network sees; None = native resolution
    resize: int | None = None  # shorter side before the centre crop (None = ``size``)
    interpolation: str = "bicubic"  # "bicubic" | "bilinear"
    antialias: bool = True
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # for [0, 1] values
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    input_range: tuple[float, float] = (-1.0, 1.0)
    source: str = ""  # where the numbers come from

    def __post_init__(self) -> None:
        if self.interpolation not in ("bicubic", "bilinear"):
            raise ValueError(f"interpolation must be 'bicubic' or 'bilinear', got {self.interpolation!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need three values each, std > 0")

    def normalised(self, value01: float) -> torch.Tensor:
        """What a uniform image of ``value01`` (in [0, 1]) becomes: (3,) tensor."""
        return (value01 - torch.tensor(self.mean)) / torch.tensor(self.std)

    def __call__(self, images: torch.Tensor, who: str = "metric") -> torch.Tensor:
        x = check_images(images, who)
        x = (x + 1.0) * 0.5
        x = self.resize_crop(x)
        x = x.clamp_(0.0, 1.0)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def resize_crop(self, x: torch.Tensor) -> torch.Tensor:
        if self.size is None:
            return x.clone()
        short = self.resize or self.size
        h, w = x.shape[-2:]
        if min(h, w) != short:
            scale = short / min(h, w)
            nh, nw = max(short, round(h * scale)), max(short, round(w * scale))
            x = F.interpolate(x, size=(nh, nw), mode=self.interpolation, align_corners=False, antialias=self.antialias)
        else:
            x = x.clone()
        h, w = x.shape[-2:]
        top, left = (h - self.size) // 2, (w - self.size) // 2
        return x[..., top : top + self.size, left : left + self.size]

    def describe(self) -> dict[str, Any]:
        """A JSON-able description for run manifests."""
        d = asdict(self)
        d["mean"], d["std"], d["input_range"] = list(self.mean), list(self.std), list(self.input_range)
        return d


def batches(x: torch.Tensor, n: int):
    for i in range(0, len(x), n):
        yield x[i : i + n]


# The world judges see 64 px renders; mean/std are the channel statistics of the world's
# pre-training renders (576 images, measured once and rounded), for [0, 1] values.
WORLD_SIZE = 64
WORLD_MEAN = (0.48, 0.51, 0.50)
WORLD_STD = (0.23, 0.22, 0.26)
WORLD_PREPROCESS = Preprocess(
    size=WORLD_SIZE, interpolation="bilinear", mean=WORLD_MEAN, std=WORLD_STD,
    source="immunobench world judges: channel statistics of the world's renders",
)


# ---------------------------------------------------------------- shared backend plumbing
def hf_cached(repo_id: str, filenames: tuple[str, ...]) -> str | None:
    """The local path of the first of ``filenames`` cached for ``repo_id``; never touches the network."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    for name in filenames:
        hit = try_to_load_from_cache(repo_id, name)
        if isinstance(hit, str):
            return hit
    return None


def torch_hub_cached(url: str) -> str | None:
    """Where ``torch.hub.load_state_dict_from_url(url)`` would have cached ``url``, if that file exists."""
    import os

    import torch.hub

    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
    return path if os.path.isfile(path) else None


class Backend:
    """Lazy model plumbing shared by the similarity and classifier backends.

    Subclasses declare ``preprocess`` and implement ``_load()``; the network is built on first
    use, never at import or registration.
    """

    preprocess: Preprocess
    batch_size: int = 64

    def __init__(self, device: str | torch.device = "cpu", batch_size: int | None = None):
        self.device = torch.device(device)
        if batch_size is not None:
            self.batch_size = batch_size
        self._net = None

    @property
    def name(self) -> str:
        return getattr(type(self), "registered_name", type(self).__name__)

    @property
    def net(self) -> torch.nn.Module:
        if self._net is None:
            self._net = self._load().to(self.device).eval().requires_grad_(False)
        return self._net

    def _load(self) -> torch.nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Check the [-1, 1] contract and apply this backbone's declared preprocessing."""
        return self.preprocess(images, who=self.name).to(self.device)

    def weights_info(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        """What a run manifest records about this backend."""
        return {"name": self.name, "version": getattr(self, "version", ""),
                "preprocess": self.preprocess.describe(), "weights": self.weights_info()}


class CachedWeightsBackend(Backend):
    """A real backend whose weights come from an explicit file or the local cache — never a download.

    Subclasses give ``cached_weights()`` (where their library's cache keeps the file, or None) and
    ``missing_hint`` (what to run on a connected machine).
    """

    missing_hint: str = ""

    def __init__(self, device: str | torch.device = "cpu", batch_size: int | None = None, weights: str | None = None):
        super().__init__(device, batch_size)
        self.weights = weights

    def cached_weights(self) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def weights_path(self) -> str:
        """The checkpoint to load, or ``BackboneError`` — checked before the library could try to download."""
        if self.weights:
            if not os.path.isfile(self.weights):
                raise BackboneError(f"{self.name}: weights file {self.weights} does not exist")
            return self.weights
        path = self.cached_weights()
        if path is None:
            raise BackboneError(f"{self.name}: {self.missing_hint}")
        return path


class EmbeddingSimilarity(Backend):
    """M(a, b) = cosine similarity of L2-normalised embeddings, for every pair."""

    def _embed(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings (N, D) of [-1, 1] images."""
        x = self.prepare(images)
        out = [self._embed(chunk) for chunk in batches(x, self.batch_size)]
        return F.normalize(torch.cat(out).float(), dim=-1).cpu()

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ea, eb = self.embed(a), self.embed(b)
        return (ea @ eb.T).clamp(-1.0, 1.0)
