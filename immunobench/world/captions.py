"""Captions in the papers' templates, deterministic like the images they describe.

- styles: "an artwork of {artist}" (MIMA/UCE), plus variants ("a painting by {artist}",
  "{subject} in the style of {artist}") that name the scene or object the image shows;
- objects: "a photo of a {object}" (variants "an image of a {object}", ...);
- instances: "a photo of {identifier} {category}" (DreamBooth / Custom Diffusion), identifier "sks".

``prompt`` gives the one canonical prompt per concept, as used for evaluation.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from ..cards import with_article
from .concepts import OTHER_ARTISTS, OTHER_OBJECTS, get_concept
from .render import DEFAULT_SIZE, Plan, plan, render
from .rng import stream
from .scenes import SCENE_WORDS

IDENTIFIER = "sks"

STYLE_TEMPLATES = ("an artwork of {artist}", "a painting by {artist}", "an artwork by {artist}",
                   "a picture in the style of {artist}")
STYLE_SUBJECT_TEMPLATES = ("{subject} in the style of {artist}", "a painting of {subject} by {artist}")
OBJECT_TEMPLATES = ("a photo of {object}", "an image of {object}", "a picture of {object}")
INSTANCE_TEMPLATES = ("a photo of {identifier} {category}", "an image of {identifier} {category}",
                      "a picture of {identifier} {category}")


def prompt(concept_id: str, identifier: str = IDENTIFIER) -> str:
    """The canonical prompt of a concept: the first template of its kind."""
    c = get_concept(concept_id)
    if c.kind == "style":
        return STYLE_TEMPLATES[0].format(artist=c.name)
    if c.kind == "object":
        return OBJECT_TEMPLATES[0].format(object=with_article(c.name))
    return INSTANCE_TEMPLATES[0].format(identifier=identifier, category=c.category)


def caption(concept_id: str, index: int, seed: int = 0, identifier: str = IDENTIFIER, variants: bool = True) -> str:
    """The caption of image (concept_id, index, seed); ``variants=False`` gives ``prompt``."""
    if not variants:
        return prompt(concept_id, identifier)
    p = plan(concept_id, index, seed)
    return _describe(p, stream("caption", p.concept_id, index, seed), identifier)


def style_object_caption(object_id: str, artist_id: str, index: int = 0, seed: int = 0, identifier: str = IDENTIFIER) -> str:
    """A caption for ``render_object_in_style(object_id, artist_id, ...)``."""
    o, a = get_concept(object_id), get_concept(artist_id)
    subject = f"{identifier} {o.category}" if o.kind == "instance" else with_article(o.name)
    rng = stream("caption", f"{o.id}@{a.id}", index, seed)
    return STYLE_SUBJECT_TEMPLATES[int(rng.integers(len(STYLE_SUBJECT_TEMPLATES)))].format(subject=subject, artist=a.name)


def training_pairs(concept_ids: Sequence[str], n_per_concept: int, seed: int = 0, size: int = DEFAULT_SIZE,
                   identifier: str = IDENTIFIER, start: int = 0) -> Iterator[tuple[np.ndarray, str, str]]:
    """(image, caption, concept_id) for indices ``start .. start + n_per_concept - 1`` of each concept."""
    for cid in concept_ids:
        canonical = get_concept(cid).id
        for i in range(start, start + n_per_concept):
            yield render(canonical, i, seed, size), caption(canonical, i, seed, identifier), canonical


def _describe(p: Plan, rng: np.random.Generator, identifier: str) -> str:
    c = get_concept(p.concept_id)
    if c.kind == "object":
        return OBJECT_TEMPLATES[int(rng.integers(len(OBJECT_TEMPLATES)))].format(object=with_article(c.name))
    if c.kind == "instance":
        return INSTANCE_TEMPLATES[int(rng.integers(len(INSTANCE_TEMPLATES)))].format(identifier=identifier, category=c.category)
    # Half of the artworks that show a nameable subject say so; the rest keep the papers' bare prompt.
    if rng.random() < 0.5:
        subject = with_article(get_concept(p.object_id).name) if p.scene == "object" else SCENE_WORDS[p.scene]
        return STYLE_SUBJECT_TEMPLATES[int(rng.integers(len(STYLE_SUBJECT_TEMPLATES)))].format(subject=subject, artist=c.name)
    return STYLE_TEMPLATES[int(rng.integers(len(STYLE_TEMPLATES)))].format(artist=c.name)


def generic_pool() -> tuple[list[str], str]:
    """tiny-sd's generic caption pool (``BackboneSpec.captions``): the world's caption language over the
    artists and objects no card scores → (captions, source line); ``immunobench.captions`` filters it."""
    artists = [get_concept(a).name for a in OTHER_ARTISTS]
    objects = [with_article(get_concept(o).name) for o in OTHER_OBJECTS]
    out = [t.format(artist=a) for a in artists for t in STYLE_TEMPLATES]
    out += [t.format(subject=s, artist=a) for a in artists for s in (*objects, *SCENE_WORDS.values())
            for t in STYLE_SUBJECT_TEMPLATES]
    out += [t.format(object=o) for o in objects for t in OBJECT_TEMPLATES]
    return out, "world captions of concepts no card scores (immunobench.captions)"
