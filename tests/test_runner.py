"""The runner end to end on the shipped tiny-sd, on a card shrunk to seconds: artifacts, resume
after SIGKILL, sharing of the no-defense cells, the manifest's provenance and the report files."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import yaml

from immunobench.diffusion import sample
from immunobench.runner import RunConfig, Runner
from immunobench.progress import Progress
from immunobench.store import Store

from conftest import GROUP, small_config as _config


def _cli_args(card, tmp, name, store):
    return [sys.executable, "-m", "immunobench.cli", "run", "--task", str(card), "--defense", "mima", "--groups", GROUP,
            "--out", str(tmp / "runs"), "--store", str(tmp / store), "--name", name, "--sample-steps", "2",
            "--set", "mima.steps=2", "--workers", "1", "--quiet"]


def test_run_writes_tables_plots_and_provenance(finished):
    tmp, runner, run_dir = finished
    for name in ("manifest.json", "results.parquet", "leaderboard.md", "leaderboard.csv",
                 "plots/curves.png", "plots/curves.pdf", "plots/msgr_bars.png", f"plots/qualitative-{GROUP}.png"):
        assert (run_dir / name).is_file(), name
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["resolved"]["defenses"] == ["none", "mima"]
    assert manifest["model"]["name"] == "tiny-sd" and len(manifest["model"]["fingerprint"]) >= 8
    assert manifest["packages"]["torch"] and manifest["code"]["immunobench"]
    # each judge's own preprocessing is recorded
    for role in ("C", "D", "L", "acc"):
        judge = manifest["resolved"]["judges"][role]
        assert judge["judge"].startswith(judge["name"] + "@") and judge["name"].endswith("-world")
        assert {"mean", "std", "input_range"} <= set(judge["preprocess"])
    mima = manifest["resolved"]["plugins"]["mima"]  # paper default, preset applied, value in force
    assert (mima["config"]["steps"], mima["paper_default"]["steps"], mima["presets"]["tiny-sd"]["steps"]) == (2, 300, 60)
    costs = manifest["timings"]["computed"]
    assert {"images", "start", "immunize", "attack", "score"} <= set(costs)
    assert all(c["seconds"] >= 0 and c["peak_rss_mb"] > 0 for c in costs.values())

    results = pd.read_parquet(run_dir / "results.parquet")
    assert list(results.columns) == ["task", "group", "concept", "defense", "attack", "attack_config", "seed", "split",
                                     "step", "metric", "value"]
    assert set(results.attack_config) == {"default"} and set(results.split) == {"eval"}  # no --attack-sweep
    star = results[results.concept == "*"]
    for metric in ("MSGR/C", "MSGR/D", "MSGR/L", "MRSGR/C", "acc/targets", "acc/others"):
        assert metric in set(star.metric), metric
    assert set(results[results.metric == "MSGR/C"].step) == {0, 2}  # the whole curve
    # at step 0 the none and mima models differ only by immunization: the references are the same
    table = (run_dir / "leaderboard.md").read_text()
    assert "MSGR" in table and "mima [tiny-sd preset, --set] (lora [tiny-sd preset])" in table and "| CLIP |" in table


def test_second_run_recomputes_nothing_and_matches(finished, small_card):
    tmp, first, run_dir = finished
    again = Runner(_config(small_card, tmp, name="r2"), Progress(False), log=lambda _: None)
    run2 = again.run()
    assert again.stats["computed"] == {}
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "results.parquet"), pd.read_parquet(run2 / "results.parquet"))


def test_adding_a_defense_reuses_the_no_defense_cells(finished, small_card):
    tmp, first, _ = finished
    more = Runner(_config(small_card, tmp, defenses=("none", "mima", "uce"), name="r3"), Progress(False),
                  log=lambda _: None)
    more.run()
    computed = more.stats["computed"]
    assert computed["attack"]["count"] == 1 and computed["immunize"]["count"] == 1  # only uce's cell
    # uce's model draws its others before the attack once; none's came with the stored cells
    assert computed["before"]["count"] == len(more.card.group(GROUP).others)
    assert "images" not in computed and "start" not in computed


def test_sigkill_mid_grid_then_resume_is_identical(finished, small_card, tmp_path):
    """The reference is the session's uninterrupted run of the same grid (same card, config and seeds)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    store = Store(tmp_path / "store")
    proc = subprocess.Popen(_cli_args(small_card, tmp_path, "killed", "store"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        stages = [json.loads(m.read_text())["stage"] for m in store.root.glob("??/*/meta.json")]
        if "immunize" in stages:  # the none cell and mima's immunization are done; its attack is running
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the grid finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished_before = {m.parent.name: m.stat().st_mtime_ns for m in store.root.glob("??/*/meta.json")}
    assert finished_before

    resumed = subprocess.run(_cli_args(small_card, tmp_path, "resumed", "store"), env=env, capture_output=True,
                             text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = {m.parent.name: m.stat().st_mtime_ns for m in store.root.glob("??/*/meta.json")}
    assert all(after[k] == t for k, t in finished_before.items())  # nothing finished was rewritten
    manifest = json.loads((tmp_path / "runs" / "resumed" / "manifest.json").read_text())
    recomputed = sum(v["count"] for v in manifest["timings"]["computed"].values())
    assert recomputed == len(after) - len(finished_before)
    pd.testing.assert_frame_equal(pd.read_parquet(Path(finished[2]) / "results.parquet"),
                                  pd.read_parquet(tmp_path / "runs" / "resumed" / "results.parquet"))


def test_bad_input_is_one_line_exit_2(small_card, tmp_path):
    from immunobench.cli import main

    assert main(["run", "--task", "relearn-style", "--defense", "mimaa", "--out", str(tmp_path)]) == 2
    assert main(["run", "--task", "relearn-style", "--groups", "9c-9", "--out", str(tmp_path)]) == 2
    assert main(["run", "--task", "relearn-style", "--set", "mima.nope=1", "--groups", GROUP,
                 "--store", str(tmp_path / "s"), "--out", str(tmp_path), "--sample-steps", "1"]) == 2
    assert main(["run", "--task", "relearn-style", "--set", "zzz.steps=1", "--out", str(tmp_path)]) == 2
    assert main(["report", "no-such-run", "--out", str(tmp_path)]) == 2
    assert main(["run", "--task", "relearn-style", "--workers", "-1", "--out", str(tmp_path)]) == 2


def test_a_failing_cell_is_recorded_and_the_grid_goes_on(finished, small_card):
    from immunobench.plugins import Defense, DEFENSES, register_defense

    if "diverges" not in DEFENSES:
        @register_defense("diverges")
        class Diverges(Defense):
            """Raises what a NaN loss raises."""

            version = "1"

            def immunize(self, model, data, cfg):
                raise FloatingPointError("outer loss is nan at step 3")

    tmp, _, _ = finished
    runner = Runner(_config(small_card, tmp, defenses=("diverges", "mima"), name="r4"), Progress(False),
                    log=lambda _: None)
    run_dir = runner.run()
    assert [(f["defense"], f["reason"]) for f in runner.failures] == [
        ("diverges", "FloatingPointError: outer loss is nan at step 3")]
    results = pd.read_parquet(run_dir / "results.parquet")
    assert set(results.defense) == {"none", "mima"}  # the other cells are all there
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["failures"][0]["stage"] == "cell"
    assert "diverges" in (run_dir / "leaderboard.md").read_text()  # listed under 'Failed cells'


def test_a_cell_failing_in_a_worker_process_is_recorded_once(finished, small_card, tmp_path):
    """A plugin file is loaded again in each worker; its failure comes back with its reason."""
    from dataclasses import replace

    from immunobench.plugins import load_plugin_file

    plugin = tmp_path / "breaks_in_worker.py"
    plugin.write_text(
        "import os\n"
        "from immunobench.plugins import Defense, register_defense\n\n"
        "@register_defense('breaks-in-worker')\n"
        "class BreaksInWorker(Defense):\n"
        "    version = '1'\n\n"
        "    def immunize(self, model, data, cfg):\n"
        "        raise FloatingPointError(f'outer loss is nan at step 1 (pid {os.getpid()})')\n")
    load_plugin_file(plugin)
    tmp, _, _ = finished
    runner = Runner(replace(_config(small_card, tmp, defenses=("breaks-in-worker", "mima"), name="r5"), workers=2),
                    Progress(False), log=lambda _: None)
    run_dir = runner.run()
    assert runner.workers == 2
    [failure] = runner.failures
    assert failure["defense"] == "breaks-in-worker" and failure["stage"] == "cell"
    assert failure["reason"].startswith("FloatingPointError: outer loss is nan at step 1")
    assert f"(pid {os.getpid()})" not in failure["reason"]  # it failed in a worker, not here
    assert runner.stats["computed"] == {}  # the none and mima cells came from the store; nothing recomputed
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["host"]["workers"] == 2 and set(manifest["timings"]["phases"]) == {"plan", "workers", "walk"}


def test_a_grid_with_failed_cells_exits_3_and_says_why_last(finished, small_card, tmp_path, capsys):
    """What could be written is written; the last line counts the failed cells and names the reason."""
    from immunobench.cli import main

    plugin = tmp_path / "fails.py"
    plugin.write_text(
        "from immunobench.plugins import Attack, Defense, register_attack, register_defense\n\n"
        "@register_defense('fails-cli')\n"
        "class FailsCli(Defense):\n"
        "    version = '1'\n\n"
        "    def immunize(self, model, data, cfg):\n"
        "        raise FloatingPointError('outer loss is nan at step 1')\n\n"
        "@register_attack('fails-cli-attack')\n"
        "class FailsCliAttack(Attack):\n"
        "    version = '1'\n\n"
        "    def adapt(self, model, group, data, cfg, constraints, checkpoints):\n"
        "        raise MemoryError('out of memory at step 0')\n")
    tmp, _, _ = finished
    common = ["run", "--task", str(small_card), "--groups", GROUP, "--out", str(tmp / "runs"), "--store",
              str(tmp / "store"), "--sample-steps", "2", "--workers", "1", "--quiet", "--plugin", str(plugin)]

    assert main([*common, "--defense", "fails-cli", "--name", "r6"]) == 3
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("1 of 2 cells failed: FloatingPointError: outer loss is nan at step 1 (1 cell)")
    run_dir = tmp / "runs" / "r6"
    assert set(pd.read_parquet(run_dir / "results.parquet").defense) == {"none"}  # the cell that worked
    assert "fails-cli" in (run_dir / "leaderboard.md").read_text()
    assert json.loads((run_dir / "manifest.json").read_text())["failures"][0]["defense"] == "fails-cli"

    # every cell failing still leaves a manifest and a leaderboard that say so
    assert main([*common, "--defense", "fails-cli", "--attack", "fails-cli-attack", "--name", "r7"]) == 3
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("2 of 2 cells failed: ") and "out of memory: MemoryError: out of memory at step 0 (1 cell)" in last
    assert "FloatingPointError" in last and "the rest" not in last
    run_dir = tmp / "runs" / "r7"
    assert len(json.loads((run_dir / "manifest.json").read_text())["failures"]) == 2
    assert pd.read_parquet(run_dir / "results.parquet").empty and (run_dir / "leaderboard.md").is_file()


# --- what a defense may see ----------------------------------------------------------------------
_SEEN: list = []


def _reachable(obj, seen=None):
    """Every object reachable from ``obj`` through attributes, mappings and sequences."""
    import torch

    seen = set() if seen is None else seen
    if id(obj) in seen or obj is None or isinstance(obj, (int, float, bool, type)):
        return
    seen.add(id(obj))
    yield obj
    if isinstance(obj, (str, bytes, torch.Tensor)):
        return
    if isinstance(obj, dict):
        children = [*obj.keys(), *obj.values()]
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children = list(obj)
    else:
        children = list(getattr(obj, "__dict__", {}).values())
        children += [getattr(obj, s) for s in getattr(type(obj), "__slots__", ()) if hasattr(obj, s)]
    for child in children:
        yield from _reachable(child, seen)


def test_a_defense_sees_nothing_of_the_attack_split_the_references_or_the_others(finished, small_card):
    """A spy defense records what the runner hands it; every defense gets the same DefenseData."""
    import inspect

    import torch

    from immunobench.cards import ConceptGroup, TaskCard
    from immunobench.data import DefenseData, TaskData
    from immunobench.plugins import DEFENSES, Defense, get_defense, register_defense

    if "spy" not in DEFENSES:
        @register_defense("spy")
        class Spy(Defense):
            """Keeps what it was given."""

            version = "1"
            needs_regularization = True

            def immunize(self, model, *args):
                _SEEN.append(args)
                from immunobench.plugins import Immunized

                return Immunized()

    tmp, _, _ = finished
    _SEEN.clear()
    from dataclasses import replace

    runner = Runner(replace(_config(small_card, tmp, defenses=("spy",), name="r-spy"), overrides={}), Progress(False),
                    log=lambda _: None)
    run_dir = runner.run()
    [(data, cfg)] = _SEEN  # the model, the view and the config: nothing else
    assert type(data) is DefenseData
    group = runner.card.group(GROUP)
    full, _ = runner.task_data(group, 0)
    assert set(data.targets) == set(group.targets) and set(data.images) == set(group.targets)

    objects = list(_reachable(data))
    assert not [o for o in objects if isinstance(o, (TaskCard, ConceptGroup, TaskData))]
    texts = " ".join(o for o in objects if isinstance(o, str)).lower()
    for other in group.others:
        assert group.concept_name(other).lower() not in texts, f"{other} (a scored other) reached the defense"
    forbidden = [x.images for x in full.attack.values()] + list(full.references.values())
    seen_images = [o for o in objects if isinstance(o, torch.Tensor) and o.ndim == 4]
    assert seen_images, "the spy saw no images at all"
    for x in seen_images:
        for bad in forbidden:
            assert not any(torch.equal(a, b) for a in x for b in bad), "an attack or reference image reached the defense"
    assert data.captions and data.regularization is not None  # what it may see, it does see
    manifest = json.loads((run_dir / "manifest.json").read_text())
    view = manifest["resolved"]["defense_view"]
    assert view["captions"]["count"] == len(data.captions) and view["regularization"]["prompt"] == "artwork"
    assert manifest["resolved"]["start_model"]["preserve"] == "others"
    assert manifest["resolved"]["start_model"]["preserve_prompts"][GROUP] == [group.prompt(c) for c in group.others]
    # every registered defense takes (model, data, cfg), so each is handed this view and nothing more
    for name in DEFENSES.names():
        params = list(inspect.signature(get_defense(name).immunize).parameters)
        assert params == ["self", "model", "data", "cfg"] or name == "spy", (name, params)


def test_others_are_scored_before_the_attack_and_after(finished):
    """Table 5 as it reads: start model (none @ 0) → immunized (mima @ 0) → after the attack, targets and others."""
    tmp, runner, run_dir = finished
    results = pd.read_parquet(run_dir / "results.parquet")
    star = results[(results.concept == "*") & results.metric.isin(["acc/targets", "acc/others"])]
    have = set(zip(star.defense, star.step, star.metric))
    for defense in ("none", "mima"):
        for step in (0, runner.report_step):
            for metric in ("acc/targets", "acc/others"):
                assert (defense, step, metric) in have, (defense, step, metric)
    others = runner.card.group(GROUP).others
    step0 = results[(results.step == 0) & (results.metric == "acc") & (results.defense == "mima")]
    assert set(others) <= set(step0.concept)  # every other concept judged on the immunized model


def test_a_cards_explicit_others_are_what_is_generated_scored_recorded_and_reported(small_card, tmp_path):
    """``others: [...]`` in the card: the runner draws references and evaluations of exactly those (and
    the targets), scores them, the manifest records them and the leaderboard's others block is theirs."""
    from immunobench.store import ImageKey, read_image_sets

    card = yaml.safe_load(small_card.read_text())
    targets = card["groups"][GROUP]
    unscored = [c for c in card["concepts"] if c not in targets]
    chosen = [unscored[3], unscored[0]]  # in the list's order, not the card's
    card.update(task="relearn-others", others=chosen)
    path = tmp_path / "relearn-others.yaml"
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    runner = Runner(_config(path, tmp_path, name="r-others"), Progress(False), log=lambda _: None)
    run_dir = runner.run()
    group = runner.card.group(GROUP)
    others = chosen
    assert list(group.others) == others and set(group.scored) == {*targets, *others}

    results = pd.read_parquet(run_dir / "results.parquet")
    assert set(results[results.concept != "*"].concept) == {*targets, *others}
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["resolved"]["others"] == {GROUP: others}
    assert manifest["resolved"]["start_model"]["preserve_prompts"][GROUP] == [group.prompt(c) for c in others]
    for cell in manifest["cells"]:
        assert set(cell["references"]) == {*targets, *others}
        # the attack's generations are keyed by typed (step, concept) records
        stored = read_image_sets(runner.store.get(cell["attack_key"]))
        assert set(stored) == ({ImageKey(s, c) for s in runner.checkpoints for c in targets}
                               | {ImageKey(runner.report_step, c) for c in others})
        # the others before the attack: the attacked model's own stage, one per concept
        before = [read_image_sets(runner.store.get(k)) for k in cell["before_keys"]]
        assert [set(b) for b in before] == [{ImageKey(0, c)} for c in others]
    acc = results[(results.metric == "acc") & (results.defense == "mima") & (results.step == runner.report_step)]
    mean_others = acc[acc.concept.isin(others)].value.mean()
    star = results[(results.concept == "*") & (results.defense == "mima") & (results.step == runner.report_step)]
    assert star[star.metric == "acc/others"].value.item() == pytest.approx(mean_others)
    tidy = pd.read_csv(run_dir / "leaderboard.csv")
    row = tidy[(tidy.table == "accuracy") & (tidy.metric == "others") & (tidy.group == GROUP)
               & (tidy.phase == "after attack") & (tidy.defense == "mima")]
    assert row.images.item() == 2 * len(others)  # eval images × the card's others × one seed


def test_each_stage_counts_its_unet_work_and_the_leaderboard_shows_the_defenses_cost(finished):
    from immunobench.runner import _PeakMemory
    from leaderboard.report import cost_table

    tmp, runner, run_dir = finished
    with _PeakMemory("cpu") as usage:  # DDIM with guidance: one call per step, both halves of the batch counted
        sample(runner.model, ["an artwork of Claude Monet"] * 3, [0, 1, 2], steps=2, batch_size=2)
    assert (usage.cost["unet_calls"], usage.cost["unet_images"]) == (4, 12)

    manifest = json.loads((run_dir / "manifest.json").read_text())
    mima = next(c for c in manifest["cells"] if c["defense"] == "mima")
    # MIMA, 2 outer steps on 2 targets with the prior: per step one inner call per target (instance + prior
    # draw) and one outer call on the merged weights (2 instance + 2 prior draws) = 3 calls, 8 images
    assert (mima["cost"]["immunize"]["unet_calls"], mima["cost"]["immunize"]["unet_images"]) == (6, 16)
    assert mima["frozen_tensors"] == 0 and mima["cost"]["attack"]["unet_images"] > 0
    cost = cost_table(manifest).set_index("metric")
    assert cost.loc["unet_images", "mean"] == 16 and cost.loc["seconds", "n"] == 1
    assert "none" not in set(cost_table(manifest).defense)
    table = (run_dir / "leaderboard.md").read_text()
    assert "## Cost of immunization" in table and "| 16 | 0 | 1 |" in table


def test_all_names_every_registered_defense_once(small_card, tmp_path):
    from immunobench.plugins import DEFENSES

    every = [d for d in DEFENSES.names() if d != "none"]
    assert {"mima", "uce", "esd", "gift", "freezeasguard", "random"} <= set(every)
    def rows(names):  # a defense that publishes a frozen set is also attacked without it
        return [r for d in names for r in ([d, d + "/unconstrained"] if d == "freezeasguard" else [d])]

    runner = Runner(_config(small_card, tmp_path, defenses=("all",)), Progress(False), log=lambda _: None)
    assert runner.defenses == ["none", *rows(every)]
    runner = Runner(_config(small_card, tmp_path, defenses=("uce", "all")), Progress(False), log=lambda _: None)
    assert runner.defenses == ["none", "uce", *rows(d for d in every if d != "uce")]


def test_a_constraint_publishing_defense_is_also_attacked_without_its_constraint(finished, small_card):
    tmp, _, _ = finished
    fag = {"steps": 2, "user_steps": 1, "batch_size": 2, "finetune_steps": 1, "finetune_batch_size": 2,
           "freeze_ratio": 0.6, "c_sparsity": 300.0, "init": "code"}  # code: U(0, 1), all frozen at first
    cfg = RunConfig(task=str(small_card), defenses=("freezeasguard",), groups=(GROUP,), model="tiny-sd",
                    out=str(tmp / "runs"), store=str(tmp / "store"), name="fag", sample_steps=2,
                    overrides={"freezeasguard": fag}, workers=1)
    runner = Runner(cfg, Progress(False), log=lambda _: None)
    assert runner.defenses == ["none", "freezeasguard", "freezeasguard/unconstrained"]
    run_dir = runner.run()
    assert not runner.failures
    assert runner.stats["computed"]["immunize"]["count"] == 1  # one immunized model for both rows
    cells = {c["defense"]: c for c in runner.cells}
    constrained, free = cells["freezeasguard"], cells["freezeasguard/unconstrained"]
    assert constrained["model_key"] == free["model_key"] and constrained["attack_key"] != free["attack_key"]
    frozen = runner.store.get(constrained["model_key"]).meta["frozen"]
    assert constrained["frozen_tensors"] == len(frozen) > 0 and free["frozen_tensors"] == 0
    # FreezeAsGuard releases the start weights: without its frozen set the attack is the undefended one,
    # computed once, and the twin's scores are the no-defense row's
    assert free["attack_key"] == cells["none"]["attack_key"]
    assert runner.stats["computed"]["attack"]["count"] == 1  # the constrained one: none's is the fixture's, stored
    rows = pd.read_parquet(run_dir / "results.parquet")
    assert {"freezeasguard", "freezeasguard/unconstrained"} <= set(rows[rows.metric == "MSGR/C"].defense)
    # every score of the undefended row's images (not its step −1 reference baselines; the twin adds the
    # paired ones, MSGR & co.), value for value
    keys = ["concept", "step", "metric"]
    none, twin = (rows[(rows.defense == d) & (rows.step >= 0)].set_index(keys).value
                  for d in ("none", "freezeasguard/unconstrained"))
    assert len(none) > 0
    pd.testing.assert_series_equal(none, twin.loc[none.index])
    table = (run_dir / "leaderboard.md").read_text()
    assert "attacked without its constraint" in table and f"| {len(frozen)} | 1 |" in table


def test_workers_immunize_once_for_the_cells_of_several_attacks(small_card, tmp_path):
    cfg = RunConfig(task=str(small_card), defenses=("mima",), attacks=("lora", "full_ft"), groups=(GROUP,),
                    model="tiny-sd", out=str(tmp_path / "runs"), store=str(tmp_path / "store"), sample_steps=2,
                    workers=2, overrides={"mima": {"steps": 2}})
    runner = Runner(cfg, Progress(False), log=lambda _: None)
    runner.run()
    assert not runner.failures and runner.workers == 2
    # the immunization is its own job before the two mima cells, which would otherwise race to compute it
    assert runner.stats["computed"]["immunize"]["count"] == 1
    assert runner.stats["computed"]["attack"]["count"] == 4


def test_a_killed_immunize_stage_resumes_from_its_snapshot(finished, small_card, tmp_path, monkeypatch):
    """MIMA's stage dies after 2 of its 4 steps: the rerun says so, goes on from step 2, completes the
    run, and deletes the snapshot. That the resumed tensors equal a never-killed run's is
    tests/test_snapshot.py's, for every defense."""
    import immunobench.runner as runner_module

    class Killed(BaseException):  # as SIGKILL would: not a failure the runner records and goes past
        pass

    real = runner_module.LoopSnapshot

    class Dying(real):
        def save(self, step, state):
            written = super().save(step, state)
            if step == 2:
                raise Killed
            return written

    shutil.copytree(finished[0] / "store", tmp_path / "store")  # the images and none's cell: the session run's
    cfg = replace(_config(small_card, tmp_path), workers=1, snapshot_every_s=0.0, overrides={"mima": {"steps": 4}})
    monkeypatch.setattr(runner_module, "LoopSnapshot", Dying)
    with pytest.raises(Killed):
        Runner(cfg, Progress(False), log=lambda _: None).run()
    snapshots = list((tmp_path / "store" / "snapshots").iterdir())
    assert len(snapshots) == 1
    monkeypatch.setattr(runner_module, "LoopSnapshot", real)
    lines: list[str] = []
    runner = Runner(replace(cfg, name="r2"), Progress(False), log=lines.append)
    runner.run()
    assert any("mima" in line and "resuming at step 2" in line for line in lines)
    assert not snapshots[0].exists()
    art = runner.store.get(snapshots[0].stem)  # the snapshot was named by the stage's key
    assert art.meta["resumed_at_step"] == 2 and art.meta["stage"] == "immunize"


def _rebundle(src: Path, dst: Path, change: dict, rehash: bool) -> Path:
    """A copy of bundle ``src`` with files replaced (bytes) or removed (None); ``rehash`` also rewrites
    bundle.json's file hashes and content hash, as a forger who knows the format would."""
    import zipfile

    from immunobench.leaderboard.bundle import INDEX, _sha256, content_hash, read_bundle

    files = read_bundle(src)
    index = json.loads(files.pop(INDEX))
    for name, data in change.items():
        if data is None:
            files.pop(name)
        else:
            files[name] = data
    if rehash:
        index["files"] = {n: _sha256(d) for n, d in files.items()}
        index["content_hash"] = content_hash(index["files"])
    with zipfile.ZipFile(dst, "w") as z:
        for name, data in {**files, INDEX: json.dumps(index).encode()}.items():
            z.writestr(name, data)
    return dst


def test_bundle_verifies_and_any_change_after_it_is_rejected(finished, tmp_path):
    import io

    import pyarrow.parquet as pq

    from immunobench.leaderboard.bundle import BundleError, make_bundle, read_bundle, verify_bundle

    _, runner, run_dir = finished
    bundle = make_bundle(run_dir, tmp_path / "run.bundle.zip")
    index = verify_bundle(bundle)
    files = read_bundle(bundle)
    assert {"results.parquet", "manifest.json", "plugins/mima.py", "plugins/lora.py"} <= set(files)
    assert index["defenses"] == ["none", "mima"] and index["schema_version"] == 2
    assert files["plugins/mima.py"] == (Path(__file__).parents[1] / "defenses" / "mima.py").read_bytes()

    manifest = json.loads(files["manifest.json"])
    table = pq.read_table(io.BytesIO(files["results.parquet"]))
    nudged = table.to_pandas()
    nudged.loc[0, "value"] += 0.01
    buf = io.BytesIO()
    nudged.to_parquet(buf)
    no_split = io.BytesIO()
    pq.write_table(table.drop(["split"]), no_split)
    cases = {  # (change, rehash) → the reason's words
        "results edited": ({"results.parquet": buf.getvalue()}, False, "does not match its SHA-256"),
        "file removed": ({"plugins/lora.py": None}, False, "missing plugins/lora.py"),
        "file added": ({"extra.txt": b"x"}, False, "unlisted extra.txt"),
        "plugin swapped, rehashed": ({"plugins/mima.py": b"# another defense\n"}, True,
                                     "source of plugin mima is not the file the run used"),
        "future schema, rehashed": ({"manifest.json": json.dumps({**manifest, "schema_version": 99}).encode()}, True,
                                    "schema version 99"),
        "column dropped, rehashed": ({"results.parquet": no_split.getvalue()}, True, "lacks the column(s) split"),
    }
    for label, (change, rehash, reason) in cases.items():
        forged = _rebundle(bundle, tmp_path / f"{label}.zip", change, rehash)
        with pytest.raises(BundleError, match=re.escape(reason)):
            verify_bundle(forged)
    # every file's hash fixed up in the index, but the content hash left as it was
    import zipfile

    forged = read_bundle(_rebundle(bundle, tmp_path / "rehashed.zip", {"results.parquet": buf.getvalue()}, True))
    forged_index = {**json.loads(forged["bundle.json"]), "content_hash": index["content_hash"]}
    with zipfile.ZipFile(tmp_path / "half.zip", "w") as z:
        for name, data in {**forged, "bundle.json": json.dumps(forged_index).encode()}.items():
            z.writestr(name, data)
    with pytest.raises(BundleError, match="content hash does not match"):
        verify_bundle(tmp_path / "half.zip")

    cli = [sys.executable, "-m", "immunobench.cli"]
    ok = subprocess.run([*cli, "verify", str(bundle)], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("verified:")
    bad = subprocess.run([*cli, "verify", str(tmp_path / "results edited.zip")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "rejected:" in bad.stderr


def test_reproduce_reruns_a_cell_in_a_fresh_store_and_catches_a_changed_row(finished, tmp_path):
    from immunobench.leaderboard.bundle import make_bundle
    from immunobench.leaderboard.reproduce import compare, reproduce

    _, _, run_dir = finished
    bundle = make_bundle(run_dir, tmp_path / "b.zip")
    lines: list[str] = []
    record = reproduce(bundle, cells=1, log=lines.append)
    cell = record["cells"][0]
    assert record["passed"] and cell["cell"]["defense"] == "mima" and cell["rows"] > 0 and cell["missing"] == 0
    assert cell["max_abs_diff"] <= 1e-6  # same code, same machine: the re-run equals the bundle
    assert json.loads((tmp_path / "b.zip.reproduced.json").read_text())["content_hash"] == record["content_hash"]
    assert lines[0].startswith("reproducing cell 1 of 1")

    published = pd.read_parquet(run_dir / "results.parquet")
    raw = published.index[(published.concept != "*") & (published.defense == "mima")]
    sim, acc = [raw[published.loc[raw, "metric"] == m][0] for m in ("sim/C", "acc")]
    for row, delta, passes in ((sim, 0.005, True), (sim, 0.05, False), (acc, 0.5, True), (acc, 0.75, False)):
        rerun = published.copy()
        rerun.loc[row, "value"] += delta
        out = compare(published, rerun, cell["cell"], eval_images=2)  # accuracy: one generation of 2 is 0.5
        assert out["passed"] is passes, (published.loc[row, "metric"], delta, out)


def test_code_version_is_dirty_for_edited_code_not_for_edited_results(tmp_path):
    """A checkout whose measured results or docs changed still ran its commit's code; one whose code changed did not."""
    import subprocess

    from immunobench.runner import code_version

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    for name in ("immunobench/runner.py", "benchmarks/results/x.json", "docs/a.md", "README.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("0")
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "files")
    assert code_version(tmp_path)["dirty"] is False
    for name in ("benchmarks/results/x.json", "docs/a.md", "README.md"):
        (tmp_path / name).write_text("1")
    assert code_version(tmp_path)["dirty"] is False
    (tmp_path / "immunobench/runner.py").write_text("1")
    info = code_version(tmp_path)
    assert info["dirty"] is True and len(info["git"]) == 40
