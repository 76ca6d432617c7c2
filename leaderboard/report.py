"""Leaderboard tables (``leaderboard.md``/``.csv``) from a run's ``results.parquet``.

Table 1/4's shape: rows defense × metric (C, D, L), columns the groups and their mean, best per
column in bold; MRSGR in the same shape; Table 5's accuracy block (targets ↓, others ↑). With
two or more seeds a cell reads mean ± std over seeds. ``none`` has MSGR 0 by definition (it is
its own reference) and appears only in the accuracy block.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from immunobench.plugins import SIMILARITY_ROLES

ROLE_NAMES = {"C": "CLIP", "D": "DINO", "L": "LPIPS"}


def _at_report_step(df: pd.DataFrame, step: int) -> pd.DataFrame:
    return df[(df.step == step) & (df.concept == "*")]


def summary_table(df: pd.DataFrame, metric: str, groups: list[str]) -> pd.DataFrame:
    """(defense, attack, group) → mean, std, n over seeds of one derived metric; plus a 'mean' group
    (per seed, the mean over groups; then mean ± std over seeds)."""
    part = df[df.metric == metric]
    if part.empty:
        return pd.DataFrame(columns=["defense", "attack", "group", "mean", "std", "n"])
    per_group = part.groupby(["defense", "attack", "group"]).value.agg(["mean", "std", "count"]).reset_index()
    per_seed_mean = part[part.group.isin(groups)].groupby(["defense", "attack", "seed"]).value.mean().reset_index()
    overall = per_seed_mean.groupby(["defense", "attack"]).value.agg(["mean", "std", "count"]).reset_index()
    overall["group"] = "mean"
    out = pd.concat([per_group, overall], ignore_index=True).rename(columns={"count": "n"})
    return out


def _fmt(mean: float, std: float, n: int, digits: int) -> str:
    if pd.isna(mean):
        return "–"
    if n >= 2 and not pd.isna(std):
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"{mean:.{digits}f}"


def _markdown_block(tables: dict[str, pd.DataFrame], groups: list[str], higher_is_better: bool, digits: int,
                    row_label: str) -> list[str]:
    """One markdown table; ``tables`` maps a row-suffix (e.g. a metric role) to its summary."""
    columns = groups + ["mean"]
    lines = [f"| defense | {row_label} | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for suffix, table in tables.items():
        if table.empty:
            continue
        best = {}
        for col in columns:
            vals = table[table.group == col]["mean"]
            if len(vals) > 1:
                best[col] = vals.max() if higher_is_better else vals.min()
        for (defense, attack), rows in table.groupby(["defense", "attack"], sort=False):
            cells = []
            for col in columns:
                r = rows[rows.group == col]
                if r.empty:
                    cells.append("–")
                    continue
                m, s, n = r["mean"].iloc[0], r["std"].iloc[0], int(r["n"].iloc[0])
                text = _fmt(m, s, n, digits)
                cells.append(f"**{text}**" if col in best and m == best[col] else text)
            lines.append(f"| {defense} ({attack}) | {suffix} | " + " | ".join(cells) + " |")
    return lines


def leaderboard(results: pd.DataFrame, manifest: dict) -> tuple[str, pd.DataFrame]:
    """Markdown and a tidy CSV frame (table, defense, attack, metric, group, mean, std, n)."""
    step = manifest["resolved"]["report_step"]
    groups = manifest["resolved"]["groups"]
    at = _at_report_step(results, step)
    defended = at[at.defense != "none"]
    seeds = manifest["resolved"]["seeds"]
    title = (f"# Leaderboard — {manifest['run']['task']} on `{manifest['model']['name']}`\n\n"
             f"Reported at attack step {step}; {len(seeds)} seed(s) {seeds}"
             + (" (mean ± std over seeds)" if len(seeds) > 1 else "") + f"; run {manifest['date']}.\n")
    lines, frames = [title], []

    msgr = {ROLE_NAMES[r]: summary_table(defended, f"MSGR/{r}", groups) for r in SIMILARITY_ROLES}
    lines += ["## MSGR (%) ↑ — higher = stronger immunization (MIMA Tab. 1)", ""]
    lines += _markdown_block(msgr, groups, True, 2, "metric") + [""]
    mrsgr = {ROLE_NAMES[r]: summary_table(defended, f"MRSGR/{r}", groups) for r in SIMILARITY_ROLES}
    if any(not t.empty for t in mrsgr.values()):
        lines += ["## MRSGR (%) ↑ — higher = other concepts stay as adaptable (MIMA Eq. 12)", ""]
        lines += _markdown_block(mrsgr, groups, True, 2, "metric") + [""]
    acc_t = summary_table(at, "acc/targets", groups)
    acc_o = summary_table(at, "acc/others", groups)
    lines += ["## Classifier accuracy after the attack (MIMA Tab. 5)", "",
              "Targets ↓ (lower = the attack failed to re-learn them):", ""]
    lines += _markdown_block({"targets": acc_t}, groups, False, 3, "concepts") + [""]
    lines += ["Others ↑ (higher = the rest of the model still works):", ""]
    lines += _markdown_block({"others": acc_o}, groups, True, 3, "concepts") + [""]
    failures = manifest.get("failures", [])
    if failures:
        lines += ["## Failed cells", ""] + [f"- {f['group']}/{f['defense']}/{f['attack']}/seed {f['seed']}: {f['reason']}"
                                              for f in failures] + [""]
    lines += ["Cells in bold are the best of their column. Provenance: `manifest.json`; raw rows: `results.parquet`.", ""]

    for name, tables in (("MSGR", msgr), ("MRSGR", mrsgr), ("accuracy", {"targets": acc_t, "others": acc_o})):
        for metric, t in tables.items():
            if not t.empty:
                frames.append(t.assign(table=name, metric=metric))
    tidy = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if not tidy.empty:
        tidy = tidy[["table", "defense", "attack", "metric", "group", "mean", "std", "n"]]
    return "\n".join(lines), tidy


def render_report(run_dir: str | Path, store=None) -> str:
    """(Re)write ``leaderboard.md``/``.csv`` and ``plots/`` of a run folder; returns the markdown."""
    from .plots import render_plots

    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    results = pd.read_parquet(run_dir / "results.parquet")
    text, tidy = leaderboard(results, manifest)
    (run_dir / "leaderboard.md").write_text(text)
    tidy.to_csv(run_dir / "leaderboard.csv", index=False)
    render_plots(run_dir, results, manifest, store)
    return text
