"""Every registered defense on the three cards over seeds 0, 1, 2 — the grid of issue [8/10] — and its cost.

Run: ``immunobench run --defense all`` for each card through the runner with the grid's attack sweep
(``grid_sweep``: each card attack's step size at a third and three times its preset, beside the preset,
so the leaderboard has its worst case over an adaptive attacker), all seeds in one run (one
store, so a killed or repeated call resumes where it stopped), then copies each run's
``results.parquet``, ``leaderboard.md``/``.csv`` and ``manifest.json`` to
``benchmarks/results/all_defenses/<task>/``.

``--estimate`` runs nothing: it lists the grid the runner would compute (groups × seeds × defense
rows × attacks, the constrained defenses' unconstrained twins included) and prices it with costs
measured in committed runs, so the grid's size is a figure before anyone starts it:
- a cell's attack (with its per-concept "alone" attacks and the others' step 0): the median over the
  cells of the newest committed run of that card without a sweep, with that attack and group size; free for the
  unconstrained twin of a defense that releases the start weights (the runner reuses the undefended
  cell's attack); with the sweep each point costs that times the measured mean swept point over the
  plain attack, which adds sampling the selection split, draws a point other than the default at its
  report step only, and leaves out the others' step 0, now the
  model's ``before`` stage, priced once per attacked model at its measured share of the plain attack, and
  once more for the same draw on the selection seeds (the worst case's before level; as many images)
  (``--measure-sweep``: one undefended cell per card kind attacked without and then with the sweep in
  one process, ``sweep_cost.json``);
- an immunization: the newest committed run of the defense at exactly the config the grid gives it
  (a direct timing of its preset; the median of its cells), else the defense's preset run
  (``defense_presets/<d>.json``, relearn-style 2c-1, the
  chosen setting, mean over the selection seeds that computed it, else over the settings of the same
  budget), else the newest committed manifest's cells of that defense; for a 3-concept group the
  2c-1 figure × 3/2 (MIMA's measured 3c/2c ratio is 1.42);
- the reference image sets: the newest manifest's images seconds per (group, seed).
- not priced: scoring, 3 % of the attacks in the relearn sweep-cost runs of code 88fd2c4 (5 s beside 157 s
  plain; 13 s beside 500 s for the three swept points and their before stage, the selection split's scores
  included).
Seconds are summed over one-thread workers: the wall time on W cores is about total / W. Figures
from different days differ by up to 2× on this host (docs/performance.md), so the estimate is a
size, not a promise. Writes ``benchmarks/results/all_defenses/estimate.json``.

    .venv/bin/python benchmarks/all_defenses.py --measure-sweep    # then --estimate
    .venv/bin/python benchmarks/all_defenses.py --estimate
    .venv/bin/python benchmarks/all_defenses.py [--tasks relearn-style ...] [--store DIR] [--device cuda] [--jobs N]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path

from immunobench.cards import get_card
from immunobench.plugins import UNCONSTRAINED, defense_plugin, get_attack, get_defense, resolve_config
from immunobench.progress import Progress
from immunobench.runner import RunConfig, Runner

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "all_defenses"
TASKS = ("relearn-style", "relearn-object", "personalization")
SEEDS = (0, 1, 2)
FREE = {"none": 0.0}  # no immunization stage at all
SAME_COST = {"random": "mima"}  # the random control runs MIMA itself (defenses/random_control.py)
START_DEFENSE = "uce"  # the re-learning cards' start model; as a grid row, the same closed-form erasure again
# The attacker's step size around its preset. A bi-level defense's unroll "implicitly chooses an update
# style/learning rate" (the course critique of MIMA, shared/seeds/002) and the attack presets were tuned on
# the undefended model: a defense that only moves the step size at which fine-tuning works is caught by a
# point on either side. The card's epsilon guard keeps a point that wrecks the others out of the worst case.
LR_FACTORS = (1 / 3, 3.0)
SWEEP_COST = OUT / "sweep_cost.json"
# one undefended cell per card for --measure-sweep; personalization's cheapest attack, its alone attacks included
SWEEP_PROBES = {"relearn-style": "lora", "personalization": "dreambooth_lora"}


def grid_sweep(task: str, model: str = "tiny-sd") -> dict:
    """The grid's ``attack_sweep``: every attack of the card at its preset lr × ``LR_FACTORS``."""
    card = get_card(task)
    return {attack: {"lr": tuple(f"{resolve_config(get_attack(attack), model, card.kind).config.lr * f:.3g}"
                                 for f in LR_FACTORS)}
            for attack in card.attacks}


def _manifests() -> list[dict]:
    """Every committed run manifest with per-cell costs, newest first."""
    found = []
    for path in RESULTS.rglob("manifest.json"):
        m = json.loads(path.read_text())
        if any("cost" in c for c in m.get("cells", [])):
            found.append({**m, "_path": str(path.relative_to(RESULTS.parent.parent))})
    return sorted(found, key=lambda m: m["date"], reverse=True)


def _task(m: dict) -> str:
    return m["task_card"]["name"] if isinstance(m["task_card"], dict) else m["task_card"]


def _attack_seconds(manifests, task: str, attack: str, size: int) -> tuple[float | None, str]:
    """A cell's attack as a plain run priced it before the others' step 0 became the model's ``before``
    stage: older manifests' attack stage held it, newer ones show it as the cell's ``before`` cost."""
    for m in manifests:
        if _task(m) != task or m.get("resolved", {}).get("attack_sweep"):  # a swept attack samples more
            continue
        secs = [_cell_seconds(c) for c in m["cells"]
                if c["attack"] == attack and len(c["targets"]) == size and "attack" in c["cost"]]
        if secs:
            return statistics.median(secs), m["_path"]
    return None, "unmeasured"


def _immunize_seconds(manifests, defense: str, size: int, kind: str) -> tuple[float | None, str]:
    defense = SAME_COST.get(defense, defense)
    if defense in FREE:
        return FREE[defense], "no stage"
    direct = _cells_at_preset(manifests, defense, kind)
    if direct:
        return _median_scaled(direct[0], size), direct[1] + " (at its preset)"
    preset = RESULTS / "defense_presets" / f"{defense}.json"
    if preset.exists():
        r = json.loads(preset.read_text())
        # None where the run found the immunization in the store (a resumed protocol run); then the settings
        # of the same budget at another step size, the same work ("x10,steps=200" for "x1,steps=200")
        budget = r["chosen"].split(",", 1)[-1]
        for labels in ([r["chosen"]], [label for label in r["settings"] if label.split(",", 1)[-1] == budget]):
            measured = [p["immunize_seconds"] for label in labels for p in r["settings"][label]["per_seed"]
                        if p["immunize_seconds"] and not p.get("immunize_resumed_at_step")]  # a resumed one: its tail
            if measured:
                break
        if measured:
            return statistics.fmean(measured) * size / 2, str(preset.relative_to(RESULTS.parent.parent))
    if defense == START_DEFENSE:  # the start model is this very erasure of the group
        for m in manifests:
            start = m["timings"]["computed"].get("start")
            if start and start["count"]:
                return start["seconds"] / start["count"], m["_path"] + " (start stage)"
    for same_size in (True, False):
        for m in manifests:
            cells = [c for c in m["cells"] if c["defense"] == defense and "immunize" in c["cost"]
                     and (same_size is False or len(c["targets"]) == size)]
            if cells:
                return _median_scaled(cells, size), m["_path"]
    return None, "unmeasured"


def _median_scaled(cells: list[dict], size: int) -> float:
    """The cells' median immunization, each scaled to ``size`` targets (the same size where it has them)."""
    same = [c for c in cells if len(c["targets"]) == size] or cells
    return statistics.median(c["cost"]["immunize"]["seconds"] * size / len(c["targets"]) for c in same)


def _cells_at_preset(manifests, defense: str, kind: str) -> tuple[list[dict], str] | None:
    """The newest committed run of ``defense`` at exactly the config the grid gives it: a direct timing
    of the preset, which the protocol's figure (nine settings, timed as they came) may not be."""
    config = resolve_config(get_defense(defense), "tiny-sd", kind).config
    if not is_dataclass(config):  # a plugin without a config dataclass has nothing to compare
        return None
    want = json.loads(json.dumps(asdict(config), default=str))
    want.pop("seed", None)  # the runner sets it per seed
    for m in manifests:
        config = dict(m.get("resolved", {}).get("plugins", {}).get(defense, {}).get("config") or {})
        config.pop("seed", None)
        cells = [c for c in m["cells"] if c["defense"] == defense and "immunize" in c["cost"]]
        if cells and config == want:
            return cells, m["_path"]
    return None


def _images_seconds(manifests, task: str) -> tuple[float | None, str]:
    """Per (group, seed), from the run of the card over the most of them: image sets are shared between
    groups (a concept's references serve every group that scores it), so a one-group run over-prices them."""
    priced = [m for m in manifests  # a run that found its image sets in the store priced nothing
              if _task(m) == task and m["timings"]["computed"].get("images", {}).get("seconds", 0.0)]
    if not priced:
        return None, "unmeasured"

    def pairs(m: dict) -> int:
        return len({(c["group"], c["seed"]) for c in m["cells"]})

    m = max(priced, key=pairs)  # the newest of a tie: ``manifests`` is newest first
    return m["timings"]["computed"]["images"]["seconds"] / pairs(m), m["_path"]


def estimate(tasks, seeds) -> dict:
    manifests = _manifests()
    report = {"date": time.strftime("%Y-%m-%d"), "seeds": list(seeds), "tasks": {}}
    for task in tasks:
        parts = {"images": 0.0, "immunize": {}, "attack": {}, "before": 0.0}
        sources, unmeasured = {}, set()
        runner = Runner(RunConfig(task=task, defenses=("all",), seeds=tuple(seeds), out="/tmp/immunobench-estimate",
                                  attack_sweep=grid_sweep(task)), Progress(False), log=lambda _: None)
        prices, sources["sweep"] = _sweep_prices(task)
        unmeasured |= {"sweep"} if prices is None else set()
        point, before_share = (prices["point_vs_plain"], prices["before_vs_plain"]) if prices else (1.0, 0.0)
        points = {a: len(runner.variants[a]) for a in runner.attacks}
        rows, plugins = runner.defenses, [d for d in runner.defenses if not d.endswith(UNCONSTRAINED)]
        # an unconstrained twin of a release that changes no weight is the undefended cell's attack, reused
        reused = [r for r in rows if r.endswith(UNCONSTRAINED) and get_defense(defense_plugin(r)).releases_start_weights]
        attacked = len(rows) - len(reused)
        # the models attacked per (group, seed), each drawing its others before the attack once: one per
        # defense but those releasing the start weights, whose model is the undefended one
        models = len([d for d in plugins if d == "none" or not get_defense(d).releases_start_weights])
        probe = SWEEP_PROBES.get(task, next((SWEEP_PROBES[t] for t in SWEEP_PROBES
                                             if get_card(t).kind == runner.card.kind), None))
        for group_name in runner.groups:
            size = len(runner.card.group(group_name).targets)
            secs, sources["images"] = _images_seconds(manifests, task)
            parts["images"] += (secs or 0.0) * len(seeds)
            for d in plugins:
                secs, sources[f"immunize {d} ({size}c)"] = _immunize_seconds(manifests, d, size, runner.card.kind)
                unmeasured |= {f"immunize {d}"} if secs is None else set()
                parts["immunize"][d] = parts["immunize"].get(d, 0.0) + (secs or 0.0) * len(seeds)
            for attack in runner.attacks:
                secs, sources[f"attack {attack} ({size}c)"] = _attack_seconds(manifests, task, attack, size)
                unmeasured |= {f"attack {attack}"} if secs is None else set()
                point_secs = (secs or 0.0) * points[attack] * point
                parts["attack"][attack] = parts["attack"].get(attack, 0.0) + point_secs * len(seeds) * attacked
                if attack == probe:  # a sweep draws the others before the attack on the selection seeds too
                    draws = 2 if any(len(v) > 1 for v in runner.variants.values()) else 1
                    parts["before"] += (secs or 0.0) * before_share * len(seeds) * models * draws
        total = parts["images"] + sum(parts["immunize"].values()) + sum(parts["attack"].values()) + parts["before"]
        report["tasks"][task] = {
            "groups": len(runner.groups), "defense_rows": rows, "attacks": runner.attacks, "rows_reusing_none": reused,
            "sweep": {a: [v.label for v in runner.variants[a]] for a in runner.attacks},
            "cells": len(runner.groups) * len(seeds) * len(rows) * sum(points.values()),
            "immunizations": len(runner.groups) * len(seeds) * len([d for d in plugins if d not in FREE]),
            "seconds": {"images": round(parts["images"]),
                        "immunize": {d: round(s) for d, s in parts["immunize"].items()},
                        "attack": {a: round(s) for a, s in parts["attack"].items()},
                        "before": round(parts["before"]), "total": round(total)},
            "core_hours": round(total / 3600, 1), "unmeasured": sorted(unmeasured), "sources": sources}
    report["core_hours"] = round(sum(t["core_hours"] for t in report["tasks"].values()), 1)
    return report


def _cell_seconds(cell: dict, before: bool = True) -> float:
    cost = cell["cost"]
    return (cost["attack"]["seconds"] + cost.get("attack-alone", {}).get("seconds", 0.0)
            + (cost.get("before", {}).get("seconds", 0.0) if before else 0.0))


def measure_sweep(root: Path) -> dict:
    """Each ``SWEEP_PROBES`` cell (undefended, the card's first group, seed 0, one process) attacked
    without the sweep, then with it in a fresh store: the swept run's default point also samples the
    selection split, the other points are the step-size changes."""
    report = {"date": time.strftime("%Y-%m-%d"), "lr_factors": list(LR_FACTORS), "cells": {}}
    for task, attack in SWEEP_PROBES.items():
        group = next(iter(get_card(task).groups))
        seconds, before, manifests = {}, {}, {}
        for label, sweep in (("plain", {}), ("swept", {attack: grid_sweep(task)[attack]})):
            cfg = RunConfig(task=task, defenses=("none",), attacks=(attack,), groups=(group,), seeds=(0,),
                            out=str(root / "runs"), store=str(root / task / label), name=f"{task}-{label}",
                            workers=1, attack_sweep=sweep)
            m = json.loads((Runner(cfg, Progress()).run() / "manifest.json").read_text())
            seconds[label] = {c["attack_config"]: round(_cell_seconds(c, before=False), 1) for c in m["cells"]}
            before[label] = round(m["cells"][0]["cost"].get("before", {}).get("seconds", 0.0), 1)  # one per model
            manifests[label] = m
        swept = seconds["swept"]
        others = [v for k, v in swept.items() if k != "default"]
        report["cells"][task] = {
            "attack": attack, "group": group, "seed": 0, "seconds": seconds, "before_seconds": before,
            # what sampling the selection split adds to the same attack, and what the other lr add on top
            "selection_overhead": round(swept["default"] / seconds["plain"]["default"], 3),
            "other_points_vs_default": round(statistics.fmean(others) / swept["default"], 3),
            **_prices(seconds, before),
            "code": manifests["swept"]["code"], "host": manifests["swept"]["host"]}
    return report


def _prices(seconds: dict, before: dict) -> dict:
    """Against a plain attack as the manifests price it (attack stage + the others' step 0): a swept point's
    mean cost (its attack stage only) and the model's ``before`` stage, which its attacks share."""
    plain = seconds["plain"]["default"] + before["plain"]
    return {"point_vs_plain": round(statistics.fmean(seconds["swept"].values()) / plain, 3),
            "before_vs_plain": round(before["plain"] / plain, 3)}


def _sweep_prices(task: str) -> tuple[dict | None, str]:
    """``_prices`` measured on this card, else on a card of its kind."""
    path = RESULTS / OUT.name / SWEEP_COST.name
    if not path.exists():
        return None, "unmeasured"
    cells = json.loads(path.read_text())["cells"]
    kind = get_card(task).kind
    probe = task if task in cells else next((t for t in cells if get_card(t).kind == kind), None)
    if probe is None:
        return None, "unmeasured"
    cell = cells[probe]
    return _prices(cell["seconds"], cell["before_seconds"]), f"{path.relative_to(RESULTS.parent.parent)} ({probe})"


def run(tasks, seeds, store: str, runs: str, device: str, jobs: int) -> None:
    for task in tasks:
        started = time.time()
        cfg = RunConfig(task=task, defenses=("all",), seeds=tuple(seeds), out=runs, store=store, name=task,
                        device=device, workers=jobs, attack_sweep=grid_sweep(task))
        run_dir = Runner(cfg, Progress()).run()
        dest = OUT / task
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("results.parquet", "leaderboard.md", "leaderboard.csv", "manifest.json"):
            shutil.copy(run_dir / name, dest / name)
        print(f"{task}: {dest} ({time.time() - started:.0f} s)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS))
    ap.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    ap.add_argument("--store", default=str(Path.home() / ".cache" / "immunobench" / "store"))
    ap.add_argument("--runs", default="/tmp/immunobench-all-defenses")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=0, help="worker processes (0: one per core on CPU, one on a GPU)")
    ap.add_argument("--estimate", action="store_true", help="price the grid from committed measurements; run nothing")
    ap.add_argument("--measure-sweep", action="store_true",
                    help=f"measure what the grid's sweep adds to an attack → {SWEEP_COST.name}")
    args = ap.parse_args()
    if args.measure_sweep:
        report = measure_sweep(Path(args.runs) / "sweep-cost")
        OUT.mkdir(parents=True, exist_ok=True)
        SWEEP_COST.write_text(json.dumps(report, indent=1))
        for task, c in report["cells"].items():
            print(f"{task} ({c['attack']}): a swept point costs ×{c['point_vs_plain']} the plain attack (selection "
                  f"sampling ×{c['selection_overhead']}, the other lr ×{c['other_points_vs_default']} of the default)")
        return
    if args.estimate:
        report = estimate(args.tasks, args.seeds)
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "estimate.json").write_text(json.dumps(report, indent=1))
        for task, t in report["tasks"].items():
            print(f"{task}: {t['cells']} cells, {t['immunizations']} immunizations, {t['core_hours']} core-hours"
                  + (f" (unmeasured: {', '.join(t['unmeasured'])})" if t["unmeasured"] else ""))
        print(f"all: {report['core_hours']} core-hours → {OUT / 'estimate.json'}")
        return
    run(args.tasks, args.seeds, args.store, args.runs, args.device, args.jobs)


if __name__ == "__main__":
    main()
