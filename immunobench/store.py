"""Content-addressed artifact store: every stage output lives under the hash of its inputs.

A key is the SHA-256 of a canonical JSON of the stage's name, its config, its plugin's version
and the keys of the artifacts it consumed, so equal inputs give the same key in every run and
on every machine. An artifact is a folder (tensors as safetensors, the rest as JSON) written
under a temporary name and renamed into place: it either exists whole or not at all, and a run
killed at any moment (SIGKILL included) leaves only temporary folders that the next run
ignores and removes. A long stage may also keep a snapshot of its loop (``snapshot_file``) so a killed
run resumes it mid-way; it is deleted when the stage's artifact is written.

The store may also be an fsspec URL (``s3://bucket/store``, ``gs://…``, ``memory://…``) shared by
several machines. Object stores have no atomic rename, so an artifact is committed by a marker
instead: a writer uploads its files under its own prefix ``<key>/<writer>/``, then creates
``<key>/meta.json`` -- exclusively where the filesystem can (``open(mode="xb")``, an S3
If-None-Match put) -- naming itself. The artifact exists once the marker does; a writer killed
before it leaves nothing readable, and of two writers racing for one key the one whose marker
landed wins while the other deletes its prefix. Readers follow the marker to the winner's files and
download them into a local read cache, so tensors always load from local files. Plain paths and
``file://`` URLs are local stores as above.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import torch

from .errors import UserError

DEFAULT_STORE = Path(os.environ.get("IMMUNOBENCH_STORE", Path.home() / ".cache" / "immunobench" / "store"))
# where a remote store's artifacts are downloaded to (a folder per store URL); IMMUNOBENCH_CACHE overrides it
REMOTE_CACHE = Path.home() / ".cache" / "immunobench" / "remote"


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
    """Artifacts by key, in a local folder or under an fsspec URL.

    ``root`` is the folder (a ``Path``) of a local store and the URL (a ``str``) of a remote one.
    ``object_store=True`` sends a ``file://`` URL through the remote code path (marker commits, read
    cache), as if the folder were a bucket: tests race processes through it. ``cache`` overrides the
    read cache of a remote store (default ``$IMMUNOBENCH_CACHE`` or ~/.cache/immunobench/remote).
    """

    def __init__(self, root: str | Path = DEFAULT_STORE, *, object_store: bool = False,
                 cache: str | Path | None = None):
        scheme, sep, rest = str(root).partition("://")
        self.remote = bool(sep) and (object_store or scheme not in ("file", "local"))
        if not self.remote:
            self.root: Path | str = Path(rest) if sep else Path(root)
            self._tmp = self.root / "tmp"
            return
        self.root = str(root).rstrip("/")
        self.fs, self._base = _filesystem(self.root)
        cache = Path(cache or os.environ.get("IMMUNOBENCH_CACHE", REMOTE_CACHE))
        # this machine's side of a remote store: downloaded artifacts, staged writes, loop snapshots
        self._local = cache / hashlib.sha256(self.root.encode()).hexdigest()[:16]
        self._tmp = self._local / "tmp"

    def path(self, key: str) -> Path | str:
        """The artifact's folder: a local path, or its path on the remote filesystem."""
        if self.remote:
            return f"{self._base}/{key[:2]}/{key}"
        return self.root / key[:2] / key

    def snapshot_file(self, key: str) -> Path:
        """Where the stage of ``key`` keeps its loop snapshot while it runs (``snapshot.LoopSnapshot``).

        Always a local file: a remote store keeps its snapshots on this machine, in a folder per
        store URL beside its read cache, so only a run on the same machine resumes a killed stage.
        """
        return (self._local if self.remote else self.root) / "snapshots" / f"{key}.pt"

    def has(self, key: str) -> bool:
        if self.remote:
            return self._read_marker(key) is not None
        return (self.path(key) / "meta.json").exists()

    def get(self, key: str) -> Artifact | None:
        """The artifact of ``key``, or None; a remote one is downloaded into the read cache first."""
        if not self.remote:
            return Artifact(self.path(key)) if self.has(key) else None
        marker = self._read_marker(key)
        return None if marker is None else self._download(key, marker)

    def put(self, key: str, meta: Mapping[str, Any], tensors: Mapping[str, Mapping[str, torch.Tensor]] = {}) -> Artifact:
        """Write atomically; if another writer finished the same key first, keep theirs (same inputs)."""
        from safetensors.torch import save_file

        existing = self.get(key)  # one marker read on a remote store, not has() and then get()
        if existing is not None:
            return existing
        self._tmp.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp / f"{key}.{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            for name, group in tensors.items():
                clean = {k: v.detach().contiguous().cpu() for k, v in group.items()}
                save_file(clean, tmp / f"{name}.safetensors")
            (tmp / "meta.json").write_text(json.dumps({"key": key, **meta}, indent=1, default=str))
            if self.remote:
                return self._publish(key, tmp)
            for file in tmp.iterdir():
                _fsync(file)
            final = self.path(key)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                tmp.rename(final)
            except OSError:  # a concurrent writer won the rename
                if not self.has(key):
                    raise
            return Artifact(final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def clean_temporary(self, older_than_s: float = 3600.0) -> int:
        """Remove leftovers of killed writers (old enough not to be a live writer's); returns how many.

        Locally: unfinished folders under ``tmp/`` (for a remote store, its staged writes and
        downloads). Remotely: writer prefixes that no marker names (killed writers, losers killed
        before deleting theirs).
        """
        leftovers = [p for p in self._tmp.iterdir() if time.time() - p.stat().st_mtime >= older_than_s] \
            if self._tmp.exists() else []
        for p in leftovers:
            shutil.rmtree(p, ignore_errors=True)
        if not self.remote:
            return len(leftovers)
        self.fs.invalidate_cache()  # listings cached by s3fs & co. may predate other machines' writes
        removed = 0
        for folder in self.fs.glob(f"{self._base}/??/*"):
            key = folder.rstrip("/").rsplit("/", 1)[-1]
            marker = self._read_marker(key)
            for prefix in self.fs.ls(folder, detail=False):
                writer = prefix.rstrip("/").rsplit("/", 1)[-1]
                if writer == "meta.json" or (marker and writer == marker["writer"]):
                    continue
                if self._age_s(prefix) >= older_than_s:
                    self.fs.rm(prefix, recursive=True)
                    removed += 1
        return len(leftovers) + removed

    # --- the remote protocol ---------------------------------------------------------------
    def _marker(self, key: str) -> str:
        return f"{self.path(key)}/meta.json"

    def _read_marker(self, key: str) -> dict | None:
        """The commit marker of ``key`` ({"writer", "files"}), None while there is none."""
        for _ in range(40):
            try:
                data = self.fs.cat_file(self._marker(key))
            except FileNotFoundError:
                return None
            try:
                return json.loads(data)
            except ValueError:  # a POSIX file is created empty, then written: a marker being committed
                time.sleep(0.05)
        raise RuntimeError(f"{self.root}: the commit marker of {key} stays unreadable (a writer killed while "
                           f"writing it?); delete {self._marker(key)} to compute {key} again")

    def _publish(self, key: str, staged: Path) -> Artifact:
        """Upload a staged artifact under a prefix of its own, then race for the marker."""
        writer = uuid.uuid4().hex
        prefix = f"{self.path(key)}/{writer}"
        files = sorted(p.name for p in staged.iterdir())
        self.fs.makedirs(prefix, exist_ok=True)
        for name in files:
            self.fs.put_file(str(staged / name), f"{prefix}/{name}")
        if not self._commit(key, writer, files):  # another writer committed first: theirs is the artifact
            self.fs.rm(prefix, recursive=True)
            return self.get(key)
        cached = self._local / key
        if not (cached / "meta.json").exists():
            try:
                staged.rename(cached)  # the reader's cache gets what was just uploaded
            except OSError:  # a reader of this machine downloaded it meanwhile
                pass
        # the marker standing is the one this writer committed: no need to read it back again
        if (cached / "meta.json").exists():
            return Artifact(cached)
        return self._download(key, {"writer": writer, "files": files})

    def _commit(self, key: str, writer: str, files: list[str]) -> bool:
        """Create the marker naming ``writer``; True when it is this writer's marker that stands."""
        marker = json.dumps({"key": key, "writer": writer, "files": files}).encode()
        try:
            with self.fs.open(self._marker(key), "xb") as f:
                f.write(marker)
        except FileExistsError:
            return False
        except (ValueError, NotImplementedError):  # no exclusive create here: write unless there is one
            if self._read_marker(key) is not None:
                return False
            self.fs.pipe_file(self._marker(key), marker)
        # read back: where "xb" is not really exclusive, the last marker written wins, and its writer
        # is the one that finds its own name here
        return self._read_marker(key)["writer"] == writer

    def _download(self, key: str, marker: dict) -> Artifact:
        """The winner's files in the read cache (downloaded once per machine and store URL)."""
        cached = self._local / key
        if (cached / "meta.json").exists():
            return Artifact(cached)
        self._tmp.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp / f"{key}.{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            prefix = f"{self.path(key)}/{marker['writer']}"
            for name in marker["files"]:
                self.fs.get_file(f"{prefix}/{name}", str(tmp / name))
            try:
                tmp.rename(cached)
            except OSError:  # a concurrent reader filled the cache first
                if not (cached / "meta.json").exists():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return Artifact(cached)

    def _age_s(self, prefix: str) -> float:
        """Seconds since the newest file under a writer prefix was written (0 for an empty one)."""
        times = [self.fs.modified(f).timestamp() for f in self.fs.find(prefix)]
        return time.time() - max(times) if times else 0.0


def _filesystem(url: str):
    """(fsspec filesystem, path on it) of a store URL; a ``UserError`` for a scheme fsspec cannot open."""
    import fsspec

    try:
        return fsspec.url_to_fs(url)
    except (ValueError, ImportError) as exc:
        raise UserError(f"store {url}: cannot open this URL ({exc}); pass a folder, file:///…, s3://…, "
                        "gs://… or memory://…") from None


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
