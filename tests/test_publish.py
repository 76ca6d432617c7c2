"""``immunobench publish``: the folder layout, and the hub path through huggingface_hub's real client
against a local HTTP double of the Hub that records every request (no network)."""
import base64
import hashlib
import io
import json
import re
import shutil
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest
import yaml

from immunobench import cli
from immunobench.leaderboard import publish as publish_mod
from immunobench.leaderboard.bundle import make_bundle, verify_bundle

TOKEN = "hf_test"
READS = {"GET", "HEAD"}
READ_POSTS = ("/paths-info/",)  # a POST that changes nothing on the Hub


def _oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubDouble(ThreadingHTTPServer):
    """The Hub endpoints huggingface_hub's client calls to create repos, read a file, commit and set Space
    variables. Every request is recorded as {method, path, query, auth, body}."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.repos: dict[tuple[str, str], dict] = {}  # (type, id) → {"files", "sha", "variables", "sdk"}
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def files(self, repo, kind="dataset") -> dict[str, bytes]:
        return dict(self.repos[(kind, repo)]["files"])

    def writes(self) -> list[dict]:
        return [r for r in self.requests
                if r["method"] not in READS and not any(p in r["path"] for p in READ_POSTS)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HubDouble

    def log_message(self, *args):  # quiet: the record is self.server.requests
        pass

    def do_GET(self):
        self._route("GET")

    def do_HEAD(self):
        self._route("HEAD")

    def do_POST(self):
        self._route("POST")

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                chunk = self.rfile.read(size + 2)[:size]
                if not size:
                    return out
                out += chunk
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status, body=b"", headers=None, method="GET"):
        if isinstance(body, (dict, list)):
            body, headers = json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})}
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)

    def _route(self, method):
        url = urlsplit(self.path)
        body = self._body()
        hub = self.server
        with hub.lock:
            hub.requests.append({"method": method, "path": url.path, "query": url.query,
                                 "auth": self.headers.get("Authorization"), "body": body})
        write = method not in READS and not any(p in url.path for p in READ_POSTS + ("/validate-yaml",))
        if write and self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._send(401, {"error": "Invalid credentials"}, {"X-Error-Message": "Invalid credentials in Authorization header"})
        with hub.lock:
            return self._dispatch(method, url.path, body)

    def _dispatch(self, method, path, body):
        hub = self.server
        if path == "/api/repos/create":
            spec = json.loads(body)
            key = (spec.get("type") or "model", f"{spec['organization']}/{spec['name']}")
            url = f"{hub.url}/{key[0]}s/{key[1]}"
            if key in hub.repos:  # the Hub's 409 names the existing repo's url; exist_ok reads it
                return self._send(409, {"error": "You already created this repo", "url": url})
            hub.repos[key] = {"files": {}, "sha": "0" * 40, "variables": {}, "sdk": spec.get("sdk")}
            return self._send(200, {"url": url})
        if path == "/api/validate-yaml":
            return self._send(200, {"errors": [], "warnings": []})
        m = re.fullmatch(r"/api/(dataset|space|model)s/([^/]+/[^/]+)(/revision/[^/]+)?", path)
        if m:
            repo = hub.repos.get((m[1], m[2]))
            if repo is None:
                return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}, method)
            return self._send(200, {"id": m[2], "sha": repo["sha"], "private": False,
                                    "siblings": [{"rfilename": p} for p in sorted(repo["files"])]}, method=method)
        m = re.fullmatch(r"/api/(dataset|space|model)s/([^/]+/[^/]+)/(paths-info|preupload|commit)/[^/]+", path)
        if m:
            repo = hub.repos.get((m[1], m[2]))
            if repo is None:
                return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            files = repo["files"]
            if m[3] == "paths-info":
                asked = parse_qs(body.decode())["paths"]
                return self._send(200, [{"type": "file", "path": p, "oid": _oid(files[p]), "size": len(files[p])}
                                        for p in asked if p in files])
            if m[3] == "preupload":
                asked = json.loads(body)["files"]
                return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                                   "oid": _oid(files[f["path"]]) if f["path"] in files else None}
                                                  for f in asked], "commitOid": repo["sha"]})
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            assert lines[0]["key"] == "header", lines[0]
            for line in lines[1:]:
                assert line["key"] == "file" and line["value"]["encoding"] == "base64", line["key"]
                files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
            repo["sha"] = hashlib.sha1(body).hexdigest()
            return self._send(200, {"commitUrl": f"{hub.url}/{m[1]}s/{m[2]}/commit/{repo['sha']}",
                                    "commitOid": repo["sha"], "success": True})
        m = re.fullmatch(r"/api/spaces/([^/]+/[^/]+)/variables", path)
        if m:
            repo = hub.repos.get(("space", m[1]))
            if repo is None:
                return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            if method == "POST":
                spec = json.loads(body)
                repo["variables"][spec["key"]] = {"value": spec["value"], "description": spec.get("description")}
            return self._send(200, repo["variables"])
        m = re.fullmatch(r"/(datasets/|spaces/)?([^/]+/[^/]+)/resolve/[^/]+/(.+)", path)
        if m:
            repo = hub.repos.get(((m[1] or "models/")[:-2], m[2]))
            if repo is None:
                return self._send(404, b"", {"X-Error-Code": "RepoNotFound"}, method)
            if m[3] not in repo["files"]:
                return self._send(404, b"", {"X-Error-Code": "EntryNotFound"}, method)
            data = repo["files"][m[3]]
            return self._send(200, data, {"X-Repo-Commit": repo["sha"], "ETag": f'"{_oid(data)}"'}, method)
        return self._send(404, {"error": f"the double does not serve {method} {path}"})


@pytest.fixture
def hub(monkeypatch, tmp_path):
    import huggingface_hub.constants

    # conftest turns the client's offline mode on for every test; this one talks to 127.0.0.1 only
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    server = HubDouble()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def run_copy(finished, tmp_path):
    """A private copy of the shared finished run (publish must not need to write it; a copy keeps it pristine)."""
    _, _, run_dir = finished
    copy = tmp_path / "runs" / run_dir.name
    shutil.copytree(run_dir, copy)
    return copy


def _publish(*args):
    return cli.main(["publish", *map(str, args)])


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _variant(run_dir: Path, model: str, date: str) -> Path:
    """Another run: the same rows on another backbone and date (its bundle verifies; its content hash differs)."""
    other = run_dir.with_name(run_dir.name + "-" + re.sub(r"\W", "", model))
    shutil.copytree(run_dir, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["model"].update(name=model, fingerprint="f" * 16)
    manifest["date"] = date
    (other / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return other


def test_hub_commit_equals_the_folder_layout(hub, run_copy, tmp_path, capsys):
    assert _publish(run_copy, "--to", tmp_path / "site") == 0
    assert _publish(run_copy, "--repo", "me/results", "--endpoint", hub.url) == 0
    folder, committed = _tree(tmp_path / "site"), hub.files("me/results")
    assert committed == folder  # same paths, same bytes

    manifest = json.loads((run_copy / "manifest.json").read_text())
    h = next(iter(json.loads(folder["index.json"])["submissions"]))["hash16"]
    bundle = folder[f"bundles/{h}.zip"]
    (tmp_path / "b.zip").write_bytes(bundle)
    index = verify_bundle(tmp_path / "b.zip")
    assert index["content_hash"][:16] == h
    expected = sorted(["README.md", "index.json", f"bundles/{h}.zip", f"rows/relearn-small/tiny-sd/{h}.parquet"]
                      + [f"figures/{h}/{p.name}" for p in (run_copy / "plots").glob("*.png")])
    assert sorted(folder) == expected
    for p in (run_copy / "plots").glob("*.png"):
        assert folder[f"figures/{h}/{p.name}"] == p.read_bytes()

    # the rows: every column of the bundle's results, then the provenance, with the manifest's values
    rows = pd.read_parquet(io.BytesIO(folder[f"rows/relearn-small/tiny-sd/{h}.parquet"]))
    results = pd.read_parquet(run_copy / "results.parquet")
    assert list(rows.columns) == list(results.columns) + list(publish_mod.PROVENANCE)
    pd.testing.assert_frame_equal(rows[list(results.columns)], results)
    code = manifest["code"]
    provenance = {"backbone": "tiny-sd", "backbone_fingerprint": manifest["model"]["fingerprint"],
                  "task_card_hash": manifest["task_card"]["hash"],
                  "code_version": f"{code['immunobench']}" + (f"+g{code['git'][:12]}" + (".dirty" if code["dirty"] else "")
                                                              if code.get("git") else ""),
                  "seeds": ",".join(map(str, manifest["resolved"]["seeds"])), "run_date": manifest["date"],
                  "bundle_hash": index["content_hash"], "schema_version": manifest["schema_version"], "reproduced": False}
    for column, value in provenance.items():
        assert rows[column].tolist() == [value] * len(rows), column

    entry = json.loads(folder["index.json"])["submissions"][0]
    assert entry["backbone"] == "tiny-sd" and entry["reproduced"] is False and entry["row_count"] == len(rows)
    assert entry["defenses"] == manifest["resolved"]["defenses"] and entry["seeds"] == manifest["resolved"]["seeds"]
    card = folder["README.md"].decode()
    front = yaml.safe_load(card.split("---")[1])
    assert front["configs"][0]["data_files"][0]["path"] == "rows/**/*.parquet" and front["license"]

    # the client's requests: the token from HF_TOKEN on each write, one commit holding the whole layout
    commits = [r for r in hub.requests if r["path"].endswith("/commit/main")]
    assert len(commits) == 1 and all(r["auth"] == f"Bearer {TOKEN}" for r in hub.writes())
    # nothing written anywhere holds the token
    for root in (tmp_path,):
        for p in root.rglob("*"):
            assert not p.is_file() or TOKEN.encode() not in p.read_bytes(), p
    assert all(TOKEN.encode() not in data for data in committed.values())
    assert "Traceback" not in capsys.readouterr().err

    # the run's own bundle is the same bytes; published from the zip alone, nothing changes (figures are kept)
    zipped = make_bundle(run_copy)
    assert zipped.read_bytes() == bundle
    assert _publish(zipped, "--to", tmp_path / "site") == 0
    assert _tree(tmp_path / "site") == folder


def test_second_publish_keeps_the_first_and_separates_backbones(hub, run_copy, tmp_path):
    sd = _variant(run_copy, "CompVis/stable-diffusion-v1-4", "2026-12-24T10:00:00+0000")
    # a passed reproduction record of sd's bundle, where `immunobench reproduce` would leave it
    content_hash = verify_bundle(make_bundle(sd, tmp_path / "probe.zip"))["content_hash"]
    record = {"content_hash": content_hash, "passed": True, "cells": []}
    sd.with_name(sd.name + ".bundle.zip.reproduced.json").write_text(json.dumps(record))

    assert _publish(run_copy, "--repo", "me/results", "--endpoint", hub.url) == 0
    first = hub.files("me/results")
    assert _publish(sd, "--repo", "me/results", "--endpoint", hub.url, "--to", tmp_path / "site") == 0
    files = hub.files("me/results")
    subs = {s["backbone"]: s for s in json.loads(files["index.json"])["submissions"]}
    assert set(subs) == {"tiny-sd", "CompVis/stable-diffusion-v1-4"}
    tiny, big = subs["tiny-sd"], subs["CompVis/stable-diffusion-v1-4"]
    assert tiny["rows"].startswith("rows/relearn-small/tiny-sd/")
    assert big["rows"] == f"rows/relearn-small/CompVis_stable-diffusion-v1-4/{content_hash[:16]}.parquet"
    assert {p: d for p, d in files.items() if p in first and p not in ("index.json", "README.md")} == \
        {p: d for p, d in first.items() if p not in ("index.json", "README.md")}  # the first's files untouched
    assert big["reproduced"] is True and tiny["reproduced"] is False
    assert json.loads(files[f"reproductions/{content_hash[:16]}.json"]) == record
    assert pd.read_parquet(io.BytesIO(files[big["rows"]]))["reproduced"].all()
    assert "tiny-sd" in files["README.md"].decode() and "CompVis/stable-diffusion-v1-4" in files["README.md"].decode()

    # republishing an unchanged run commits nothing
    before = len([r for r in hub.requests if "/commit/" in r["path"]])
    assert _publish(run_copy, "--repo", "me/results", "--endpoint", hub.url) == 0
    assert len([r for r in hub.requests if "/commit/" in r["path"]]) == before


def _version_one(run_dir: Path) -> Path:
    """The run as a schema-version-1 run wrote it: no attack_config/split columns, string columns, version 1."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    old = _variant(run_dir, "tiny-sd", "2026-11-01T10:00:00+0000")
    results = pd.read_parquet(old / "results.parquet").drop(columns=["attack_config", "split"])
    table = pa.Table.from_pandas(results.astype({c: object for c in results.columns if results[c].dtype == "str"}),
                                 preserve_index=False)
    table = table.cast(pa.schema([pa.field(f.name, pa.string() if pa.types.is_large_string(f.type) else f.type)
                                  for f in table.schema]))
    pq.write_table(table.replace_schema_metadata({b"immunobench.schema_version": b"1"}), old / "results.parquet")
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["schema_version"] = 1
    (old / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return old


def test_rows_of_every_schema_version_load_as_one_dataset(run_copy, tmp_path):
    """The dataset card's one config, rows/**/*.parquet, must read version-1 and version-2 submissions together."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    old = _version_one(run_copy)
    assert pq.read_schema(old / "results.parquet") != pq.read_schema(run_copy / "results.parquet")
    assert _publish(old, "--to", tmp_path / "site") == 0 and _publish(run_copy, "--to", tmp_path / "site") == 0
    files = sorted((tmp_path / "site" / "rows").rglob("*.parquet"))
    assert len(files) == 2
    schemas = [pq.read_schema(f) for f in files]
    assert schemas[0] == schemas[1]
    assert schemas[0].names == [n for n, _ in publish_mod.ROW_COLUMNS] + list(publish_mod.PROVENANCE)

    rows = ds.dataset(tmp_path / "site" / "rows", format="parquet").to_table().to_pandas()
    results = pd.read_parquet(run_copy / "results.parquet")
    by_version = dict(tuple(rows.groupby("schema_version")))
    assert set(by_version) == {1, 2} and all(len(part) == len(results) for part in by_version.values())
    # version 1's rows are its measurements unchanged, at the one point a version-1 run measured
    v1 = by_version[1]
    assert set(v1.attack_config) == {"default"} and set(v1.split) == {"eval"}
    key = ["group", "concept", "defense", "attack", "seed", "step", "metric"]
    expected = results[(results.attack_config == "default") & (results.split == "eval")]
    assert len(expected) == len(results)  # this run has only the default point, so nothing was dropped
    merged = v1.merge(expected, on=key, suffixes=("", "_run"))
    assert len(merged) == len(results) and (merged.value == merged.value_run).all()


def test_dry_run_reads_at_most_and_writes_nothing(hub, run_copy, tmp_path, capsys):
    assert _publish(run_copy, "--repo", "me/results", "--endpoint", hub.url) == 0  # an existing repo to plan against
    sd = _variant(run_copy, "CompVis/stable-diffusion-v1-4", "2026-12-24T10:00:00+0000")
    capsys.readouterr()
    hub.requests.clear()
    before = _tree(tmp_path)
    assert _publish(sd, "--repo", "me/results", "--endpoint", hub.url, "--to", tmp_path / "site", "--dry-run") == 0
    out = capsys.readouterr().out
    assert hub.requests and not hub.writes()
    assert _tree(tmp_path) == before and not (tmp_path / "site").exists()
    assert "rows/relearn-small/CompVis_stable-diffusion-v1-4/" in out and "sha256" in out and "index.json" in out
    # a dry run against a repo that does not exist yet plans its creation, still without writing
    assert _publish(sd, "--repo", "me/new-results", "--endpoint", hub.url, "--dry-run") == 0
    assert "would create  dataset me/new-results" in capsys.readouterr().out and not hub.writes()


def test_tampered_bundle_is_refused_and_nothing_is_committed(hub, run_copy, tmp_path, capsys):
    bundle = make_bundle(run_copy, tmp_path / "run.bundle.zip")
    with zipfile.ZipFile(bundle) as z:
        contents = {n: z.read(n) for n in z.namelist()}
    frame = pd.read_parquet(io.BytesIO(contents["results.parquet"]))
    frame.loc[frame["defense"] != "none", "value"] *= 0.5  # a better-looking defense
    buf = io.BytesIO()
    frame.to_parquet(buf)
    contents["results.parquet"] = buf.getvalue()
    forged = tmp_path / "forged.bundle.zip"
    with zipfile.ZipFile(forged, "w") as z:
        for name, data in contents.items():
            z.writestr(name, data)
    assert _publish(forged, "--repo", "me/results", "--endpoint", hub.url, "--to", tmp_path / "site") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "refused" in err and "results.parquet" in err
    assert hub.requests == [] and not (tmp_path / "site").exists()


def test_unreachable_endpoint_is_one_line(run_copy, tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert _publish(run_copy, "--repo", "me/results", "--endpoint", f"http://127.0.0.1:{port}") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "cannot reach" in err and "Traceback" not in err
    # offline mode set by the user: named, with the fix
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert _publish(run_copy, "--repo", "me/results", "--endpoint", f"http://127.0.0.1:{port}") == 2
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err


def test_no_token_names_the_fix(hub, run_copy, tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    assert _publish(run_copy, "--repo", "me/results", "--endpoint", hub.url) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "hf auth login" in err
    assert not any("/commit/" in r["path"] for r in hub.requests)


def test_space_is_created_once_and_reads_the_dataset(hub, run_copy, tmp_path, monkeypatch, capsys):
    source = tmp_path / "space"
    source.mkdir()
    for name, text in {"app.py": "import gradio\n", "requirements.txt": "gradio\n",
                       "README.md": "---\nsdk: gradio\napp_file: app.py\n---\n"}.items():
        (source / name).write_text(text)
    monkeypatch.setattr(publish_mod, "SPACE_SOURCE", source)
    assert _publish(run_copy, "--repo", "me/results", "--space", "me/board", "--endpoint", hub.url) == 0
    space = hub.repos[("space", "me/board")]
    assert space["sdk"] == "gradio"
    assert hub.files("me/board", "space") == {**_tree(source), "results_repo.txt": b"me/results\n"}
    assert space["variables"][publish_mod.RESULTS_VARIABLE]["value"] == "me/results"
    # a second publish leaves the existing Space alone
    commits = len([r for r in hub.requests if "/commit/" in r["path"]])
    assert _publish(run_copy, "--repo", "me/results", "--space", "me/board", "--endpoint", hub.url) == 0
    assert len([r for r in hub.requests if "/commit/" in r["path"]]) == commits
    # without the Space's source folder: one line naming it, before any request
    hub.requests.clear()
    monkeypatch.setattr(publish_mod, "SPACE_SOURCE", tmp_path / "gone")
    capsys.readouterr()
    assert _publish(run_copy, "--repo", "me/results", "--space", "me/board", "--endpoint", hub.url) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(tmp_path / "gone") in err and hub.requests == []


def test_bad_input_is_one_line(run_copy, capsys):
    for args in ([run_copy], [run_copy, "--repo", "not-a-repo-id"], [run_copy, "--space", "me/x", "--to", "d"],
                 ["no-such-run", "--to", "d"]):
        assert _publish(*args) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
