"""The concept catalogue of the embedded world.

Three kinds of concept:
- ``style``: an artist; a palette + brush texture + composition habits applicable to any scene.
- ``object``: a class with a recognisable silhouette and varied pose/colour/background. This
  covers the 10 Imagenette targets, other classes for preserve sets, and the *categories* of the
  personal concepts (ids ``category-<noun>``), which pre-training sees as ordinary classes.
- ``instance``: one particular member of a category (fixed colours, marks, proportions) that
  pre-training never sees; it plays a CustomConcept101 folder and has a few reference views.

Ids are the task cards' names; ``get_concept`` also resolves the short names of the MIMA paper's
Table 6 ("VanGogh", "Mckernan", "springer", "horn") and prompt names ("Claude Monet").
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal

from ..cards import category_key
from ..errors import UnknownNameError

Kind = Literal["style", "object", "instance"]


@dataclass(frozen=True)
class Concept:
    """One concept of the world.

    ``name`` is the phrase used in prompts. ``is_target`` marks the concepts of the papers'
    Table 6 (the things defenses protect); the rest exist for preserve/regularization sets.
    ``in_pretraining`` is False only for personal instances.
    """

    id: str
    name: str
    kind: Kind
    is_target: bool = False
    category: str | None = None  # instances: the category noun used in prompts ("houseplant")
    category_id: str | None = None  # instances: the id of the category concept
    cc101_folder: str | None = None  # instances: the CustomConcept101 folder this one plays
    aliases: tuple[str, ...] = ()

    @property
    def in_pretraining(self) -> bool:
        return self.kind != "instance"


def _style(id_: str, name: str, target: bool, *aliases: str) -> Concept:
    return Concept(id_, name, "style", is_target=target, aliases=aliases)


def _object(id_: str, name: str, target: bool, *aliases: str) -> Concept:
    return Concept(id_, name, "object", is_target=target, aliases=aliases)


_TARGET_ARTISTS = [
    _style("claude-monet", "Claude Monet", True, "Monet"),
    _style("kirbi-fagan", "Kirbi Fagan", True, "Fagan"),
    _style("kelly-mckernan", "Kelly McKernan", True, "Mckernan"),
    _style("van-gogh", "Van Gogh", True, "VanGogh", "Vincent van Gogh"),
    _style("kilian-eng", "Kilian Eng", True, "Eng"),
    _style("thomas-kinkade", "Thomas Kinkade", True, "Kinkade"),
    _style("pablo-picasso", "Pablo Picasso", True, "Picasso"),
    _style("tyler-edlin", "Tyler Edlin", True, "Edlin"),
]
_OTHER_ARTISTS = [
    _style("hokusai", "Hokusai", False, "Katsushika Hokusai"),
    _style("edvard-munch", "Edvard Munch", False, "Munch"),
    _style("andy-warhol", "Andy Warhol", False, "Warhol"),
    _style("paul-klee", "Paul Klee", False, "Klee"),
    _style("georges-seurat", "Georges Seurat", False, "Seurat"),
]
_TARGET_OBJECTS = [
    _object("cassette-player", "cassette player", True),
    _object("chain-saw", "chain saw", True, "chainsaw"),
    _object("church", "church", True),
    _object("gas-pump", "gas pump", True),
    _object("tench", "tench", True),
    _object("garbage-truck", "garbage truck", True),
    _object("english-springer", "English springer", True, "springer"),
    _object("golf-ball", "golf ball", True),
    _object("parachute", "parachute", True),
    _object("french-horn", "French horn", True, "horn"),
]
_OTHER_OBJECTS = [
    _object(slug.replace(" ", "-"), slug, False)
    for slug in (
        "apple", "sailboat", "tree", "house", "umbrella", "bicycle",
        "clock", "kite", "mug", "table lamp", "airplane", "mushroom",
    )
]

# (instance id, category noun, CustomConcept101 folder)
_PERSONAL = [
    ("purse", "purse", "luggage_purse1"),
    ("plant", "houseplant", "decoritems_houseplant1"),
    ("woodenpot", "wooden pot", "decoritems_woodenpot"),
    ("sofa", "sofa", "furniture_sofa1"),
    ("castle", "castle", "scene_castle"),
    ("motorbike", "motorbike", "transport_motorbike1"),
    ("lighthouse", "lighthouse", "scene_lighthouse"),
    ("glasses", "glasses", "wearable_glasses"),
    ("guitar", "guitar", "instrument_music1"),
    ("car", "car", "transport_car1"),
    ("chair", "chair", "furniture_chair1"),
    ("cat", "cat", "pet_cat1"),
    ("flower", "flower", "flower_1"),
]


# The concept id of a personal-concept category ("wooden pot" → "category-wooden-pot"): the cards'
# name for it, so results, judges and the world agree.
category_id = category_key


_CATEGORIES = [Concept(category_id(noun), noun, "object") for _, noun, _ in _PERSONAL]
_INSTANCES = [
    Concept(
        iid, iid, "instance", is_target=True, category=noun, category_id=category_id(noun),
        cc101_folder=folder, aliases=(folder,),
    )
    for iid, noun, folder in _PERSONAL
]

CONCEPTS: dict[str, Concept] = {
    c.id: c
    for c in (*_TARGET_ARTISTS, *_OTHER_ARTISTS, *_TARGET_OBJECTS, *_OTHER_OBJECTS, *_CATEGORIES, *_INSTANCES)
}

TARGET_ARTISTS: list[str] = [c.id for c in _TARGET_ARTISTS]
OTHER_ARTISTS: list[str] = [c.id for c in _OTHER_ARTISTS]
STYLES: list[str] = TARGET_ARTISTS + OTHER_ARTISTS
TARGET_OBJECTS: list[str] = [c.id for c in _TARGET_OBJECTS]
OTHER_OBJECTS: list[str] = [c.id for c in _OTHER_OBJECTS]
CATEGORIES: list[str] = [c.id for c in _CATEGORIES]
OBJECTS: list[str] = TARGET_OBJECTS + OTHER_OBJECTS + CATEGORIES
INSTANCES: list[str] = [c.id for c in _INSTANCES]
# What a text-to-image model of this world is pre-trained on (everything but the instances).
PRETRAINING: list[str] = STYLES + OBJECTS


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def _lookup_table() -> dict[str, str]:
    table: dict[str, str] = {}
    # Later entries never override earlier ones: ids win over aliases, aliases over names.
    for c in CONCEPTS.values():
        table.setdefault(_norm(c.id), c.id)
    for c in CONCEPTS.values():
        for a in c.aliases:
            table.setdefault(_norm(a), c.id)
    for c in CONCEPTS.values():
        if c.kind == "style" or (c.kind == "object" and not c.id.startswith("category-")):
            table.setdefault(_norm(c.name), c.id)
    return table


_LOOKUP = _lookup_table()


def get_concept(name: str) -> Concept:
    """The concept with this id (or Table-6 short name, alias, or prompt name).

    Raises ``UnknownNameError`` (a ``KeyError``) that suggests the closest ids.
    """
    if name in CONCEPTS:
        return CONCEPTS[name]
    hit = _LOOKUP.get(_norm(name))
    if hit is not None:
        return CONCEPTS[hit]
    close = difflib.get_close_matches(name.lower(), list(CONCEPTS), n=4, cutoff=0.5)
    close += [_LOOKUP[k] for k in difflib.get_close_matches(_norm(name), list(_LOOKUP), n=3, cutoff=0.6)]
    hint = f" Did you mean: {', '.join(dict.fromkeys(close))}?" if close else ""
    raise UnknownNameError(
        f"unknown world concept {name!r}.{hint} Known: {len(STYLES)} styles, {len(OBJECTS)} objects, "
        f"{len(INSTANCES)} instances (see immunobench.world.CONCEPTS)"
    )


def resolve(name: str) -> str:
    """The canonical id for ``name`` (see ``get_concept``)."""
    return get_concept(name).id


def concepts_of(kind: Kind | None = None, target: bool | None = None) -> list[str]:
    """Ids filtered by kind and/or target flag, in catalogue order."""
    return [
        c.id for c in CONCEPTS.values()
        if (kind is None or c.kind == kind) and (target is None or c.is_target == target)
    ]
