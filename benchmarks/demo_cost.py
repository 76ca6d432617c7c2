"""What `make demo` costs: the grid on a fresh store, the same command again, then `none,mima`.

Runs `immunobench run --defense mima --task relearn-style --groups 2c-1 3c-4` three ways in one
process-per-run sequence on an empty store and writes benchmarks/results/demo_cost.json:
wall time per run, the second/first ratio (the store's reuse), the per-stage split of the first
run (count, seconds, peak RSS) and the stages the third run had to compute.

    .venv/bin/python benchmarks/demo_cost.py [--store /tmp/immunobench-demo-store]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

DEMO = ["run", "--task", "relearn-style", "--groups", "2c-1", "3c-4", "--quiet"]


def _run(store: str, out: str, name: str, defenses: str) -> dict:
    started = time.time()
    cmd = [sys.executable, "-m", "immunobench.cli", *DEMO, "--defense", defenses, "--store", store, "--out", out,
           "--name", name]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    seconds = time.time() - started
    manifest = json.loads((Path(out) / name / "manifest.json").read_text())
    return {"command": " ".join(["immunobench", *DEMO, "--defense", defenses]), "wall_seconds": round(seconds, 1),
            "computed": manifest["timings"]["computed"], "reused": manifest["timings"]["cached"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default="/tmp/immunobench-demo-store")
    ap.add_argument("--out", default="/tmp/immunobench-demo-runs")
    ap.add_argument("--result", default="benchmarks/results/demo_cost.json")
    args = ap.parse_args()
    shutil.rmtree(args.store, ignore_errors=True)
    shutil.rmtree(args.out, ignore_errors=True)
    first = _run(args.store, args.out, "first", "mima")
    second = _run(args.store, args.out, "second", "mima")
    third = _run(args.store, args.out, "none-mima", "none,mima")
    import platform
    import os

    result = {"date": time.strftime("%Y-%m-%d"), "host": {"platform": platform.platform(), "cpus": os.cpu_count()},
              "first": first, "second": second, "none_then_mima": third,
              "second_over_first": round(second["wall_seconds"] / first["wall_seconds"], 4)}
    Path(args.result).parent.mkdir(parents=True, exist_ok=True)
    Path(args.result).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("second_over_first",)} | {"first_s": first["wall_seconds"],
                                                                      "second_s": second["wall_seconds"]}))


if __name__ == "__main__":
    main()
