"""Sweeps of one defense's config on one group through the real runner and its store.

Every setting is a run of the grid (start model → defense → attack → judges) on *selection seeds*
that the reported tables never use (their image and evaluation seeds are offset by seed·100000),
so a preset is not chosen on the images it is later scored on. The shared no-defense cells are
computed once, then the settings run two at a time (one single-threaded process each).
"""
from __future__ import annotations

import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from statistics import fmean

import pandas as pd

SELECTION_SEEDS = (7, 8)  # the reported tables use seeds 0, 1, 2


def _run(task: str, group: str, seed: int | tuple, store: str, defenses: tuple, overrides: dict, name: str,
         checkpoints: tuple = ()) -> dict:
    from immunobench.progress import Progress
    from immunobench.runner import RunConfig, Runner

    seeds = seed if isinstance(seed, tuple) else (seed,)
    cfg = RunConfig(task=task, defenses=defenses, groups=(group,), seeds=seeds, out="/tmp/immunobench-sweeps",
                    store=store, name=name, overrides=overrides, workers=len(seeds), checkpoints=checkpoints)
    runner = Runner(cfg, Progress(False), log=lambda _: None)
    run_dir = runner.run()
    df = pd.read_parquet(run_dir / "results.parquet")
    star = df[df.concept == "*"]
    scores = {f"{d}@{s}:{m}": round(v, 4) for d, s, m, v in zip(star.defense, star.step, star.metric, star.value)
              if s in (0, runner.report_step)}
    merge = {}
    for key in runner.keys.get("immunize", []):
        art = runner.store.get(key)
        if art is not None and art.meta.get("defense") in defenses and "merge" in art.meta.get("info", {}):
            merge = art.meta["info"]["merge"]
    return {"seed": seed, "scores": scores, "merge": merge, "report_step": runner.report_step,
            "keys": {stage: runner.keys.get(stage, []) for stage in ("start", "immunize")},
            **_immunize_cost(runner)}


def _immunize_cost(runner) -> dict:
    """The immunizations' seconds as their stages recorded them when computed, so a protocol run resumed
    through the store keeps its figures; a stage resumed from a loop snapshot says so (its seconds are
    the tail's only)."""
    stored = [runner.store.get(k) for k in dict.fromkeys(runner.keys.get("immunize", []))]
    seconds = [a.meta["cost"]["seconds"] for a in stored if a is not None and "cost" in a.meta]
    resumed = [a.meta["resumed_at_step"] for a in stored if a is not None and a.meta.get("resumed_at_step")]
    return {"immunize_seconds": round(sum(seconds), 2) if seconds else None,
            **({"immunize_resumed_at_step": resumed} if resumed else {})}


def sweep(task: str, group: str, store: str, defense: str, settings: dict[str, dict],
          seeds=SELECTION_SEEDS, processes: int = 2, checkpoints: tuple = ()) -> dict:
    """settings: label → config overrides of ``defense``; returns label → per-seed results and means.
    ``checkpoints``: the attack steps to sample (default the card's; the choice reads only 0 and the report step)."""
    started = time.time()
    # the shared no-defense cells, once
    _run(task, group, tuple(seeds), store, ("none",), {}, "sweep-none", checkpoints)
    jobs = {(label, seed): (task, group, seed, store, (defense,), {defense: over}, f"sweep-{defense}-{label}-{seed}",
                            checkpoints)
            for label, over in settings.items() for seed in seeds}
    # spawn, not fork: this process has run torch (OpenMP) already
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {k: pool.submit(_run, *args) for k, args in jobs.items()}
        done = {k: f.result() for k, f in futures.items()}
    out = {}
    for label, over in settings.items():
        runs = [done[(label, s)] for s in seeds]
        keys = set.intersection(*(set(r["scores"]) for r in runs))
        out[label] = {"overrides": over, "per_seed": runs,
                      "mean": {k: round(fmean(r["scores"][k] for r in runs), 4) for k in sorted(keys)}}
        print(json.dumps({label: out[label]["mean"]}), flush=True)
    return {"task": task, "group": group, "defense": defense, "selection_seeds": list(seeds),
            "checkpoints": list(checkpoints) or "the card's",
            "seconds": round(time.time() - started, 1), "settings": out}


def summary(result: dict, defense: str, step: int) -> dict[str, dict]:
    """label → the figures a reader compares: MSGR/MRSGR means over C, D, L and the accuracies."""
    rows = {}
    for label, r in result["settings"].items():
        m = r["mean"]

        def get(key):
            return m.get(key)

        rows[label] = {
            "MSGR": round(fmean(m[f"{defense}@{step}:MSGR/{x}"] for x in "CDL"), 2),
            "MRSGR": round(fmean(m[f"{defense}@{step}:MRSGR/{x}"] for x in "CDL"), 2),
            "targets_immunized": get(f"{defense}@0:acc/targets"), "others_immunized": get(f"{defense}@0:acc/others"),
            "targets_attacked": get(f"{defense}@{step}:acc/targets"), "others_attacked": get(f"{defense}@{step}:acc/others"),
            "start_targets": get("none@0:acc/targets"), "start_others": get("none@0:acc/others"),
            "none_targets_attacked": get(f"none@{step}:acc/targets"), "none_others_attacked": get(f"none@{step}:acc/others"),
        }
    return rows


def write(path: str | Path, result: dict) -> None:
    """``result`` with its date and the code that computed it (immunobench version, git commit, dirty)."""
    from immunobench.runner import code_version

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "code": code_version(), **result}, indent=2))
