"""Sweep MIMA's tiny-sd preset: outer/inner learning rate and steps on relearn-style (one group).

Each setting runs the real grid (UCE start model → MIMA → LoRA → judges) through the runner and
its store, so the no-defense cells are computed once. Writes benchmarks/results/mima_tiny_sd.json
with MSGR (C, D, L), target/other accuracy at the reporting step and MIMA's wall time per setting.

    .venv/bin/python benchmarks/mima_tiny_sd.py [--group 2c-1] [--store DIR]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from immunobench.plugins import discover
from immunobench.progress import Progress
from immunobench.runner import RunConfig, Runner

SETTINGS = [  # (outer_lr, inner_lr, steps)
    (3e-5, 1e-2, 60),
    (1e-4, 1e-2, 60),
    (2e-4, 1e-2, 60),
    (3e-4, 1e-2, 60),
    (1e-4, 1e-1, 60),
    (2e-4, 1e-1, 60),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--group", default="2c-1")
    ap.add_argument("--store", default=str(Path.home() / ".cache" / "immunobench" / "store"))
    ap.add_argument("--out", default="benchmarks/results/mima_tiny_sd.json")
    args = ap.parse_args()
    discover()
    rows = []
    for outer_lr, inner_lr, steps in SETTINGS:
        cfg = RunConfig(task="relearn-style", defenses=("mima",), groups=(args.group,), out="/tmp/immunobench-bench",
                        store=args.store, name=f"mima-{outer_lr}-{inner_lr}-{steps}",
                        overrides={"mima": {"outer_lr": outer_lr, "inner_lr": inner_lr, "steps": steps}})
        runner = Runner(cfg, Progress(False), log=lambda _: None)
        started = time.time()
        run_dir = runner.run()
        df = pd.read_parquet(run_dir / "results.parquet")
        at = df[(df.step == runner.report_step) & (df.concept == "*")]
        value = {f"{d}:{m}": round(v, 3) for d, m, v in zip(at.defense, at.metric, at.value)}
        rows.append({"outer_lr": outer_lr, "inner_lr": inner_lr, "steps": steps, "scores": value,
                     "mima_seconds": runner.stats["computed"].get("immunize", {}).get("seconds"),
                     "run_seconds": round(time.time() - started, 1)})
        print(json.dumps(rows[-1]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "group": args.group, "settings": rows},
                                         indent=2))


if __name__ == "__main__":
    main()
