"""``immunobench publish RUN``: a verified bundle's rows, bundle and figures into the results repo layout.

The layout is the same in a Hugging Face dataset repo (``--repo``) and in a folder (``--to``);
hash16 is the first 16 hex digits of the bundle's content hash::

    README.md                                dataset card, regenerated from index.json on every publish
    index.json                               {"publish_format": 1, "submissions": [...]}, merged by hash16
    rows/<task>/<backbone>/<hash16>.parquet  the bundle's results in the current schema + provenance columns
    bundles/<hash16>.zip                     the verified bundle, byte for byte
    reproductions/<hash16>.json              its ``immunobench reproduce`` record, when there is one
    figures/<hash16>/<name>.png              the run folder's plots/*.png

Nothing is published that ``verify`` rejects. Rows are marked reproduced only from a reproduction
record whose content hash is the bundle's and whose cells all passed. The hub is written with one
commit holding every file that changed, with the user's own token (huggingface_hub finds it:
``HF_TOKEN`` or ``hf auth login``); this module never reads it.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .bundle import MANIFEST, RESULTS, BundleError, _sha256, make_bundle, read_bundle, verify_bundle

PUBLISH_FORMAT = 1
INDEX_FILE, CARD_FILE = "index.json", "README.md"
RESULTS_VARIABLE = "IMMUNOBENCH_RESULTS"  # the Space variable naming the dataset its app reads
SPACE_SOURCE = Path(__file__).resolve().parent / "space"
BENCHMARK_URL = "https://pypi.org/project/immunobench/"
# provenance columns added to every published row, in this order
PROVENANCE = ("backbone", "backbone_fingerprint", "task_card_hash", "code_version", "seeds", "run_date",
              "bundle_hash", "schema_version", "reproduced")
# the measurement columns of the current results schema (version 2), as `immunobench run` writes them; every
# published row file has exactly these, then PROVENANCE, so the dataset's one config reads all of them
ROW_COLUMNS = (("task", "large_string"), ("group", "large_string"), ("concept", "large_string"),
               ("defense", "large_string"), ("attack", "large_string"), ("attack_config", "large_string"),
               ("seed", "int64"), ("split", "large_string"), ("step", "int64"), ("metric", "large_string"),
               ("value", "float64"))
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class PublishError(Exception):
    """A publish that cannot go ahead; the message is the reason and the fix, one line."""


def _git_blob_oid(data: bytes) -> str:
    """The git object id the hub reports for a file stored without LFS."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def segment(name: str) -> str:
    """``name`` as one safe path segment: [A-Za-z0-9._-] only, never ``.``/``..`` or hidden.

    ``tiny-sd`` stays ``tiny-sd``; ``CompVis/stable-diffusion-v1-4`` becomes ``CompVis_stable-diffusion-v1-4``,
    so the two backbones never share a folder."""
    clean = re.sub(r"[^A-Za-z0-9._-]", "_", str(name)) or "_"
    return "_" + clean if clean.startswith(".") else clean


def code_version(code: dict) -> str:
    """The manifest's ``code`` entry as one string: ``0.1.0+g<git 12>`` (``.dirty`` when it had local edits)."""
    version = str(code.get("immunobench", "unknown"))
    if code.get("git"):
        version += f"+g{code['git'][:12]}" + (".dirty" if code.get("dirty") else "")
    return version


@dataclass
class Submission:
    """One verified bundle and what comes with it: its reproduction record and figures."""

    bundle: bytes
    index: dict                       # the bundle's bundle.json (verified)
    manifest: dict
    results: bytes                    # results.parquet as bundled
    record: bytes | None = None       # the reproduction record, when its content hash is the bundle's
    figures: dict[str, bytes] = field(default_factory=dict)  # file name → PNG bytes

    @property
    def hash16(self) -> str:
        return self.index["content_hash"][:16]

    @property
    def reproduced(self) -> bool:
        return self.record is not None and json.loads(self.record).get("passed") is True


def load_submission(source: str | Path, log: Callable[[str], None] = print) -> Submission:
    """A run folder or a bundle zip → its verified ``Submission``; ``PublishError`` when verification fails."""
    source = Path(source)
    with tempfile.TemporaryDirectory(prefix="immunobench-publish-") as tmp:
        if source.is_dir():
            try:  # a fresh bundle, so a stale <run>.bundle.zip can never be what is published
                bundle = make_bundle(source, Path(tmp) / f"{source.name}.bundle.zip")
            except BundleError as exc:
                raise PublishError(f"cannot bundle {source}: {exc}") from None
            record_path = source.with_name(source.name + ".bundle.zip.reproduced.json")  # where `reproduce` writes it
            figures = {p.name: p.read_bytes() for p in sorted((source / "plots").glob("*.png"))}
        else:  # verify a private copy: the bytes checked are the bytes published
            record_path, figures = source.with_name(source.name + ".reproduced.json"), {}
            bundle = Path(tmp) / "bundle.zip"
            bundle.write_bytes(source.read_bytes())
        try:
            index = verify_bundle(bundle)
        except BundleError as exc:
            reason = str(exc).replace(str(bundle), str(source))  # name the user's file, not our private copy
            raise PublishError(f"refused, the bundle does not verify: {reason}") from None
        data, contents = bundle.read_bytes(), read_bundle(bundle)
    sub = Submission(bundle=data, index=index, manifest=json.loads(contents[MANIFEST]), results=contents[RESULTS],
                     figures=figures)
    if record_path.is_file():
        record = record_path.read_bytes()
        try:
            same = json.loads(record).get("content_hash") == index["content_hash"]
        except (ValueError, AttributeError):
            same = False
        if same:
            sub.record = record
        else:
            log(f"note: {record_path} is not a reproduction of this bundle (another content hash); rows are "
                "published as not reproduced")
    return sub


def _rows(sub: Submission, reproduced: bool) -> bytes:
    """The bundle's results in the current schema (``_conformed``), plus the provenance columns (one value per bundle)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = _conformed(pq.read_table(io.BytesIO(sub.results)))
    m = sub.manifest
    values = {"backbone": (m["model"]["name"], pa.string()),
              "backbone_fingerprint": (m["model"].get("fingerprint"), pa.string()),
              "task_card_hash": (m["task_card"].get("hash"), pa.string()),
              "code_version": (code_version(m.get("code", {})), pa.string()),
              "seeds": (",".join(str(s) for s in m["resolved"]["seeds"]), pa.string()),
              "run_date": (m.get("date"), pa.string()),
              "bundle_hash": (sub.index["content_hash"], pa.string()),
              "schema_version": (m["schema_version"], pa.int64()),
              "reproduced": (reproduced, pa.bool_())}
    for name in PROVENANCE:
        value, kind = values[name]
        table = table.append_column(pa.field(name, kind), pa.array([value] * table.num_rows, kind))
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _conformed(table):
    """The results in the current schema's columns, order and types, whatever version wrote them.

    A version-1 bundle's rows get ``attack_config`` ``default`` and ``split`` ``eval`` (what a version-1 run
    measured: one point, all reported; ``report.with_sweep_columns``); its ``schema_version`` column still says
    1. Without this, the dataset's single config ``rows/**/*.parquet`` fails to load once files of both
    versions are published (the hub's loader wants one schema)."""
    import pyarrow as pa

    from .report import with_sweep_columns

    taken = [c for c in PROVENANCE if c in table.column_names]
    unknown = [c for c in table.column_names if c not in dict(ROW_COLUMNS)]
    if taken or unknown:
        raise PublishError(f"results.parquet has the column(s) {', '.join(taken + unknown)} that no results "
                           "schema has; this bundle was not written by `immunobench run`")
    schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in ROW_COLUMNS])
    frame = with_sweep_columns(table.to_pandas())[schema.names]
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False).replace_schema_metadata(None)


def layout(sub: Submission, current: dict | None) -> dict[str, bytes]:
    """Every file this publish writes, path → bytes: the submission's own, then index.json and README.md
    merged with ``current`` (the destination's index.json; None when there is none)."""
    current = current or {"publish_format": PUBLISH_FORMAT, "submissions": []}
    if (not isinstance(current, dict) or current.get("publish_format") != PUBLISH_FORMAT
            or not isinstance(current.get("submissions"), list)):
        found = current.get("publish_format") if isinstance(current, dict) else None
        raise PublishError(f"the destination's {INDEX_FILE} has publish format {found!r}; "
                           f"this code writes {PUBLISH_FORMAT}; publish with the immunobench version that wrote it")
    previous = next((s for s in current["submissions"] if s.get("hash16") == sub.hash16), {})
    m, h = sub.manifest, sub.hash16
    task, backbone = m["task_card"]["name"], m["model"]["name"]
    files: dict[str, bytes] = {f"bundles/{h}.zip": sub.bundle}
    reproduced, reproduction = sub.reproduced, None
    if sub.record is not None:
        reproduction = f"reproductions/{h}.json"
        files[reproduction] = sub.record
    elif previous.get("reproduction"):  # the same content was reproduced before; republishing must not lose it
        reproduced, reproduction = bool(previous.get("reproduced")), previous["reproduction"]
    figures = [f"figures/{h}/{segment(name)}" for name in sub.figures]
    files.update({path: sub.figures[name] for path, name in zip(figures, sub.figures)})
    if not figures:  # republished from the zip alone: the run folder's figures are still in the repo
        figures = list(previous.get("figures", []))
    rows = f"rows/{segment(task)}/{segment(backbone)}/{h}.parquet"
    files[rows] = data = _rows(sub, reproduced)
    import pyarrow.parquet as pq

    entry = {"hash16": h, "content_hash": sub.index["content_hash"], "task": task, "backbone": backbone,
             "backbone_fingerprint": m["model"].get("fingerprint"), "task_card_hash": m["task_card"].get("hash"),
             "defenses": list(m["resolved"]["defenses"]), "attacks": list(m["resolved"]["attacks"]),
             "seeds": list(m["resolved"]["seeds"]), "schema_version": m["schema_version"],
             "code_version": code_version(m.get("code", {})), "run_date": m.get("date"), "reproduced": reproduced,
             "rows": rows, "row_count": pq.read_metadata(io.BytesIO(data)).num_rows, "bundle": f"bundles/{h}.zip",
             "reproduction": reproduction, "figures": figures}
    submissions = [s for s in current["submissions"] if s.get("hash16") != h] + [entry]
    submissions.sort(key=lambda s: tuple(str(s.get(k)) for k in ("task", "backbone", "run_date", "hash16")))
    index = {**current, "publish_format": PUBLISH_FORMAT, "submissions": submissions}
    files[INDEX_FILE] = (json.dumps(index, indent=1) + "\n").encode()
    files[CARD_FILE] = dataset_card(index).encode()
    return files


def dataset_card(index: dict) -> str:
    """README.md of the results dataset: front matter the hub reads, then what the rows are and how to trust them."""
    subs = index["submissions"]
    lines = [
        "---",
        "license: apache-2.0",
        "pretty_name: immunobench results",
        "tags:",
        "- immunobench",
        "- diffusion-models",
        "- model-immunization",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        "    path: rows/**/*.parquet",
        "---",
        "",
        "# immunobench results",
        "",
        f"Results of [immunobench]({BENCHMARK_URL}), a benchmark of *immunization defenses* of text-to-image",
        "diffusion models: defenses that change a model's weights so that a later fine-tuning attack fails to",
        "re-teach it a concept. Each submission is one verified bundle of one run; its rows are in",
        "`rows/<task>/<backbone>/<hash16>.parquet`. Rows of different backbones (`tiny-sd`, Stable Diffusion)",
        "are different experiments: compare and rank within one backbone only.",
        "",
        f"## Submissions ({len(subs)})",
        "",
        "| task | backbone | defenses | attacks | seeds | rows | reproduced | code | run date | bundle |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in subs:
        lines.append(f"| {s['task']} | {s['backbone']} | {', '.join(s['defenses'])} | {', '.join(s['attacks'])} | "
                     f"{','.join(map(str, s['seeds']))} | {s.get('row_count', '')} | "
                     f"{'yes' if s['reproduced'] else 'no'} | {s['code_version']} | {s['run_date']} | "
                     f"[{s['hash16']}]({s['bundle']}) |")
    lines += [
        "",
        "## Columns",
        "",
        "The measurement columns are immunobench's results schema (`schema_version`; version 2: `task`, `group`,",
        "`concept`, `defense`, `attack`, `attack_config`, `seed`, `split`, `step`, `metric`, `value`, one row per",
        "measurement; `docs/results-schema.md` in the package). Every file has these columns: rows of a version-1",
        "bundle are published with `attack_config` `default` and `split` `eval` (version 1 ran one point, all",
        "reported), so the one config above reads every submission. Publishing adds the provenance of the run:",
        "",
        "| column | meaning |",
        "|---|---|",
        "| `backbone` | the model's name (`tiny-sd`, or a hub id such as `CompVis/stable-diffusion-v1-4`) |",
        "| `backbone_fingerprint` | hash of the model's weights and config |",
        "| `task_card_hash` | hash of the task card the run used |",
        "| `code_version` | immunobench version + git commit (`.dirty`: with local edits) |",
        "| `seeds` | the run's seeds, comma-separated |",
        "| `run_date` | when the run finished (ISO 8601) |",
        "| `bundle_hash` | the bundle's content hash (`bundles/<first 16 digits>.zip`) |",
        "| `schema_version` | the results-schema version of the bundle the rows come from |",
        "| `reproduced` | true when `immunobench reproduce` re-ran cells of the bundle and all matched |",
        "",
        "## Verification and reproduction",
        "",
        "Every bundle passed `immunobench verify` before it was published: each file's SHA-256 and the content",
        "hash over them, the schema version, the columns, and the plugin sources the manifest names. A hash",
        "computed by the submitter cannot prove honesty, so a row is marked `reproduced` only when",
        "`reproductions/<hash16>.json` records that `immunobench reproduce` re-ran randomly chosen cells in a",
        "fresh store and every per-concept measurement matched (similarities within 0.01, accuracies within one",
        "generation). Check a bundle yourself: `immunobench verify bundles/<hash16>.zip`, then",
        "`immunobench reproduce bundles/<hash16>.zip --cells 2`. `index.json` lists every submission with its",
        "files; figures of a run are under `figures/<hash16>/`.",
        "",
    ]
    return "\n".join(lines)


def read_index(data: bytes | None, where: str) -> dict | None:
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        raise PublishError(f"{where}: {INDEX_FILE} is not JSON; repair or remove it before publishing") from None


def _describe(path: str, data: bytes) -> str:
    return f"{path}  {len(data):,} B  sha256 {_sha256(data)[:12]}"


# --- a folder (--to) ---------------------------------------------------------------------------------------------

def publish_folder(sub: Submission, folder: str | Path, dry_run: bool = False,
                   log: Callable[[str], None] = print) -> dict[str, bytes]:
    """Writes the layout into ``folder`` (merging with what is there), each file atomically → the files written."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise PublishError(f"--to {folder}: not a folder")
    index_path = folder / INDEX_FILE
    files = layout(sub, read_index(index_path.read_bytes() if index_path.is_file() else None, str(folder)))
    changed = {p: d for p, d in files.items() if not (folder / p).is_file() or (folder / p).read_bytes() != d}
    for path, data in changed.items():
        log(f"{'would write' if dry_run else 'write'}  {folder}/{_describe(path, data)}")
    if dry_run:
        log(f"dry run: {len(changed)} file(s) would be written to {folder}, {len(files) - len(changed)} unchanged")
        return {}
    # the index and card last: a write cut short leaves an index that names only files already there
    for path in sorted(changed, key=lambda p: p in (INDEX_FILE, CARD_FILE)):
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(changed[path])
        os.replace(tmp, target)
    return changed


# --- the hub (--repo, --space) -----------------------------------------------------------------------------------

class _HubErrors:
    """Turns what huggingface_hub raises into one line naming the fix (no traceback)."""

    def __init__(self, doing: str, endpoint: str):
        self.doing, self.endpoint = doing, endpoint

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or isinstance(exc, PublishError):
            return False
        import httpx2
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

        where = f"{self.doing} ({self.endpoint})"
        if isinstance(exc, OfflineModeIsEnabled):
            raise PublishError(f"{where}: HF_HUB_OFFLINE is set; unset it to publish, or write the layout with --to DIR") from None
        if isinstance(exc, (httpx2.TransportError, LocalEntryNotFoundError, ConnectionError)):
            raise PublishError(f"{where}: cannot reach the hub ({type(exc).__name__}); check the network and --endpoint, "
                               "or write the layout with --to DIR") from None
        if isinstance(exc, HfHubHTTPError):
            status = exc.response.status_code if exc.response is not None else None
            if status == 401:
                raise PublishError(f"{where}: not authenticated (401); log in with `hf auth login` or set HF_TOKEN "
                                   "to a token with write access") from None
            if status == 403:
                raise PublishError(f"{where}: the token may not write there (403); use a write token of an "
                                   "account that owns the repo (`hf auth login`)") from None
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PublishError(f"{where}: the hub answered {status}: {first}") from None
        if isinstance(exc, ValueError):  # huggingface_hub's own checks, e.g. a README whose metadata it refuses
            raise PublishError(f"{where}: {str(exc).strip().splitlines()[0]}") from None
        return False


def _api(endpoint: str | None):
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=None)  # None: huggingface_hub finds the user's token itself


def _remote_index(api, repo: str, tmp: str) -> tuple[bool, dict | None]:
    """(the dataset repo exists, its index.json or None)."""
    from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError

    try:
        api.repo_info(repo, repo_type="dataset")
    except RepositoryNotFoundError:
        return False, None
    try:
        # a throw-away cache: a dry run writes nothing that outlives it
        path = api.hf_hub_download(repo, INDEX_FILE, repo_type="dataset", cache_dir=tmp)
    except RemoteEntryNotFoundError:
        return True, None
    return True, read_index(Path(path).read_bytes(), f"dataset {repo}")


def _changed_on_hub(api, repo: str, repo_type: str, files: dict[str, bytes]) -> dict[str, bytes]:
    """The files whose bytes the repo does not already hold (LFS files compared by SHA-256, others by git oid)."""
    remote = {f.path: f for f in api.get_paths_info(repo, list(files), repo_type=repo_type)
              if getattr(f, "blob_id", None) is not None}
    changed = {}
    for path, data in files.items():
        held = remote.get(path)
        same = held is not None and (held.lfs.sha256 == _sha256(data) if held.lfs else held.blob_id == _git_blob_oid(data))
        if not same:
            changed[path] = data
    return changed


def publish_hub(sub: Submission, repo: str, space: str | None = None, endpoint: str | None = None,
                dry_run: bool = False, log: Callable[[str], None] = print) -> dict[str, bytes]:
    """One commit of every changed file of the layout to dataset ``repo`` (created if missing); with ``space``,
    a new Space from ``leaderboard/space/`` that reads ``repo``. → the files committed."""
    from huggingface_hub import CommitOperationAdd

    api = _api(endpoint)
    shown = api.endpoint
    space_files = _space_files(repo) if space else {}
    with tempfile.TemporaryDirectory(prefix="immunobench-hub-") as tmp:
        if not dry_run:
            with _HubErrors(f"creating dataset {repo}", shown):
                api.create_repo(repo, repo_type="dataset", exist_ok=True)
        with _HubErrors(f"reading dataset {repo}", shown):
            exists, current = _remote_index(api, repo, tmp)
        files = layout(sub, current)
        with _HubErrors(f"comparing with dataset {repo}", shown):
            changed = _changed_on_hub(api, repo, "dataset", files) if exists else dict(files)
    verb = "would commit" if dry_run else "commit"
    if dry_run and not exists:
        log(f"would create  dataset {repo}")
    for path, data in changed.items():
        log(f"{verb}  dataset {repo}  {_describe(path, data)}")
    if not dry_run and changed:
        task, backbone = sub.manifest["task_card"]["name"], sub.manifest["model"]["name"]
        ops = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=data) for path, data in changed.items()]
        with _HubErrors(f"committing to dataset {repo}", shown):
            api.create_commit(repo, ops, repo_type="dataset",
                              commit_message=f"immunobench: {task} on {backbone}, bundle {sub.hash16}",
                              commit_description=f"{len(changed)} file(s); content hash {sub.index['content_hash']}")
    log(f"{'dry run: ' if dry_run else ''}dataset {repo}: {len(changed)} file(s) "
        f"{'to commit' if dry_run else 'committed'}, {len(files) - len(changed)} unchanged")
    if space:
        _publish_space(api, space, repo, space_files, dry_run, log)
    return {} if dry_run else changed


def check_space_source() -> None:
    """``PublishError`` when the Space's source folder is not in this installation."""
    if not (SPACE_SOURCE / "app.py").is_file():
        raise PublishError(f"--space: the Space's source folder {SPACE_SOURCE} (app.py, requirements.txt, README.md) "
                           "is missing from this installation; publish the dataset without --space")


def _space_files(repo: str) -> dict[str, bytes]:
    check_space_source()
    files = {p.relative_to(SPACE_SOURCE).as_posix(): p.read_bytes() for p in sorted(SPACE_SOURCE.rglob("*"))
             if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")}
    files["results_repo.txt"] = f"{repo}\n".encode()  # the app's fallback when the Space variable is unset
    return files


def _publish_space(api, space: str, repo: str, files: dict[str, bytes], dry_run: bool, log) -> None:
    """Creates the Space on first use; an existing Space keeps its code, only its results variable follows ``repo``."""
    from huggingface_hub import CommitOperationAdd

    shown = api.endpoint
    with _HubErrors(f"reading Space {space}", shown):
        exists = api.repo_exists(space, repo_type="space")
        variables = api.get_space_variables(space) if exists else {}
    if exists:
        held = variables.get(RESULTS_VARIABLE)
        if held is not None and held.value == repo:
            log(f"Space {space} exists and reads {repo}; left unchanged")
            return
        log(f"{'would set' if dry_run else 'set'}  Space {space} variable {RESULTS_VARIABLE}={repo} (its code is left unchanged)")
        if not dry_run:
            with _HubErrors(f"setting a variable of Space {space}", shown):
                api.add_space_variable(space, RESULTS_VARIABLE, repo)
        return
    log(f"{'would create' if dry_run else 'create'}  Space {space} (gradio)")
    for path, data in files.items():
        log(f"{'would commit' if dry_run else 'commit'}  space {space}  {_describe(path, data)}")
    log(f"{'would set' if dry_run else 'set'}  Space {space} variable {RESULTS_VARIABLE}={repo}")
    if dry_run:
        return
    with _HubErrors(f"creating Space {space}", shown):
        api.create_repo(space, repo_type="space", space_sdk="gradio", exist_ok=True)
        api.create_commit(space, [CommitOperationAdd(path_in_repo=p, path_or_fileobj=d) for p, d in files.items()],
                          repo_type="space", commit_message=f"immunobench leaderboard reading {repo}")
        api.add_space_variable(space, RESULTS_VARIABLE, repo, description="the immunobench results dataset to show")
    log(f"Space {space} created: {shown}/spaces/{space}")
