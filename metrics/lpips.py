"""LPIPS similarity (metric L): ``lpips`` (the ``lpips`` package, AlexNet trunk) and ``lpips-world``.

M(a, b) = 1 − mean LPIPS distance; ``pairwise`` gives 1 − d for every pair. The distance is
``lpips.LPIPS.forward``'s: unit-normalise each layer's channels (``lpips.normalize_tensor``),
square the differences, weight channels with the 1×1 ``NetLinLayer``s, average over space, sum
over layers — computed from one network pass per image (``immunobench.world.judges.lpips_pairwise``).

LPIPS's own input scaling (``lpips.ScalingLayer``: shift −.030, −.088, −.188 and scale .458,
.448, .450 on [-1, 1] values) is ImageNet's mean/std written for [-1, 1] inputs; here it is
declared as ``preprocess`` (ImageNet mean/std on [0, 1] values, the same numbers) and the
package's scaling layer is replaced by the identity so it is applied once. LPIPS compares
images at their own resolution (it was calibrated on 64 px patches): no resize, and both sets
must share one size. AlexNet's ImageNet weights come from the local torch hub cache only.
"""
from __future__ import annotations

import os
import warnings
from typing import Any

import torch

from immunobench.errors import BackboneError
from immunobench.plugins import Similarity, register_metric

from ._preprocess import (
    IMAGENET_MEAN, IMAGENET_STD, Backend, CachedWeightsBackend, Preprocess, torch_hub_cached,
)
from ._world import WorldJudgeBackend

ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"


class _LpipsBackend(Backend):
    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        from immunobench.world.judges import lpips_pairwise

        xa, xb = self.prepare(a), self.prepare(b)
        if xa.shape[-2:] != xb.shape[-2:]:
            raise ValueError(
                f"{self.name}: LPIPS compares images of one size, got {tuple(xa.shape[-2:])} and {tuple(xb.shape[-2:])}; "
                "resize one set first"
            )
        return lpips_pairwise(self.net, xa, xb, self.batch_size)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """LPIPS distance of aligned pairs (a[i], b[i]) through ``lpips.LPIPS.forward`` itself: (N,)."""
        xa, xb = self.prepare(a), self.prepare(b)
        with torch.no_grad():
            return self.net(xa, xb).view(-1).cpu()


@register_metric("lpips")
class Lpips(CachedWeightsBackend, _LpipsBackend, Similarity):
    """1 − LPIPS(alex, v0.1) distance (the lpips package; AlexNet weights from the local torch cache)."""

    version = "1"
    label = "LPIPS (1 − d)"
    higher_is_better = True  # 1 − distance: higher = more alike, as for C and D
    preprocess = Preprocess(
        size=None, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        source="lpips v0.1 ScalingLayer (ImageNet mean/std for [-1, 1] inputs), native resolution",
    )

    missing_hint = (
        f"torchvision AlexNet weights ({os.path.basename(ALEXNET_URL)}) are not in the torch hub cache; "
        "on a machine with network run `python -c \"import lpips; lpips.LPIPS(net='alex')\"` "
        "(or use the offline judges: lpips-world)"
    )

    def cached_weights(self) -> str | None:
        return torch_hub_cached(ALEXNET_URL)

    def _load(self) -> torch.nn.Module:
        import lpips

        path = self.weights_path()  # before anything could reach for the network
        # pnet_rand=True: the package builds AlexNet without downloading; the linear layers are its own files.
        with warnings.catch_warnings():  # lpips calls torchvision's deprecated `pretrained=` argument
            warnings.simplefilter("ignore", UserWarning)
            model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        if not features:
            raise BackboneError(f"lpips: {path} holds no AlexNet 'features.*' tensors")
        for slice_ in (model.net.slice1, model.net.slice2, model.net.slice3, model.net.slice4, model.net.slice5):
            for idx, module in slice_.named_children():  # children keep AlexNet's feature indices
                module.load_state_dict({k.split(".", 1)[1]: v for k, v in features.items() if k.split(".", 1)[0] == idx})
        model.scaling_layer = torch.nn.Identity()  # applied by ``preprocess`` (same numbers)
        return model

    def weights_info(self) -> dict[str, Any]:
        return {"model": "lpips v0.1 alex", "linear_layers": "lpips package weights/v0.1/alex.pth",
                "trunk": os.path.basename(ALEXNET_URL)}


@register_metric("lpips-world")
class WorldLpips(WorldJudgeBackend, _LpipsBackend, Similarity):
    """The world's LPIPS stand-in: LPIPS over the world classifier's trunk, uniform channel weights."""

    version = "1"
    label = "LPIPS (1 − d)"
    higher_is_better = True  # 1 − distance: higher = more alike, as for C and D
    judge_name = "lpips-world"
