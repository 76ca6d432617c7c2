"""The leaderboard's formulas on hand-built inputs with known answers (DESIGN.md "Metrics")."""

import pandas as pd
import pytest
import torch

from immunobench.cards import get_card
from immunobench.metrics.scores import mean_accuracy, mrsgr, msgr, paired_similarity, set_similarity, top1_accuracy
from immunobench.leaderboard.results import derive_scores


class Cosine:
    """A similarity backend over flattened pixels: enough to check the set/paired reductions."""

    def pairwise(self, a, b):
        a = torch.nn.functional.normalize(a.flatten(1), dim=1)
        b = torch.nn.functional.normalize(b.flatten(1), dim=1)
        return a @ b.T


def test_msgr_identical_sets_is_zero():
    sims = {"a": 0.8, "b": 0.6}
    assert msgr(sims, dict(sims)) == 0.0


def test_msgr_by_hand():
    # (0.8 - 0.4)/0.8 = 50%, (0.5 - 0.5)/0.5 = 0%  → mean 25%
    assert msgr({"a": 0.8, "b": 0.5}, {"a": 0.4, "b": 0.5}) == pytest.approx(25.0)
    # a defense that helps the attacker gives a negative gap
    assert msgr({"a": 0.5}, {"a": 0.6}) == pytest.approx(-20.0)


def test_msgr_positive_when_defense_yields_the_references_opposite():
    refs = torch.randn(4, 3, 8, 8)
    without = refs + 0.1 * torch.randn_like(refs)  # the attack re-learned the concept
    with_defense = -refs  # the immunized model draws the opposite
    m = Cosine()
    value = msgr({"c": set_similarity(m, refs, without)}, {"c": set_similarity(m, refs, with_defense)})
    assert value > 100.0  # similarity went from ~positive to negative


def test_msgr_rejects_mismatched_concepts_and_zero_base():
    with pytest.raises(ValueError, match="concepts differ"):
        msgr({"a": 0.5}, {"b": 0.5})
    with pytest.raises(ValueError, match="undefined"):
        msgr({"a": 0.0}, {"a": 0.1})


def test_mrsgr_by_hand():
    # others stay alike (0.9), targets diverge (0.3): (0.9 - 0.3)/0.9
    assert mrsgr({"t1": 0.2, "t2": 0.4}, {"o1": 0.9, "o2": 0.9}) == pytest.approx(100 * 0.6 / 0.9)
    assert mrsgr({"t": 0.7}, {"o": 0.7}) == 0.0


def test_paired_similarity_is_the_diagonal():
    m = Cosine()
    a = torch.randn(3, 3, 4, 4)
    b = torch.stack([a[0], -a[1], a[2]])
    assert paired_similarity(m, a, b) == pytest.approx((1 - 1 + 1) / 3, abs=1e-6)
    # set similarity averages all 9 pairs and so differs
    assert set_similarity(m, a, b) != pytest.approx(paired_similarity(m, a, b))
    with pytest.raises(ValueError, match="aligned"):
        paired_similarity(m, a, b[:2])


def test_top1_accuracy_and_tab5_mean():
    class Judge:
        def index_of(self, concept):
            return {"x": 0, "y": 1}.get(concept)

        def logits(self, images):
            return torch.stack([images[:, 0, 0, 0], -images[:, 0, 0, 0]], dim=1)

    imgs = torch.zeros(4, 3, 2, 2)
    imgs[:3, 0, 0, 0] = 1.0  # three look like x
    imgs[3, 0, 0, 0] = -1.0
    assert top1_accuracy(Judge(), imgs, "x") == 0.75
    assert top1_accuracy(Judge(), imgs, "y") == 0.25
    assert top1_accuracy(Judge(), imgs, "unknown") is None
    assert mean_accuracy({"x": 0.75, "y": 0.25, "z": None}, ["x", "y", "z"]) == 0.5


def test_derive_scores_matches_the_formulas():
    card = get_card("relearn-style")
    group = "2c-1"
    targets = card.groups[group]
    others = [c for c in card.concepts if c not in targets]
    rows = []

    def add(defense, concept, metric, value, step=400):
        rows.append({"task": "relearn-style", "group": group, "concept": concept, "defense": defense,
                     "attack": "lora", "seed": 0, "step": step, "metric": metric, "value": value})

    for role in "CDL":
        add("none", targets[0], f"sim/{role}", 0.8)
        add("none", targets[1], f"sim/{role}", 0.5)
        add("mima", targets[0], f"sim/{role}", 0.4)
        add("mima", targets[1], f"sim/{role}", 0.5)
        for t in targets:
            add("mima", t, f"paired/{role}", 0.3)
        for o in others:
            add("mima", o, f"paired/{role}", 0.9)
    for c in card.concepts:
        add("none", c, "acc", 1.0 if c in targets else 0.5)
        add("mima", c, "acc", 0.0 if c in targets else 0.5)
    out = derive_scores(rows, card)
    star = out[out.concept == "*"].set_index(["defense", "metric"]).value
    for role in "CDL":
        assert star[("mima", f"MSGR/{role}")] == pytest.approx(25.0)
        assert star[("mima", f"MRSGR/{role}")] == pytest.approx(100 * 0.6 / 0.9)
    assert star[("none", "acc/targets")] == 1.0 and star[("mima", "acc/targets")] == 0.0
    assert star[("mima", "acc/others")] == 0.5
    assert ("none", "MSGR/C") not in star.index  # the baseline is its own reference
    assert list(out.columns) == ["task", "group", "concept", "defense", "attack", "seed", "step", "metric", "value"]


def test_leaderboard_reports_mean_and_std_over_seeds_and_bolds_the_best():
    from immunobench.leaderboard.report import leaderboard

    rows = []
    for defense, values in (("mima", (10.0, 20.0)), ("other", (1.0, 3.0))):
        for seed, v in enumerate(values):
            for role in "CDL":
                rows.append({"task": "t", "group": "2c-1", "concept": "*", "defense": defense, "attack": "lora",
                             "seed": seed, "step": 400, "metric": f"MSGR/{role}", "value": v})
    manifest = {"resolved": {"report_step": 400, "groups": ["2c-1"], "seeds": [0, 1]},
                "run": {"task": "t"}, "model": {"name": "tiny-sd"}, "date": "d", "failures": []}
    text, tidy = leaderboard(pd.DataFrame(rows), manifest)
    assert "| mima (lora) | CLIP | **15.00 ± 7.07 (2)** | **15.00 ± 7.07 (2)** |" in text
    assert "| other (lora) | CLIP | 2.00 ± 1.41 (2) | 2.00 ± 1.41 (2) |" in text
    clip = tidy[(tidy.table == "MSGR") & (tidy.metric == "CLIP") & (tidy.defense == "mima") & (tidy.group == "2c-1")]
    assert clip["mean"].item() == 15.0 and clip["n"].item() == 2
