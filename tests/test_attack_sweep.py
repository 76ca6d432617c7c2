"""``--attack-sweep`` and the ε-bounded worst case: the sweep expands to the product plus the default,
the default point's cells are those of a run without the sweep (shared through the store), selection
images use seeds disjoint from the reported ones, and the worst case excludes a point that wrecks the
others even where it re-learns the targets best — on synthetic rows and through the real runner."""
import copy
import json
import math
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import pandas as pd
import pytest
import yaml

from immunobench.progress import Progress
from immunobench.runner import RunConfig, Runner
from immunobench.store import Store, read_image_sets
from leaderboard.worst_case import select_worst_case

GROUP = "2c-1"
SWEEP = {"lora": {"lr": ("1e-3", "1e-2"), "rank": ("4", "8")}}  # the tiny-sd default is lr 1e-3, rank 4


# --- worst_case.py on synthetic rows -------------------------------------------------------------------
def _rows(defense, label, targets, others, step=400, seeds=(0, 1), split="selection"):
    out = []
    for seed in seeds:
        for metric, value in (("acc/targets", targets), ("acc/others", others)):
            out.append({"task": "t", "group": "g", "concept": "*", "defense": defense, "attack": "lora",
                        "attack_config": label, "seed": seed, "split": split, "step": step, "metric": metric,
                        "value": value})
    return out


POINTS = {"lora": [("default", 400), ("lora[lr=0.001]", 400), ("lora[lr=1]", 400)]}


def test_a_point_that_wrecks_the_others_is_excluded_though_it_relearns_best():
    rows = (_rows("none", "default", 0.9, 0.88) + _rows("none", "lora[lr=0.001]", 0.95, 0.88)
            + _rows("none", "lora[lr=1]", 1.0, 0.85)
            + _rows("mima", "default", 0.2, 0.85) + _rows("mima", "lora[lr=0.001]", 0.6, 0.80)
            + _rows("mima", "lora[lr=1]", 1.0, 0.10)  # re-learns best, but the others collapse
            # the reported split says the opposite: it must not steer the choice
            + _rows("mima", "lora[lr=0.001]", 0.0, 0.0, split="eval"))
    choices = select_worst_case(pd.DataFrame(rows), POINTS, {"g": ["a", "b"]}, epsilon=0.10).set_index("defense")
    assert choices.loc["mima", "config"] == "lora[lr=0.001]" and choices.loc["mima", "admissible"]
    assert choices.loc["mima", "excluded"] == "lora[lr=1]"
    assert choices.loc["mima", "score"] == pytest.approx(0.6) and choices.loc["mima", "criterion"] == "acc/targets"
    assert choices.loc["none", "config"] == "lora[lr=1]"  # the undefended model is within ε of itself
    # ε is inclusive and taken from the argument: 0.80 is within 0.08 of 0.88, not within 0.07
    assert select_worst_case(pd.DataFrame(rows), POINTS, {}, 0.08).set_index("defense").loc["mima", "config"] == "lora[lr=0.001]"
    assert select_worst_case(pd.DataFrame(rows), POINTS, {}, 0.07).set_index("defense").loc["mima", "config"] == "default"


def test_a_point_that_wrecks_the_undefended_model_too_does_not_count():
    rows = (_rows("none", "default", 0.5, 0.9) + _rows("none", "lora[lr=0.001]", 0.6, 0.9)
            + _rows("none", "lora[lr=1]", 0.9, 0.05)  # a huge lr: every model's others collapse
            + _rows("mima", "default", 0.2, 0.9) + _rows("mima", "lora[lr=0.001]", 0.3, 0.85)
            + _rows("mima", "lora[lr=1]", 0.9, 0.05))  # within ε of none at lr=1, yet the model is wrecked
    choices = select_worst_case(pd.DataFrame(rows), POINTS, {}, 0.10).set_index("defense")
    for defense, config in (("none", "lora[lr=0.001]"), ("mima", "lora[lr=0.001]")):
        assert choices.loc[defense, "config"] == config and choices.loc[defense, "excluded"] == "lora[lr=1]"
    assert choices.loc["mima", "others_reference"] == pytest.approx(0.9)


def test_ties_go_to_the_earlier_point_and_no_admissible_point_reports_the_default():
    rows = (_rows("none", "default", 0.5, 0.9) + _rows("none", "lora[lr=0.001]", 0.5, 0.9)
            + _rows("none", "lora[lr=1]", 0.5, 0.9)
            + _rows("mima", "default", 0.5, 0.2) + _rows("mima", "lora[lr=0.001]", 0.7, 0.2)
            + _rows("mima", "lora[lr=1]", 0.9, 0.2))
    choices = select_worst_case(pd.DataFrame(rows), POINTS, {}, 0.10).set_index("defense")
    assert choices.loc["none", "config"] == "default"  # all equal: the sweep's order decides
    assert choices.loc["mima", "config"] == "default" and not choices.loc["mima", "admissible"]
    assert choices.loc["mima", "excluded"] == "default; lora[lr=0.001]; lora[lr=1]"


def _before(defense, others, split="selection", seeds=(0, 1)):
    return [{**r, "step": 0} for r in _rows(defense, "default", math.nan, others, seeds=seeds, split=split)
            if r["metric"] == "acc/others"]


# none: before 0.95, attacked 0.75 (damage 0.20) / 0.85 (0.10) / 0.30 (0.65, a point that wrecks every model);
# mima costs the others 0.10 by itself (0.85 before any attack), and its attacks do about what they do to none
OFFSET_ROWS = (_rows("none", "default", 0.9, 0.75) + _rows("none", "lora[lr=0.001]", 0.7, 0.85)
               + _rows("none", "lora[lr=1]", 1.0, 0.30)
               + _rows("mima", "default", 0.8, 0.60) + _rows("mima", "lora[lr=0.001]", 0.5, 0.76)
               + _rows("mima", "lora[lr=1]", 1.0, 0.30))


def test_a_defense_that_lowers_the_others_itself_is_judged_by_the_attacks_damage():
    rows = OFFSET_ROWS + _before("none", 0.95) + _before("mima", 0.85)
    choices = select_worst_case(pd.DataFrame(rows), POINTS, {}, 0.10).set_index("defense")
    # mima's default: damage 0.25 ≤ 0.20 + ε, though its others (0.60) are below none's 0.75 − ε
    assert choices.loc["mima", "config"] == "default" and choices.loc["mima", "excluded"] == "lora[lr=1]"
    assert choices.loc["mima", "others_before"] == pytest.approx(0.85) and choices.loc["mima", "before"] == "selection"
    assert choices.loc["mima", "others_reference"] == pytest.approx(0.75 - 0.10)
    # the same rows judged on absolute levels (no step 0: offset 0) exclude mima's strongest admissible point
    absolute = select_worst_case(pd.DataFrame(OFFSET_ROWS), POINTS, {}, 0.10).set_index("defense")
    assert absolute.loc["mima", "config"] == "lora[lr=0.001]" and absolute.loc["mima", "before"] == "none"
    assert absolute.loc["mima", "excluded"] == "default; lora[lr=1]"
    # damage beyond ε is still excluded: 0.85 → 0.60 is 0.25, more than none's 0.10 + ε at lr=0.001
    worse = [{**r, "value": 0.60} if (r["defense"], r["attack_config"], r["metric"]) == ("mima", "lora[lr=0.001]",
                                                                                           "acc/others") else r
             for r in rows]
    choices = select_worst_case(pd.DataFrame(worse), POINTS, {}, 0.10).set_index("defense")
    assert choices.loc["mima", "excluded"] == "lora[lr=0.001]; lora[lr=1]"


def test_the_others_before_the_attack_come_from_the_selection_split_else_the_eval_split():
    # a run from before the selection split had step 0: the eval split's step 0 gives the offset, marked so
    older = OFFSET_ROWS + _before("none", 0.95, "eval") + _before("mima", 0.85, "eval")
    choices = select_worst_case(pd.DataFrame(older), POINTS, {}, 0.10).set_index("defense")
    assert choices.loc["mima", "config"] == "default" and choices.loc["mima", "before"] == "eval"
    # with both, the selection split's own step 0 decides (here it says mima left the others alone)
    both = older + _before("none", 0.95) + _before("mima", 0.95)
    choices = select_worst_case(pd.DataFrame(both), POINTS, {}, 0.10).set_index("defense")
    assert choices.loc["mima", "before"] == "selection" and choices.loc["mima", "config"] == "lora[lr=0.001]"


def test_without_target_accuracy_the_dino_similarity_to_the_references_decides():
    rows = []
    for defense in ("none", "mima"):
        for label, sims in (("default", (0.3, 0.5)), ("lora[lr=0.001]", (0.6, 0.6)), ("lora[lr=1]", (0.5, 0.4))):
            for concept, sim in zip(("a", "b"), sims):
                rows.append({"task": "t", "group": "g", "concept": concept, "defense": defense, "attack": "lora",
                             "attack_config": label, "seed": 0, "split": "selection", "step": 400, "metric": "sim/D",
                             "value": sim})
            rows.append({**rows[-1], "concept": "other", "value": 0.99})  # an other concept: not a target
    choices = select_worst_case(pd.DataFrame(rows), POINTS, {"g": ["a", "b"]}, 0.10).set_index("defense")
    assert choices.loc["mima", "config"] == "lora[lr=0.001]" and choices.loc["mima", "criterion"] == "sim/D"
    assert choices.loc["mima", "score"] == pytest.approx(0.6) and choices.loc["mima", "bound"] == "unchecked"


# --- through the runner -----------------------------------------------------------------------------------
def _config(card, tmp, name, sweep=None, **kw):
    return RunConfig(task=str(card), defenses=("none",), groups=(GROUP,), model="tiny-sd", out=str(tmp / "runs"),
                     store=str(tmp / "store"), name=name, sample_steps=2, attack_sweep=sweep or {}, workers=1, **kw)


def _run(cfg) -> tuple[Runner, Path]:
    runner = Runner(cfg, Progress(False), log=lambda _: None)
    return runner, runner.run()


@pytest.fixture(scope="module")
def plain_then_sweep(finished, small_card, tmp_path_factory):
    """The plain run (none only) in a copy of the session run's store: its images and none cells come from there."""
    tmp = tmp_path_factory.mktemp("sweep")
    shutil.copytree(finished[0] / "store", tmp / "store")
    plain = _run(_config(small_card, tmp, "plain"))
    swept = _run(_config(small_card, tmp, "swept", SWEEP))
    return tmp, plain, swept


def test_the_sweep_is_the_product_plus_the_default_and_the_default_is_the_plain_run(plain_then_sweep):
    tmp, (plain, plain_dir), (swept, swept_dir) = plain_then_sweep
    labels = [v.label for v in swept.variants["lora"]]
    # (lr 1e-3, rank 4) is the default point itself: the product's four points are four variants
    assert labels == ["default", "lora[lr=0.001,rank=8]", "lora[lr=0.01,rank=4]", "lora[lr=0.01,rank=8]"]
    manifest = json.loads((swept_dir / "manifest.json").read_text())
    # the others before the attack are the model's, drawn once: the sweep adds them on the selection seeds only
    assert swept.stats["computed"]["before"]["count"] == len(manifest["resolved"]["others"][GROUP])
    variants = manifest["resolved"]["attack_sweep"]["variants"]["lora"]
    assert [(v["config"]["lr"], v["config"]["rank"]) for v in variants] == [(1e-3, 4), (1e-3, 8), (1e-2, 4), (1e-2, 8)]
    # only the three new points were trained; the default point's cell came from the plain run
    assert swept.stats["computed"]["attack"]["count"] == 3
    plain_cells = json.loads((plain_dir / "manifest.json").read_text())["cells"]
    default_cells = [c for c in manifest["cells"] if c["attack_config"] == "default"]
    assert [c["attack_key"] for c in default_cells] == [c["attack_key"] for c in plain_cells]
    results = pd.read_parquet(swept_dir / "results.parquet")
    assert set(results.attack_config) == set(labels) and set(results.split) == {"eval", "selection"}
    # the default point draws the curves; every other point is measured at its report step alone
    assert [v.checkpoints for v in swept.variants["lora"]] == [(0, 2), (2,), (2,), (2,)]
    assert set(results[results.attack_config != "default"].step) == {-1, 2}  # -1: the references' own nn rows
    reported = results[(results.attack_config == "default") & (results.split == "eval")].reset_index(drop=True)
    pd.testing.assert_frame_equal(reported, pd.read_parquet(plain_dir / "results.parquet"))
    # the main tables are the plain run's; the sweep adds its block, naming the chosen point
    plain_md, swept_md = ((d / "leaderboard.md").read_text() for d in (plain_dir, swept_dir))
    body = plain_md.split("\n", 3)[3].split("Cells in bold")[0]  # after the title and the run's date
    assert swept_md.split("\n", 3)[3].startswith(body + "## Worst case over the attack sweep (ε = 0.10)")
    choice = manifest["worst_case"][0]
    assert choice["config"] in labels and f"| {choice['config']} |" in swept_md
    csv = pd.read_csv(swept_dir / "leaderboard.csv")
    assert set(csv[csv.table == "worst case"].phase) == {"default", "worst case"}


def test_a_schema_1_run_folder_still_renders(plain_then_sweep, tmp_path):
    """Folders written before attack_config/split existed: one point, every row reported."""
    import shutil

    from immunobench.cli import main

    _, (_, plain_dir), _ = plain_then_sweep
    old = tmp_path / "old"
    shutil.copytree(plain_dir, old)
    pd.read_parquet(old / "results.parquet").drop(columns=["attack_config", "split"]).to_parquet(old / "results.parquet")
    assert main(["report", str(old)]) == 0
    body = (plain_dir / "leaderboard.md").read_text().split("\n", 3)[3]
    assert (old / "leaderboard.md").read_text().split("\n", 3)[3] == body and "Worst case" not in body


def test_a_second_sweep_recomputes_nothing(plain_then_sweep, small_card):
    tmp, _, (_, swept_dir) = plain_then_sweep
    again, again_dir = _run(_config(small_card, tmp, "again", SWEEP))
    assert again.stats["computed"] == {}
    pd.testing.assert_frame_equal(pd.read_parquet(swept_dir / "results.parquet"),
                                  pd.read_parquet(again_dir / "results.parquet"))


def test_selection_images_use_seeds_disjoint_from_the_reported_ones(plain_then_sweep):
    tmp, _, (swept, swept_dir) = plain_then_sweep
    store = Store(tmp / "store")
    manifest = json.loads((swept_dir / "manifest.json").read_text())
    for cell in manifest["cells"]:
        attack, selection = store.get(cell["attack_key"]), store.get(cell["selection_key"])
        assert not set(attack.meta["eval_seeds"]) & set(selection.meta["seeds"])
        assert selection.meta["step"] == 2 and set(read_image_sets(selection)) == {
            (2, c) for c in [*cell["targets"], *manifest["resolved"]["others"][GROUP]]}
        # the default point carries the others before the attack, on the selection seeds too
        before = [store.get(k) for k in cell.get("selection_before_keys", [])]
        assert bool(before) == (cell["attack_config"] == "default")
        for stage in before:
            assert stage.meta["eval_seeds"] == selection.meta["seeds"] and stage.meta["split"] == "selection"
            assert set(read_image_sets(stage)) == {(0, stage.meta["concept"])}
    results = pd.read_parquet(swept_dir / "results.parquet")
    at_0 = results[(results.split == "selection") & (results.step == 0)]
    assert set(at_0.attack_config) == {"default"} and set(at_0.concept) - {"*"} == set(manifest["resolved"]["others"][GROUP])
    assert (at_0.metric == "acc/others").any()
    assert manifest["resolved"]["attack_sweep"]["selection_seeds"] == {"0": [20_000, 20_001]}


def test_a_replayed_selection_equals_one_sampled_with_the_attack(plain_then_sweep, small_card):
    """The default point's selection was made by replaying the plain run's attack; a new point's along with
    its attack. Replaying that one too gives the same images bit for bit."""
    import shutil

    tmp, _, (swept, swept_dir) = plain_then_sweep
    manifest = json.loads((swept_dir / "manifest.json").read_text())
    cell = next(c for c in manifest["cells"] if c["attack_config"] == "lora[lr=0.01,rank=8]")
    store = Store(tmp / "store")
    before = read_image_sets(store.get(cell["selection_key"]))
    shutil.rmtree(store.path(cell["selection_key"]))
    replayed, _ = _run(_config(small_card, tmp, "replayed", SWEEP))
    assert replayed.stats["computed"]["selection"]["count"] == 1 and "attack" not in replayed.stats["computed"]
    after = read_image_sets(store.get(cell["selection_key"]))
    assert before.keys() == after.keys() and all((before[k] == after[k]).all() for k in before)


def test_a_budget_point_stops_at_its_checkpoint_and_a_budget_off_the_checkpoints_is_refused(small_card, tmp_path):
    from immunobench.errors import UserError

    runner = Runner(_config(small_card, tmp_path, "budget", {"lora": {"report_step": ("0", "2")}}), log=lambda _: None)
    budget = {v.label: (v.report_step, v.checkpoints) for v in runner.variants["lora"]}
    assert budget == {"default": (2, (0, 2)), "lora[report_step=0]": (0, (0,))}
    with pytest.raises(UserError, match="not one of the run's checkpoints"):
        Runner(_config(small_card, tmp_path, "budget", {"lora": {"report_step": ("1",)}}), log=lambda _: None)


# --- the worst case end to end: a point that wrecks the immunized model's others ------------------------
@dataclass(frozen=True)
class OracleConfig:
    mode: Literal["weak", "strong", "reckless"] = field(default="weak", metadata={"help": "test double"})
    seed: int = field(default=0, metadata={"help": "set by the runner"})


class _Rewriting:
    """A tokenizer that reads some prompts as others (what the oracle's model 'draws' for them)."""

    def __init__(self, tokenizer, rewrite: dict[str, str]):
        self._tokenizer, self._rewrite = tokenizer, rewrite

    def __call__(self, prompts, **kw):
        return self._tokenizer([self._rewrite.get(p, p) for p in prompts], **kw)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


def _oracle_attack():
    """Draws with the start model, no training: ``weak`` draws neither target (each is read as an other),
    ``strong`` the first, ``reckless`` both — and on a model whose defense froze a tensor it reads every
    other as the first target, so the others collapse there and only there."""
    from immunobench.plugins import ATTACKS, Attack, register_attack

    if "oracle" not in ATTACKS:
        @register_attack("oracle")
        class Oracle(Attack):
            """A test double of an attack config that wrecks an immunized model."""

            version = "1"
            Config = OracleConfig

            def adapt(self, model, group, data, cfg, constraints, checkpoints):
                targets, others = list(group.targets), list(group.others)
                lost = {"weak": targets, "strong": targets[1:], "reckless": []}[cfg.mode]
                rewrite = {group.prompt(t): group.prompt(others[0]) for t in lost}
                if cfg.mode == "reckless" and constraints.frozen:
                    rewrite.update({group.prompt(o): group.prompt(targets[0]) for o in others})
                for step in sorted(checkpoints):
                    adapted = copy.copy(model)
                    if step:
                        adapted.tokenizer = _Rewriting(model.tokenizer, rewrite)
                    yield step, adapted


def _brittle_defense():
    from immunobench.plugins import DEFENSES, Constraints, Defense, Immunized, register_defense

    if "brittle" not in DEFENSES:
        @register_defense("brittle")
        class Brittle(Defense):
            """Leaves the weights as they are and publishes a frozen tensor (the oracle's cue)."""

            version = "1"

            def immunize(self, model, data, cfg):
                name = next(iter(model.unet.state_dict()))
                return Immunized(constraints=Constraints(frozenset({name})))


def test_the_worst_case_excludes_a_point_that_wrecks_the_others_end_to_end(small_card, tmp_path):
    _oracle_attack()
    _brittle_defense()
    card = yaml.safe_load(small_card.read_text())
    card.update(task="relearn-oracle", start_model={"defense": None}, worst_case={"epsilon": 0.1},
                others=["van-gogh", "pablo-picasso"])
    path = tmp_path / "relearn-oracle.yaml"
    path.write_text(yaml.safe_dump(card))
    cfg = replace(_config(path, tmp_path, "oracle", {"oracle": {"mode": ("strong", "reckless")}}),
                  defenses=("brittle",), attacks=("oracle",), sample_steps=6, eval_images=2)
    runner, run_dir = _run(cfg)
    results = pd.read_parquet(run_dir / "results.parquet")
    selection = results[(results.split == "selection") & (results.concept == "*") & (results.step == 2)]
    value = selection.set_index(["defense", "attack_config", "metric"]).value
    strong, reckless = "oracle[mode=strong]", "oracle[mode=reckless]"
    # the premise of the test: reckless re-learns best everywhere, and wrecks only the brittle model's others
    assert value["brittle", reckless, "acc/targets"] > value["brittle", strong, "acc/targets"] > value["brittle", "default", "acc/targets"]
    assert value["brittle", reckless, "acc/others"] < value["none", reckless, "acc/others"] - 0.1
    choices = {c["defense"]: c for c in json.loads((run_dir / "manifest.json").read_text())["worst_case"]}
    assert choices["brittle"]["config"] == strong and choices["brittle"]["excluded"] == reckless
    assert choices["none"]["config"] == reckless
    table = (run_dir / "leaderboard.md").read_text()
    assert f"| brittle (oracle) | worst case | {strong} |" in table and f"excluded by ε: {reckless}" in table
    assert choices["brittle"]["before"] == "selection" and "the others before the attack are" not in table
