"""The leaderboard's report on a hand-built run: mean ± std (n) over seeds, Table 5 before and after
the attack, and the 95% Wilson interval over the judged images pooled over seeds."""
from math import sqrt
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from immunobench.leaderboard.report import TIDY_COLUMNS, leaderboard
from immunobench.metrics.scores import wilson_interval

EVAL_IMAGES = 8
TARGETS = {"g1": ["a", "b"], "g2": ["d"]}  # unequal sizes: the 'mean' column's pooling is weighted
OTHERS = {"g1": ["c", "d", "e"], "g2": ["a", "b", "c", "e"]}
SEEDS = [0, 1, 2]
# (metric, defense, step, group) -> value per seed; multiples of 1/8 as the judge would give them
ACC = {
    ("acc/targets", "none", 0, "g1"): [1.0, 0.9375, 1.0],
    ("acc/targets", "none", 0, "g2"): [0.875, 1.0, 1.0],
    ("acc/targets", "mima", 0, "g1"): [0.0, 0.0625, 0.125],
    ("acc/targets", "mima", 0, "g2"): [0.0, 0.125, 0.0],
    ("acc/targets", "none", 400, "g1"): [0.9375, 1.0, 0.875],
    ("acc/targets", "none", 400, "g2"): [1.0, 0.875, 0.75],
    ("acc/targets", "mima", 400, "g1"): [0.25, 0.5, 0.3125],
    ("acc/targets", "mima", 400, "g2"): [0.125, 0.375, 0.25],
    ("acc/others", "none", 0, "g1"): [0.875, 0.9167, 0.9583],
    ("acc/others", "none", 0, "g2"): [0.9375, 0.90625, 0.96875],
    ("acc/others", "mima", 0, "g1"): [0.75, 0.7917, 0.7083],
    ("acc/others", "mima", 0, "g2"): [0.8125, 0.78125, 0.84375],
    ("acc/others", "none", 400, "g1"): [0.8333, 0.875, 0.9167],
    ("acc/others", "none", 400, "g2"): [0.875, 0.90625, 0.84375],
    ("acc/others", "mima", 400, "g1"): [0.625, 0.5833, 0.6667],
    ("acc/others", "mima", 400, "g2"): [0.6875, 0.65625, 0.71875],
}
MSGR = {"g1": [40.0, 50.0, 45.0], "g2": [30.0, 20.0, 25.0]}


def _results(seeds=SEEDS, steps=(0, 400)) -> pd.DataFrame:
    rows = []
    base = {"task": "relearn-style", "concept": "*", "attack": "lora"}
    for (metric, defense, step, group), values in ACC.items():
        for seed in seeds:
            if step in steps:
                rows.append({**base, "group": group, "defense": defense, "seed": seed, "step": step,
                             "metric": metric, "value": values[seed]})
    for group, values in MSGR.items():
        for seed in seeds:
            for role in "CDL":
                rows.append({**base, "group": group, "defense": "mima", "seed": seed, "step": 400,
                             "metric": f"MSGR/{role}", "value": values[seed]})
                rows.append({**base, "group": group, "defense": "mima", "seed": seed, "step": 400,
                             "metric": f"MRSGR/{role}", "value": values[seed] / 2})
    # a per-concept row the report must ignore
    rows.append({**base, "group": "g1", "concept": "a", "defense": "none", "seed": 0, "step": 400,
                 "metric": "acc", "value": 0.0})
    return pd.DataFrame(rows)


def _manifest(seeds=SEEDS, others=True) -> dict:
    resolved = {"report_step": 400, "groups": ["g1", "g2"], "seeds": list(seeds), "eval_images": EVAL_IMAGES}
    if others:
        resolved["others"] = OTHERS
    return {"resolved": resolved, "groups": TARGETS, "run": {"task": "relearn-style"},
            "model": {"name": "tiny-sd"}, "date": "d", "failures": []}


def _hand_wilson(p: float, n: int) -> tuple[float, float]:
    """The textbook Wilson score interval, written out independently of metrics.scores."""
    z = NormalDist().inv_cdf(0.975)
    denom = 1 + z ** 2 / n
    centre = p + z ** 2 / (2 * n)
    spread = z * sqrt(p * (1 - p) / n + z ** 2 / (4 * n ** 2))
    return (centre - spread) / denom, (centre + spread) / denom


PHASE_OF = {("none", 0): "start", ("mima", 0): "immunized", ("none", 400): "after attack",
            ("mima", 400): "after attack"}


def _row(tidy, metric, phase, defense, group):
    r = tidy[(tidy.table == "accuracy") & (tidy.metric == metric) & (tidy.phase == phase)
             & (tidy.defense == defense) & (tidy.group == group)]
    assert len(r) == 1, (metric, phase, defense, group)
    return r.iloc[0]


def test_accuracy_cells_are_numpys_mean_std_over_seeds_with_pooled_wilson_intervals():
    text, tidy = leaderboard(_results(), _manifest())
    assert list(tidy.columns) == TIDY_COLUMNS
    for (metric, defense, step, group), values in ACC.items():
        label = metric.split("/")[1]
        r = _row(tidy, label, PHASE_OF[(defense, step)], defense, group)
        assert r["mean"] == pytest.approx(np.mean(values))
        assert r["std"] == pytest.approx(np.std(values, ddof=1))
        assert r["n"] == 3
        images = EVAL_IMAGES * len((TARGETS if label == "targets" else OTHERS)[group]) * 3
        assert r["images"] == images
        assert (r["ci_low"], r["ci_high"]) == pytest.approx(_hand_wilson(np.mean(values), images))
        assert r["ci_low"] < r["mean"] < r["ci_high"]
        cell = f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f} (3) [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
        assert cell in text


def test_the_mean_column_is_the_mean_over_seeds_of_the_group_mean_and_pools_images_over_groups():
    _, tidy = leaderboard(_results(), _manifest())
    for (defense, step), phase in PHASE_OF.items():
        for metric, concepts in (("acc/targets", TARGETS), ("acc/others", OTHERS)):
            per_seed = np.mean([ACC[(metric, defense, step, g)] for g in ("g1", "g2")], axis=0)
            r = _row(tidy, metric.split("/")[1], phase, defense, "mean")
            assert r["mean"] == pytest.approx(per_seed.mean()) and r["std"] == pytest.approx(per_seed.std(ddof=1))
            images = {g: EVAL_IMAGES * len(concepts[g]) * 3 for g in ("g1", "g2")}
            pooled = sum(np.mean(ACC[(metric, defense, step, g)]) * images[g] for g in images) / sum(images.values())
            assert r["images"] == sum(images.values())
            assert (r["ci_low"], r["ci_high"]) == pytest.approx(_hand_wilson(pooled, sum(images.values())))


def test_table5_rows_read_start_immunized_after_attack_and_only_after_attack_rows_are_bold():
    text, tidy = leaderboard(_results(), _manifest())
    lines = text.splitlines()
    targets_at, others_at = lines.index("Targets ↓ (lower = the attack failed to re-learn them):"), \
        lines.index("Others ↑ (higher = the rest of the model still works):")
    for start in (targets_at, others_at):
        rows = [line for line in lines[start + 3:] if line.startswith("| ")][:4]
        labels = [r.split(" | ")[0].lstrip("| ") for r in rows]
        assert labels == ["start model", "mima (lora) immunized", "none (lora) after attack", "mima (lora) after attack"]
        assert "**" not in rows[0] and "**" not in rows[1]  # the immunized targets (lowest) compete for nothing
    targets = [line for line in lines[targets_at:others_at] if line.startswith("| ")]
    assert targets[-1].count("**") == 2 * 3  # mima after attack: best (lowest) in g1, g2 and mean
    assert "before and after the attack" in text
    assert "95% Wilson score interval" in text and "± is the std over seeds" in text
    assert "MRSGR compares the others with the targets only" in text
    assert set(tidy[tidy.table == "accuracy"].phase) == {"start", "immunized", "after attack"}
    scores = tidy[tidy.table.isin(["MSGR", "MRSGR"])]
    assert (scores.phase == "after attack").all() and scores[["ci_low", "ci_high", "images"]].isna().all().all()
    clip = scores[(scores.table == "MSGR") & (scores.metric == "CLIP") & (scores.group == "g1")].iloc[0]
    assert clip["mean"] == pytest.approx(45.0) and clip["std"] == pytest.approx(5.0) and clip["n"] == 3
    assert "| mima (lora) | CLIP | 45.00 ± 5.00 (3) | 25.00 ± 5.00 (3) | 35.00 ± 0.00 (3) |" in text


def test_one_seed_shows_no_spread_but_keeps_the_interval():
    text, tidy = leaderboard(_results(seeds=[0]), _manifest(seeds=[0]))
    assert "±" not in text and "(1)" not in text  # neither a spread nor a seed count
    r = _row(tidy, "targets", "after attack", "mima", "g1")
    assert r["n"] == 1 and pd.isna(r["std"]) and r["images"] == EVAL_IMAGES * 2
    assert (r["ci_low"], r["ci_high"]) == pytest.approx(_hand_wilson(0.25, 16))
    assert f"| mima (lora) after attack | **0.250 [{r['ci_low']:.2f}, {r['ci_high']:.2f}]** |" in text


def test_an_old_run_without_step_0_rows_shows_only_the_after_attack_rows():
    text, tidy = leaderboard(_results(steps=(400,)), _manifest())
    assert "start model" not in text and "immunized" not in text
    assert "none (lora) after attack" in text and "mima (lora) after attack" in text
    assert "Classifier accuracy after the attack" in text
    assert set(tidy[tidy.table == "accuracy"].phase) == {"after attack"}


def test_without_the_others_in_the_manifest_the_others_get_no_interval():
    text, tidy = leaderboard(_results(), _manifest(others=False))
    others = tidy[(tidy.table == "accuracy") & (tidy.metric == "others")]
    targets = tidy[(tidy.table == "accuracy") & (tidy.metric == "targets")]
    assert others[["ci_low", "ci_high", "images"]].isna().all().all()
    assert targets[["ci_low", "ci_high", "images"]].notna().all().all()
    others_block = text.split("Others ↑")[1].split("\n\n")[1]
    assert "[" not in others_block and "(3)" in others_block


def test_wilson_interval_edges():
    lo, hi = wilson_interval(0.0, 48)
    assert lo == 0.0 and 0.0 < hi < 1.0 and hi == pytest.approx(_hand_wilson(0.0, 48)[1])
    lo, hi = wilson_interval(1.0, 48)
    assert hi == 1.0 and 0.0 < lo < 1.0 and lo == pytest.approx(_hand_wilson(1.0, 48)[0])
    assert wilson_interval(0.3, 0) == (0.0, 1.0)  # nothing judged: the proportion is unconstrained
    assert wilson_interval(1.0 + 1e-12, 10)[1] == 1.0  # a pooled mean's rounding is tolerated
    for bad in ((-0.1, 10), (1.1, 10), (float("nan"), 10), (0.5, -1)):
        with pytest.raises(ValueError):
            wilson_interval(*bad)
    for p, n in ((0.35, 20), (0.5, 10), (0.875, 200)):
        assert wilson_interval(p, n) == pytest.approx(_hand_wilson(p, n))


def test_world_check_uses_the_same_wilson_interval():
    from immunobench.world import check

    assert check.wilson_interval is wilson_interval
    assert check.Z95 == pytest.approx(1.959964, abs=1e-6)


def test_metric_labels_and_best_direction_come_from_the_metric_plugins(monkeypatch):
    """The L row is named by the plugin's ``label``; its best cell follows the plugin's ``higher_is_better``."""
    from immunobench.metrics.clip import WorldClip
    from immunobench.metrics.lpips import WorldLpips

    rows = [{"task": "relearn-style", "group": "g1", "concept": "*", "attack": "lora", "seed": 0, "step": 400,
             "defense": defense, "metric": f"MSGR/{role}", "value": value}
            for defense, value in (("imma", 10.0), ("mima", 30.0)) for role in "CDL"]
    manifest = {**_manifest(seeds=[0]), "resolved": {**_manifest(seeds=[0])["resolved"], "groups": ["g1"]}}
    text, _ = leaderboard(pd.DataFrame(rows), manifest)
    assert WorldLpips.label == "LPIPS (1 − d)" and WorldClip.higher_is_better
    assert "| mima (lora) | LPIPS (1 − d) | **30.00** |" in text and "| imma (lora) | LPIPS (1 − d) | 10.00 |" in text

    monkeypatch.setattr(WorldLpips, "higher_is_better", False)  # as a distance would declare
    monkeypatch.setattr(WorldLpips, "label", "LPIPS distance")
    text, tidy = leaderboard(pd.DataFrame(rows), manifest)
    assert "| imma (lora) | LPIPS distance | **10.00** |" in text and "| mima (lora) | LPIPS distance | 30.00 |" in text
    assert "| mima (lora) | CLIP | **30.00** |" in text  # the others keep their own direction
    assert set(tidy[tidy.table == "MSGR"].metric) == {"CLIP", "DINO", "LPIPS distance"}


def test_a_zero_difference_reads_as_zero_not_minus_zero():
    from immunobench.leaderboard.report import _fmt

    assert _fmt(-1e-17, float("nan"), 1, 2) == "0.00" and _fmt(-0.0, 0.0, 3, 2) == "0.00 ± 0.00 (3)"
    assert _fmt(-0.004, float("nan"), 1, 2) == "0.00" and _fmt(-0.006, float("nan"), 1, 2) == "-0.01"
