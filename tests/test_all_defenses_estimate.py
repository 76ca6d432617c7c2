"""The all-defense grid's price (benchmarks/all_defenses.py --estimate) is the measured costs it cites,
counted over the grid the runner would run — checked on a results folder whose costs are known."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import all_defenses  # noqa: E402


def _cell(group, size, defense, attack_s, immunize_s=None, alone_s=None, before_s=None):
    cost = {"attack": {"seconds": attack_s}}
    if before_s is not None:
        cost["before"] = {"seconds": before_s}
    if immunize_s is not None:
        cost["immunize"] = {"seconds": immunize_s}
    if alone_s is not None:
        cost["attack-alone"] = {"seconds": alone_s}
    return {"group": group, "seed": 0, "defense": defense, "attack": "lora", "targets": ["t"] * size, "cost": cost}


@pytest.fixture
def results(tmp_path, monkeypatch):
    root = tmp_path / "benchmarks" / "results"
    (root / "run").mkdir(parents=True)
    (root / "defense_presets").mkdir()
    # the first cell is a newer manifest's: its others' step 0 is the before stage's, beside the attack's
    cells = [_cell("2c-1", 2, "none", 7.0, before_s=3.0), _cell("2c-1", 2, "mima", 30.0, immunize_s=4.0, alone_s=2.0),
             _cell("2c-2", 2, "mima", 20.0, immunize_s=6.0),
             _cell("3c-1", 3, "none", 40.0), _cell("3c-1", 3, "esd", 50.0, immunize_s=9.0)]
    (root / "run" / "manifest.json").write_text(json.dumps({
        "date": "2026-12-07T00:00:00+0000", "task_card": {"name": "relearn-style"}, "cells": cells,
        "timings": {"computed": {"images": {"seconds": 30.0}, "start": {"count": 4, "seconds": 2.0}}}}))
    (root / "defense_presets" / "jt.json").write_text(json.dumps({
        "chosen": "x1", "settings": {"x1": {"per_seed": [{"immunize_seconds": 10.0}, {"immunize_seconds": 14.0}]}}}))
    (root / "all_defenses").mkdir()
    # against the plain attack with its others' step 0 (8 + 2 s): swept points 1.5 ×, the before stage 0.2 ×
    (root / "all_defenses" / "sweep_cost.json").write_text(json.dumps({"cells": {
        "relearn-style": {"seconds": {"plain": {"default": 8.0}, "swept": {"default": 12.0, "a": 15.0, "b": 18.0}},
                          "before_seconds": {"plain": 2.0, "swept": 2.0}},
        "personalization": {"seconds": {"plain": {"default": 10.0}, "swept": {"default": 11.0}},
                            "before_seconds": {"plain": 1.0, "swept": 1.0}}}}))
    monkeypatch.setattr(all_defenses, "RESULTS", root)
    return root


def test_the_price_is_the_cited_costs_over_the_runners_grid(results):
    seeds = (0, 1)
    t = all_defenses.estimate(["relearn-style"], seeds)["tasks"]["relearn-style"]
    rows = t["defense_rows"]
    assert "freezeasguard/unconstrained" in rows and rows[0] == "none"  # the runner's rows, twins included
    assert t["sweep"]["lora"] == ["default", "lora[lr=0.000333]", "lora[lr=0.003]"]  # preset 1e-3 × 1/3, × 3
    assert t["cells"] == 10 * len(seeds) * len(rows) * 3
    s = t["seconds"]
    # 2c: median(10, 32, 20) = 20; 3c: median(40, 50) = 45; every row of every group and seed is a cell,
    # attacked but for FreezeAsGuard's unconstrained twin, which is the undefended cell's attack; three
    # sweep points, each at the measured mean swept point over the plain attack
    assert t["rows_reusing_none"] == ["freezeasguard/unconstrained"]
    assert s["attack"]["lora"] == round(len(seeds) * (len(rows) - 1) * 3 * 1.5 * (5 * 20.0 + 5 * 45.0))
    assert t["sources"]["sweep"] == "benchmarks/results/all_defenses/sweep_cost.json (relearn-style)"
    assert all_defenses._sweep_prices("relearn-object") == ({"point_vs_plain": 1.5, "before_vs_plain": 0.2},
                                                            t["sources"]["sweep"])  # a card of its kind
    # each attacked model draws its others before the attack once, for all its attacks and points: every
    # defense's model but FreezeAsGuard's, which is the undefended one (9 of the 10 shipped); a sweep draws
    # them on the eval and on the selection seeds (as many images), so twice
    models = len([r for r in rows if not r.endswith("/unconstrained")]) - 1
    assert s["before"] == round(len(seeds) * models * 0.2 * (5 * 20.0 + 5 * 45.0) * 2)
    assert s["images"] == round(len(seeds) * 10 * 30.0 / 3)  # 30 s over the run's 3 (group, seed) pairs
    # a preset run's mean × size/2; a manifest's median, the other size scaled by size; random = MIMA's cost
    assert s["immunize"]["jt"] == round(len(seeds) * (5 * 12.0 + 5 * 18.0))
    assert s["immunize"]["mima"] == round(len(seeds) * (5 * 5.0 + 5 * 7.5))
    assert s["immunize"]["random"] == s["immunize"]["mima"]
    assert s["immunize"]["esd"] == round(len(seeds) * (5 * 6.0 + 5 * 9.0))
    assert s["immunize"]["uce"] == round(len(seeds) * 10 * 0.5)  # the start stage's closed-form erasure
    assert s["immunize"]["none"] == 0
    assert {"immunize gift", "immunize imma", "immunize freezeasguard"} <= set(t["unmeasured"])
    assert s["total"] == s["images"] + sum(s["immunize"].values()) + sum(s["attack"].values()) + s["before"]
    assert t["sources"]["immunize jt (2c)"] == "benchmarks/results/defense_presets/jt.json"


def test_the_grid_sweeps_every_card_attack_around_its_preset_lr():
    from immunobench.cards import get_card
    from immunobench.plugins import get_attack, resolve_config

    for task in all_defenses.TASKS:
        card, sweep = get_card(task), all_defenses.grid_sweep(task)
        assert set(sweep) == set(card.attacks)
        for attack, fields in sweep.items():
            lr = resolve_config(get_attack(attack), "tiny-sd", card.kind).config.lr
            assert [float(v) for v in fields["lr"]] == pytest.approx([lr / 3, lr * 3], rel=2e-3)


def test_a_committed_run_at_the_preset_prices_its_defense_before_the_protocols_timing(results):
    from dataclasses import asdict

    from immunobench.plugins import get_defense, resolve_config

    preset = json.loads(json.dumps(asdict(resolve_config(get_defense("jt"), "tiny-sd", "relearn").config), default=str))
    for name, config, seconds in (("at-preset", preset, 40.0), ("other", {**preset, "steps": 1}, 99.0)):
        (results / name).mkdir()
        (results / name / "manifest.json").write_text(json.dumps({
            "date": "2026-12-08T00:00:00+0000" if name == "other" else "2026-12-07T12:00:00+0000",
            "task_card": {"name": "relearn-style"}, "resolved": {"plugins": {"jt": {"config": config}}},
            "cells": [_cell("2c-1", 2, "jt", 1.0, immunize_s=seconds)],
            "timings": {"computed": {"images": {"seconds": 50.0}}}}))
    manifests = all_defenses._manifests()
    # the newer run at another config is passed over; the run at the preset beats jt.json's mean (12 s)
    assert all_defenses._immunize_seconds(manifests, "jt", 2, "relearn") == (
        40.0, "benchmarks/results/at-preset/manifest.json (at its preset)")
    assert all_defenses._immunize_seconds(manifests, "jt", 3, "relearn")[0] == 60.0
    # a plain run prices the attack; a swept run's cells also sample the selection split
    assert all_defenses._attack_seconds(manifests, "relearn-style", "lora", 2) == (1.0, "benchmarks/results/other/manifest.json")
    (results / "other" / "manifest.json").write_text(json.dumps({
        **json.loads((results / "other" / "manifest.json").read_text()), "resolved": {"attack_sweep": {"lora": {}}}}))
    assert all_defenses._attack_seconds(all_defenses._manifests(), "relearn-style", "lora", 2)[1] == \
        "benchmarks/results/at-preset/manifest.json"
    # image sets are shared between groups: the run over three (group, seed) pairs prices them, not the
    # newer one-group runs that drew all theirs for one pair
    assert all_defenses._images_seconds(manifests, "relearn-style") == (10.0, "benchmarks/results/run/manifest.json")
