"""Choose MIMA's tiny-sd preset: a sweep of the outer learning rate (and λ_prior) on one group,
selection seeds only.

Each setting runs the real grid (UCE start model → MIMA → LoRA → judges) through the runner on
relearn-style 2c-1 with seeds 7 and 8, which the reported three-seed tables (seeds 0, 1, 2) never
use. The rule, fixed before looking: among the settings whose immunized model keeps the other
concepts' accuracy within 0.10 of the start model's (the model stays useful), take the highest
MSGR (mean of C, D, L) at the reporting step. Writes benchmarks/results/mima_tiny_sd.json.

    .venv/bin/python benchmarks/mima_tiny_sd.py [--group 2c-1] [--store DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _sweep import summary, sweep, write  # noqa: E402

OUTER_LRS = (3e-5, 5e-5, 1e-4, 2e-4, 3e-4, 5e-4)  # 3e-5: the paper's (App. D)
STRONG_PRIOR = (5.0, (1e-4, 2e-4, 3e-4))  # λ_prior 5 at the rates that broke the others with λ 1
INNER_LR, STEPS = 1e-2, 60  # the former sweep: the inner lr barely matters (1e-2 vs 1e-1); 60 steps keep the demo short
UTILITY_TOLERANCE = 0.10  # others' accuracy, immunized vs start model


def choose(rows: dict[str, dict]) -> str | None:
    useful = {k: r for k, r in rows.items() if r["others_immunized"] >= r["start_others"] - UTILITY_TOLERANCE}
    return max(useful, key=lambda k: useful[k]["MSGR"]) if useful else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="relearn-style")
    ap.add_argument("--group", default="2c-1")
    ap.add_argument("--store", default=str(Path.home() / ".cache" / "immunobench" / "store"))
    ap.add_argument("--out", default="benchmarks/results/mima_tiny_sd.json")
    args = ap.parse_args()
    settings = {f"outer_lr={lr:g}": {"outer_lr": lr, "inner_lr": INNER_LR, "steps": STEPS} for lr in OUTER_LRS}
    weight, rates = STRONG_PRIOR
    settings.update({f"outer_lr={lr:g},prior_weight={weight:g}": {"outer_lr": lr, "inner_lr": INNER_LR, "steps": STEPS,
                                                                   "prior_weight": weight} for lr in rates})
    result = sweep(args.task, args.group, args.store, "mima", settings)
    rows = summary(result, "mima", 400)
    result.update(rule=f"others_immunized >= start_others - {UTILITY_TOLERANCE}, then max MSGR (mean C, D, L)",
                  summary=rows, chosen=choose(rows))
    write(args.out, result)
    print(json.dumps({"summary": rows, "chosen": result["chosen"]}, indent=1))


if __name__ == "__main__":
    main()
