"""Generic caption sets for a defense's regularization rows (MIMA's and Custom Diffusion's C_reg).

The released MIMA code samples 200 LAION captions from the hub on every inner step; Custom
Diffusion reads the first 200 lines of ``regularization_captions.txt``. Neither is reproducible
offline, and a caption that names a scored concept would let a defense regularize on what it is
scored on. So the project writes its own set, disjoint from every card's concepts:

- ``world`` backbones (tiny-sd): the embedded world's own caption language over the concepts that
  no card scores — "an artwork of Hokusai", "a sailboat in the style of Paul Klee", "a photo of
  an apple" (every distinct caption there is: 296);
- ``real`` backbones (Stable Diffusion): templates over COCO category names that no card uses.

The order is a fixed shuffle, so every prefix (``captions[:200]``) is a balanced sample.
"""
from __future__ import annotations

import hashlib
import random
import re
from typing import Iterable

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


def _with_article(noun: str) -> str:
    from .cards import with_article

    return with_article(noun)


def _world_captions() -> list[str]:
    from .world.captions import OBJECT_TEMPLATES, STYLE_SUBJECT_TEMPLATES, STYLE_TEMPLATES
    from .world.concepts import OTHER_ARTISTS, OTHER_OBJECTS, get_concept
    from .world.scenes import SCENE_WORDS

    artists = [get_concept(a).name for a in OTHER_ARTISTS]
    objects = [_with_article(get_concept(o).name) for o in OTHER_OBJECTS]
    out = [t.format(artist=a) for a in artists for t in STYLE_TEMPLATES]
    out += [t.format(subject=s, artist=a) for a in artists for s in (*objects, *SCENE_WORDS.values())
            for t in STYLE_SUBJECT_TEMPLATES]
    out += [t.format(object=o) for o in objects for t in OBJECT_TEMPLATES]
    return out


def _real_captions() -> list[str]:
    return [t.format(a=_with_article(c)) for c in COCO_CATEGORIES for t in CAPTION_TEMPLATES]


def scored_names(cards: Iterable) -> set[str]:
    """Every name (and instance category) that a card scores or prompts with."""
    names = set()
    for card in cards:
        for concept in card.concepts.values():
            names.update(n for n in (concept.name, concept.category) if n)
    return names


def generic_captions(family: str, exclude: Iterable[str]) -> tuple[list[str], str]:
    """The caption set of a metric family (``world`` or ``real``) with every caption that names one
    of ``exclude`` (whole words, any case) removed → (captions in their fixed order, source line)."""
    if family == "world":
        pool, source = _world_captions(), "world captions of concepts no card scores (immunobench.captions)"
    elif family == "real":
        pool, source = _real_captions(), "templates over COCO categories no card uses (immunobench.captions)"
    else:
        raise ValueError(f"no caption set for metric family {family!r}")
    words = [re.compile(rf"\b{re.escape(n.lower())}\b") for n in exclude]
    kept = sorted({c for c in pool if not any(w.search(c.lower()) for w in words)})
    random.Random(0).shuffle(kept)  # prefixes are balanced samples
    digest = hashlib.sha1("\n".join(kept).encode()).hexdigest()[:12]
    return kept, f"{source}; {len(kept)} captions, sha1 {digest}"


def all_card_names() -> set[str]:
    """Names of every built-in card's concepts (what no generic caption may mention)."""
    from .cards import card_paths, load_card

    return scored_names(load_card(p) for p in card_paths().values())
