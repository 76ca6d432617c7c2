"""Every registered defense on the three cards over seeds 0, 1, 2 — the grid of issue [8/10] — and its cost.

Run: ``immunobench run --defense all`` for each card through the runner, all seeds in one run (one
store, so a killed or repeated call resumes where it stopped), then copies each run's
``results.parquet``, ``leaderboard.md``/``.csv`` and ``manifest.json`` to
``benchmarks/results/all_defenses/<task>/``.

``--estimate`` runs nothing: it lists the grid the runner would compute (groups × seeds × defense
rows × attacks, the constrained defenses' unconstrained twins included) and prices it with costs
measured in committed runs, so the grid's size is a figure before anyone starts it:
- a cell's attack (with its per-concept "alone" attacks): the median over the cells of the newest
  committed manifest of that card with that attack and group size; free for the unconstrained twin
  of a defense that releases the start weights (the runner reuses the undefended cell's attack);
- an immunization: the defense's preset run (``defense_presets/<d>.json``, relearn-style 2c-1, the
  chosen setting, mean over the selection seeds that computed it, else over the settings of the same
  budget), else the newest committed manifest's cells of that defense; for a 3-concept group the
  2c-1 figure × 3/2 (MIMA's measured 3c/2c ratio is 1.42);
- the reference image sets: the newest manifest's images seconds per (group, seed).
Seconds are summed over one-thread workers: the wall time on W cores is about total / W. Figures
from different days differ by up to 2× on this host (docs/performance.md), so the estimate is a
size, not a promise. Writes ``benchmarks/results/all_defenses/estimate.json``.

    .venv/bin/python benchmarks/all_defenses.py --estimate
    .venv/bin/python benchmarks/all_defenses.py [--tasks relearn-style ...] [--store DIR] [--device cuda] [--jobs N]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

from immunobench.plugins import UNCONSTRAINED, defense_plugin, get_defense
from immunobench.progress import Progress
from immunobench.runner import RunConfig, Runner

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "all_defenses"
TASKS = ("relearn-style", "relearn-object", "personalization")
SEEDS = (0, 1, 2)
FREE = {"none": 0.0}  # no immunization stage at all
SAME_COST = {"random": "mima"}  # the random control runs MIMA itself (defenses/random_control.py)
START_DEFENSE = "uce"  # the re-learning cards' start model; as a grid row, the same closed-form erasure again


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
    for m in manifests:
        if _task(m) != task:
            continue
        secs = [c["cost"]["attack"]["seconds"] + c["cost"].get("attack-alone", {}).get("seconds", 0.0)
                for c in m["cells"] if c["attack"] == attack and len(c["targets"]) == size and "attack" in c["cost"]]
        if secs:
            return statistics.median(secs), m["_path"]
    return None, "unmeasured"


def _immunize_seconds(manifests, defense: str, size: int) -> tuple[float | None, str]:
    defense = SAME_COST.get(defense, defense)
    if defense in FREE:
        return FREE[defense], "no stage"
    preset = RESULTS / "defense_presets" / f"{defense}.json"
    if preset.exists():
        r = json.loads(preset.read_text())
        # None where the run found the immunization in the store (a resumed protocol run); then the settings
        # of the same budget at another step size, the same work ("x10,steps=200" for "x1,steps=200")
        budget = r["chosen"].split(",", 1)[-1]
        for labels in ([r["chosen"]], [label for label in r["settings"] if label.split(",", 1)[-1] == budget]):
            measured = [p["immunize_seconds"] for label in labels for p in r["settings"][label]["per_seed"]
                        if p["immunize_seconds"]]
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
                return (statistics.median(c["cost"]["immunize"]["seconds"] * size / len(c["targets"]) for c in cells),
                        m["_path"])
    return None, "unmeasured"


def _images_seconds(manifests, task: str) -> tuple[float | None, str]:
    for m in manifests:
        images = m["timings"]["computed"].get("images", {}).get("seconds", 0.0)
        if _task(m) == task and images:  # a run that found its image sets in the store priced nothing
            return images / len({(c["group"], c["seed"]) for c in m["cells"]}), m["_path"]
    return None, "unmeasured"


def estimate(tasks, seeds) -> dict:
    manifests = _manifests()
    report = {"date": time.strftime("%Y-%m-%d"), "seeds": list(seeds), "tasks": {}}
    for task in tasks:
        runner = Runner(RunConfig(task=task, defenses=("all",), seeds=tuple(seeds), out="/tmp/immunobench-estimate"),
                        Progress(False), log=lambda _: None)
        rows, plugins = runner.defenses, [d for d in runner.defenses if not d.endswith(UNCONSTRAINED)]
        # an unconstrained twin of a release that changes no weight is the undefended cell's attack, reused
        reused = [r for r in rows if r.endswith(UNCONSTRAINED) and get_defense(defense_plugin(r)).releases_start_weights]
        attacked = len(rows) - len(reused)
        parts = {"images": 0.0, "immunize": {}, "attack": {}}
        sources, unmeasured = {}, set()
        for group_name in runner.groups:
            size = len(runner.card.group(group_name).targets)
            secs, sources["images"] = _images_seconds(manifests, task)
            parts["images"] += (secs or 0.0) * len(seeds)
            for d in plugins:
                secs, sources[f"immunize {d} ({size}c)"] = _immunize_seconds(manifests, d, size)
                unmeasured |= {f"immunize {d}"} if secs is None else set()
                parts["immunize"][d] = parts["immunize"].get(d, 0.0) + (secs or 0.0) * len(seeds)
            for attack in runner.attacks:
                secs, sources[f"attack {attack} ({size}c)"] = _attack_seconds(manifests, task, attack, size)
                unmeasured |= {f"attack {attack}"} if secs is None else set()
                parts["attack"][attack] = parts["attack"].get(attack, 0.0) + (secs or 0.0) * len(seeds) * attacked
        total = parts["images"] + sum(parts["immunize"].values()) + sum(parts["attack"].values())
        report["tasks"][task] = {
            "groups": len(runner.groups), "defense_rows": rows, "attacks": runner.attacks, "rows_reusing_none": reused,
            "cells": len(runner.groups) * len(seeds) * len(rows) * len(runner.attacks),
            "immunizations": len(runner.groups) * len(seeds) * len([d for d in plugins if d not in FREE]),
            "seconds": {"images": round(parts["images"]),
                        "immunize": {d: round(s) for d, s in parts["immunize"].items()},
                        "attack": {a: round(s) for a, s in parts["attack"].items()}, "total": round(total)},
            "core_hours": round(total / 3600, 1), "unmeasured": sorted(unmeasured), "sources": sources}
    report["core_hours"] = round(sum(t["core_hours"] for t in report["tasks"].values()), 1)
    return report


def run(tasks, seeds, store: str, runs: str, device: str, jobs: int) -> None:
    for task in tasks:
        started = time.time()
        cfg = RunConfig(task=task, defenses=("all",), seeds=tuple(seeds), out=runs, store=store, name=task,
                        device=device, workers=jobs)
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
    args = ap.parse_args()
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
