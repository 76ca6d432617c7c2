"""Generic caption sets for a defense's regularization rows (MIMA's and Custom Diffusion's C_reg).

The released MIMA code samples 200 LAION captions from the hub on every inner step; Custom
Diffusion reads the first 200 lines of ``regularization_captions.txt``. Neither is reproducible
offline, and a caption that names a scored concept would let a defense regularize on what it is
scored on. So the project writes its own set, disjoint from every card's scored concepts. Its pool
is the one the backbone's spec names (``BackboneSpec.captions``, a ``module:function``):

- tiny-sd: the embedded world's own caption language over the concepts that no card scores —
  "an artwork of Hokusai", "a sailboat in the style of Paul Klee", "a photo of an apple" (every
  distinct caption there is: 296; ``immunobench.world.captions.generic_pool``);
- Stable Diffusion (the default): templates over COCO category names that no card uses (``coco_pool``).

The order is a fixed shuffle, so every prefix (``captions[:200]``) is a balanced sample.
"""
from __future__ import annotations

import hashlib
import importlib
import random
import re
from typing import Iterable

from .cards import card_paths, load_card, with_article
from .errors import BackboneError

# COCO's 80 categories: common, photographable, and none a re-learning target.
COCO_CATEGORIES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)
CAPTION_TEMPLATES = (
    "a photo of {a}", "a close-up photo of {a}", "a blurry photo of {a}", "a black and white photo of {a}",
    "a painting of {a}", "a drawing of {a}", "a sketch of {a}", "{a} on a table", "{a} in the street",
    "{a} in a room", "a picture of {a} outdoors", "a bright photo of {a}", "a cropped photo of {a}",
    "{a} on the grass", "a photo of {a} at night",
)


def coco_pool() -> tuple[list[str], str]:
    """Stable Diffusion's pool: the caption templates over COCO's categories → (captions, source line)."""
    captions = [t.format(a=with_article(c)) for c in COCO_CATEGORIES for t in CAPTION_TEMPLATES]
    return captions, "templates over COCO categories no card uses (immunobench.captions)"


def scored_names(cards: Iterable) -> set[str]:
    """Every name (and instance category) of the concepts a card's groups score (``ConceptGroup.scored``)."""
    names = set()
    for card in cards:
        for concept in {c for g in card.groups for c in card.group(g).scored}:
            names.update(n for n in (card.concepts[concept].name, card.concepts[concept].category) if n)
    return names


def generic_captions(spec, exclude: Iterable[str]) -> tuple[list[str], str]:
    """The caption pool a backbone's spec names (``BackboneSpec.captions``) with every caption that
    names one of ``exclude`` (whole words, any case) removed → (captions in their fixed order, source line)."""
    module, _, function = spec.captions.partition(":")
    try:
        pool, source = getattr(importlib.import_module(module), function)()
    except (ImportError, AttributeError) as exc:
        raise BackboneError(f"backbone {spec.source}: caption source {spec.captions!r} cannot be loaded: {exc}") from exc
    words = [re.compile(rf"\b{re.escape(n.lower())}\b") for n in exclude]
    kept = sorted({c for c in pool if not any(w.search(c.lower()) for w in words)})
    random.Random(0).shuffle(kept)  # prefixes are balanced samples
    digest = hashlib.sha1("\n".join(kept).encode()).hexdigest()[:12]
    return kept, f"{source}; {len(kept)} captions, sha1 {digest}"


def all_card_names() -> set[str]:
    """Names of every built-in card's scored concepts (what no generic caption may mention)."""
    return scored_names(load_card(p) for p in card_paths().values())
