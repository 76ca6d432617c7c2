"""Render concepts of the world: ``render(concept_id, index, seed, size)`` → (H, W, 3) uint8.

Every image is a pure function of (concept, index, seed) and size; its layout (what is drawn
where) does not depend on size, so a 32 px render is a smaller version of the 64 px one. Images
are drawn at ``SUPERSAMPLE``× and downsampled with Lanczos, which anti-aliases edges.

- objects and categories: a photo of a random member, with pose, colour and background varied;
- instances: reference view ``index`` of one fixed member in its one home setting;
- styles: a random scene (one of the artist's habitual subjects, or a random non-target object)
  repainted in the artist's style; ``render_object_in_style`` paints a given object.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from . import objects as obj
from .concepts import CATEGORIES, OTHER_OBJECTS, get_concept
from .draw import Pen, blur_mask, new_layer, to_u8
from .rng import stream
from .scenes import SCENES, paint_scene, photo_background
from .styles import STYLE_SPECS, anonymous_style, apply_style

SUPERSAMPLE = 2
DEFAULT_SIZE = 64
N_REFERENCE_VIEWS = 6
# Objects an artwork may show when the artist paints "anything": never a target object, so that
# style training data does not teach the targets of the object task.
ART_SUBJECTS: tuple[str, ...] = tuple(OTHER_OBJECTS) + tuple(CATEGORIES)


@dataclass(frozen=True)
class Plan:
    """What one (concept, index, seed) image shows; captions read it so they match the image."""

    concept_id: str
    index: int
    seed: int
    kind: str  # "photo" | "view" | "artwork" | "object-in-style"
    object_id: str | None = None  # the class drawn (an instance's category), if any
    style_id: str | None = None
    scene: str | None = None  # the art scene template, or "object"
    context: str | None = None  # the photo background
    backdrop: str | None = None  # artworks of an object: the art scene it stands in


def plan(concept_id: str, index: int, seed: int = 0) -> Plan:
    """Decide what the image (concept_id, index, seed) shows, without drawing it."""
    c = get_concept(concept_id)
    _check_index(index)
    if c.kind == "object":
        rng = stream("layout", c.id, index, seed)
        spec = obj.SPECS[c.id]
        return Plan(c.id, index, seed, "photo", object_id=c.id, context=_pick_context(spec, rng))
    if c.kind == "instance":
        inst = obj.INSTANCES[c.id]
        return Plan(c.id, index, seed, "view", object_id=inst.category, context=inst.context)
    rng = stream("art", c.id, index, seed)
    scene = _weighted_pick(STYLE_SPECS[c.id].scenes, rng)
    if scene != "object":
        return Plan(c.id, index, seed, "artwork", style_id=c.id, scene=scene)
    subject = ART_SUBJECTS[int(rng.integers(len(ART_SUBJECTS)))]
    return Plan(c.id, index, seed, "artwork", object_id=subject, style_id=c.id, scene=scene, backdrop=_backdrop(c.id, rng))


def render(concept_id: str, index: int, seed: int = 0, size: int = DEFAULT_SIZE) -> np.ndarray:
    """The image (size, size, 3) uint8 of ``concept_id`` number ``index`` under ``seed``."""
    p = plan(concept_id, index, seed)
    px = _working_px(size)
    if p.kind == "photo":
        img = _object_photo(p.object_id, p.concept_id, index, seed, px)
    elif p.kind == "view":
        img = _instance_view(p.concept_id, index, seed, px)
    else:
        tex = stream("texture", p.concept_id, index, seed)
        if p.scene == "object":
            content = _object_in_scene(p.object_id, p.backdrop, p.concept_id, index, seed, px)
        else:
            content = paint_scene(p.scene, stream("scene", p.concept_id, index, seed), px)
        img = apply_style(content, p.style_id, stream("brush", p.concept_id, index, seed), tex)
    return _downsample(img, size)


def render_anonymous_artwork(index: int, seed: int = 0, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Artwork ``index`` by an unnamed painter: its own random style (``anonymous_style``), scene and subject.

    Not a concept: no judge has a class for it and no caption names its painter.
    """
    _check_index(index)
    key = "anonymous-art"
    rng = stream("art", key, index, seed)
    style = anonymous_style(rng, (*SCENES, "object"))
    scene = _weighted_pick(style.scenes, rng)
    px = _working_px(size)
    if scene == "object":
        subject = ART_SUBJECTS[int(rng.integers(len(ART_SUBJECTS)))]
        backdrop = str(rng.choice([s for s in SCENES if s not in ("portrait", "abstract")]))
        content = _object_in_scene(subject, backdrop, key, index, seed, px)
    else:
        content = paint_scene(scene, stream("scene", key, index, seed), px)
    img = apply_style(content, style, stream("brush", key, index, seed), stream("texture", key, index, seed))
    return _downsample(img, size)


def render_object_in_style(object_id: str, artist_id: str, index: int, seed: int = 0, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Object ``object_id`` (an object, category or instance) painted by ``artist_id``."""
    o, a = get_concept(object_id), get_concept(artist_id)
    if a.kind != "style":
        raise ValueError(f"{artist_id!r} is a {a.kind}, not a style; pass an artist id such as 'claude-monet'")
    if o.kind == "style":
        raise ValueError(f"{object_id!r} is a style; pass an object, category or instance id")
    _check_index(index)
    px = _working_px(size)
    key = f"{o.id}@{a.id}"
    if o.kind == "instance":
        content = _instance_view(o.id, index, seed, px, finish=False)
    else:
        content = _object_photo(o.id, key, index, seed, px, finish=False)
    img = apply_style(content, a.id, stream("brush", key, index, seed), stream("texture", key, index, seed))
    return _downsample(img, size)


def render_batch(items: Sequence[tuple[str, int]] | Iterable[tuple[str, int]], seed: int = 0, size: int = DEFAULT_SIZE):
    """Renders of (concept_id, index) pairs as a float tensor (N, 3, H, W) in [-1, 1]."""
    import torch

    arr = np.stack([render(cid, i, seed, size) for cid, i in items])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def reference_views(instance_id: str, seed: int = 0, size: int = DEFAULT_SIZE, n: int = N_REFERENCE_VIEWS) -> list[np.ndarray]:
    """The ``n`` reference photos of a personal instance (what a personalization attack gets)."""
    if get_concept(instance_id).kind != "instance":
        raise ValueError(f"{instance_id!r} is not a personal instance")
    return [render(instance_id, i, seed, size) for i in range(n)]


# ---------------------------------------------------------------- internals
def _check_index(index: int) -> None:
    if not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be a non-negative int, got {index!r}")


def _working_px(size: int) -> int:
    if not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    return int(size) * SUPERSAMPLE


def _downsample(img: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(to_u8(img)).resize((size, size), Image.LANCZOS))


def _weighted_pick(weights: dict[str, float], rng: np.random.Generator) -> str:
    """One key of ``weights``, drawn with probability proportional to its value."""
    names = list(weights)
    w = np.array(list(weights.values()), float)
    return names[int(rng.choice(len(names), p=w / w.sum()))]


def _pick_context(spec: obj.ObjectSpec, rng: np.random.Generator) -> str:
    return _weighted_pick(spec.contexts, rng)


@functools.lru_cache(maxsize=8)
def _grid(px: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:px, 0:px].astype(np.float32)
    return yy / px, xx / px


def _backdrop(style_id: str, rng: np.random.Generator) -> str:
    """One of the artist's habitual scenes (not "object"), as a backdrop for an object."""
    habits = {k: v for k, v in STYLE_SPECS[style_id].scenes.items() if k not in ("object", "portrait", "abstract")}
    return _weighted_pick(habits or {"landscape": 1.0}, rng)


def _object_in_scene(object_id: str, backdrop: str, key: str, index: int, seed: int, px: int) -> np.ndarray:
    """A random member of ``object_id`` standing in the foreground of an art scene."""
    spec = obj.SPECS[object_id]
    rng = stream("layout", key, index, seed)
    params = spec.sample(stream("member", key, index, seed))
    bg = paint_scene(backdrop, stream("scene", key, index, seed), px)
    s = float(rng.uniform(0.55, 0.8))
    angle = math.radians(float(rng.uniform(-spec.max_angle, spec.max_angle)))
    flip = spec.flip and bool(rng.random() < 0.5)
    cx = 0.5 + float(rng.uniform(-1, 1)) * (1 - s) * 0.35
    cy = float(rng.uniform(0.9, 0.97)) - 0.475 * s if spec.grounded else 0.5 + float(rng.uniform(-0.05, 0.1))
    return _place(spec, params, bg, px, cx, cy, s, angle, flip)


def _object_photo(object_id: str, key: str, index: int, seed: int, px: int, finish: bool = True) -> np.ndarray:
    """A photo of a random member of ``object_id``; ``key`` names the random stream."""
    spec = obj.SPECS[object_id]
    rng = stream("layout", key, index, seed)
    context = _pick_context(spec, rng)
    params = spec.sample(stream("member", key, index, seed))
    bg, floor = photo_background(context, rng, px)
    s = float(rng.uniform(*spec.scale))
    angle = math.radians(float(rng.uniform(-spec.max_angle, spec.max_angle)))
    flip = spec.flip and bool(rng.random() < 0.5)
    cx = 0.5 + float(rng.uniform(-1, 1)) * (1 - s) * 0.3
    cy = floor - 0.475 * s if spec.grounded else 0.5 + float(rng.uniform(-1, 1)) * (1 - s) * 0.3
    img = _place(spec, params, bg, px, cx, cy, s, angle, flip)
    return _camera(img, rng, stream("texture", key, index, seed)) if finish else img


def _instance_view(instance_id: str, index: int, seed: int, px: int, finish: bool = True) -> np.ndarray:
    inst = obj.INSTANCES[instance_id]
    spec = obj.SPECS[inst.category]
    # One home: the background is fixed per instance; only the view's pose and light vary.
    bg, floor = photo_background(inst.context, stream("home", instance_id, inst.background_seed), px)
    rng = stream("view", instance_id, index, seed)
    s = inst.scale * float(rng.uniform(0.9, 1.06))
    angle = math.radians(float(rng.uniform(-6, 6)))
    cx = 0.5 + float(rng.uniform(-0.08, 0.08))
    cy = floor - 0.475 * s if spec.grounded else 0.5 + float(rng.uniform(-0.05, 0.05))
    img = _place(spec, inst.params, bg, px, cx, cy, s, angle, False)
    return _camera(img, rng, stream("texture", instance_id, index, seed), strength=0.5) if finish else img


def _place(spec: obj.ObjectSpec, params: dict, bg: np.ndarray, px: int, cx: float, cy: float, s: float,
           angle: float, flip: bool) -> np.ndarray:
    layer = new_layer(px)
    spec.draw(Pen(layer, cx, cy, s, angle, flip), params)
    rgba = np.asarray(layer, np.float32) / 255.0
    alpha = rgba[..., 3]
    yy, xx = _grid(px)
    # Light from the upper left and darkened rims give flat shapes some volume.
    light = 1.0 + 0.22 * np.clip((-(xx - cx) * 0.6 - (yy - cy) * 0.8) / (0.5 * s), -1, 1)
    rim = 0.72 + 0.28 * np.clip(blur_mask(alpha, px * 0.025) * 1.6 - 0.3, 0, 1)
    rgb = rgba[..., :3] * (light * rim)[..., None]
    if spec.grounded:
        shadow = Image.new("L", (px, px), 0)
        floor_y = (cy + 0.475 * s) * px
        rx, ry = 0.42 * s * px, 0.035 * px
        ImageDraw.Draw(shadow).ellipse([cx * px - rx, floor_y - ry, cx * px + rx, floor_y + ry], fill=255)
        bg = bg * (1 - 0.4 * blur_mask(np.asarray(shadow, np.float32) / 255.0, px * 0.02))[..., None]
    a = alpha[..., None]
    return bg * (1 - a) + np.clip(rgb, 0, 1) * a


def _camera(img: np.ndarray, rng: np.random.Generator, tex: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Photographic variation: exposure, white balance, contrast, vignette, sensor noise."""
    exposure = 1 + strength * float(rng.uniform(-0.12, 0.12))
    balance = 1 + strength * rng.uniform(-0.05, 0.05, 3).astype(np.float32)
    contrast = 1 + strength * float(rng.uniform(-0.15, 0.15))
    img = (img - 0.5) * contrast + 0.5
    img = img * exposure * balance
    px = img.shape[0]
    yy, xx = _grid(px)
    vig = float(rng.uniform(0.0, 0.3)) * strength
    img = img * (1 - vig * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * 2)[..., None]
    img = img + tex.standard_normal(img.shape, dtype=np.float32) * np.float32(0.012)
    return np.clip(img, 0, 1)


# ---------------------------------------------------------------- previews
def contact_sheet(concept_ids: Sequence[str], n_per_concept: int = 8, size: int = DEFAULT_SIZE, path: str | Path = "contact_sheet.png",
                  seed: int = 0, labels: bool = True, pairs: Sequence[tuple[str, str]] | None = None) -> Path:
    """A PNG grid: one row per concept (``n_per_concept`` renders), labelled on the left.

    ``pairs`` adds rows of (object_id, artist_id) painted with ``render_object_in_style``.
    """
    rows: list[tuple[str, list[np.ndarray]]] = [(cid, [render(cid, i, seed, size) for i in range(n_per_concept)]) for cid in concept_ids]
    for o, a in pairs or ():
        rows.append((f"{o}@{a}", [render_object_in_style(o, a, i, seed, size) for i in range(n_per_concept)]))
    label_w = 130 if labels else 0
    pad = 2
    sheet = Image.new("RGB", (label_w + n_per_concept * (size + pad), len(rows) * (size + pad)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (name, imgs) in enumerate(rows):
        y = r * (size + pad)
        if labels:
            draw.text((3, y + size // 2 - 5), name[:22], fill=(0, 0, 0))
        for k, im in enumerate(imgs):
            sheet.paste(Image.fromarray(im), (label_w + k * (size + pad), y))
    path = Path(path)
    sheet.save(path)
    return path
