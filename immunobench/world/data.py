"""The world as Hugging Face ``datasets``: in memory, and on disk in the ``imagefolder`` layout.

On disk a dataset is PNGs plus ``metadata.jsonl`` with ``file_name``, ``text`` (the caption
column name that diffusers' training scripts expect) and ``concept``, so
``datasets.load_dataset("imagefolder", data_dir=...)`` reads it. ``datasets`` is imported
inside the functions: it is slow to import and most users of the world never need it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # pragma: no cover
    import datasets

METADATA = "metadata.jsonl"


def _features():
    from datasets import Features, Value
    from datasets import Image as ImageFeature

    return Features({"image": ImageFeature(), "caption": Value("string"), "concept": Value("string")})


def to_dataset(pairs: Iterable[tuple[np.ndarray | Image.Image, str, str]]) -> "datasets.Dataset":
    """A ``datasets.Dataset`` with columns image (PIL), caption, concept from (image, caption, concept) triples."""
    from datasets import Dataset

    images, captions, concepts = [], [], []
    for image, text, concept in pairs:
        images.append(image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8)))
        captions.append(text)
        concepts.append(concept)
    return Dataset.from_dict({"image": images, "caption": captions, "concept": concepts}, features=_features())


def save_imagefolder(dataset: "datasets.Dataset", directory: str | Path) -> Path:
    """Write ``dataset`` (columns image, caption, concept) as PNGs + ``metadata.jsonl``; returns the folder.

    Refuses a folder that already holds a ``metadata.jsonl`` rather than mixing two datasets.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = directory / METADATA
    if meta.exists():
        raise FileExistsError(f"{meta} exists; write to an empty folder or delete the old dataset first")
    missing = {"image", "caption", "concept"} - set(dataset.column_names)
    if missing:
        raise ValueError(f"dataset lacks column(s) {sorted(missing)}; it has {dataset.column_names}")
    width = max(6, len(str(len(dataset))))
    lines = []
    for i, row in enumerate(dataset):
        name = f"{i:0{width}d}.png"
        row["image"].convert("RGB").save(directory / name)
        lines.append(json.dumps({"file_name": name, "text": row["caption"], "concept": row["concept"]}))
    tmp = meta.with_suffix(".jsonl.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(meta)  # the metadata appears only once every image is written
    return directory


def load_imagefolder(directory: str | Path, cache_dir: str | Path | None = None) -> "datasets.Dataset":
    """Read a folder written by ``save_imagefolder`` back as columns image, caption, concept (in file order)."""
    from datasets import load_dataset

    directory = Path(directory)
    if not (directory / METADATA).exists():
        raise FileNotFoundError(f"{directory / METADATA} not found; is {directory} a folder written by save_imagefolder?")
    ds = load_dataset("imagefolder", data_dir=str(directory), split="train",
                      cache_dir=None if cache_dir is None else str(cache_dir))
    return ds.rename_column("text", "caption").select_columns(["image", "caption", "concept"])
