"""--executor ray: a local Ray instance (in this process, localhost only) computes a grid's stages.

One grid runs through Ray into an empty store with a defense whose first attempt kills its own
worker process: Ray retries the task and every row equals the local executor's bit for bit (the
``finished`` run, computed in this process with one thread). Three Ray tasks racing one store key
leave exactly one artifact.
"""
import json
import time
from dataclasses import replace

import pandas as pd
import pytest
import torch

from conftest import small_config
from immunobench.progress import Progress
from immunobench.runner import Runner
from immunobench.store import Store, artifact_key

ray = pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[test]')")


def test_address_without_ray_executor_and_an_absent_cluster_are_one_line_exit_2(small_card, tmp_path, capsys):
    from immunobench.cli import main
    from immunobench.errors import UserError
    from immunobench.parallel import ray_cluster

    common = ["run", "--task", str(small_card), "--out", str(tmp_path), "--store", str(tmp_path / "s"), "--quiet"]
    assert main([*common, "--address", "auto"]) == 2
    assert capsys.readouterr().err.strip().endswith("--address names a Ray cluster: add --executor ray")
    assert not ray.is_initialized()
    with pytest.raises(UserError, match="could not start or join the Ray cluster at 'auto'"):
        ray_cluster("auto", 1, log=lambda _: None)  # no `ray start --head` on this machine


@pytest.fixture(scope="module")
def local_ray():
    """One local instance for the module; the runner joins it and leaves it running."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             object_store_memory=100 * 1024**2)
    yield ray
    ray.shutdown()


KILLS_ONCE = '''
import os
import signal
from pathlib import Path

from immunobench.defenses.mima import MIMA
from immunobench.plugins import register_defense

MARKER = Path(__file__).with_suffix(".killed")
DRIVER = {driver}  # the test's own process is never killed


@register_defense("mima-killed-once")
class MIMAKilledOnce(MIMA):
    """MIMA, whose first attempt SIGKILLs the worker process computing it."""

    def immunize(self, model, data, cfg):
        if os.getpid() != DRIVER and not MARKER.exists():
            MARKER.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return super().immunize(model, data, cfg)
'''


def test_a_grid_on_ray_equals_the_local_executor_bit_for_bit_after_a_killed_worker(
        local_ray, finished, small_card, tmp_path):
    import os

    from immunobench.plugins import load_plugin_file

    plugin = tmp_path / "mima_killed_once.py"
    plugin.write_text(KILLS_ONCE.format(driver=os.getpid()))
    load_plugin_file(plugin)
    cfg = replace(small_config(small_card, tmp_path, defenses=("mima-killed-once",)), executor="ray", workers=0,
                  overrides={"mima-killed-once": {"steps": 2}})
    logged = []
    runner = Runner(cfg, Progress(False), log=logged.append)
    run_dir = runner.run()

    killed = plugin.with_suffix(".killed")
    assert killed.exists() and int(killed.read_text()) != os.getpid()  # a Ray worker died mid-job
    assert not runner.failures and not any("failed after" in line for line in logged), logged
    # the retried task computed the immunization in a worker; the final walk here computed nothing
    assert "immunize" in runner.stats["computed"]
    assert {k for k in runner.keys["immunize"]} <= runner._by_workers
    assert set(runner.keys["attack"]) <= runner._by_workers
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["host"]["executor"] == "ray"

    local = pd.read_parquet(finished[2] / "results.parquet")
    on_ray = pd.read_parquet(run_dir / "results.parquet")
    key = ["group", "concept", "attack", "attack_config", "seed", "step", "metric", "split"]

    def rows(frame, defense):
        part = frame[frame.defense == defense].drop(columns=["defense"]).sort_values(key).reset_index(drop=True)
        return part[sorted(part.columns)]

    assert len(rows(on_ray, "none")) > 20
    pd.testing.assert_frame_equal(rows(on_ray, "none"), rows(local, "none"), check_exact=True)
    # the same update rule under another name, computed by the retry: MIMA's rows, bit for bit
    pd.testing.assert_frame_equal(rows(on_ray, "mima-killed-once"), rows(local, "mima"), check_exact=True)


def test_ray_tasks_racing_for_one_key_make_one_artifact(local_ray, tmp_path):
    from test_store_remote import writer_prefixes

    def put_at(url: str, cache: str, key: str, who: int, start: float) -> tuple:  # nested: Ray ships it by value
        time.sleep(max(0.0, start - time.time()))  # the three tasks put at the same moment
        art = Store(url, object_store=True, cache=cache).put(
            key, {"by": who}, {"tensors": {"w": torch.full((256, 1024), float(who))}})
        w = art.tensors()["w"]
        return who, art.meta["by"], float(w.min()), float(w.max())

    url, key, n = f"file://{tmp_path / 'bucket'}", artifact_key("race", n=2), 3
    put = ray.remote(num_cpus=0)(put_at)  # all three at once on a two-CPU instance
    start = time.time() + 5
    seen = ray.get([put.remote(url, str(tmp_path / f"cache-{i}"), key, i, start) for i in range(n)])
    store = Store(url, object_store=True, cache=tmp_path / "reader")
    winner = store.get(key).meta["by"]
    assert sorted(s[0] for s in seen) == list(range(n))
    assert all(s[1:] == (winner, winner, winner) for s in seen), seen
    marker = json.loads(store.fs.cat_file(f"{store.path(key)}/meta.json"))
    assert writer_prefixes(store, key) == [marker["writer"]]
