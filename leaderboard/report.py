"""Leaderboard tables (``leaderboard.md``/``.csv``) from a run's ``results.parquet``.

Table 1/4's shape: rows defense × metric (C, D, L), columns the groups and their mean, best per
column in bold; MRSGR in the same shape. Table 5's accuracy block (targets ↓, others ↑) reads
before and after: the start model (``none`` at step 0), each defense's immunized model (step 0),
then every defense after the attack (the reporting step); only the after-attack rows compete for
bold. With two or more seeds a cell reads ``mean ± std (n seeds)``; an accuracy cell adds the
95% Wilson interval over the images judged, pooled over seeds (none when the manifest does not
say how many). ``none`` has MSGR 0 by definition (it is its own reference) and appears only in
the accuracy block. Runs without step-0 accuracy rows show only the after-attack rows.

The memorization block sits beside MSGR: per defense, the mean distance of its attacked generations
to their nearest attack-training image (``nn/L``, ``nn/D``), the undefended attack's, and the same
distance for fresh references of the concepts (``nn-ref/*``), mean over groups (± over seeds).
Runs that predate these rows show no block.
These tables show each attack's default point on the evaluation split. A run with ``--attack-sweep``
adds the block "Worst case over the attack sweep" (``leaderboard.worst_case``): per defense and attack
the default point beside the ε-bounded worst case, named; selection-split rows are never shown as
reported figures. The cost block gives each defense's immunization cost (``cost_table``).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from immunobench.metrics.scores import MEMORIZATION_ROLES, wilson_interval
from immunobench.plugins import SIMILARITY_ROLES, UNCONSTRAINED, defense_plugin, metric_label

from .results import MEAN_OVER_ATTACKS, run_similarity_judges
from .worst_case import FIGURES, sweep_choices, sweep_points, worst_case_figures

TIDY_COLUMNS = ["table", "defense", "attack", "metric", "group", "mean", "std", "n",
                "ci_low", "ci_high", "images", "phase", "config"]
PHASES = ("start", "immunized", "after attack")  # the accuracy block's row order


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
    text = f"{mean:.{digits}f}"
    if float(text) == 0:  # a row equal to its baseline reads 0.00, not −0.00 from a −1e-17 difference
        text = text.removeprefix("-")
    if n >= 2 and not pd.isna(std):
        return f"{text} ± {std:.{digits}f} ({n})"
    return text


def accuracy_table(df: pd.DataFrame, metric: str, groups: list[str], concepts: dict[str, list[str]] | None,
                   eval_images: int | None) -> pd.DataFrame:
    """``summary_table`` of an accuracy metric plus the images judged and their 95% Wilson interval.

    Per group: images = eval_images × the group's concepts × seeds present; every seed judges the
    same number, so the pooled accuracy is the mean over seeds. The 'mean' column pools the groups
    shown (images summed, accuracy weighted by images), so its interval is around that pooled
    accuracy, which equals the unweighted mean only when the groups have equally many concepts.
    Without ``concepts`` for a group or without ``eval_images`` the interval is NaN.
    """
    table = summary_table(df, metric, groups)
    table = table.assign(images=float("nan"), ci_low=float("nan"), ci_high=float("nan"))
    if table.empty or not eval_images:
        return table
    per_group = table.group != "mean"
    for i in table.index[per_group]:
        names = (concepts or {}).get(table.at[i, "group"])
        if names:
            table.at[i, "images"] = eval_images * len(names) * int(table.at[i, "n"])
    for i in table.index[~per_group]:
        parts = table[per_group & (table.defense == table.at[i, "defense"]) & (table.attack == table.at[i, "attack"])
                      & table.group.isin(groups)]
        if not parts.empty and parts.images.notna().all():
            table.at[i, "images"] = parts.images.sum()
            pooled = (parts["mean"] * parts.images).sum() / parts.images.sum()
            table.at[i, "ci_low"], table.at[i, "ci_high"] = wilson_interval(pooled, int(parts.images.sum()))
    for i in table.index[per_group & table.images.notna()]:
        table.at[i, "ci_low"], table.at[i, "ci_high"] = wilson_interval(table.at[i, "mean"], int(table.at[i, "images"]))
    return table


def plugin_labels(manifest: dict) -> dict[str, str]:
    """Plugin name → its row label: ``mima [tiny-sd preset]`` when a preset set a value in force,
    ``, --set`` when the user overrode one (from the manifest; results.parquet keeps the bare name)."""
    from .space.board import plugin_label  # the Space labels rows the same way, without importing immunobench

    labels = {name: plugin_label(manifest, name) for name in manifest.get("resolved", {}).get("plugins", {})}
    for row in manifest.get("resolved", {}).get("defenses", []):
        if row.endswith(UNCONSTRAINED):
            base = defense_plugin(row)
            labels[row] = f"{labels.get(base, base)} attacked without its constraint"
    return labels


def _markdown_block(tables: dict[str, pd.DataFrame], groups: list[str], higher_is_better: dict[str, bool], digits: int,
                    row_label: str, labels: dict[str, str]) -> list[str]:
    """One markdown table; ``tables`` maps a row-suffix (e.g. a metric's label) to its summary, and
    ``higher_is_better`` each suffix to the direction its best value is marked in."""
    columns = groups + ["mean"]
    lines = [f"| defense | {row_label} | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for suffix, table in tables.items():
        if table.empty:
            continue
        best = {}
        for col in columns:
            vals = table[table.group == col]["mean"]
            if len(vals) > 1:
                best[col] = vals.max() if higher_is_better[suffix] else vals.min()
        by_row = sorted(table.groupby(["defense", "attack"], sort=False), key=lambda kv: (kv[0][0], kv[0][1] != MEAN_OVER_ATTACKS))
        for (defense, attack), rows in by_row:  # the mean over attacks first, then each attack
            cells = []
            for col in columns:
                r = rows[rows.group == col]
                if r.empty:
                    cells.append("–")
                    continue
                m, s, n = r["mean"].iloc[0], r["std"].iloc[0], int(r["n"].iloc[0])
                text = _fmt(m, s, n, digits)
                cells.append(f"**{text}**" if col in best and m == best[col] else text)
            lines.append(f"| {labels.get(defense, defense)} ({labels.get(attack, attack)}) | {suffix} | "
                         + " | ".join(cells) + " |")
    return lines


def _row_label(phase: str, defense: str, attack: str, several_attacks: bool, labels: dict[str, str]) -> str:
    attack = labels.get(attack, attack)
    if phase == "start":  # one model whatever the attack; name the attack only to tell rows apart
        return f"start model ({attack})" if several_attacks else "start model"
    return f"{labels.get(defense, defense)} ({attack}) {'immunized' if phase == 'immunized' else 'after attack'}"


def _accuracy_block(table: pd.DataFrame, groups: list[str], higher_is_better: bool, labels: dict[str, str]) -> list[str]:
    """Table 5's rows in phase order; bold marks the best after-attack row of each column."""
    columns = groups + ["mean"]
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    if table.empty:
        return lines
    after = table[table.phase == "after attack"]
    best = {}
    for col in columns:
        vals = after[after.group == col]["mean"]
        if len(vals) > 1:
            best[col] = vals.max() if higher_is_better else vals.min()
    several_attacks = table[table.phase == "start"].attack.nunique() > 1
    for (phase, defense, attack), rows in table.groupby(["phase", "defense", "attack"], sort=False):
        cells = []
        for col in columns:
            r = rows[rows.group == col]
            if r.empty:
                cells.append("–")
                continue
            r = r.iloc[0]
            text = _fmt(r["mean"], r["std"], int(r["n"]), 3)
            if not pd.isna(r["ci_low"]):
                text += f" [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
            cells.append(f"**{text}**" if phase == "after attack" and col in best and r["mean"] == best[col] else text)
        lines.append(f"| {_row_label(phase, defense, attack, several_attacks, labels)} | " + " | ".join(cells) + " |")
    return lines


def _accuracy_phases(results: pd.DataFrame, metric: str, report_step: int, groups: list[str],
                     concepts: dict[str, list[str]] | None, eval_images: int | None) -> pd.DataFrame:
    """One accuracy metric's table over the phases, rows in PHASES order, ``none`` first in each."""
    star = results[results.concept == "*"]
    before = star[star.step == 0] if report_step != 0 else star.iloc[:0]  # step 0 *is* the report then
    parts = (before[before.defense == "none"], before[before.defense != "none"], star[star.step == report_step])
    tables = []
    for part, phase in zip(parts, PHASES):
        t = accuracy_table(part, metric, groups, concepts, eval_images)
        if not t.empty:
            # none first (the reference), then the defenses in summary_table's order (by name)
            t = t.assign(phase=phase, _none=t.defense != "none").sort_values("_none", kind="stable")
            tables.append(t.drop(columns="_none"))
    if not tables:
        return pd.DataFrame(columns=[c for c in TIDY_COLUMNS if c not in ("table", "metric")])
    return pd.concat(tables, ignore_index=True)


def memorization_table(results: pd.DataFrame, step: int, groups: list[str], labels: dict[str, str]) -> pd.DataFrame:
    """``summary_table`` of the nearest-training-image distances: phase "after attack" = the generations of
    each defense (``none`` = the undefended attack) at ``step``, phase "references" = the fresh references
    (defense ``none``, step -1); ``metric`` = ``labels[role]``."""
    star = results[results.concept == "*"]
    tables = []
    for role in MEMORIZATION_ROLES:
        for name, at, phase in (("nn", step, "after attack"), ("nn-ref", -1, "references")):
            t = summary_table(star[star.step == at], f"{name}/{role}", groups)
            if not t.empty:
                tables.append(t.assign(metric=labels[role], phase=phase))
    if not tables:
        return pd.DataFrame(columns=[c for c in TIDY_COLUMNS if c != "table"])
    return pd.concat(tables, ignore_index=True)


def _memorization_block(table: pd.DataFrame, step: int, labels: dict[str, str]) -> list[str]:
    """One row per defense (and attack) and distance: its generations | the undefended attack's | references."""
    def cell(rows: pd.DataFrame) -> str:
        if rows.empty:
            return "–"
        r = rows.iloc[0]
        return _fmt(r["mean"], r["std"], int(r["n"]), 3)

    lines = [f"## Memorization at step {step}: distance to the nearest attack-training image ↓", "",
             "Per target generation, the distance to the closest image the attacker fine-tuned on, averaged over "
             "generations, targets and groups. Fresh references are images of the concept that are not training "
             "images: a distance below theirs = closer to copying the training images than to re-learning the concept.",
             "", "| defense | distance | its generations | undefended attack's | fresh references |",
             "|---|---|---|---|---|"]
    mean = table[table.group == "mean"]
    generated = mean[mean.phase == "after attack"]
    defended = (generated.defense != "none").any()
    for (metric, defense, attack), rows in generated.groupby(["metric", "defense", "attack"], sort=False):
        if defense == "none" and defended:  # it is every row's middle column
            continue
        undefended = generated[(generated.metric == metric) & (generated.defense == "none") & (generated.attack == attack)]
        references = mean[(mean.phase == "references") & (mean.metric == metric) & (mean.attack == attack)]
        lines.append(f"| {labels.get(defense, defense)} ({labels.get(attack, attack)}) | {metric} | {cell(rows)} | "
                     f"{cell(undefended)} | {cell(references)} |")
    return lines + [""]
def with_sweep_columns(results: pd.DataFrame) -> pd.DataFrame:
    """Results of any schema version with ``attack_config`` and ``split`` (version 1 runs had one point, all
    reported: ``default``, ``eval``)."""
    return results.assign(**{c: v for c, v in (("attack_config", "default"), ("split", "eval"))
                             if c not in results.columns})


def reported(results: pd.DataFrame) -> pd.DataFrame:
    """The rows the main tables and plots show: each attack's default point, evaluation split."""
    results = with_sweep_columns(results)
    return results[(results.attack_config == "default") & (results.split == "eval")]


def leaderboard(results: pd.DataFrame, manifest: dict) -> tuple[str, pd.DataFrame]:
    """Markdown and a tidy CSV frame (``TIDY_COLUMNS``: table, defense, attack, metric, group, mean,
    std, n, ci_low, ci_high, images, phase, config; the interval columns are NaN outside the accuracy
    block, config is set in the worst-case block only)."""
    everything, results = with_sweep_columns(results), reported(results)
    resolved = manifest["resolved"]
    step, groups, seeds = resolved["report_step"], resolved["groups"], resolved["seeds"]
    eval_images = resolved.get("eval_images")
    at = _at_report_step(results, step)
    defended = at[at.defense != "none"]
    title = (f"# Leaderboard — {manifest['run']['task']} on `{manifest['model']['name']}`\n\n"
             f"Reported at attack step {step}; {len(seeds)} seed(s) {seeds}"
             + (" (cells: mean ± std over seeds (number of seeds))" if len(seeds) > 1 else "") + f"; run {manifest['date']}.\n")
    lines, frames, labels, worst = [title], [], plugin_labels(manifest), None
    labels[MEAN_OVER_ATTACKS] = f"mean over {', '.join(resolved.get('attacks', []))}"
    in_rows = [*resolved.get("defenses", []), *resolved.get("attacks", [])]
    adjusted = [name for name in in_rows if labels.get(name, name) != name]
    if adjusted:
        kind = "attack" if adjusted[0] in resolved.get("attacks", []) else "defense"
        lines += [f"Rows marked [… preset] or [--set] ran with values other than the paper defaults; each value in "
                  f"force and where it came from: `manifest.json` (resolved.plugins), or e.g. `immunobench show {kind} "
                  f"{adjusted[0]} --model {manifest['model']['name']}`.\n"]

    # a metric's label and direction come from its plugin: MSGR and MRSGR of a similarity (higher =
    # more alike) improve upwards, those of a distance would improve downwards
    judges = run_similarity_judges(manifest)
    label = {r: metric_label(judges[r]) for r in SIMILARITY_ROLES}
    upwards = {label[r]: judges[r].higher_is_better for r in SIMILARITY_ROLES}
    msgr = {label[r]: summary_table(defended, f"MSGR/{r}", groups) for r in SIMILARITY_ROLES}
    personalization = resolved.get("kind") == "personalization"
    lines += [f"## MSGR (%) ↑ — higher = stronger immunization (MIMA Tab. {'2' if personalization else '1'})", ""]
    if personalization:
        lines += ["Rows `(mean over …)` average each seed's figure over the attacks, as MIMA §5.2 reports "
                  "personalization; the per-attack rows follow.", ""]
    lines += _markdown_block(msgr, groups, upwards, 2, "metric", labels) + [""]
    distance = {"L": "LPIPS d", "D": f"{label['D']} 1 − cos"}
    memorization = memorization_table(results, step, groups, distance)
    if not memorization.empty:
        lines += _memorization_block(memorization, step, labels)
    mrsgr = {label[r]: summary_table(defended, f"MRSGR/{r}", groups) for r in SIMILARITY_ROLES}
    if any(not t.empty for t in mrsgr.values()):
        lines += [f"## MRSGR (%) ↑ — higher = other concepts stay as adaptable (MIMA Eq. 12{', Tab. 3' if personalization else ''})", ""]
        if personalization:
            lines += ["Each other concept is adapted alone, by the same attack, on the immunized and on the "
                      "undefended model; MRSGR compares those pairs with the targets' pairs.", ""]
        lines += _markdown_block(mrsgr, groups, upwards, 2, "metric", labels) + [""]
        # MRSGR is a ratio of the others' to the targets' similarity, so it says nothing of the others' level
        lines += ["MRSGR compares the others with the targets only: it can be positive while the others' "
                  "accuracy collapses, so read it with the others' accuracy below.", ""]

    acc_t = _accuracy_phases(results, "acc/targets", step, groups, manifest.get("groups"), eval_images)
    acc_o = _accuracy_phases(results, "acc/others", step, groups, resolved.get("others"), eval_images)
    before = any((t.phase != "after attack").any() for t in (acc_t, acc_o) if not t.empty)
    lines += [f"## Classifier accuracy {'before and after' if before else 'after'} the attack (MIMA Tab. 5)", "",
              "Targets ↓ (lower = the attack failed to re-learn them):", ""]
    if acc_t.empty and personalization:
        lines += ["(none: no classifier knows a personal instance; the others below are judged by their categories)", ""]
    else:
        lines += _accuracy_block(acc_t, groups, False, labels) + [""]
    lines += ["Others ↑ (higher = the rest of the model still works):", ""]
    lines += _accuracy_block(acc_o, groups, True, labels) + [""]
    if any(t.ci_low.notna().any() for t in (acc_t, acc_o) if not t.empty):
        lines += [f"[low, high]: the 95% Wilson score interval of the accuracy over the N judged images pooled "
                  f"over seeds (N = {eval_images} per concept × the group's concepts × seeds; the mean column "
                  "pools all groups, weighted by images)" + ("; ± is the std over seeds." if len(seeds) > 1 else "."), ""]

    if any(len(points) > 1 for points in sweep_points(manifest).values()):
        block, worst = _worst_case_block(everything, manifest, label, labels)
        lines += block

    cost = cost_table(manifest)
    if not cost.empty:
        lines += _cost_block(cost, labels)

    failures = manifest.get("failures", [])
    if failures:
        lines += ["## Failed cells", ""] + [f"- {f['group']}/{f['defense']}/{f['attack']}/seed {f['seed']}: {f['reason']}"
                                              for f in failures] + [""]
    lines += ["Cells in bold are the best of their column. Provenance: `manifest.json`; raw rows: `results.parquet`.", ""]

    for name, tables in (("MSGR", msgr), ("MRSGR", mrsgr)):
        for metric, t in tables.items():
            if not t.empty:
                frames.append(t.assign(table=name, metric=metric, phase="after attack"))
    for metric, t in (("targets", acc_t), ("others", acc_o)):
        if not t.empty:
            frames.append(t.assign(table="accuracy", metric=metric))
    if not memorization.empty:
        frames.append(memorization.assign(table="memorization"))
    if worst is not None:
        frames.append(worst)
    if not cost.empty:
        frames.append(cost)
    tidy = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=TIDY_COLUMNS)
    return "\n".join(lines), tidy.reindex(columns=TIDY_COLUMNS)


COST_FIGURES = {"seconds": "wall s", "peak_rss_mb": "peak RSS MB", "unet_images": "UNet images"}


def cost_table(manifest: dict) -> pd.DataFrame:
    """Each defense's immunization cost from the manifest's cells (the cost its stage had when it was
    computed, also for reused ones): per distinct immunized model (group × seed), wall seconds, peak
    resident memory and UNet images (forward passes × batch; ``runner._PeakMemory``) → tidy rows
    (metric ∈ ``COST_FIGURES``, mean, std, n) plus the defense's constraint: how many tensors it freezes."""
    per_model: dict[str, tuple[str, dict, int]] = {}
    for cell in manifest.get("cells", []):
        cost = (cell.get("cost") or {}).get("immunize")
        if cell["defense"] != "none" and not cell["defense"].endswith(UNCONSTRAINED) and cost:  # a twin shares its model
            per_model[cell["model_key"]] = (cell["defense"], cost, cell.get("frozen_tensors", 0))
    rows = []
    for defense in dict.fromkeys(d for d, _, _ in per_model.values()):
        costs = [(c, f) for d, c, f in per_model.values() if d == defense]
        for metric in (*COST_FIGURES, "frozen_tensors"):
            values = pd.Series([f if metric == "frozen_tensors" else c.get(metric) for c, f in costs], dtype=float).dropna()
            if len(values):
                rows.append({"table": "cost", "defense": defense, "attack": "", "metric": metric, "group": "mean",
                             "mean": values.mean(), "std": values.std() if len(values) > 1 else float("nan"),
                             "n": len(values), "phase": "immunize"})
    return pd.DataFrame(rows, columns=TIDY_COLUMNS)


def _cost_block(table: pd.DataFrame, labels: dict[str, str]) -> list[str]:
    lines = ["## Cost of immunization", "",
             "Per immunized model (group × seed): mean ± std over them; UNet images = forward passes × their batch "
             "(classifier-free guidance counts twice), counted alike for every defense. A defense that freezes tensors "
             "publishes them as a constraint every attack honours.", "",
             "| defense | " + " | ".join(COST_FIGURES.values()) + " | frozen tensors | models |",
             "|---|" + "---|" * (len(COST_FIGURES) + 2)]
    for defense, part in table.groupby("defense", sort=False):
        by = part.set_index("metric")

        def cell(metric: str, digits: int) -> str:
            if metric not in by.index:
                return "—"
            r = by.loc[metric]
            return f"{r['mean']:.{digits}f}" + (f" ± {r['std']:.{digits}f}" if pd.notna(r["std"]) else "")

        lines.append(f"| {labels.get(defense, defense)} | {cell('seconds', 1)} | {cell('peak_rss_mb', 0)} | "
                     f"{cell('unet_images', 0)} | {cell('frozen_tensors', 0)} | {int(part.n.max())} |")
    return lines + [""]


def _worst_case_block(results: pd.DataFrame, manifest: dict, label: dict[str, str],
                      labels: dict[str, str]) -> tuple[list[str], pd.DataFrame]:
    """Markdown lines and tidy rows (table "worst case") of the default point beside the worst case."""
    resolved, points = manifest["resolved"], sweep_points(manifest)
    sweep = resolved["attack_sweep"]
    choices = sweep_choices(results, manifest)
    figures = worst_case_figures(results, choices, points, resolved["groups"])
    names = {f"{kind}/{r}": f"{kind} {label[r]}" for kind in ("MSGR", "MRSGR") for r in SIMILARITY_ROLES}
    names.update({"acc/targets": "acc targets ↓", "acc/others": "acc others ↑"})
    seeds = ", ".join(f"{a}–{b}" for a, b in sweep.get("selection_seeds", {}).values())
    criteria = ", ".join(sorted(set(choices.criterion))) or "–"
    lines = [f"## Worst case over the attack sweep (ε = {sweep['epsilon']:.2f})", "",
             f"Per defense and attack, the sweep point that re-learns the targets best ({criteria}, on the selection "
             f"split: seeds {seeds}) while the attack's damage to the others (their accuracy before the attack "
             "minus after it) exceeds by at most ε its damage to `none` with the same point and with the default "
             "point (a point that wrecks every model does not count); "
             "one point for all groups and seeds. Its figures below are from the reported split (MSGR/MRSGR in %), "
             "at its own report step, mean over groups (± std over seeds).", "",
             "| defense (attack) | point | config | step | " + " | ".join(names[m] for m in FIGURES) + " |",
             "|---|---|---|---|" + "---|" * len(FIGURES)]
    notes = []
    for choice in choices.itertuples():
        for phase in ("default", "worst case"):
            rows = figures[(figures.defense == choice.defense) & (figures.attack == choice.attack) & (figures.phase == phase)]
            config = rows.config.iloc[0]
            if phase == "worst case" and not choice.admissible:
                config += " (no point admissible)"
            cells = [_fmt(r["mean"], r["std"], int(r["n"]), 3 if r.metric.startswith("acc") else 2)
                     for _, r in rows.iterrows()]
            lines.append(f"| {labels.get(choice.defense, choice.defense)} ({choice.attack}) | {phase} | {config} | "
                         f"{rows.step.iloc[0]} | " + " | ".join(cells) + " |")
        if choice.excluded:
            notes.append(f"- {choice.defense} ({choice.attack}): excluded by ε: {choice.excluded}")
        if choice.bound == "unchecked":
            notes.append(f"- {choice.defense} ({choice.attack}): the others have no classifier accuracy, so ε "
                         "could not be checked: every point counted")
    for attack, source in choices.groupby("attack").before.first().items():
        if source != "selection":
            notes.append(f"- {attack}: " + (
                "the others before the attack are the eval split's step 0 (this run's selection split has none)"
                if source == "eval" else "no step 0: the damage is read as if each defense left the others "
                "where `none` has them"))
    lines += [""] + (notes + [""] if notes else [])
    tidy = figures.assign(table="worst case", group="mean")
    return lines, tidy.drop(columns=["step"])


def render_report(run_dir: str | Path, store=None) -> str:
    """(Re)write ``leaderboard.md``/``.csv`` and ``plots/`` of a run folder; returns the markdown."""
    from .plots import render_plots

    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    results = pd.read_parquet(run_dir / "results.parquet")
    text, tidy = leaderboard(results, manifest)
    (run_dir / "leaderboard.md").write_text(text)
    tidy.to_csv(run_dir / "leaderboard.csv", index=False)
    default_cells = [c for c in manifest.get("cells", []) if c.get("attack_config", "default") == "default"]
    render_plots(run_dir, reported(results), {**manifest, "cells": default_cells}, store)
    return text
