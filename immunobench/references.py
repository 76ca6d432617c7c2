"""Reference photos of personal instances (the personalization card's ``data.source: references``).

A backbone's spec names where its instances' photos come from (``BackboneSpec.references``,
"module:function" → ``function(concept_key, concept, count, size) -> (images, source)``, images in
[-1, 1], at most ``count``, in a fixed order). The runner splits them into disjoint defense, attack
and reference views (``split_views``).

- ``tiny-sd``: the concept world renders as many views of an instance as asked
  (``immunobench.world.common.instance_views``).
- Stable Diffusion: CustomConcept101's ``benchmark_dataset/<cc101_folder>/`` (Kumari et al.;
  download ``benchmark_dataset.zip`` from the ``nupurkmr9/custom-diffusion`` dataset repo), found
  under ``$IMMUNOBENCH_CUSTOMCONCEPT101`` or ``~/.cache/immunobench/customconcept101``. Its folders
  hold 3–15 photos, fewer than a card's defense + attack + reference counts: ``split_views`` then
  splits them in thirds (see its docstring) and the manifest records the counts used.
"""
from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path

import torch

from .errors import BackboneError, UserError

CC101_ENV = "IMMUNOBENCH_CUSTOMCONCEPT101"
CC101_DEFAULT = Path("~/.cache/immunobench/customconcept101").expanduser()


def reference_photos(spec, concept_key: str, concept, count: int, size: int) -> tuple[torch.Tensor, str]:
    """Up to ``count`` photos of one instance from the source the backbone's spec names."""
    module, _, function = spec.references.partition(":")
    try:
        source = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as exc:
        raise BackboneError(f"backbone {spec.source}: reference source {spec.references!r} cannot be loaded: {exc}") from exc
    return source(concept_key, concept, count, size)


def split_views(available: int, defense: int, attack: int, references: int) -> dict[str, range]:
    """Disjoint view indices for the defense, the attacker and the references.

    With enough views, the card's counts in that order (defense first, so the attacker's photos are
    ones the defense never saw, as MIMA §5.2 keeps them apart). With fewer (a real CustomConcept101
    folder: 3–15), each role gets a third, rounded down but at least one, defense and attack first,
    the references the rest: 4 photos → 1 / 1 / 2, 6 → 2 / 2 / 2, 10 → 3 / 3 / 4.
    """
    if available < 3:
        raise UserError(f"an instance needs at least 3 reference photos (defense, attack, references); found {available}")
    if available < defense + attack + references:
        defense = attack = max(1, available // 3)
        references = available - defense - attack
    return {"defense": range(0, defense), "attack": range(defense, defense + attack),
            "references": range(defense + attack, defense + attack + references)}


def customconcept101(concept_key: str, concept, count: int, size: int) -> tuple[torch.Tensor, str]:
    """The photos of ``concept.cc101_folder``, sorted by file name, center-cropped and resized."""
    from PIL import Image
    from torchvision.transforms.functional import center_crop, pil_to_tensor, resize

    root = Path(os.environ.get(CC101_ENV, CC101_DEFAULT)).expanduser()
    folder = root / "benchmark_dataset" / (concept.cc101_folder or "")
    if not concept.cc101_folder or not folder.is_dir():
        raise UserError(f"{concept_key}: no CustomConcept101 photos at {folder}; download benchmark_dataset.zip "
                        f"(huggingface.co/datasets/nupurkmr9/custom-diffusion) and unzip it into {root}, "
                        f"or set {CC101_ENV}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})[:count]
    images, digest = [], hashlib.sha1()
    for path in files:
        digest.update(path.read_bytes())
        img = Image.open(path).convert("RGB")
        x = pil_to_tensor(img)
        x = resize(center_crop(x, min(x.shape[1:])), [size, size], antialias=True)
        images.append(x.float() / 127.5 - 1)
    if not images:
        raise UserError(f"{concept_key}: {folder} holds no .jpg/.png photos")
    return torch.stack(images), f"customconcept101:{concept.cc101_folder}; {len(files)} photos, sha1 {digest.hexdigest()[:12]}"
