"""The embedded concept world: procedural renderer, captions, datasets.

A synthetic but structurally faithful stand-in for the papers' data (DESIGN.md, "The concept
world"): 8 target artists (+ others) as styles applicable to any scene, 10 Imagenette target
objects (+ others) as posed silhouettes, and 13 CustomConcept101 personal instances, each one
fixed member of a category that pre-training sees only as random members.

    >>> from immunobench.world import render, caption
    >>> render("van-gogh", 0).shape
    (64, 64, 3)
    >>> caption("church", 0, variants=False)
    'a photo of a church'

Only numpy and Pillow are imported here; ``torch`` and ``datasets`` load inside the functions
that need them.
"""
from .captions import IDENTIFIER, caption, prompt, style_object_caption, training_pairs, with_article
from .concepts import (
    CATEGORIES,
    CONCEPTS,
    INSTANCES,
    OBJECTS,
    OTHER_ARTISTS,
    OTHER_OBJECTS,
    PRETRAINING,
    STYLES,
    TARGET_ARTISTS,
    TARGET_OBJECTS,
    Concept,
    concepts_of,
    get_concept,
    resolve,
)
from .data import load_imagefolder, save_imagefolder, to_dataset
from .features import NearestCentroid, handcrafted_features
from .render import (
    DEFAULT_SIZE,
    N_REFERENCE_VIEWS,
    Plan,
    contact_sheet,
    plan,
    reference_views,
    render,
    render_batch,
    render_object_in_style,
)

__all__ = [
    "CATEGORIES", "CONCEPTS", "DEFAULT_SIZE", "IDENTIFIER", "INSTANCES", "N_REFERENCE_VIEWS", "OBJECTS",
    "OTHER_ARTISTS", "OTHER_OBJECTS", "PRETRAINING", "STYLES", "TARGET_ARTISTS", "TARGET_OBJECTS",
    "Concept", "NearestCentroid", "Plan", "caption", "concepts_of", "contact_sheet", "get_concept",
    "handcrafted_features", "load_imagefolder", "plan", "prompt", "reference_views", "render", "render_batch",
    "render_object_in_style", "resolve", "save_imagefolder", "style_object_caption", "to_dataset",
    "training_pairs", "with_article",
]
