"""``immunobench reproduce BUNDLE --cells K``: re-run K cells of a bundle and compare them with its rows.

A bundle's hashes prove only that it was not changed after it was made. Reproducing re-runs cells
chosen at random from its manifest, with the bundle's own plugin sources, config overrides and
task card, in a fresh store (nothing comes from a cache), and compares every per-concept
measurement of each cell with the bundle's row. Tolerances, stated once: similarities (`sim/*`,
`nn-*`) within 0.01 absolute; accuracies within one generation (1 / eval images). The group scores
(concept `*`: MSGR, MRSGR, mean accuracies) are functions of those rows and are not compared again.
The outcome, with the bundle's content hash, is written to ``<bundle>.reproduced.json``; the
leaderboard marks a bundle's rows *reproduced* only from such a record whose cells all passed.
"""
from __future__ import annotations

import io
import json
import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pandas as pd

from .bundle import MANIFEST, RESULTS, BundleError, read_bundle, verify_bundle

SIMILARITY_TOLERANCE = 0.01
KEYS = ["concept", "split", "step", "metric"]


def tolerance(metric: str, eval_images: int) -> float:
    return 1.0 / eval_images + 1e-9 if metric == "acc" or metric.startswith("acc/") else SIMILARITY_TOLERANCE


def reproduce(bundle: str | Path, cells: int = 2, seed: int = 0, log: Callable[[str], None] = print,
              workers: int = 1) -> dict:
    """Re-runs ``cells`` random cells of ``bundle`` → the reproduction record (also written beside it)."""
    from immunobench.plugins import get_attack, get_defense, load_plugin_file, source_hash
    from immunobench.progress import Progress
    from immunobench.runner import RunConfig, Runner

    bundle = Path(bundle)
    index = verify_bundle(bundle)
    files = read_bundle(bundle)
    manifest = json.loads(files[MANIFEST])
    published = pd.read_parquet(io.BytesIO(files[RESULTS]))
    candidates = [c for c in manifest.get("cells", []) if c["defense"] != "none"]
    if not candidates:
        raise BundleError(f"{bundle}: its manifest lists no defended cell to reproduce")
    chosen = random.Random(seed).sample(candidates, min(cells, len(candidates)))
    eval_images = manifest["resolved"]["eval_images"]
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="immunobench-reproduce-") as tmp:
        tmp = Path(tmp)
        for name, entry in manifest["resolved"]["plugins"].items():
            if Path(entry["file"]).is_absolute():  # a submitted plugin: load the bundle's copy of it
                file = tmp / "plugins" / Path(entry["file"]).name
                file.parent.mkdir(exist_ok=True)
                file.write_bytes(files[f"plugins/{name.replace('/', '_')}.py"])
                load_plugin_file(file)
        for name, entry in manifest["resolved"]["plugins"].items():
            cls = _plugin_class(name, get_defense, get_attack)
            if cls is not None and source_hash(cls) != entry["source_sha256"]:
                raise BundleError(f"plugin {name}: this installation's source (hash {source_hash(cls)}) is not the "
                                  f"bundle's ({entry['source_sha256']}); reproduce with the code the bundle names "
                                  f"({manifest.get('code', {}).get('immunobench', '?')})")
        run = manifest["run"]
        card = manifest["task_card"]
        base = RunConfig(task=card["path"] if card.get("path") and Path(card["path"]).is_file() else card["name"],
                         model=run["model"], judges=run.get("judges", ""), device=run["device"],
                         eval_images=run["eval_images"],
                         checkpoints=tuple(run["checkpoints"]), report_step=run["report_step"],
                         sample_steps=run["sample_steps"], overrides=run["overrides"],
                         include_paths=tuple(run["include_paths"]), store=str(tmp / "store"), out=str(tmp / "runs"),
                         workers=workers)
        outcomes = []
        for i, cell in enumerate(chosen, 1):
            label = f"{cell['group']}/{cell['defense']}/{cell['attack']}/{cell['attack_config']}/seed {cell['seed']}"
            log(f"reproducing cell {i} of {len(chosen)}: {label}")
            sweep = {cell["attack"]: run["attack_sweep"][cell["attack"]]} if cell["attack_config"] != "default" else {}
            cfg = replace(base, defenses=(cell["defense"].removesuffix("/unconstrained"),), attacks=(cell["attack"],),
                          groups=(cell["group"],), seeds=(cell["seed"],), attack_sweep=sweep, name=f"cell-{i}")
            runner = Runner(cfg, Progress(False), log=lambda _: None)
            if runner.card_hash != card["hash"]:
                raise BundleError(f"task card {card['name']}: this installation's card (hash {runner.card_hash}) is not "
                                  f"the bundle's ({card['hash']}); pass the bundle's card file")
            rerun = pd.read_parquet(runner.run() / "results.parquet")
            outcomes.append({"cell": {k: cell[k] for k in ("group", "defense", "attack", "attack_config", "seed")},
                             **compare(published, rerun, cell, eval_images)})
            log(f"  {'reproduced' if outcomes[-1]['passed'] else 'NOT reproduced'}: {outcomes[-1]['rows']} rows, "
                f"largest difference {outcomes[-1]['max_abs_diff']:.4g} ({outcomes[-1]['worst']})")
    record = {"bundle": bundle.name, "content_hash": index["content_hash"], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "seconds": round(time.time() - started, 1), "selection_seed": seed, "cells_in_bundle": len(candidates),
              "tolerance": {"similarity": SIMILARITY_TOLERANCE, "accuracy": f"1/{eval_images}"},
              "cells": outcomes, "passed": all(o["passed"] for o in outcomes)}
    from immunobench.runner import code_version

    record["code"] = code_version()
    bundle.with_name(bundle.name + ".reproduced.json").write_text(json.dumps(record, indent=1))
    return record


def compare(published: pd.DataFrame, rerun: pd.DataFrame, cell: dict, eval_images: int) -> dict:
    """The cell's per-concept rows of both frames joined on (concept, split, step, metric)."""
    def rows(df):
        mask = (df.concept != "*")
        for k in ("group", "defense", "attack", "attack_config", "seed"):
            mask &= df[k] == cell[k]
        return df[mask].set_index(KEYS)["value"]

    a, b = rows(published), rows(rerun)
    if a.empty:
        return {"passed": False, "rows": 0, "max_abs_diff": float("nan"), "worst": "the bundle has no rows of this cell",
                "missing": 0}
    joined = pd.concat({"published": a, "rerun": b}, axis=1)
    missing = int(joined["rerun"].isna().sum())
    diff = (joined["published"] - joined["rerun"]).abs()
    allowed = pd.Series([tolerance(m, eval_images) for m in joined.index.get_level_values("metric")], index=joined.index)
    worst = diff.idxmax() if diff.notna().any() else None
    return {"passed": missing == 0 and bool((diff <= allowed).all()), "rows": int(len(joined)), "missing": missing,
            "max_abs_diff": float(diff.max()) if worst is not None else float("nan"),
            "worst": "/".join(map(str, worst)) if worst is not None else "",
            "over_tolerance": int((diff > allowed).sum())}


def _plugin_class(name: str, get_defense, get_attack):
    for get in (get_defense, get_attack):
        try:
            return get(name)
        except Exception:  # noqa: BLE001  (not of this kind)
            continue
    return None
