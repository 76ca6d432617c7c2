"""The leaderboard Space's tables, from a published results folder (pure pandas: no gradio, torch or immunobench).

The folder is what ``immunobench publish --to DIR`` writes (and the results dataset repo holds)::

    DIR/index.json                               {"publish_format": 1, "submissions": [{hash16, task, backbone, …, figures}]}
    DIR/rows/<task>/<backbone>/<hash16>.parquet  a run's results rows + provenance columns
    DIR/bundles/<hash16>.zip                     the verified bundle (its manifest.json: report step, worst case, cost)
    DIR/figures/<hash16>/<name>.png              the run's plots

``load`` reads every schema version published so far (1: no ``attack_config``/``split`` columns, read as
``default``/``eval``); a file it cannot read is listed in ``Board.problems``, never dropped silently.

``main_table`` ranks one task on one backbone (backbones are never ranked together): one row per
submission × defense × attack × sweep point, at that point's report step, evaluation split, ``none``
left out. Each figure is the mean over groups per seed, then mean (± std) over seeds. Where a submission
swept an attack, a "worst case" row repeats the point its manifest chose (``leaderboard.worst_case``:
the ε-bounded point that re-learns the targets best); without a manifest, the point with the lowest
MRSGR D. Rows are sorted by MRSGR L, best first.
"""
from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

READABLE_SCHEMAS = (1, 2)  # every results-schema version ever published; the app must read them all
REQUIRED = ("task", "group", "concept", "defense", "attack", "seed", "step", "metric", "value")
ROLES = ("C", "D", "L")  # similarity roles: CLIP, DINO, LPIPS (1 − d)
FIGURES = {**{f"MSGR/{r}": f"MSGR {r}" for r in ROLES}, **{f"MRSGR/{r}": f"MRSGR {r}" for r in ROLES},
           "acc/targets": "acc targets", "acc/others": "acc others"}
RANK_BY = "MRSGR L"
WORST_FALLBACK = "MRSGR/D"  # without a manifest's choice: the point where the defense scores lowest
WORST = "worst case"
COLUMNS = ["rank", "defense", "attack", "point", "step", *FIGURES.values(), *(f"{label} ±" for label in FIGURES.values()),
           "cost s", "seeds", "reproduced", "backbone", "code", "date", "bundle", "card"]
DEFAULT_COLUMNS = [c for c in COLUMNS if not c.endswith(" ±") and c != "card"]
NUMBER_COLUMNS = {"rank", "step", "cost s", *FIGURES.values(), *(f"{label} ±" for label in FIGURES.values())}


class BoardError(Exception):
    """A folder that is not a published results folder at all; the message is the reason, one line."""


@dataclass
class Board:
    rows: pd.DataFrame  # every readable row; provenance columns filled; ``hash16`` names its submission
    submissions: dict[str, dict] = field(default_factory=dict)  # hash16 → index entry (+ "manifest" when read)
    problems: list[str] = field(default_factory=list)
    root: Path = Path(".")


def _schema_version(path: Path, df: pd.DataFrame) -> int:
    if "schema_version" in df.columns and df.schema_version.notna().any():
        return int(df.schema_version.dropna().iloc[0])
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    return int(meta.get(b"immunobench.schema_version", b"1"))  # folders from before the version existed: 1


def _read_rows(path: Path, root: Path, entry: dict) -> pd.DataFrame:
    """One submission's rows with the columns of the newest schema; raises ValueError naming what is wrong."""
    df = pd.read_parquet(path)
    version = _schema_version(path, df)
    if version not in READABLE_SCHEMAS:
        raise ValueError(f"schema version {version}; this app reads {', '.join(map(str, READABLE_SCHEMAS))} "
                         "(update the Space from leaderboard/space/)")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"no column {', '.join(missing)}")
    if version == 1:  # one point, all reported (runner.SCHEMA_VERSION 2 added the sweep columns)
        df = df.assign(attack_config="default", split="eval")
    rel = path.relative_to(root / "rows").parts  # <task>/<backbone>/<hash16>.parquet
    fill = {"backbone": entry.get("backbone", rel[1] if len(rel) == 3 else "?"),
            "task_card_hash": entry.get("task_card_hash", ""), "code_version": entry.get("code_version", ""),
            "run_date": entry.get("run_date", ""), "reproduced": bool(entry.get("reproduced", False)),
            "seeds": ",".join(map(str, entry.get("seeds", [])))}
    df = df.assign(**{c: v for c, v in fill.items() if c not in df.columns})
    # a run of a card given by path has that path in its task column; the tabs go by the card's name
    task = entry.get("task") or (rel[0] if len(rel) == 3 else None)
    return df.assign(**({"task": task} if task else {}), schema_version=version, hash16=path.stem,
                     reproduced=df.reproduced.fillna(False).astype(bool))


def _manifest(root: Path, hash16: str, problems: list[str]) -> dict | None:
    bundle = root / "bundles" / f"{hash16}.zip"
    if not bundle.is_file():
        return None  # optional: the tables fall back to what the rows say
    try:
        with zipfile.ZipFile(bundle) as z:
            return json.loads(z.read("manifest.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        problems.append(f"bundles/{hash16}.zip: unreadable ({type(exc).__name__}: {exc}); report step and cost from the rows")
        return None


def load(root: str | Path) -> Board:
    """Read a published folder; ``BoardError`` only when it has neither ``index.json`` nor ``rows/``."""
    root = Path(root)
    if not (root / "index.json").is_file() and not (root / "rows").is_dir():
        raise BoardError(f"{root}: no index.json and no rows/; pass a folder written by `immunobench publish --to`")
    problems: list[str] = []
    entries: dict[str, dict] = {}
    try:
        index = json.loads((root / "index.json").read_text())
        entries = {e["hash16"]: dict(e) for e in index.get("submissions", [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        problems.append(f"index.json: unreadable ({type(exc).__name__}: {exc}); reading rows/ without it")
    frames, failed = [], set()
    for path in sorted((root / "rows").glob("*/*/*.parquet")):
        try:
            frames.append(_read_rows(path, root, entries.get(path.stem, {})))
        except Exception as exc:  # any unreadable file is reported by name, and the others still load
            problems.append(f"{path.relative_to(root)}: skipped: {exc}")
            failed.add(path.stem)
        if path.stem not in entries:
            problems.append(f"{path.relative_to(root)}: not in index.json (no figures or provenance beyond its rows)")
            entries[path.stem] = {"hash16": path.stem}
    read = {f.hash16.iloc[0] for f in frames if len(f)}
    for hash16, entry in entries.items():
        if hash16 not in read and hash16 not in failed:
            problems.append(f"index.json: submission {hash16} has no readable rows file")
        entry["manifest"] = _manifest(root, hash16, problems) if hash16 in read else None
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=[*REQUIRED, "attack_config", "split", "hash16", "backbone", "reproduced"])
    return Board(rows, entries, problems, root)


def tasks(board: Board) -> list[str]:
    return sorted(board.rows.task.dropna().unique())


def backbones(board: Board, task: str) -> list[str]:
    """The backbones with results for ``task``, most submissions first (the default selection)."""
    part = board.rows[board.rows.task == task]
    return list(part.groupby("backbone").hash16.nunique().sort_values(ascending=False, kind="stable").index)


def attacks(board: Board, task: str, backbone: str) -> list[str]:
    part = board.rows[(board.rows.task == task) & (board.rows.backbone == backbone)]
    return sorted(part.attack.unique())


def defenses(board: Board, task: str, backbone: str) -> list[str]:
    part = board.rows[(board.rows.task == task) & (board.rows.backbone == backbone) & (board.rows.defense != "none")]
    return sorted(part.defense.unique())


def report_step(manifest: dict | None, attack: str, config: str, cell: pd.DataFrame) -> int:
    """The sweep point's report step: the manifest's; else the step of its MRSGR rows (MRSGR exists at the
    report step only); else its last step."""
    resolved = (manifest or {}).get("resolved", {})
    if config == "default" and "report_step" in resolved:
        return int(resolved["report_step"])
    for variant in (resolved.get("attack_sweep") or {}).get("variants", {}).get(attack, []):
        if variant.get("label") == config and "report_step" in variant:
            return int(variant["report_step"])
    mrsgr = cell[cell.metric.str.startswith("MRSGR/")]
    steps = (mrsgr if len(mrsgr) else cell).step
    return int(steps[steps >= 0].max()) if (steps >= 0).any() else -1


def figures_at(cell: pd.DataFrame, step: int) -> dict[str, tuple[float, float, int]]:
    """metric → (mean, std, n seeds) over seeds of the per-seed mean over groups, at ``step``."""
    at = cell[(cell.step == step) & (cell.concept == "*")]
    out = {}
    for metric in FIGURES:
        per_seed = at[at.metric == metric].groupby("seed").value.mean()
        out[metric] = (per_seed.mean() if len(per_seed) else math.nan,
                       per_seed.std() if len(per_seed) > 1 else math.nan, len(per_seed))
    return out


def immunize_seconds(manifest: dict | None, defense: str) -> float:
    """Mean immunization wall seconds per immunized model (group × seed) from the manifest's cells; a
    ``<defense>/unconstrained`` twin shares its defense's model, so its cost."""
    base = defense.split("/")[0]
    per_model = {c.get("model_key"): c["cost"]["immunize"]["seconds"] for c in (manifest or {}).get("cells", [])
                 if c.get("defense") == base and "seconds" in ((c.get("cost") or {}).get("immunize") or {})}
    return sum(per_model.values()) / len(per_model) if per_model else math.nan


def _fallback_worst(figures: dict[str, dict[str, tuple]], configs: list[str]) -> str:
    """Without the manifest's choice: the point with the lowest ``WORST_FALLBACK`` (ties: the earlier point)."""
    scored = [(figures[c][WORST_FALLBACK][0], i, c) for i, c in enumerate(configs)
              if not math.isnan(figures[c][WORST_FALLBACK][0])]
    return min(scored)[2] if scored else configs[0]


def _round(x: float, digits: int) -> float:
    return x if math.isnan(x) else round(x, digits) + 0.0  # + 0.0: no "-0.0" in the table


def plugin_label(manifest: dict | None, name: str) -> str:
    """``mima [tiny-sd preset, --set]`` where a preset or ``--set`` changed a value from the paper default
    (as ``immunobench report`` marks rows; the rows keep the bare name)."""
    info = ((manifest or {}).get("resolved", {}).get("plugins", {})).get(name.split("/")[0], {})
    presets = info.get("presets_in_force", [])
    notes = [f"{', '.join(presets)} preset{'s' if len(presets) > 1 else ''}"] if presets else []
    notes += ["--set"] if info.get("overrides") else []
    return f"{name} [{', '.join(notes)}]" if notes else name


def _submission_cells(board: Board, hash16: str, part: pd.DataFrame) -> list[dict]:
    """The table's rows (raw: figures as numbers) for one submission's eval rows."""
    entry = board.submissions.get(hash16, {})
    manifest = entry.get("manifest")
    chosen = {(w["defense"], w["attack"]): w["config"] for w in (manifest or {}).get("worst_case", [])}
    first = part.iloc[0]
    common = {"backbone": first.backbone, "reproduced": "yes" if part.reproduced.any() else "no",
              "code": str(first.code_version), "date": str(first.run_date)[:10], "bundle": hash16,
              "card": str(first.task_card_hash)[:8]}
    out = []
    for (defense, attack), cells in part.groupby(["defense", "attack"], sort=False):
        configs = list(dict.fromkeys(["default", *cells.attack_config]) if "default" in set(cells.attack_config)
                       else dict.fromkeys(cells.attack_config))
        figures, steps = {}, {}
        for config in configs:
            cell = cells[cells.attack_config == config]
            steps[config] = report_step(manifest, attack, config, cell)
            figures[config] = figures_at(cell, steps[config])
        points = [(config, config) for config in configs]
        if len(configs) > 1:
            worst = chosen.get((defense, attack))
            worst = worst if worst in figures else _fallback_worst(figures, configs)
            points.append((f"{WORST}: {worst}", worst))
        cost = immunize_seconds(manifest, defense)
        for point, config in points:
            row = {**common, "defense": plugin_label(manifest, defense), "attack": attack, "point": point, "step": steps[config],
                   "cost s": _round(cost, 1),
                   "seeds": ",".join(map(str, sorted(cells[cells.attack_config == config].seed.unique())))}
            for metric, (mean, std, _) in figures[config].items():
                digits = 3 if metric.startswith("acc") else 2
                row[FIGURES[metric]], row[f"{FIGURES[metric]} ±"] = _round(mean, digits), _round(std, digits)
            out.append(row)
    return out


def main_table(board: Board, task: str, backbone: str, attack: str | None = None, reproduced_only: bool = False,
               search: str = "") -> pd.DataFrame:
    """The ranked table (``COLUMNS``) of one task on one backbone; ``attack`` None or "all": every attack;
    ``search``: whitespace-separated terms, each found (case-insensitive) in some cell of a kept row."""
    if not backbone:
        raise ValueError("main_table needs one backbone: results of different backbones are never ranked together")
    rows = board.rows
    part = rows[(rows.task == task) & (rows.backbone == backbone) & (rows.split == "eval") & (rows.defense != "none")]
    if attack and attack != "all":
        part = part[part.attack == attack]
    if reproduced_only:
        part = part[part.reproduced]
    table = pd.DataFrame([r for hash16, sub in part.groupby("hash16", sort=True)
                          for r in _submission_cells(board, hash16, sub)], columns=COLUMNS)
    for term in search.lower().split():
        text = table.drop(columns="rank").astype(str).apply(lambda col: col.str.lower().str.contains(term, regex=False))
        table = table[text.any(axis=1)]
    table = table.sort_values(RANK_BY, ascending=False, na_position="last", kind="stable").reset_index(drop=True)
    table["rank"] = range(1, len(table) + 1)
    return table


def select_columns(table: pd.DataFrame, shown: list[str]) -> pd.DataFrame:
    """The columns ticked, in the table's order (the defense always: a row must say whose it is)."""
    keep = [c for c in table.columns if c in shown or c == "defense"]
    return table[keep]


def curves(board: Board, task: str, backbone: str, defense: str) -> pd.DataFrame:
    """Similarity to the references vs attack step for ``defense`` and the undefended ``none`` of the same
    submissions: per (submission, defense, attack, role, step), the mean over the targets and seeds (each
    attack's default point, evaluation split). Targets: the manifest's groups; else the concepts with
    memorization rows (``nn/*``, measured for targets only); else every concept."""
    rows = board.rows
    part = rows[(rows.task == task) & (rows.backbone == backbone) & (rows.split == "eval")
                & (rows.attack_config == "default") & (rows.step >= 0)]
    subs = part[part.defense == defense].hash16.unique()
    part = part[part.hash16.isin(subs) & part.defense.isin([defense, "none"]) & part.metric.isin([f"sim/{r}" for r in ROLES])]
    frames = []
    for hash16, sub in part.groupby("hash16"):
        groups = ((board.submissions.get(hash16) or {}).get("manifest") or {}).get("groups")
        if groups:
            own = [c in groups.get(g, []) for g, c in zip(sub.group, sub.concept)]
        else:
            nn = rows[(rows.hash16 == hash16) & rows.metric.str.startswith("nn/") & (rows.concept != "*")]
            targets = set(zip(nn.group, nn.concept))
            own = [(g, c) in targets for g, c in zip(sub.group, sub.concept)] if targets else [True] * len(sub)
        sub = sub[pd.Series(own, index=sub.index, dtype=bool)]
        per_seed = sub.groupby(["defense", "attack", "metric", "step", "seed"]).value.mean()
        frames.append(per_seed.groupby(["defense", "attack", "metric", "step"]).mean().reset_index().assign(hash16=hash16))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["defense", "attack", "metric", "step", "value", "hash16"])
    return out.assign(role=out.metric.str.removeprefix("sim/"))


def figure_files(board: Board, task: str, backbone: str, defense: str) -> list[tuple[str, str]]:
    """(path, caption) of the plots of every submission of ``task`` on ``backbone`` that ran ``defense``."""
    rows = board.rows
    subs = sorted(rows[(rows.task == task) & (rows.backbone == backbone) & (rows.defense == defense)].hash16.unique())
    out = []
    for hash16 in subs:
        listed = board.submissions.get(hash16, {}).get("figures")
        paths = [board.root / p for p in listed] if listed else sorted((board.root / "figures" / hash16).glob("*.png"))
        out += [(str(p), f"{p.stem} ({hash16})") for p in paths if p.is_file() and p.suffix.lower() == ".png"]
    return out
