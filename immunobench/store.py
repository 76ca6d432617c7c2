"""Content-addressed artifact store: every stage output lives under the hash of its inputs.

A key is the SHA-256 of a canonical JSON of the stage's name, its config, its plugin's version
and the keys of the artifacts it consumed, so equal inputs give the same key in every run and
on every machine. An artifact is a folder (tensors as safetensors, the rest as JSON) written
under a temporary name and renamed into place: it either exists whole or not at all, and a run
killed at any moment (SIGKILL included) leaves only temporary folders that the next run
ignores and removes. A long stage may also keep a snapshot of its loop (``snapshot_file``) so a killed
run resumes it mid-way; it is deleted when the stage's artifact is written.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import torch

from .errors import UserError

DEFAULT_STORE = Path(os.environ.get("IMMUNOBENCH_STORE", Path.home() / ".cache" / "immunobench" / "store"))


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


# How keys are made; a new value changes every key on purpose. 2: plugin stages carry their plugin file's
# source hash (plugins.source_hash) beside its version.
KEYS_VERSION = 2


def artifact_key(stage: str, **inputs: Any) -> str:
    """Stable key of a stage from everything that determines its output."""
    return hashlib.sha256(canonical({"stage": stage, "keys_version": KEYS_VERSION, **inputs}).encode()).hexdigest()[:32]


class ImageKey(NamedTuple):
    """Which generations a stored image set holds: the concept prompted, at an attack step."""

    step: int
    concept: str


# 2: image sets indexed by typed (step, concept) records in the meta (1: "step/concept" tensor names)
IMAGE_SETS_FORMAT = 2


def image_sets_artifact(images: Mapping[ImageKey, torch.Tensor]) -> tuple[dict, dict]:
    """(meta, tensors) for ``Store.put``: the sets under opaque tensor names, their keys in the meta."""
    index = [{"step": int(k.step), "concept": k.concept, "tensor": str(i)} for i, k in enumerate(images)]
    tensors = {entry["tensor"]: x for entry, x in zip(index, images.values())}
    return {"images_format": IMAGE_SETS_FORMAT, "images": index}, {"tensors": tensors}


def read_image_sets(artifact: "Artifact") -> dict[ImageKey, torch.Tensor]:
    """The image sets of an artifact written from ``image_sets_artifact``, by (step, concept)."""
    if artifact.meta.get("images_format") != IMAGE_SETS_FORMAT:
        raise ValueError(f"{artifact.path}: image sets in format {artifact.meta.get('images_format')}, "
                         f"this code reads format {IMAGE_SETS_FORMAT}")
    tensors = artifact.tensors()
    return {ImageKey(e["step"], e["concept"]): tensors[e["tensor"]] for e in artifact.meta["images"]}


class Artifact:
    """A finished artifact: ``meta`` (JSON) and named tensor dicts, loaded lazily."""

    def __init__(self, path: Path):
        self.path = path
        self.meta: dict = json.loads((path / "meta.json").read_text())

    def tensors(self, name: str = "tensors") -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        file = self.path / f"{name}.safetensors"
        return load_file(file) if file.exists() else {}


class Store:
    def __init__(self, root: str | Path = DEFAULT_STORE):
        self.root = Path(root)
        self._tmp = self.root / "tmp"

    def path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def snapshot_file(self, key: str) -> Path:
        """Where the stage of ``key`` keeps its loop snapshot while it runs (``snapshot.LoopSnapshot``)."""
        return self.root / "snapshots" / f"{key}.pt"

    def has(self, key: str) -> bool:
        return (self.path(key) / "meta.json").exists()

    def get(self, key: str) -> Artifact | None:
        return Artifact(self.path(key)) if self.has(key) else None

    def put(self, key: str, meta: Mapping[str, Any], tensors: Mapping[str, Mapping[str, torch.Tensor]] = {}) -> Artifact:
        """Write atomically; if another writer finished the same key first, keep theirs (same inputs)."""
        from safetensors.torch import save_file

        final = self.path(key)
        if self.has(key):
            return Artifact(final)
        self._tmp.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp / f"{key}.{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            for name, group in tensors.items():
                clean = {k: v.detach().contiguous().cpu() for k, v in group.items()}
                save_file(clean, tmp / f"{name}.safetensors")
            (tmp / "meta.json").write_text(json.dumps({"key": key, **meta}, indent=1, default=str))
            for file in tmp.iterdir():
                _fsync(file)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                tmp.rename(final)
            except OSError:  # a concurrent writer won the rename
                if not self.has(key):
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return Artifact(final)

    def clean_temporary(self, older_than_s: float = 3600.0) -> int:
        """Remove leftovers of killed writers (old enough not to be a live writer's); returns how many."""
        import time

        if not self._tmp.exists():
            return 0
        leftovers = [p for p in self._tmp.iterdir() if time.time() - p.stat().st_mtime >= older_than_s]
        for p in leftovers:
            shutil.rmtree(p, ignore_errors=True)
        return len(leftovers)


def check_writable(folder: str | Path, option: str) -> Path:
    """Refuse ``folder`` (named on the command line by ``option``) unless files can be created in it.

    Probes the folder or, where it does not exist yet, its nearest existing parent with a temporary
    folder that is removed at once, so a run fails before any work instead of at its first write.
    """
    folder = Path(folder).expanduser()
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{option} {folder}: {probe} is a file, not a folder; pass a folder path")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".immunobench-write-check-", dir=probe))
    except OSError as exc:
        raise UserError(f"{option} {folder}: cannot write in {probe} ({exc.strerror}); "
                        "pass a folder you can write to") from None
    return folder


def _fsync(file: Path) -> None:
    fd = os.open(file, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
