"""Memorization vs re-learning: each generation's distance to its nearest attack-training image.

The function (``metrics.scores.nearest_distance``) on the world's judges: 0 for a copy, the min over
training images and the mean over generations; then through the runner on a card shrunk to seconds:
``nn/*`` rows for every target and checkpoint, ``nn-ref/*`` once per concept, the score stage keyed on
the training images, and the leaderboard's memorization block.
"""

import pandas as pd
import pytest
import torch

from immunobench.metrics.scores import MEMORIZATION_ROLES, nearest_distance, nearest_distances
from immunobench.plugins import get_metric
from immunobench.store import read_image_sets
from immunobench.world.render import render_batch

GROUP = "2c-1"
JUDGES = {"L": "lpips-world", "D": "dino-world"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # shared cores: a multi-threaded BLAS spin-waits under contention
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def renders() -> torch.Tensor:
    """Eight renders of two different concepts, in [-1, 1]: 0–3 one artist's, 4–7 an object's."""
    return render_batch([("claude-monet", i) for i in range(4)] + [("tench", i) for i in range(4)], seed=4242)


@pytest.mark.parametrize("role", MEMORIZATION_ROLES)
def test_a_copy_of_a_training_image_is_at_distance_zero_and_another_image_is_not(role, renders):
    judge = get_metric(JUDGES[role])()
    training = renders[:3]
    copy_and_other = torch.stack([training[1], renders[6]])
    d = nearest_distances(judge, copy_and_other, training)
    assert d[0].item() == pytest.approx(0.0, abs=1e-5)
    assert d[1].item() > 1e-2


@pytest.mark.parametrize("role", MEMORIZATION_ROLES)
def test_min_over_training_images_and_mean_over_generations_as_a_hand_loop(role, renders):
    judge = get_metric(JUDGES[role])()
    torch.manual_seed(0)
    generations = (renders[[0, 5, 7]] + 0.3 * torch.randn(3, *renders.shape[1:])).clamp(-1, 1)
    training = renders[[1, 2, 4, 6]]
    nearest = []
    for g in generations:  # one pair at a time through the judge: no shared batch with the function
        pairs = [1.0 - float(judge.pairwise(g[None], t[None])) for t in training]
        nearest.append(min(pairs))
    assert nearest_distance(judge, generations, training) == pytest.approx(sum(nearest) / len(nearest), abs=1e-5)
    # the minimum is a real choice: the generations' nearest training images differ
    per_pair = 1.0 - judge.pairwise(generations, training)
    assert len(set(per_pair.argmin(dim=1).tolist())) > 1


def test_empty_sets_are_refused(renders):
    judge = get_metric("dino-world")()
    with pytest.raises(ValueError, match="nearest distance"):
        nearest_distance(judge, renders[:2], renders[:0])


@pytest.fixture(scope="module")
def memo(finished):
    """The session's finished small run (MIMA and none on 2c-1): (runner, run folder, its rows)."""
    _, runner, run_dir = finished
    return runner, run_dir, pd.read_parquet(run_dir / "results.parquet")


def test_runner_rows_for_every_target_and_step_and_references_once(memo):
    runner, _, results = memo
    group = runner.card.group(GROUP)
    per_concept = results[results.concept != "*"]
    for defense in ("none", "mima"):
        for step in runner.checkpoints:
            for role in MEMORIZATION_ROLES:
                rows = per_concept[(per_concept.defense == defense) & (per_concept.step == step)
                                   & (per_concept.metric == f"nn/{role}")]
                assert sorted(rows.concept) == sorted(group.targets), (defense, step, role)
                assert (rows.value > 0).all()
    assert not per_concept[per_concept.metric.str.startswith("nn/")].concept.isin(group.others).any()
    for role in MEMORIZATION_ROLES:
        ref = per_concept[per_concept.metric == f"nn-ref/{role}"]
        assert sorted(ref.concept) == sorted(group.targets)  # once per concept, not once per defense
        assert set(ref.defense) == {"none"} and set(ref.step) == {-1}
        star = results[(results.concept == "*") & (results.metric == f"nn/{role}") & (results.defense == "mima")]
        assert set(star.step) == set(runner.checkpoints)


def test_rows_are_the_distance_to_the_attackers_training_images(memo):
    """Recomputed from the stored generations and the attack split: not the references, not the defense split."""
    runner, _, results = memo
    cell = next(c for c in runner.cells if c["defense"] == "mima")
    images = {k: v.float() / 127.5 - 1 for k, v in read_image_sets(runner.store.get(cell["attack_key"])).items()}
    data, _ = runner.task_data(runner.card.group(GROUP), 0)
    concept = runner.card.group(GROUP).targets[0]
    for role in MEMORIZATION_ROLES:
        row = results[(results.defense == "mima") & (results.concept == concept) & (results.step == runner.report_step)
                      & (results.metric == f"nn/{role}")]
        expected = nearest_distance(runner.judges[role], images[(runner.report_step, concept)], data.attack[concept].images)
        assert row.value.item() == pytest.approx(expected, abs=1e-6)
        ref = results[(results.concept == concept) & (results.metric == f"nn-ref/{role}")]
        assert ref.value.item() == pytest.approx(
            nearest_distance(runner.judges[role], data.references[concept], data.attack[concept].images), abs=1e-6)


def test_the_score_stage_is_keyed_on_the_training_images(memo):
    """Cached scores of other training images (or of none: a run before these rows) are not reused."""
    runner, _, _ = memo
    cell = next(c for c in runner.cells if c["defense"] == "none")
    images = {k: v.float() / 127.5 - 1 for k, v in read_image_sets(runner.store.get(cell["attack_key"])).items()}
    data, keys = runner.task_data(runner.card.group(GROUP), 0)
    runner.stats["computed"] = {}
    same = runner.score(cell["attack_key"], images, data.references, keys["references"], data.attack, keys["attack"],
                        baselines=True)
    assert "score" not in runner.stats["computed"]  # the run's own stage, found in the store
    assert any(r["metric"] == "nn-ref/L" for r in same)
    runner.score(cell["attack_key"], images, data.references, keys["references"], data.attack, ["other-images"],
                 baselines=True)
    assert runner.stats["computed"]["score"]["count"] == 1


def test_leaderboard_prints_the_memorization_block(memo):
    _, run_dir, _ = memo
    text = (run_dir / "leaderboard.md").read_text()
    assert "## Memorization at step 2" in text
    block = text.split("## Memorization")[1].split("\n## ")[0]
    rows = [line for line in block.splitlines() if line.startswith("| mima")]
    assert len(rows) == 2 and any("LPIPS d" in r for r in rows) and any("DINO 1 − cos" in r for r in rows)
    for row in rows:  # generations, undefended, references: three numbers
        cells = [c.strip() for c in row.strip("|").split("|")][2:]
        assert len(cells) == 3 and all(float(c) > 0 for c in cells), row
    tidy = pd.read_csv(run_dir / "leaderboard.csv")
    memo = tidy[tidy.table == "memorization"]
    assert set(memo.phase) == {"after attack", "references"} and set(memo.defense) == {"none", "mima"}


def _hand_results(with_memorization: bool = True) -> pd.DataFrame:
    """Two groups, two seeds: nn/* of none and mima at step 400, nn-ref/* at step -1, MSGR for the table."""
    rows, base = [], {"task": "relearn-style", "concept": "*", "attack": "lora"}
    values = {("nn", "mima"): 0.30, ("nn", "none"): 0.20, ("nn-ref", "none"): 0.10}
    for seed in (0, 1):
        for group, shift in (("g1", 0.0), ("g2", 0.04)):
            rows.append({**base, "group": group, "defense": "mima", "seed": seed, "step": 400, "metric": "MSGR/C",
                         "value": 10.0})
            for (name, defense), value in values.items():
                for role in MEMORIZATION_ROLES if with_memorization else ():
                    rows.append({**base, "group": group, "defense": defense, "seed": seed,
                                 "step": -1 if name == "nn-ref" else 400, "metric": f"{name}/{role}",
                                 "value": value + shift + 0.02 * seed + (0.5 if role == "D" else 0.0)})
    return pd.DataFrame(rows)


def test_leaderboard_block_reads_mean_and_std_over_seeds_and_is_absent_for_older_runs():
    from immunobench.leaderboard.report import leaderboard

    manifest = {"resolved": {"report_step": 400, "groups": ["g1", "g2"], "seeds": [0, 1], "eval_images": 8},
                "groups": {"g1": ["a"], "g2": ["b"]}, "run": {"task": "relearn-style"}, "model": {"name": "tiny-sd"},
                "date": "d", "failures": []}
    text, tidy = leaderboard(_hand_results(), manifest)
    line = next(row for row in text.splitlines() if row.startswith("| mima") and "LPIPS d" in row)
    # per seed the mean over groups (+0.02), then over seeds (+0.01 ± 0.014, the sample std of +0, +0.02)
    assert [c.strip() for c in line.strip("|").split("|")][2:] == [
        "0.330 ± 0.014 (2)", "0.230 ± 0.014 (2)", "0.130 ± 0.014 (2)"]
    assert not any(row.startswith("| none") for row in text.split("## Memorization")[1].split("\n## ")[0].splitlines())
    refs = tidy[(tidy.table == "memorization") & (tidy.phase == "references") & (tidy.group == "g2")]
    assert set(refs.metric) == {"LPIPS d", "DINO 1 − cos"}
    assert refs[refs.metric == "DINO 1 − cos"]["mean"].item() == pytest.approx(0.10 + 0.04 + 0.01 + 0.5)
    older, _ = leaderboard(_hand_results(with_memorization=False), manifest)
    assert "Memorization" not in older and "## MSGR" in older
