"""The store as an fsspec URL: marker commits, invisible unfinished writes, one winner per key.

memory:// stands in for a bucket within one process; a file:// folder forced through the object-store
code path (``object_store=True``) is the bucket that several processes share; s3:// runs against a
moto server on 127.0.0.1 when moto and s3fs are installed.
"""
import json
import multiprocessing
import uuid

import pytest
import torch

from immunobench.errors import UserError
from immunobench.store import Store, artifact_key


@pytest.fixture
def memory_url():
    import fsspec

    url = f"memory://immunobench-test-{uuid.uuid4().hex}/store"
    yield url
    fs = fsspec.filesystem("memory")
    fs.rm(url.removeprefix("memory://").split("/")[0], recursive=True)


def writer_prefixes(store: Store, key: str) -> list[str]:
    """The writer prefixes under a key's folder (the marker left out)."""
    if not store.fs.exists(store.path(key)):
        return []
    names = [p.rstrip("/").rsplit("/", 1)[-1] for p in store.fs.ls(store.path(key), detail=False)]
    return sorted(n for n in names if n != "meta.json")


def test_memory_store_round_trips_tensors_and_meta_through_the_read_cache(memory_url, tmp_path):
    store = Store(memory_url, cache=tmp_path / "cache-a")
    assert store.remote and store.root == memory_url
    key = artifact_key("x", n=1)
    t = {"w": torch.randn(3, 4), "u": torch.arange(5, dtype=torch.uint8)}
    assert store.get(key) is None and not store.has(key)
    art = store.put(key, {"info": [1, 2]}, {"tensors": t, "extra": {"e": torch.ones(2)}})
    assert art.path.is_relative_to(tmp_path / "cache-a")  # tensors load from local files
    # another machine (an empty read cache) downloads the same artifact, bit for bit
    other = Store(memory_url, cache=tmp_path / "cache-b").get(key)
    assert other.path.is_relative_to(tmp_path / "cache-b")
    assert other.meta == {"key": key, "info": [1, 2]}
    back = other.tensors()
    assert torch.equal(back["w"], t["w"]) and torch.equal(back["u"], t["u"]) and back["w"].dtype == torch.float32
    assert torch.equal(other.tensors("extra")["e"], torch.ones(2))
    # remote layout: one writer prefix with the files, and the marker naming it beside it
    marker = json.loads(store.fs.cat_file(f"{store.path(key)}/meta.json"))
    assert writer_prefixes(store, key) == [marker["writer"]]
    assert marker["files"] == ["extra.safetensors", "meta.json", "tensors.safetensors"]
    # a second put of a finished key keeps the first (same inputs → same output), uploading nothing
    store.put(key, {"info": "other"}, {})
    assert Store(memory_url, cache=tmp_path / "cache-c").get(key).meta["info"] == [1, 2]
    assert len(writer_prefixes(store, key)) == 1
    # snapshots stay on this machine, in a folder of this store URL
    assert store.snapshot_file(key).is_relative_to(tmp_path / "cache-a")


def test_a_writer_killed_before_its_marker_leaves_nothing_readable(memory_url, tmp_path, monkeypatch):
    store = Store(memory_url, cache=tmp_path / "cache")
    key = artifact_key("x", n=2)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the writer dies after uploading its files, before the marker

    with monkeypatch.context() as m:
        m.setattr(Store, "_commit", killed)
        with pytest.raises(KeyboardInterrupt):
            store.put(key, {"attempt": 1}, {"tensors": {"w": torch.zeros(2)}})
    dead = writer_prefixes(store, key)
    assert len(dead) == 1 and store.fs.exists(f"{store.path(key)}/{dead[0]}/tensors.safetensors")  # uploaded
    fresh = Store(memory_url, cache=tmp_path / "other-cache")
    assert not store.has(key) and store.get(key) is None and fresh.get(key) is None
    # a later writer commits normally; readers follow its marker, never the dead prefix
    store.put(key, {"attempt": 2}, {"tensors": {"w": torch.ones(2)}})
    art = fresh.get(key)
    assert art.meta["attempt"] == 2 and torch.equal(art.tensors()["w"], torch.ones(2))
    winner = json.loads(store.fs.cat_file(f"{store.path(key)}/meta.json"))["writer"]
    assert sorted(writer_prefixes(store, key)) == sorted([dead[0], winner])
    # clean_temporary removes the dead prefix once it is old enough, never the winner's
    assert store.clean_temporary() == 0  # fresh: it could be a live writer's
    assert store.clean_temporary(older_than_s=0) == 1
    assert writer_prefixes(store, key) == [winner]
    assert Store(memory_url, cache=tmp_path / "third").get(key).meta["attempt"] == 2


def test_a_writer_that_loses_the_marker_deletes_its_files_and_returns_the_winners(memory_url, tmp_path, monkeypatch):
    a, b = Store(memory_url, cache=tmp_path / "a"), Store(memory_url, cache=tmp_path / "b")
    key = artifact_key("x", n=3)
    commit = Store._commit

    def b_commits_first(self, *args):  # b finishes its whole put between a's upload and a's commit
        if self is a:
            b.put(key, {"by": "b"}, {"tensors": {"w": torch.full((4,), 2.0)}})
        return commit(self, *args)

    monkeypatch.setattr(Store, "_commit", b_commits_first)
    art = a.put(key, {"by": "a"}, {"tensors": {"w": torch.full((4,), 1.0)}})
    assert art.meta["by"] == "b" and torch.equal(art.tensors()["w"], torch.full((4,), 2.0))
    marker = json.loads(a.fs.cat_file(f"{a.path(key)}/meta.json"))
    assert writer_prefixes(a, key) == [marker["writer"]]  # the loser's prefix is gone


def test_a_bad_store_url_is_one_clear_line_and_exit_2(tmp_path, capsys):
    from immunobench.cli import main

    with pytest.raises(UserError, match=r"store nosuch://x: cannot open this URL \(Protocol not known: nosuch\)"):
        Store("nosuch://x")
    assert main(["run", "--task", "relearn-style", "--store", "nosuch://bucket/store", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("immunobench: error: store nosuch://bucket/store: cannot open this URL") and "\n" not in err
    assert list(tmp_path.iterdir()) == []


def test_file_urls_and_plain_paths_are_the_same_local_store(tmp_path):
    from pathlib import Path

    url_store, path_store = Store(f"file://{tmp_path}"), Store(tmp_path)
    assert not url_store.remote and isinstance(url_store.root, Path) and url_store.root == path_store.root
    key = artifact_key("x", n=4)
    url_store.put(key, {"via": "url"}, {"tensors": {"w": torch.ones(1)}})
    assert (tmp_path / key[:2] / key / "meta.json").exists()  # today's layout, no writer prefix
    assert path_store.get(key).meta["via"] == "url"


def _race_writer(url: str, cache: str, key: str, who: int, barrier, results) -> None:
    store = Store(url, object_store=True, cache=cache)
    barrier.wait(timeout=60)
    art = store.put(key, {"by": who}, {"tensors": {"w": torch.full((256, 1024), float(who))}})  # 1 MiB each
    w = art.tensors()["w"]
    results.put((who, art.meta["by"], float(w.min()), float(w.max())))


def test_processes_racing_for_one_key_make_one_artifact(tmp_path):
    url, key, n = f"file://{tmp_path / 'bucket'}", artifact_key("race", n=1), 3
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_race_writer, args=(url, str(tmp_path / f"cache-{i}"), key, i, barrier, results))
             for i in range(n)]
    for p in procs:
        p.start()
    seen = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    store = Store(url, object_store=True, cache=tmp_path / "reader")
    winner = store.get(key).meta["by"]
    # every writer got the winner's artifact back, its meta and tensors from the same writer
    assert sorted(s[0] for s in seen) == list(range(n))
    assert all(s[1:] == (winner, winner, winner) for s in seen), seen
    assert torch.equal(store.get(key).tensors()["w"], torch.full((256, 1024), float(winner)))
    # exactly one artifact: the marker and the one prefix it names; no loser's files remain
    marker = json.loads(store.fs.cat_file(f"{store.path(key)}/meta.json"))
    assert writer_prefixes(store, key) == [marker["writer"]]
    assert store.clean_temporary(older_than_s=0) == 0


@pytest.fixture(scope="module")
def moto_endpoint():
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_url(moto_endpoint, monkeypatch):
    import boto3
    import s3fs

    for name, value in {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "test",
                        "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    bucket = f"immunobench-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    yield f"s3://{bucket}/store"
    s3fs.S3FileSystem.clear_instance_cache()


def test_s3_store_commits_by_conditional_marker(s3_url, tmp_path, monkeypatch):
    store = Store(s3_url, cache=tmp_path / "a")
    key = artifact_key("x", n=5)
    t = {"w": torch.randn(8, 3)}
    assert not store.has(key)
    store.put(key, {"info": "s3"}, {"tensors": t})
    art = Store(s3_url, cache=tmp_path / "b").get(key)
    assert art.meta["info"] == "s3" and torch.equal(art.tensors()["w"], t["w"])
    # the marker is created with If-None-Match: a second create of it is refused by the server
    with pytest.raises(FileExistsError):
        with store.fs.open(f"{store.path(key)}/meta.json", "xb") as f:
            f.write(b"{}")
    # a racing writer loses at the server and removes its prefix
    key2, other = artifact_key("x", n=6), Store(s3_url, cache=tmp_path / "c")
    commit = Store._commit

    def other_commits_first(self, *args):
        if self is store:
            other.put(key2, {"by": "other"}, {"tensors": {"w": torch.zeros(1)}})
        return commit(self, *args)

    monkeypatch.setattr(Store, "_commit", other_commits_first)
    assert store.put(key2, {"by": "me"}, {"tensors": {"w": torch.ones(1)}}).meta["by"] == "other"
    store.fs.invalidate_cache()
    marker = json.loads(store.fs.cat_file(f"{store.path(key2)}/meta.json"))
    assert writer_prefixes(store, key2) == [marker["writer"]]
