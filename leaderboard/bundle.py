"""Submission bundles: ``immunobench bundle RUN`` writes one zip; ``immunobench verify BUNDLE`` checks it.

A bundle holds a run's ``results.parquet`` and ``manifest.json``, the source of every defense and
attack plugin the run used (``plugins/<name>.py``), and ``bundle.json``: the bundle format, the
results-schema version, each file's SHA-256 and one content hash over all of them. ``verify``
rejects, naming the reason, a bundle whose files or hashes disagree, whose schema version this code
does not read, whose results lack a column or hold rows of a defense the manifest does not name, or
whose plugin sources are not the files the manifest's source hashes name. A hash computed by the
submitter cannot stop a dishonest one: ``immunobench reproduce`` re-runs cells of the bundle.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

from immunobench.plugins import source_digest

BUNDLE_FORMAT = 1
RESULTS, MANIFEST, INDEX = "results.parquet", "manifest.json", "bundle.json"
# the columns every schema version this code reads has (version 2 added attack_config and split)
REQUIRED_COLUMNS = ("task", "group", "concept", "defense", "attack", "seed", "step", "metric", "value")


class BundleError(Exception):
    """A bundle that cannot be made or is rejected; the message is the reason, one line."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_hash(files: dict[str, str]) -> str:
    """One hash over every file's name and SHA-256: a change to any file, or a file added or removed, changes it."""
    return _sha256(json.dumps(sorted(files.items())).encode())


def _plugin_sources(manifest: dict, repo_root: Path) -> dict[str, bytes]:
    """name → source of each plugin the run used, checked against the manifest's source hash."""
    out = {}
    for name, entry in manifest.get("resolved", {}).get("plugins", {}).items():
        file, expected = entry.get("file"), entry.get("source_sha256")
        if not file or not expected or expected == "no-source":
            raise BundleError(f"plugin {name}: the manifest records no source file and hash (a run written before "
                              "bundles existed); rerun it with this version of immunobench")
        path = Path(file) if Path(file).is_absolute() else repo_root / file
        if not path.is_file():
            raise BundleError(f"plugin {name}: its file {path} is gone; restore it (or rerun) to bundle this run")
        data = path.read_bytes()
        if source_digest(data) != expected:
            raise BundleError(f"plugin {name}: {path} changed since the run (source hash {source_digest(data)}, "
                              f"the run's {expected}); rerun with this file, or restore the file the run used")
        out[name] = data
    return out


def make_bundle(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """``run_dir`` (a finished run folder) → the bundle's path (default: ``<run_dir>.bundle.zip``)."""
    run_dir = Path(run_dir)
    for name in (RESULTS, MANIFEST):
        if not (run_dir / name).is_file():
            raise BundleError(f"{run_dir}: no {name}; pass a finished run folder (see `immunobench runs`)")
    manifest_bytes = (run_dir / MANIFEST).read_bytes()
    manifest = json.loads(manifest_bytes)
    from immunobench.runner import PLUGIN_ROOT

    payload = {RESULTS: (run_dir / RESULTS).read_bytes(), MANIFEST: manifest_bytes}
    payload.update({f"plugins/{name.replace('/', '_')}.py": src for name, src in _plugin_sources(manifest, PLUGIN_ROOT).items()})
    files = {name: _sha256(data) for name, data in payload.items()}
    index = {"bundle_format": BUNDLE_FORMAT, "schema_version": manifest.get("schema_version"),
             "task": manifest.get("task_card", {}).get("name"), "model": manifest.get("model", {}).get("name"),
             "defenses": manifest.get("resolved", {}).get("defenses", []), "files": files,
             "content_hash": content_hash(files)}
    out = Path(out) if out else run_dir.with_name(run_dir.name + ".bundle.zip")
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in [*payload.items(), (INDEX, json.dumps(index, indent=1).encode())]:
            z.writestr(_entry(name), data)
    tmp.replace(out)
    return out


def _entry(name: str) -> zipfile.ZipInfo:
    """A zip entry with a fixed date and mode: bundling the same run twice gives the same bytes (publish relies on it)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
    return info


def read_bundle(path: str | Path) -> dict[str, bytes]:
    """name → bytes of every file of a bundle zip (or of a bundle unpacked into a folder)."""
    path = Path(path)
    if path.is_dir():
        return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    try:
        with zipfile.ZipFile(path) as z:
            return {name: z.read(name) for name in z.namelist() if not name.endswith("/")}
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"{path}: not a readable bundle ({exc})") from None


def verify_bundle(path: str | Path) -> dict:
    """The bundle's index when every check passes; else ``BundleError`` with the first reason."""
    from immunobench.runner import SCHEMA_VERSION

    contents = read_bundle(path)
    if INDEX not in contents:
        raise BundleError(f"{path}: no {INDEX}; make bundles with `immunobench bundle RUN`")
    try:
        index = json.loads(contents.pop(INDEX))
        files = dict(index["files"])
    except (ValueError, KeyError, TypeError):
        raise BundleError(f"{path}: {INDEX} is not a bundle index") from None
    if index.get("bundle_format") != BUNDLE_FORMAT:
        raise BundleError(f"{path}: bundle format {index.get('bundle_format')!r}; this code reads {BUNDLE_FORMAT}")
    missing, extra = sorted(set(files) - set(contents)), sorted(set(contents) - set(files))
    if missing or extra:
        raise BundleError(f"{path}: {'missing ' + ', '.join(missing) if missing else 'unlisted ' + ', '.join(extra)}; "
                          "the bundle was changed after it was made")
    for name, digest in files.items():
        if _sha256(contents[name]) != digest:
            raise BundleError(f"{path}: {name} does not match its SHA-256; the bundle was changed after it was made")
    if content_hash(files) != index.get("content_hash"):
        raise BundleError(f"{path}: the content hash does not match the files; the bundle was changed after it was made")
    for name in (RESULTS, MANIFEST):
        if name not in contents:
            raise BundleError(f"{path}: no {name}")
    manifest = json.loads(contents[MANIFEST])
    _check_schema(path, index, manifest, contents[RESULTS], SCHEMA_VERSION)
    for name, entry in manifest.get("resolved", {}).get("plugins", {}).items():
        source = contents.get(f"plugins/{name.replace('/', '_')}.py")
        if source is None or source_digest(source) != entry.get("source_sha256"):
            raise BundleError(f"{path}: the source of plugin {name} is not the file the run used "
                              f"(manifest source hash {entry.get('source_sha256')})")
    return index


def _check_schema(path, index: dict, manifest: dict, results: bytes, readable: int) -> None:
    import pyarrow.parquet as pq

    version = manifest.get("schema_version")
    if not isinstance(version, int) or not 1 <= version <= readable:
        raise BundleError(f"{path}: results schema version {version!r}; this code reads versions 1 to {readable}")
    table = pq.read_table(io.BytesIO(results))
    stamped = (table.schema.metadata or {}).get(b"immunobench.schema_version")
    if index.get("schema_version") != version or (stamped is not None and stamped != str(version).encode()):
        raise BundleError(f"{path}: the schema versions of bundle.json, manifest.json and results.parquet disagree")
    needed = REQUIRED_COLUMNS + (("attack_config", "split") if version >= 2 else ())
    absent = [c for c in needed if c not in table.column_names]
    if absent:
        raise BundleError(f"{path}: results.parquet lacks the column(s) {', '.join(absent)} of schema version {version}")
    frame = table.to_pandas()
    if frame["value"].dtype.kind != "f":
        raise BundleError(f"{path}: results.parquet's value column is {frame['value'].dtype}, not float")
    defenses = set(manifest.get("resolved", {}).get("defenses", []))
    strays = sorted(set(frame["defense"]) - defenses)
    if strays:
        raise BundleError(f"{path}: results rows of defense(s) {', '.join(strays)} that the manifest does not name")
