"""Choose every defense's tiny-sd preset by one protocol, the one MIMA's preset came from.

The protocol (issue [8/10], "fair comparison"), fixed before looking:
- nine settings per defense, as MIMA's sweep tried (benchmarks/mima_tiny_sd.py): a 3 × 3 grid of the
  step size of the defense's immunizing update (the paper's ×1, ×10, ×100) and its budget (steps);
  FreezeAsGuard has no immunizing step size, so its grid is its freezing ratio ρ × its budget;
- each setting runs the real grid (UCE start model → defense → LoRA → judges) through the runner on
  relearn-style 2c-1 with selection seeds 7 and 8, which the reported tables (seeds 0, 1, 2) never use;
- the rule: among the settings whose immunized model keeps the other concepts' accuracy within 0.10
  of the start model's, the highest MSGR (mean of C, D, L) at the reporting step; no setting
  qualifying is a finding (the defense keeps its paper defaults and the table says so).
The rule reads the scores at attack steps 0 and 400 only, so the attacks sample only there. CP's
run, the first, sampled all nine checkpoints of the card; the figures at 0 and 400 do not depend on
that (the attack's training draws are independent of the evaluation samples: on a shrunk card,
checkpoints [0, 2, 4] and [0, 4] gave the same 193 rows at steps 0 and 4 bit for bit, 2026-12-07).
Writes benchmarks/results/defense_presets/<defense>.json, one file per defense as it finishes; the
store makes a rerun skip finished settings.

    .venv/bin/python benchmarks/defense_presets.py [--defense esd,gift,...] [--list] [--table] [--store DIR]

``--table`` prints each finished defense's result as the markdown table docs/defenses.md shows.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _sweep import summary, sweep, write  # noqa: E402
from mima_tiny_sd import UTILITY_TOLERANCE, choose  # noqa: E402  (the same rule as MIMA's preset)

SCALES = (1, 10, 100)  # × the paper's step size
CHECKPOINTS = (0, 400)  # what the rule reads: before the attack and at relearn-style's reporting step


def _grid(rate_fields: dict[str, float], budget_field: str, budgets: tuple[int, ...], fixed: dict | None = None,
          extra_budget: dict[str, tuple] | None = None) -> dict[str, dict]:
    """label → overrides: every rate field scaled together (the levels keep the paper's ratio) × budgets;
    ``extra_budget`` scales other budget fields with the budget (FreezeAsGuard's fine-tuning)."""
    out = {}
    for scale in SCALES:
        for i, budget in enumerate(budgets):
            over = {**(fixed or {}), **{f: r * scale for f, r in rate_fields.items()}, budget_field: budget}
            over.update({f: values[i] for f, values in (extra_budget or {}).items()})
            out[f"x{scale},{budget_field}={budget}"] = over
    return out


SETTINGS: dict[str, dict[str, dict]] = {
    # ESD: lr 1e-5 over 1000 iterations (the old script); x_t from tiny-sd's own 25-step sampler
    "esd": _grid({"lr": 1e-5}, "iterations", (100, 300, 1000), fixed={"ddim_steps": 25}),
    # GIFT: α_I 2e-5, α_P 5e-6 (IMMA's DreamBooth defense settings), 500 alternations
    "gift": _grid({"immunize_lr": 2e-5, "prior_lr": 5e-6}, "steps", (60, 200, 500)),
    # IMMA with LoRA as its lower level (the relearn cards' attack): the LoRA script's 1e-4 / 1e-5
    "imma": _grid({"lower_lr": 1e-4, "upper_lr": 1e-5}, "steps", (60, 200, 500)),
    # JT: IMMA-DreamBooth's 5e-6 / 2e-5
    "jt": _grid({"lower_lr": 5e-6, "upper_lr": 2e-5}, "steps", (60, 200, 500)),
    # CP: MIMA App. D's outer 3e-5, inner 1e-5
    "cp": _grid({"outer_lr": 3e-5, "inner_lr": 1e-5}, "steps", (60, 200, 500)),
}
# FreezeAsGuard: ρ 0.2 (its scripts) and two larger ratios × its budget (mask steps, θ_ft steps)
SETTINGS["freezeasguard"] = {
    f"rho={rho},steps={steps}": {"freeze_ratio": rho, "steps": steps, "finetune_steps": ft}
    for rho in (0.2, 0.4, 0.6) for steps, ft in ((60, 200), (200, 600), (500, 2000))}
assert all(len(s) == 9 for s in SETTINGS.values()), "the protocol tries nine settings per defense, as MIMA's"


def table(result: dict) -> str:
    """The protocol's figures per setting (means over the selection seeds), the chosen one in bold."""
    lines = ["| setting | others immunized | MSGR % | MRSGR % | targets / others after LoRA |", "|---|---|---|---|---|"]
    for label, r in result["summary"].items():
        cells = [label + (" (chosen)" if label == result["chosen"] else ""), f"{r['others_immunized']:.2f}",
                 f"{r['MSGR']:.1f}", f"{r['MRSGR']:.1f}", f"{r['targets_attacked']:.2f} / {r['others_attacked']:.2f}"]
        lines.append("| " + " | ".join(f"**{c}**" if label == result["chosen"] else c for c in cells) + " |")
    first = next(iter(result["summary"].values()))
    lines.append(f"\nstart model's others {first['start_others']:.2f}; none after LoRA: targets "
                 f"{first['none_targets_attacked']:.2f}, others {first['none_others_attacked']:.2f}; "
                 f"{result['seconds']:.0f} s, {result['date']}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--defense", default=",".join(SETTINGS), help=f"comma-separated, of {', '.join(SETTINGS)}")
    ap.add_argument("--task", default="relearn-style")
    ap.add_argument("--group", default="2c-1")
    ap.add_argument("--store", default=str(Path.home() / ".cache" / "immunobench" / "store"))
    ap.add_argument("--out", default="benchmarks/results/defense_presets")
    ap.add_argument("--list", action="store_true", help="print the settings and stop")
    ap.add_argument("--table", action="store_true", help="print the finished results as markdown tables and stop")
    args = ap.parse_args()
    defenses = [d for d in args.defense.split(",") if d]
    unknown = [d for d in defenses if d not in SETTINGS]
    if unknown:
        sys.exit(f"defense_presets: no protocol settings for {unknown[0]!r}; choose from {', '.join(SETTINGS)}")
    if args.list:
        print(json.dumps({d: SETTINGS[d] for d in defenses}, indent=1))
        return
    if args.table:
        for d in defenses:
            path = Path(args.out) / f"{d}.json"
            print(f"### {d}\n\n" + (table(json.loads(path.read_text())) if path.exists() else "not run yet") + "\n")
        return
    for defense in defenses:
        result = sweep(args.task, args.group, args.store, defense, SETTINGS[defense], checkpoints=CHECKPOINTS)
        report_step = next(iter(result["settings"].values()))["per_seed"][0]["report_step"]
        rows = summary(result, defense, report_step)
        result.update(rule=f"others_immunized >= start_others - {UTILITY_TOLERANCE}, then max MSGR (mean C, D, L)",
                      summary=rows, chosen=choose(rows))
        write(Path(args.out) / f"{defense}.json", result)
        print(json.dumps({"defense": defense, "chosen": result["chosen"], "seconds": result["seconds"]}), flush=True)


if __name__ == "__main__":
    main()
