"""A run's figures (matplotlib, PNG + PDF) in ``plots/``:

- ``curves``: similarity to the references vs attack step per metric, with and without each
  defense (MIMA Fig. 3; the gap to the dashed no-defense line is the MSGR);
- ``msgr_bars``: MSGR per group at the reporting step, one bar per defense (± std over seeds);
- ``qualitative``: per group, reference / no defense / each defense after the attack (Fig. 4),
  read back from the artifact store (skipped, with a note, when the store is gone).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from immunobench.plugins import SIMILARITY_ROLES, metric_label

from .results import run_similarity_judges


def _save(fig, path: Path) -> list[Path]:
    out = []
    for ext in ("png", "pdf"):
        p = path.with_suffix(f".{ext}")
        fig.savefig(p, dpi=120, bbox_inches="tight")
        out.append(p)
    return out


def render_plots(run_dir: Path, results: pd.DataFrame, manifest: dict, store=None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = Path(run_dir) / "plots"
    plots.mkdir(exist_ok=True)
    groups = manifest["resolved"]["groups"]
    step = manifest["resolved"]["report_step"]
    written: list[Path] = []
    if results.empty:
        return written
    defenses = list(dict.fromkeys(results.defense))
    label = {role: metric_label(cls) for role, cls in run_similarity_judges(manifest).items()}

    # curves: mean over the group's targets and seeds
    fig, axes = plt.subplots(len(groups), 3, figsize=(12, 3 * len(groups)), squeeze=False)
    for i, group in enumerate(groups):
        part = results[(results.group == group) & (results.concept != "*")]
        for j, role in enumerate(SIMILARITY_ROLES):
            ax = axes[i][j]
            sims = part[part.metric == f"sim/{role}"]
            targets = manifest.get("groups", {}).get(group)
            if targets:
                sims = sims[sims.concept.isin(targets)]
            for defense in defenses:
                for attack, curve in sims[sims.defense == defense].groupby("attack"):
                    line = curve.groupby(["seed", "step"]).value.mean().groupby("step").mean()
                    ax.plot(line.index, line.values, "--" if defense == "none" else "-", marker="o", ms=3,
                            label=f"{defense} ({attack})")
            ax.axvline(step, color="grey", lw=0.5)
            ax.set_title(f"{group}: {label[role]}")
            ax.set_xlabel("attack step")
            ax.set_ylabel("similarity to references")
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    written += _save(fig, plots / "curves")
    plt.close(fig)

    # MSGR bars
    at = results[(results.step == step) & (results.concept == "*") & (results.defense != "none")]
    if not at.empty:
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), squeeze=False)
        shown = [d for d in defenses if d != "none"]
        width = 0.8 / max(1, len(shown))
        for j, role in enumerate(SIMILARITY_ROLES):
            ax = axes[0][j]
            part = at[at.metric == f"MSGR/{role}"]
            for k, defense in enumerate(shown):
                stats = part[part.defense == defense].groupby("group").value.agg(["mean", "std"]).reindex(groups)
                xs = [g + k * width for g in range(len(groups))]
                ax.bar(xs, stats["mean"], width, yerr=stats["std"].fillna(0), label=defense, capsize=2)
            ax.axhline(0, color="black", lw=0.5)
            ax.set_xticks([g + width * (len(shown) - 1) / 2 for g in range(len(groups))], groups)
            ax.set_title(f"MSGR ({label[role]}) at step {step}, %")
            if j == 0:
                ax.legend(fontsize=7)
        fig.tight_layout()
        written += _save(fig, plots / "msgr_bars")
        plt.close(fig)

    written += _qualitative(plots, manifest, store, plt)
    return written


def _qualitative(plots: Path, manifest: dict, store, plt) -> list[Path]:
    """Reference / no defense / defenses after the attack, first seed and attack, per group."""
    import torch

    from immunobench.store import ImageKey, Store, read_image_sets

    store = store or Store(manifest["store"])
    cells = manifest.get("cells", [])
    step = manifest["resolved"]["report_step"]
    written = []
    for group in manifest["resolved"]["groups"]:
        mine = [c for c in cells if c["group"] == group]
        if not mine:
            continue
        seed, attack = mine[0]["seed"], mine[0]["attack"]
        mine = [c for c in mine if c["seed"] == seed and c["attack"] == attack]
        refs = mine[0]["references"]
        artifacts = [store.get(refs[c]) for c in mine[0]["targets"]] + [store.get(c["attack_key"]) for c in mine]
        if any(a is None for a in artifacts):
            print(f"plots: the store {store.root} no longer holds {group}'s images; qualitative grid skipped")
            continue
        try:
            generated = [(cell["defense"], read_image_sets(art))
                         for cell, art in zip(mine, artifacts[len(mine[0]["targets"]):])]
        except ValueError as exc:  # a run of an older release: its images are in another format
            print(f"plots: {exc}; qualitative grid skipped")
            continue
        columns = []
        for concept, ref in zip(mine[0]["targets"], artifacts):
            row = [("reference", ref.tensors()["images"][:3])]
            row += [(defense, images[ImageKey(step, concept)][:3]) for defense, images in generated]
            columns.append((concept, row))
        n_cols = len(columns[0][1])
        fig, axes = plt.subplots(len(columns), n_cols, figsize=(2.2 * n_cols, 1.0 * len(columns) + 0.6), squeeze=False)
        for i, (concept, row) in enumerate(columns):
            for j, (label, imgs) in enumerate(row):
                strip = torch.cat(list(imgs), dim=2).permute(1, 2, 0).numpy()
                axes[i][j].imshow(strip)
                axes[i][j].set_xticks([]), axes[i][j].set_yticks([])
                if i == 0:
                    axes[i][j].set_title(label if label == "reference" else f"{label} @ {step}", fontsize=8)
                if j == 0:
                    axes[i][j].set_ylabel(concept, fontsize=7)
        fig.tight_layout()
        written += _save(fig, plots / f"qualitative-{group}")
        plt.close(fig)
    return written
