"""Card-level adaptation curves of a finished run: per attack and defense, the targets' similarity to
their references at every checkpoint, averaged over the card's groups (each group's targets and seeds
first), for each judge role — what "every attack adapts" means, measured on the whole card.

    .venv/bin/python benchmarks/adaptation_curves.py runs/personalization-… benchmarks/results/personalization_card

Writes ``adaptation_curves.json`` (means and the per-group spread) and ``adaptation_curves.png`` into OUT,
and copies the run's leaderboard, manifest and results there, so the docs link one folder.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd

ROLES = {"C": "CLIP", "D": "DINO", "L": "LPIPS (1 − d)"}


def curves(results: pd.DataFrame, manifest: dict) -> dict:
    """{attack: {defense: {role: {step: {"mean", "min", "max", "groups"}}}}}: the mean over groups of
    each group's mean over its targets and seeds, with the lowest and highest group."""
    targets = manifest["groups"]
    out: dict = {}
    sims = results[results.metric.str.startswith("sim/") & (results.split == "eval")]
    for (attack, defense, metric), part in sims.groupby(["attack", "defense", "metric"]):
        per_group = pd.concat([g[g.concept.isin(targets[name])] for name, g in part.groupby("group")])
        by_group = per_group.groupby(["group", "step"]).value.mean().unstack("group")
        out.setdefault(attack, {}).setdefault(defense, {})[metric.split("/")[1]] = {
            int(step): {"mean": round(float(row.mean()), 4), "min": round(float(row.min()), 4),
                        "max": round(float(row.max()), 4), "groups": int(row.count())}
            for step, row in by_group.iterrows()}
    return out


def plot(data: dict, report_step: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = sorted(data)
    fig, axes = plt.subplots(1, len(attacks), figsize=(3.6 * len(attacks), 3.2), squeeze=False, sharey=True)
    for ax, attack in zip(axes[0], attacks):
        for defense, by_role in data[attack].items():
            line = by_role["D"]
            steps = sorted(line)
            ax.plot(steps, [line[s]["mean"] for s in steps], "--" if defense == "none" else "-", marker="o", ms=3,
                    label=defense)
            ax.fill_between(steps, [line[s]["min"] for s in steps], [line[s]["max"] for s in steps], alpha=0.15)
        ax.axvline(report_step, color="grey", lw=0.5)
        ax.set_title(attack)
        ax.set_xlabel("attack step")
    axes[0][0].set_ylabel("targets' DINO-role similarity to references")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    manifest = json.loads((args.run_dir / "manifest.json").read_text())
    results = pd.read_parquet(args.run_dir / "results.parquet")
    data = curves(results, manifest)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("leaderboard.md", "leaderboard.csv", "manifest.json", "results.parquet"):
        if (args.run_dir / name).exists():
            shutil.copy(args.run_dir / name, args.out / name)
    report_step = manifest["resolved"]["report_step"]
    (args.out / "adaptation_curves.json").write_text(json.dumps(
        {"run": manifest.get("name", args.run_dir.name), "report_step": report_step,
         "what": "targets' similarity to references, mean over groups (each: mean over targets and seeds)",
         "curves": data}, indent=1))
    plot(data, report_step, args.out / "adaptation_curves.png")
    for attack, by_defense in sorted(data.items()):
        for defense, by_role in by_defense.items():
            line = by_role["D"]
            print(f"{attack:<18} {defense:<6} " + " ".join(f"{s}:{line[s]['mean']:+.3f}" for s in sorted(line)))


if __name__ == "__main__":
    main()
