"""Offline stand-in judges for the embedded world: ``immunobench world train-judges``.

The papers measure with CLIP ViT-B/32 (C), DINO ViT-S/16 (D), LPIPS-alex (L) and an ImageNet
ResNet50 (accuracy). Their weights cannot be fetched offline, so four small networks trained on
the world's renders play those roles, built from the same libraries and classes:

- ``classifier-world``: a torchvision ``ResNet`` of ``BasicBlock``s (narrower widths), trained
  supervised on every pre-training concept: all objects (10 Imagenette targets, the other
  classes, the personal concepts' categories) and all artists (a random scene in the style).
- ``clip-world``: an ``open_clip.CLIP`` from a tiny config — open_clip's ``ModifiedResNet``
  image tower (OpenAI CLIP's RN family, attention pooling; a ViT tower learned 3–4× slower per
  CPU second on 4800 renders, see ``ClipConfig``) and a causal text transformer of width 32
  over open_clip's default 49408-token BPE tokenizer — trained contrastively on the world's
  image–caption pairs (``immunobench.world.captions``). Captions of one concept are all positives of its images
  (a multi-positive InfoNCE: the world has a few dozen concepts, so a batch always repeats
  them, and plain CLIP would push identical meanings apart). Zero-shot works by prompt.
- ``dino-world``: a timm ``VisionTransformer`` (``vit_small_patch16_224`` with 64 px input,
  8 px patches, width 96, depth 4, 3 heads) trained by DINO self-distillation without labels:
  a student and an EMA teacher, two 64 px global crops and four 32 px local crops, teacher
  centring and sharpening, a weight-normalised prototype head (dropped after training). The
  similarity feature is the CLS token after the final norm, as for the real DINO. A ViT
  trained from scratch for ~8 epochs of 4800 renders is far from converged: measured on
  held-out renders, leave-one-out 10-NN accuracy over the 48 concepts plateaus near 0.32
  (chance 0.02) while the same-vs-different-concept cosine gap is ~0.38. SimCLR (NT-Xent,
  batch 128, same ViT and CPU time) reached a higher 10-NN accuracy (0.44) but a smaller gap
  (0.27); DINO is kept, as the faithful choice with the larger gap. Its similarities lean
  on palette, texture and layout more than the real DINO's do.
- ``lpips-world``: the ``lpips`` package's LPIPS network (``lpips.LPIPS.forward``:
  ``normalize_tensor`` per layer, squared differences, 1×1 ``NetLinLayer`` weights, spatial
  average, sum over layers) over the trunk of ``classifier-world`` (stem and the four residual
  stages, as LPIPS-alex taps AlexNet's five ReLUs; world-trained, as AlexNet is
  ImageNet-trained). Without human judgements the linear weights are not learned: every
  channel weighs 1/(2L), the "lin=False" baseline of LPIPS up to a constant, so the distance
  is the mean over the L layers and all positions of (1 − cosine) of the channel vectors,
  which lies in [0, 1] for post-ReLU features. Similarity = 1 − distance.

All judges see 64 px images normalised with ``WORLD_PREPROCESS`` (``metrics/_preprocess.py``).
Training renders come from world seed ``1000 + seed``, evaluation renders from
``2000 + seed`` (other images of the same concepts), and personal instances are held out, as
in the world's pre-training. Training runs on one thread by default (``JudgesConfig.threads``):
on shared cores a multi-threaded BLAS spin-waits, and a 2-thread step measured 4–20× slower
than a 1-thread one under contention. Weights are stored as fp16 safetensors (loaded as fp32) with a
JSON config each under ``immunobench/weights/judges/``; held-out figures in the JSON are
measured after that fp16 round trip.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import BackboneError, UnknownNameError
from ..metrics._preprocess import WORLD_PREPROCESS, WORLD_SIZE
from ..progress import Progress
from . import captions as world_captions
from .concepts import CONCEPTS, OBJECTS, STYLES, get_concept
from .render import render
from .common import cosine_with_warmup

JUDGES = ("classifier-world", "lpips-world", "clip-world", "dino-world")
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights" / "judges"
TRAIN_COMMAND = "immunobench world train-judges"
FORMAT = "immunobench-judge-1"
TRAIN_SEED_OFFSET = 1000
EVAL_SEED_OFFSET = 2000


def judge_classes() -> list[str]:
    """The concepts the classifier (and CLIP's zero-shot) tell apart: every object, then every artist."""
    return list(OBJECTS) + list(STYLES)


def prompt(concept_id: str) -> str:
    """The zero-shot prompt of a concept (the world's canonical prompt)."""
    return world_captions.prompt(concept_id)


# ---------------------------------------------------------------- data
@dataclass
class JudgeData:
    """Rendered images (N, 3, 64, 64) uint8 with class labels into ``classes`` and captions."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    captions: list[str]
    seed: int
    indices: tuple[int, int]

    def unit(self, idx: torch.Tensor | slice | None = None) -> torch.Tensor:
        x = self.images if idx is None else self.images[idx]
        return x.float().div_(255.0)

    def signed(self, idx: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Images in [-1, 1], the metrics' contract."""
        return self.unit(idx).mul_(2.0).sub_(1.0)

    def describe(self) -> dict[str, Any]:
        return {
            "renderer": "immunobench.world.render.render",
            "world_seed": self.seed,
            "indices": list(self.indices),
            "images": len(self.labels),
            "concepts": len(set(self.labels.tolist())),
            "size": int(self.images.shape[-1]),
            "captions": "immunobench.world.captions.caption (variants)",
        }


def render_judge_data(concepts: Sequence[str] | None = None, per_concept: int = 100, seed: int = 0,
                      start: int = 0, size: int = WORLD_SIZE, progress: Progress | None = None,
                      classes: Sequence[str] | None = None) -> JudgeData:
    """Render ``per_concept`` images (indices ``start …``) of each concept under world seed ``seed``."""
    classes = list(classes or judge_classes())
    concepts = list(concepts or classes)
    index = {c: i for i, c in enumerate(classes)}
    task = (progress or Progress(enabled=False)).task(f"render judge data (seed {seed})", total=len(concepts))
    images, labels, caps = [], [], []
    for cid in concepts:
        cid = get_concept(cid).id
        for i in range(start, start + per_concept):
            images.append(render(cid, i, seed, size))
            labels.append(index[cid])
            caps.append(world_captions.caption(cid, i, seed))
        task.advance()
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return JudgeData(x, torch.tensor(labels), classes, caps, seed, (start, start + per_concept))


# ---------------------------------------------------------------- augmentation (batched, seeded)
def _u(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


def random_resized_crop(x: torch.Tensor, g: torch.Generator, out: int, scale: tuple[float, float],
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: float = 0.5) -> torch.Tensor:
    """Per-sample random crops (area fraction ``scale``), resized to ``out`` px, with h-flips."""
    n = len(x)
    area = _u(n, *scale, g)
    log_r = _u(n, math.log(ratio[0]), math.log(ratio[1]), g)
    r = torch.exp(log_r)
    sx = torch.sqrt(area * r).clamp(max=1.0)
    sy = torch.sqrt(area / r).clamp(max=1.0)
    tx = (1 - sx) * _u(n, -1, 1, g)
    ty = (1 - sy) * _u(n, -1, 1, g)
    sign = torch.where(torch.rand(n, generator=g) < flip, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sx * sign, tx
    theta[:, 1, 1], theta[:, 1, 2] = sy, ty
    grid = F.affine_grid(theta, [n, 3, out, out], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_blur(x: torch.Tensor, g: torch.Generator, p: float, sigma: tuple[float, float]) -> torch.Tensor:
    n, c, h, w = x.shape
    s = torch.where(torch.rand(n, generator=g) < p, _u(n, *sigma, g), torch.full((n,), 1e-3))
    k = torch.arange(-2, 3, dtype=torch.float32)
    ker = torch.exp(-(k[None] ** 2) / (2 * s[:, None] ** 2))
    ker = (ker / ker.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n*c, 5)
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (2, 2, 0, 0), mode="reflect"), ker[:, None, None, :], groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, 2, 2), mode="reflect"), ker[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def colour_jitter(x: torch.Tensor, g: torch.Generator, strength: float) -> torch.Tensor:
    """Brightness, contrast and saturation within ±strength (no hue: palettes define the styles)."""
    n = len(x)
    b = _u(n, 1 - strength, 1 + strength, g).view(n, 1, 1, 1)
    c = _u(n, 1 - strength, 1 + strength, g).view(n, 1, 1, 1)
    s = _u(n, 1 - strength, 1 + strength, g).view(n, 1, 1, 1)
    x = x * b
    m = x.mean((1, 2, 3), keepdim=True)
    x = (x - m) * c + m
    grey = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return (grey + (x - grey) * s).clamp(0, 1)


def augment(x01: torch.Tensor, g: torch.Generator, out: int = WORLD_SIZE, scale: tuple[float, float] = (0.55, 1.0),
            blur_p: float = 0.3, jitter: float = 0.1, noise: float = 0.02) -> torch.Tensor:
    """Crops, flips, blur, mild colour jitter and sensor noise: robustness to generated images."""
    y = random_resized_crop(x01, g, out, scale)
    y = random_blur(y, g, blur_p, (0.3, 1.1))
    y = colour_jitter(y, g, jitter)
    sigma = torch.rand(len(y), generator=g).view(-1, 1, 1, 1) * noise
    return (y + torch.randn(y.shape, generator=g) * sigma).clamp(0, 1)


def normalise(x01: torch.Tensor) -> torch.Tensor:
    """[0, 1] images → what the world judges see (``WORLD_PREPROCESS`` mean/std)."""
    mean = torch.tensor(WORLD_PREPROCESS.mean).view(1, 3, 1, 1)
    std = torch.tensor(WORLD_PREPROCESS.std).view(1, 3, 1, 1)
    return (x01 - mean) / std



# ---------------------------------------------------------------- classifier-world
def _resnet_classes():
    from torchvision.models.resnet import BasicBlock, ResNet

    class WorldResNet(ResNet):
        """torchvision's ``ResNet`` with ``BasicBlock``s and configurable (narrower) stage widths."""

        def __init__(self, widths: Sequence[int] = (16, 32, 64, 128), layers: Sequence[int] = (2, 2, 2, 2),
                     num_classes: int = 48):
            nn.Module.__init__(self)
            self._norm_layer = nn.BatchNorm2d
            self.inplanes = widths[0]
            self.dilation = 1
            self.groups = 1
            self.base_width = 64
            self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(widths[0])
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.layer1 = self._make_layer(BasicBlock, widths[0], layers[0])
            self.layer2 = self._make_layer(BasicBlock, widths[1], layers[1], stride=2)
            self.layer3 = self._make_layer(BasicBlock, widths[2], layers[2], stride=2)
            self.layer4 = self._make_layer(BasicBlock, widths[3], layers[3], stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(widths[3], num_classes)
            for m in self.modules():  # ResNet's own initialisation
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)

    return WorldResNet


@dataclass(frozen=True)
class ClassifierConfig:
    widths: tuple[int, ...] = (16, 32, 64, 128)
    layers: tuple[int, ...] = (2, 2, 2, 2)
    steps: int = 1000
    batch: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    warmup: int = 100


def build_classifier(arch: dict[str, Any]) -> nn.Module:
    return _resnet_classes()(widths=tuple(arch["widths"]), layers=tuple(arch["layers"]), num_classes=arch["num_classes"])


def train_classifier(data: JudgeData, cfg: ClassifierConfig = ClassifierConfig(), seed: int = 0,
                     progress: Progress | None = None) -> tuple[nn.Module, dict]:
    torch.manual_seed(seed)
    arch = {"class": "torchvision.models.ResNet(BasicBlock) subclass", "widths": list(cfg.widths),
            "layers": list(cfg.layers), "num_classes": len(data.classes)}
    model = build_classifier(arch)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(seed * 7919 + 1)
    task = (progress or Progress()).task("judge classifier-world", total=cfg.steps)
    model.train()
    losses = []
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = cfg.lr * cosine_with_warmup(step, cfg.steps, cfg.warmup)
        idx = torch.randint(0, len(data.labels), (cfg.batch,), generator=g)
        x = normalise(augment(data.unit(idx), g))
        loss = F.cross_entropy(model(x), data.labels[idx], label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        task.advance(loss=losses[-1])
    model.eval()
    return model, {"architecture": arch, "training": {**asdict(cfg), "loss_first_last": _first_last(losses)}}


@torch.no_grad()
def classify(model: nn.Module, images01: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat([model(normalise(images01[i : i + batch])) for i in range(0, len(images01), batch)])


# ---------------------------------------------------------------- lpips-world
def _lpips_class():
    import lpips

    class WorldLPIPS(lpips.LPIPS):
        """``lpips.LPIPS`` (its ``forward``) over the world classifier's trunk, uniform channel weights."""

        def __init__(self, trunk: nn.Module, chns: Sequence[int]):
            nn.Module.__init__(self)
            self.pnet_type, self.pnet_tune, self.pnet_rand = "world-resnet", False, False
            self.spatial, self.lpips, self.version = False, True, "0.1"
            # Inputs arrive normalised by WORLD_PREPROCESS; LPIPS's ImageNet ScalingLayer does not apply.
            self.scaling_layer = nn.Identity()
            self.net = trunk
            self.chns = list(chns)
            self.L = len(self.chns)
            self.lins = nn.ModuleList([lpips.NetLinLayer(c, use_dropout=False) for c in self.chns])
            for lin in self.lins:
                nn.init.constant_(lin.model[-1].weight, 1.0 / (2 * self.L))
            self.eval()

    return WorldLPIPS


class ResNetTrunk(nn.Module):
    """A ResNet's stem and stages; ``forward`` returns the five LPIPS taps (like ``lpips.pn.alexnet``)."""

    def __init__(self, resnet: nn.Module):
        super().__init__()
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, copy.deepcopy(getattr(resnet, name)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h0 = self.relu(self.bn1(self.conv1(x)))
        h1 = self.layer1(self.maxpool(h0))
        h2 = self.layer2(h1)
        h3 = self.layer3(h2)
        return [h0, h1, h2, h3, self.layer4(h3)]


def build_lpips(arch: dict[str, Any], classifier: nn.Module | None = None) -> nn.Module:
    resnet = classifier if classifier is not None else build_classifier(arch["trunk_of"])
    widths = arch["trunk_of"]["widths"]
    return _lpips_class()(ResNetTrunk(resnet), [widths[0], *widths]).eval()


def lpips_from_classifier(classifier: nn.Module, classifier_arch: dict) -> tuple[nn.Module, dict]:
    arch = {"class": "lpips.LPIPS (forward) over ResNetTrunk of classifier-world",
            "trunk_of": classifier_arch, "taps": ["relu(bn1(conv1))", "layer1", "layer2", "layer3", "layer4"],
            "channel_weights": "uniform 1/(2L) per channel (LPIPS lin=False baseline, no human judgements)"}
    return build_lpips(arch, classifier), {"architecture": arch, "training": {
        "trunk": "classifier-world (supervised on the world's concepts)", "linear_layers": "not trained"}}


# ---------------------------------------------------------------- clip-world
@dataclass(frozen=True)
class ClipConfig:
    embed_dim: int = 128
    # A tuple of stage depths builds open_clip's ModifiedResNet image tower (OpenAI CLIP's RN
    # family); an int builds its VisionTransformer with ``patch_size``. Measured on the world
    # (4800 renders, 1 shared core): ViT (width 128, 4 layers, 8 px patches) reached 91%
    # held-out zero-shot after 800 steps / 590 s; ModifiedResNet (width 16, one block per
    # stage) 93.5% after 300 steps / 125 s and 98% after 700 steps / 300 s.
    vision_layers: int | tuple[int, ...] = (1, 1, 1, 1)
    vision_width: int = 16
    vision_head_width: int = 32
    patch_size: int = 8
    text_width: int = 32
    text_heads: int = 2
    text_layers: int = 2
    context_length: int = 77
    steps: int = 700
    batch: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 100
    prompt_share: float = 0.3  # share of captions replaced by the concept's canonical prompt


def clip_arch(cfg: ClipConfig = ClipConfig()) -> dict[str, Any]:
    if isinstance(cfg.vision_layers, int):
        vision = {"image_size": WORLD_SIZE, "patch_size": cfg.patch_size, "width": cfg.vision_width,
                  "layers": cfg.vision_layers, "head_width": cfg.vision_head_width, "mlp_ratio": 4.0}
    else:
        vision = {"image_size": WORLD_SIZE, "layers": list(cfg.vision_layers), "width": cfg.vision_width,
                  "head_width": cfg.vision_head_width}
    return {
        "class": "open_clip.CLIP",
        "image_tower": "ModifiedResNet" if not isinstance(cfg.vision_layers, int) else "VisionTransformer",
        "embed_dim": cfg.embed_dim,
        "vision_cfg": vision,
        "text_cfg": {"context_length": cfg.context_length, "vocab_size": 49408, "width": cfg.text_width,
                     "heads": cfg.text_heads, "layers": cfg.text_layers},
        "tokenizer": "open_clip.tokenizer.tokenize (SimpleTokenizer, CLIP BPE, 49408 tokens)",
    }


def build_clip(arch: dict[str, Any]) -> nn.Module:
    import open_clip

    return open_clip.CLIP(embed_dim=arch["embed_dim"], vision_cfg=dict(arch["vision_cfg"]), text_cfg=dict(arch["text_cfg"]))


def tokenize(texts: Sequence[str], context_length: int = 77) -> torch.Tensor:
    import open_clip

    return open_clip.tokenizer.tokenize(list(texts), context_length=context_length)


def train_clip(data: JudgeData, cfg: ClipConfig = ClipConfig(), seed: int = 0,
               progress: Progress | None = None, arch: dict[str, Any] | None = None) -> tuple[nn.Module, dict]:
    torch.manual_seed(seed)
    arch = arch or clip_arch(cfg)
    model = build_clip(arch)
    # Every caption an image can get: its own caption, or its concept's canonical prompt.
    texts = list(dict.fromkeys([*data.captions, *(prompt(c) for c in data.classes)]))
    text_id = {t: i for i, t in enumerate(texts)}
    text_class = torch.empty(len(texts), dtype=torch.long)
    for t, y in zip(data.captions, data.labels.tolist()):
        text_class[text_id[t]] = y
    for y, c in enumerate(data.classes):
        text_class[text_id[prompt(c)]] = y
    tokens = tokenize(texts, cfg.context_length)
    own = torch.tensor([text_id[t] for t in data.captions])
    canonical = torch.tensor([text_id[prompt(data.classes[y])] for y in data.labels.tolist()])
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        # no decay on gains, biases, embeddings (most token rows are never seen) and the temperature
        (no_decay if p.ndim < 2 or "embedding" in name or "logit_scale" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    g = torch.Generator().manual_seed(seed * 7919 + 2)
    task = (progress or Progress()).task("judge clip-world", total=cfg.steps)
    model.train()
    losses = []
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = cfg.lr * cosine_with_warmup(step, cfg.steps, cfg.warmup)
        idx = torch.randint(0, len(data.labels), (cfg.batch,), generator=g)
        use_prompt = torch.rand(cfg.batch, generator=g) < cfg.prompt_share
        tid = torch.where(use_prompt, canonical[idx], own[idx])
        uniq = torch.unique(tid)
        img = F.normalize(model.encode_image(normalise(augment(data.unit(idx), g))), dim=-1)
        txt = F.normalize(model.encode_text(tokens[uniq]), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T  # (B, K)
        pos = (data.labels[idx][:, None] == text_class[uniq][None, :]).float()
        loss_i = -(pos / pos.sum(1, keepdim=True) * F.log_softmax(logits, 1)).sum(1).mean()
        loss_t = -(pos.T / pos.T.sum(1, keepdim=True) * F.log_softmax(logits.T, 1)).sum(1).mean()
        loss = 0.5 * (loss_i + loss_t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        task.advance(loss=losses[-1])
    model.eval()
    return model, {"architecture": arch, "training": {
        **asdict(cfg), "loss": "multi-positive symmetric InfoNCE (captions of one concept are positives)",
        "distinct_captions": len(texts), "loss_first_last": _first_last(losses)}}


@torch.no_grad()
def clip_image_features(model: nn.Module, images01: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return F.normalize(torch.cat([model.encode_image(normalise(images01[i : i + batch]))
                                  for i in range(0, len(images01), batch)]), dim=-1)


@torch.no_grad()
def clip_text_features(model: nn.Module, texts: Sequence[str], context_length: int = 77) -> torch.Tensor:
    return F.normalize(model.encode_text(tokenize(texts, context_length)), dim=-1)


# ---------------------------------------------------------------- dino-world
@dataclass(frozen=True)
class DinoConfig:
    embed_dim: int = 96
    depth: int = 4
    num_heads: int = 3
    patch_size: int = 8
    out_dim: int = 512
    head_hidden: int = 256
    head_bottleneck: int = 64
    steps: int = 600
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.04
    warmup: int = 60
    local_crops: int = 4
    local_size: int = 32
    global_scale: tuple[float, float] = (0.35, 1.0)
    local_scale: tuple[float, float] = (0.08, 0.35)
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    center_momentum: float = 0.9
    ema_start: float = 0.98
    clip_grad: float = 3.0


def dino_arch(cfg: DinoConfig = DinoConfig()) -> dict[str, Any]:
    return {"class": "timm VisionTransformer", "model_name": "vit_small_patch16_224",
            "kwargs": {"img_size": WORLD_SIZE, "patch_size": cfg.patch_size, "embed_dim": cfg.embed_dim,
                       "depth": cfg.depth, "num_heads": cfg.num_heads, "num_classes": 0,
                       "dynamic_img_size": True},
            "feature": "CLS token after the final norm (forward with num_classes=0)"}


def build_dino(arch: dict[str, Any]) -> nn.Module:
    import timm

    return timm.create_model(arch["model_name"], pretrained=False, **arch["kwargs"])


class DinoHead(nn.Module):
    """DINO's projection head: MLP → L2-normalised bottleneck → weight-normalised prototypes (g = 1)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int, bottleneck: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.prototypes = nn.Parameter(torch.randn(out_dim, bottleneck) * 0.02)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1) @ F.normalize(self.prototypes, dim=-1).T


def train_dino(data: JudgeData, cfg: DinoConfig = DinoConfig(), seed: int = 0, progress: Progress | None = None,
               monitor: Callable[[nn.Module], dict] | None = None, monitor_every: int = 0) -> tuple[nn.Module, dict]:
    """DINO self-distillation on the renders; labels are never read (``monitor`` may, for reports)."""
    torch.manual_seed(seed)
    arch = dino_arch(cfg)
    student = nn.ModuleDict({"backbone": build_dino(arch),
                             "head": DinoHead(cfg.embed_dim, cfg.out_dim, cfg.head_hidden, cfg.head_bottleneck)})
    teacher = copy.deepcopy(student).requires_grad_(False)
    decay = [p for n, p in student.named_parameters() if p.ndim >= 2 and "pos_embed" not in n and "token" not in n]
    rest = [p for n, p in student.named_parameters() if not (p.ndim >= 2 and "pos_embed" not in n and "token" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=cfg.lr)
    center = torch.zeros(1, cfg.out_dim)
    g = torch.Generator().manual_seed(seed * 7919 + 3)
    task = (progress or Progress()).task("judge dino-world", total=cfg.steps)
    losses, monitored = [], []
    student.train()
    teacher.train()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = cfg.lr * cosine_with_warmup(step, cfg.steps, cfg.warmup)
        momentum = 1 - (1 - cfg.ema_start) * (math.cos(math.pi * step / cfg.steps) + 1) / 2
        idx = torch.randint(0, len(data.labels), (cfg.batch,), generator=g)
        x = data.unit(idx)
        globals_ = [normalise(augment(x, g, out=WORLD_SIZE, scale=cfg.global_scale, blur_p=0.5, jitter=0.25))
                    for _ in range(2)]
        locals_ = [normalise(augment(x, g, out=cfg.local_size, scale=cfg.local_scale, blur_p=0.3, jitter=0.25))
                   for _ in range(cfg.local_crops)]
        with torch.no_grad():
            t_out = teacher["head"](teacher["backbone"](torch.cat(globals_)))
            t_prob = F.softmax((t_out - center) / cfg.teacher_temp, dim=-1).chunk(2)
        s_out = torch.cat([student["head"](student["backbone"](torch.cat(globals_))),
                           student["head"](student["backbone"](torch.cat(locals_)))])
        s_logp = F.log_softmax(s_out / cfg.student_temp, dim=-1).chunk(2 + cfg.local_crops)
        loss, terms = 0.0, 0
        for iq, q in enumerate(t_prob):
            for v, lp in enumerate(s_logp):
                if v != iq:
                    loss = loss + (-q * lp).sum(-1).mean()
                    terms += 1
        loss = loss / terms
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(student.parameters(), cfg.clip_grad)
        opt.step()
        with torch.no_grad():
            for ps, pt in zip(student.parameters(), teacher.parameters()):
                pt.mul_(momentum).add_(ps.detach(), alpha=1 - momentum)
            center = center * cfg.center_momentum + t_out.mean(0, keepdim=True) * (1 - cfg.center_momentum)
        losses.append(loss.item())
        task.advance(loss=losses[-1])
        if monitor and monitor_every and (step + 1) % monitor_every == 0:
            monitored.append({"step": step + 1, **monitor(teacher["backbone"].eval())})
            teacher["backbone"].train()
    backbone = teacher["backbone"].eval()  # the teacher, as DINO evaluates
    return backbone, {"architecture": arch, "training": {
        **asdict(cfg), "method": "DINO self-distillation (student/EMA teacher, centring, multi-crop), no labels",
        "kept": "teacher backbone (head dropped)", "loss_first_last": _first_last(losses), "monitor": monitored}}


@torch.no_grad()
def dino_features(model: nn.Module, images01: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return F.normalize(torch.cat([model(normalise(images01[i : i + batch])) for i in range(0, len(images01), batch)]), dim=-1)


# ---------------------------------------------------------------- evaluation
def group_of(concept_id: str) -> str:
    c = CONCEPTS[concept_id]
    if c.kind == "style":
        return "target artists" if c.is_target else "other artists"
    if c.id.startswith("category-"):
        return "categories"
    return "target objects" if c.is_target else "other objects"


def accuracy_report(pred: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> dict[str, float]:
    ok = (pred == labels).float()
    out = {"overall": round(float(ok.mean()), 4)}
    groups = np.array([group_of(classes[y]) for y in labels.tolist()])
    for name in ("target objects", "target artists", "other objects", "categories", "other artists"):
        m = torch.from_numpy(groups == name)
        if m.any():
            out[name] = round(float(ok[m].mean()), 4)
    return out


def similarity_gap(sim: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Mean same-concept similarity (pairs of different images) vs different-concept similarity."""
    same = labels[:, None] == labels[None, :]
    off = ~torch.eye(len(labels), dtype=torch.bool)
    s, d = float(sim[same & off].mean()), float(sim[~same].mean())
    return {"same": round(s, 4), "different": round(d, 4), "gap": round(s - d, 4)}


def knn_accuracy(feats: torch.Tensor, labels: torch.Tensor, k: int = 10) -> float:
    """Leave-one-out k-NN accuracy on (already normalised) features: a report, not a training signal."""
    sim = feats @ feats.T
    sim.fill_diagonal_(-2)
    nn_idx = sim.topk(k, dim=1).indices
    votes = F.one_hot(labels[nn_idx], int(labels.max()) + 1).sum(1)
    return round(float((votes.argmax(1) == labels).float().mean()), 4)


def lpips_embed(model: nn.Module, x: torch.Tensor, batch: int = 64) -> list[torch.Tensor]:
    """Per layer, the features that turn LPIPS into a Euclidean distance: (N, C·H·W) each.

    LPIPS per layer is mean_hw Σ_c w_c (â_c − b̂_c)², with â, b̂ unit-normalised over channels
    (``lpips.normalize_tensor``) and w the non-negative 1×1 ``NetLinLayer`` weights. Scaling
    â by √w_c / √(HW) and flattening makes it ‖ea − eb‖², so every pair of two sets comes from
    one network pass per image.
    """
    import lpips

    out: list[list[torch.Tensor]] = [[] for _ in range(model.L)]
    with torch.no_grad():
        for i in range(0, len(x), batch):
            feats = model.net(x[i : i + batch])
            for kk in range(model.L):
                w = model.lins[kk].model[-1].weight.view(1, -1, 1, 1)
                if (w < 0).any():
                    raise ValueError("LPIPS linear weights must be non-negative")
                f = feats[kk]
                e = lpips.normalize_tensor(f) * w.sqrt() / math.sqrt(f.shape[-2] * f.shape[-1])
                out[kk].append(e.flatten(1).double().cpu())
    return [torch.cat(o) for o in out]


def lpips_pairwise_from(ea: list[torch.Tensor], eb: list[torch.Tensor]) -> torch.Tensor:
    """1 − LPIPS distance for every pair, from ``lpips_embed`` features."""
    dist = sum(torch.cdist(a, b).pow(2) for a, b in zip(ea, eb))
    return (1.0 - dist).float().clamp(max=1.0)


def lpips_pairwise(model: nn.Module, a: torch.Tensor, b: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """1 − LPIPS distance for every pair (|a| × |b|) of preprocessed images of one size."""
    return lpips_pairwise_from(lpips_embed(model, a, batch), lpips_embed(model, b, batch))


# ---------------------------------------------------------------- save / load
@dataclass
class Judge:
    """A loaded world judge: the network (eval mode, fp32, frozen) and its JSON config."""

    name: str
    model: nn.Module
    config: dict[str, Any]

    @property
    def classes(self) -> list[str]:
        return list(self.config.get("classes", []))


def _builder(name: str) -> Callable[[dict], nn.Module]:
    return {"classifier-world": build_classifier, "lpips-world": build_lpips, "clip-world": build_clip,
            "dino-world": build_dino}[name]


def _check_name(name: str) -> None:
    if name not in JUDGES:
        raise UnknownNameError(f"unknown world judge {name!r}. Known judges: {', '.join(JUDGES)}")


def save_judge(name: str, model: nn.Module, config: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``<name>.safetensors`` (fp16 floats) and ``<name>.json``; returns the weights path."""
    from safetensors.torch import save_file

    _check_name(name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: (v.detach().half() if v.is_floating_point() else v.detach()).contiguous().clone()
             for k, v in model.state_dict().items()}
    path = out_dir / f"{name}.safetensors"
    tmp = path.with_suffix(".safetensors.tmp")
    save_file(state, str(tmp), metadata={"format": FORMAT, "judge": name})
    tmp.chmod(0o644)  # a shipped file, readable like the rest of the package
    tmp.replace(path)
    config = {**config, "judge": name, "format": FORMAT, "weights": path.name,
              "weights_sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "weights_bytes": path.stat().st_size,
              "storage_dtype": "float16 (loaded as float32)"}
    _write_json(out_dir / f"{name}.json", config)
    return path


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


def _same_preprocess(a: dict | None, b: dict) -> bool:
    """Equal in every number (the free-text ``source`` may differ)."""
    if not isinstance(a, dict):
        return False
    return {k: v for k, v in a.items() if k != "source"} == {k: v for k, v in b.items() if k != "source"}


def judge_paths(name: str, weights_dir: str | Path | None = None) -> tuple[Path, Path]:
    d = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    return d / f"{name}.safetensors", d / f"{name}.json"


def load_judge(name: str, weights_dir: str | Path | None = None) -> Judge:
    """Load a trained world judge; ``BackboneError`` (one line naming the fix) when its files are missing."""
    from safetensors.torch import load_file

    _check_name(name)
    weights, cfg_path = judge_paths(name, weights_dir)
    if not weights.is_file() or not cfg_path.is_file():
        missing = weights if not weights.is_file() else cfg_path
        raise BackboneError(f"world judge {name!r} is not built: {missing} is missing; build it with `{TRAIN_COMMAND}`")
    config = json.loads(cfg_path.read_text())
    if config.get("format") != FORMAT:
        raise BackboneError(f"{cfg_path}: format {config.get('format')!r}, expected {FORMAT!r}; rebuild with `{TRAIN_COMMAND}`")
    if not _same_preprocess(config.get("preprocess"), WORLD_PREPROCESS.describe()):
        raise BackboneError(f"{cfg_path}: trained with another preprocessing than WORLD_PREPROCESS; rebuild with `{TRAIN_COMMAND}`")
    model = _builder(name)(config["architecture"])
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(weights)).items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise BackboneError(f"{weights}: does not match its config ({first}); rebuild with `{TRAIN_COMMAND}`") from exc
    model.eval().requires_grad_(False)
    return Judge(name, model, config)


# ---------------------------------------------------------------- the whole build
@dataclass(frozen=True)
class JudgesConfig:
    per_concept: int = 100
    eval_per_concept: int = 20
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    dino: DinoConfig = field(default_factory=DinoConfig)
    threads: int | None = 1  # torch threads while training (None: leave as is)


def evaluate_judge(judge: Judge, data: JudgeData) -> dict[str, Any]:
    """Held-out figures of one loaded judge on ``data`` (renders it never saw)."""
    x01 = data.unit()
    if judge.name == "classifier-world":
        pred = classify(judge.model, x01).argmax(1)
        return {"accuracy": accuracy_report(pred, data.labels, data.classes)}
    if judge.name == "clip-world":
        img = clip_image_features(judge.model, x01)
        txt = clip_text_features(judge.model, [prompt(c) for c in data.classes],
                                 judge.config["architecture"]["text_cfg"]["context_length"])
        pred = (img @ txt.T).argmax(1)
        return {"zero_shot_accuracy": accuracy_report(pred, data.labels, data.classes),
                "zero_shot_prompts": "immunobench.world.captions.prompt",
                "similarity": similarity_gap(img @ img.T, data.labels)}
    if judge.name == "dino-world":
        f = dino_features(judge.model, x01)
        return {"similarity": similarity_gap(f @ f.T, data.labels), "knn10_accuracy": knn_accuracy(f, data.labels)}
    x = normalise(x01)
    return {"similarity": similarity_gap(lpips_pairwise(judge.model, x, x), data.labels)}


def train_judges(out_dir: str | Path | None = None, seed: int = 0, progress: Progress | None = None,
                 judges: Sequence[str] = JUDGES, cfg: JudgesConfig = JudgesConfig()) -> dict[str, Any]:
    """Train the world judges, write ``<judge>.safetensors`` + ``<judge>.json`` to ``out_dir``, return the report.

    ``lpips-world`` reuses the classifier trained in the same call (or the one in ``out_dir``).
    """
    progress = progress or Progress()
    out_dir = Path(out_dir) if out_dir is not None else WEIGHTS_DIR
    for name in judges:
        _check_name(name)
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _train_judges(out_dir, seed, progress, judges, cfg)
    finally:
        torch.set_num_threads(threads)


def _train_judges(out_dir: Path, seed: int, progress: Progress, judges: Sequence[str], cfg: JudgesConfig) -> dict[str, Any]:
    started = time.time()
    train = render_judge_data(per_concept=cfg.per_concept, seed=TRAIN_SEED_OFFSET + seed, progress=progress)
    held = render_judge_data(per_concept=cfg.eval_per_concept, seed=EVAL_SEED_OFFSET + seed, progress=progress)
    render_seconds = round(time.time() - started, 1)
    common = {"classes": train.classes, "preprocess": WORLD_PREPROCESS.describe(), "seed": seed,
              "training_data": {**train.describe(), "held_out": "personal instances (as in pre-training)",
                                "render_seconds": render_seconds},
              "held_out_data": held.describe()}
    report: dict[str, Any] = {}
    classifier, classifier_arch = None, None
    for name in [j for j in JUDGES if j in judges]:
        t0 = time.time()
        if name == "classifier-world":
            model, info = train_classifier(train, cfg.classifier, seed, progress)
            classifier, classifier_arch = model, info["architecture"]
        elif name == "lpips-world":
            if classifier is None:
                loaded = load_judge("classifier-world", out_dir)
                classifier, classifier_arch = loaded.model, loaded.config["architecture"]
            model, info = lpips_from_classifier(classifier, classifier_arch)
        elif name == "clip-world":
            model, info = train_clip(train, cfg.clip, seed, progress)
        else:
            model, info = train_dino(train, cfg.dino, seed, progress)
        info["training"]["seconds"] = round(time.time() - t0, 1)
        save_judge(name, model, {**common, **info}, out_dir)
        judge = load_judge(name, out_dir)  # measure what ships: the fp16 round trip
        figures = evaluate_judge(judge, held)
        config = {**judge.config, "held_out": figures}
        _write_json(out_dir / f"{name}.json", config)
        report[name] = {"seconds": info["training"]["seconds"], "bytes": config["weights_bytes"], **figures}
    report["total_seconds"] = round(time.time() - started, 1)
    write_readme(out_dir)
    return report


def write_readme(out_dir: str | Path | None = None) -> Path:
    """Summarise the judges' JSON configs (architecture, data, held-out figures) in ``README.md``."""
    out_dir = Path(out_dir) if out_dir is not None else WEIGHTS_DIR
    lines = ["# World judges", "",
             "Offline stand-ins for CLIP, DINO, LPIPS and the ResNet50 classifier, trained on the world's renders",
             f"by `immunobench.world.judges.train_judges` (`{TRAIN_COMMAND}`). Each `<judge>.json` holds the",
             "architecture, classes, preprocessing, training data and held-out figures; the weights are fp16",
             "safetensors, loaded as fp32. Held-out renders come from a world seed the judges never trained on.", "",
             "| judge | size (KB) | training (s) | held-out figures |", "|---|---|---|---|"]
    for name in JUDGES:
        path = out_dir / f"{name}.json"
        if not path.is_file():
            continue
        cfg = json.loads(path.read_text())
        held = cfg.get("held_out", {})
        bits = []
        if "accuracy" in held:
            bits.append("top-1 " + ", ".join(f"{k} {v:.3f}" for k, v in held["accuracy"].items()))
        if "zero_shot_accuracy" in held:
            bits.append("zero-shot " + ", ".join(f"{k} {v:.3f}" for k, v in held["zero_shot_accuracy"].items()))
        if "similarity" in held:
            sim = held["similarity"]
            bits.append(f"same-concept {sim['same']:.3f} vs different {sim['different']:.3f} (gap {sim['gap']:.3f})")
        if "knn10_accuracy" in held:
            bits.append(f"10-NN accuracy {held['knn10_accuracy']:.3f}")
        lines.append(f"| {name} | {cfg.get('weights_bytes', 0) / 1024:.0f} | {cfg.get('training', {}).get('seconds', '')} "
                     f"| {'; '.join(bits)} |")
    path = out_dir / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _first_last(losses: list[float], n: int = 50) -> list[float]:
    if not losses:
        return [float("nan"), float("nan")]
    return [round(float(np.mean(losses[:n])), 4), round(float(np.mean(losses[-n:])), 4)]
