"""What `make demo` costs: the whole relearn-style card on an empty store, then the same command again.

Runs `immunobench run --defense mima --task relearn-style` (all ten groups, seed 0) as a fresh
process on an empty store, then again (everything reused), and writes
benchmarks/results/demo_cost.json: wall time of each run, the run's phases (planning and worker
computation, the final walk in the parent), the per-stage split (count, summed seconds, peak RSS
per process) and, where given, the largest score difference of its rows against an earlier
runs' ``results.parquet`` (``--compare``, e.g. the code before the fast-cell work on group 2c-1).

    .venv/bin/python benchmarks/demo_cost.py [--compare benchmarks/results/golden_2c-1_320a683.parquet ...]
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

DEMO = ["run", "--defense", "mima", "--task", "relearn-style", "--quiet"]


def _run(store: str, out: str, name: str) -> dict:
    started = time.time()
    cmd = [sys.executable, "-m", "immunobench.cli", *DEMO, "--store", store, "--out", out, "--name", name]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    seconds = time.time() - started
    manifest = json.loads((Path(out) / name / "manifest.json").read_text())
    return {"command": " ".join(["immunobench", *DEMO]), "wall_seconds": round(seconds, 1),
            "workers": manifest["host"]["workers"], "phases": manifest["timings"]["phases"],
            "computed": manifest["timings"]["computed"], "reused": manifest["timings"]["cached"]}


def compare(results: Path, reference: Path) -> dict:
    """Largest |Δ| between two runs' rows present in both: measured scores and derived (MSGR, MRSGR, acc/)."""
    import pandas as pd

    keys = ["group", "concept", "defense", "attack", "seed", "step", "metric"]
    a, b = pd.read_parquet(results), pd.read_parquet(reference)
    both = a.merge(b, on=keys, suffixes=("", "_ref"))
    both["delta"] = (both.value - both.value_ref).abs()
    out = {"rows_compared": len(both), "groups": sorted(both.group.unique())}
    for kind, rows in (("measured", both[both.concept != "*"]), ("derived", both[both.concept == "*"])):
        worst = rows.loc[rows.delta.idxmax()]
        out[kind] = {"max_abs_delta": float(worst.delta), "where": {k: str(worst[k]) for k in keys},
                     "median_abs_delta": float(rows.delta.median())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="/tmp/immunobench-demo-store")
    ap.add_argument("--out", default="/tmp/immunobench-demo-runs")
    ap.add_argument("--compare", type=Path, nargs="+", default=[], help="earlier runs' results.parquet to compare scores with")
    ap.add_argument("--result", default=str(RESULTS / "demo_cost.json"))
    args = ap.parse_args()
    shutil.rmtree(args.store, ignore_errors=True)
    shutil.rmtree(args.out, ignore_errors=True)
    first = _run(args.store, args.out, "first")
    print(f"first run (empty store): {first['wall_seconds']} s", flush=True)
    second = _run(args.store, args.out, "second")
    result = {"date": time.strftime("%Y-%m-%d"), "host": host(), "first": first, "second": second,
              "second_over_first": round(second["wall_seconds"] / first["wall_seconds"], 4)}
    result["scores_vs"] = [{"reference": str(ref), **compare(Path(args.out) / "first" / "results.parquet", ref)}
                           for ref in args.compare]
    Path(args.result).write_text(json.dumps(result, indent=2))
    print(json.dumps({"first_s": first["wall_seconds"], "second_s": second["wall_seconds"],
                      "scores_vs": [c["measured"]["max_abs_delta"] for c in result["scores_vs"]]}))


if __name__ == "__main__":
    main()
