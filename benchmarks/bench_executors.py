"""What the executors buy on this machine: one grid on an empty store with `--jobs 1`, `--jobs 2` and Ray.

Runs `immunobench run --defense mima --task relearn-style --groups 2c-1 3c-1` (two groups: a pair and
a triple, so two processes have comparable work) three times as fresh processes, each on its own
empty store: the local executor with one worker process, with two, and `--executor ray` on a local
Ray instance of two CPUs. Every worker uses one torch thread, so two workers fill two cores without
oversubscribing them. Writes benchmarks/results/bench_executors.json: wall time and phases of each
run, the speed-ups over `--jobs 1` measured in this one run, and the largest score difference of
each run's rows against the `--jobs 1` rows (0.0: the executors change no result).

    .venv/bin/python benchmarks/bench_executors.py
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import RESULTS, host  # noqa: E402
from demo_cost import compare  # noqa: E402

GRID = ["run", "--defense", "mima", "--task", "relearn-style", "--groups", "2c-1", "3c-1", "--quiet"]
SETTINGS = {"jobs1": ["--jobs", "1"], "jobs2": ["--jobs", "2"], "ray2": ["--executor", "ray", "--jobs", "2"]}


def _run(name: str, flags: list[str], root: Path) -> dict:
    store, out = root / f"store-{name}", root / "runs"
    shutil.rmtree(store, ignore_errors=True)
    started = time.time()
    cmd = [sys.executable, "-m", "immunobench.cli", *GRID, *flags, "--store", str(store), "--out", str(out),
           "--name", name]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    seconds = time.time() - started
    manifest = json.loads((out / name / "manifest.json").read_text())
    print(f"{name}: {seconds:.0f} s", flush=True)
    return {"command": " ".join(["immunobench", *GRID, *flags]), "wall_seconds": round(seconds, 1),
            "executor": manifest["host"].get("executor", "local"), "workers": manifest["host"]["workers"],
            "phases": manifest["timings"]["phases"], "computed": manifest["timings"]["computed"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("/tmp/immunobench-bench-executors"))
    ap.add_argument("--result", default=str(RESULTS / "bench_executors.json"))
    args = ap.parse_args()
    shutil.rmtree(args.root / "runs", ignore_errors=True)
    runs = {name: _run(name, flags, args.root) for name, flags in SETTINGS.items()}
    base = runs["jobs1"]["wall_seconds"]
    result = {"date": time.strftime("%Y-%m-%d"), "host": host(), "runs": runs,
              "speedup_over_jobs1": {name: round(base / r["wall_seconds"], 2) for name, r in runs.items()},
              "scores_vs_jobs1": {name: compare(args.root / "runs" / name / "results.parquet",
                                                args.root / "runs" / "jobs1" / "results.parquet")
                                  for name in SETTINGS if name != "jobs1"}}
    Path(args.result).write_text(json.dumps(result, indent=2))
    print(json.dumps({"speedup_over_jobs1": result["speedup_over_jobs1"],
                      "max_abs_delta": {n: c["measured"]["max_abs_delta"] for n, c in result["scores_vs_jobs1"].items()}}))


if __name__ == "__main__":
    main()
