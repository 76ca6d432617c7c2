"""The immunobench leaderboard: a gradio app over a published results folder (``immunobench publish``).

It reads rows and plots only; it never imports immunobench or torch and never runs submitted code.
Data: ``--from DIR`` or env ``IMMUNOBENCH_RESULTS_DIR``; on the Space, env ``IMMUNOBENCH_RESULTS``
names the results dataset repo, fetched with ``huggingface_hub.snapshot_download``.

The table is gradio's own ``gr.Dataframe`` (its search and column filters) plus our controls (search
box, column choice, attack / backbone / reproduced filters): ``gradio_leaderboard`` 0.0.14 requires
gradio < 6 and is reported broken under gradio 6, so gradio is pinned at 6.31.0 (requirements.txt).

    python app.py --from DIR [--port 7860] [--host 127.0.0.1]
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import gradio as gr
import pandas as pd

try:
    from . import board  # installed: immunobench.leaderboard.space
except ImportError:
    import board  # on the Space: app.py runs as a script beside board.py

ROLE_NAMES = {"C": "CLIP (C)", "D": "DINO (D)", "L": "LPIPS 1 − d (L)"}
ALL = "all"

INTRO = """# immunobench leaderboard
Immunization defenses of text-to-image diffusion models against fine-tuning attacks that re-learn an erased
concept. One tab per task card; **each backbone is ranked on its own** (tiny-sd figures are not comparable with
Stable Diffusion's). Rows: one per submission × defense × attack × sweep point, at the point's report step, on the
evaluation split. **MSGR** (%) ↑: how far the attack's re-learning of the targets falls short of the undefended
model's (higher = stronger immunization). **MRSGR** (%) ↑: the other concepts' re-learning relative to the targets'
(higher = the rest stays as adaptable). C, D, L: CLIP, DINO and LPIPS (1 − d) similarity to references.
Accuracy: the judge classifier's on the targets (↓) and the others (↑). Each figure is the mean over the card's
groups per seed, then the mean over seeds (the `±` columns: std over seeds). Ranked by MRSGR L. A *worst case* row
repeats the sweep point that re-learned the targets best while costing the others' accuracy at most ε more than it
costs the undefended model's.
*reproduced*: cells of the bundle were re-run by `immunobench reproduce` and matched."""

HOW_TO_SUBMIT = """## How to submit a defense
1. `immunobench new defense mydef` — writes `mydef.py`, a documented defense that runs as written; replace its update rule.
2. `immunobench check-plugin mydef.py` — every problem, one line each; exit 0 only when it would run.
3. `immunobench run --plugin mydef.py --defense mydef --task relearn-style --name mydef-run` — the same grid as every row here.
4. `immunobench bundle mydef-run` — one zip: results, manifest, plugin sources, a content hash.
5. `immunobench verify runs/mydef-run.bundle.zip` — hashes, schema and sources, or the reason it is rejected.
6. `immunobench reproduce runs/mydef-run.bundle.zip --cells 2` — re-runs random cells and compares; rows are marked *reproduced* only after it passes.
7. `immunobench publish mydef-run --repo OWNER/immunobench-results` (or `--to DIR`), then `immunobench leaderboard serve --from DIR` to see it locally.

The Space reads the published rows only: it never runs submitted code. Details: `docs/submitting.md`."""


def results_dir(path: str | None = None) -> Path:
    """The results folder: ``path``, env ``IMMUNOBENCH_RESULTS_DIR``, or a snapshot of the dataset repo in
    env ``IMMUNOBENCH_RESULTS``."""
    path = path or os.environ.get("IMMUNOBENCH_RESULTS_DIR")
    if path:
        return Path(path)
    repo = os.environ.get("IMMUNOBENCH_RESULTS")
    if not repo:
        raise SystemExit("no results: pass --from DIR, or set IMMUNOBENCH_RESULTS_DIR or IMMUNOBENCH_RESULTS (a dataset repo)")
    from huggingface_hub import snapshot_download  # a dependency of gradio

    return Path(snapshot_download(repo_id=repo, repo_type="dataset"))


def curves_figure(data: pd.DataFrame, defense: str):
    """Similarity vs attack step per role: ``defense`` solid, the undefended ``none`` dashed (the gap is its MSGR)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    several = data.hash16.nunique() > 1
    for ax, role in zip(axes, board.ROLES):
        part = data[data.role == role]
        for (hash16, name, attack), line in part.groupby(["hash16", "defense", "attack"]):
            label = f"{name} ({attack})" + (f" {hash16[:6]}" if several else "")
            ax.plot(line.step, line.value, "--" if name == "none" else "-", marker="o", ms=3, label=label)
        ax.set_title(ROLE_NAMES[role])
        ax.set_xlabel("attack step")
        ax.set_ylabel("similarity to references")
    if len(data):
        axes[0].legend(fontsize=7)
    else:
        axes[1].text(0.5, 0.5, f"no curves for {defense}", ha="center", transform=axes[1].transAxes)
    fig.tight_layout()
    plt.close(fig)  # gr.Plot renders the figure object; pyplot need not keep it
    return fig


def _frame(b: board.Board, task: str, backbone: str, attack: str, reproduced: bool, search: str, shown: list[str]):
    """(table, its column types, a line saying how many rows the filters kept)."""
    table = board.select_columns(board.main_table(b, task, backbone, attack, reproduced, search), shown)
    types = ["number" if c in board.NUMBER_COLUMNS else "str" for c in table.columns]  # numbers sort as numbers
    return table, types, f"{len(table)} of {len(board.main_table(b, task, backbone))} rows · backbone `{backbone}`"


def _table(*args):
    table, types, note = _frame(*args)
    return gr.Dataframe(value=table, datatype=types), note


def _task_tab(b: board.Board, task: str) -> tuple:
    """One task's controls, table and per-defense view; returns what the page's load event draws."""
    backbones = board.backbones(b, task)
    first = backbones[0]
    with gr.Row():
        backbone = gr.Radio(backbones, value=first, label="Backbone (one at a time: backbones are never ranked together)",
                            elem_classes=["ib-backbone"])
        attack = gr.Dropdown([ALL, *board.attacks(b, task, first)], value=ALL, label="Attack", elem_classes=["ib-attack"])
        reproduced = gr.Checkbox(False, label="Reproduced only", elem_classes=["ib-reproduced"])
    search = gr.Textbox(label="Search", placeholder="defense, attack, point, code version, bundle …",
                        elem_classes=["ib-search"])
    with gr.Accordion("Columns", open=False):
        columns = gr.CheckboxGroup(board.COLUMNS, value=board.DEFAULT_COLUMNS, show_label=False,
                                   elem_classes=["ib-columns"])
    value, types, note_text = _frame(b, task, first, ALL, False, "", board.DEFAULT_COLUMNS)
    note = gr.Markdown(note_text, elem_classes=["ib-count"])
    table = gr.Dataframe(value=value, datatype=types, interactive=False, show_search="filter",
                         pinned_columns=2, max_height=600, label=f"{task}", elem_classes=["ib-table"])
    controls = [backbone, attack, reproduced, search, columns]
    for control in controls:
        control.change(lambda *a: _table(b, task, *a), inputs=controls, outputs=[table, note])

    with gr.Accordion("Per defense: similarity vs attack step and the run's figures", open=True):
        names = board.defenses(b, task, first)
        defense = gr.Dropdown(names, value=names[0] if names else None, label="Defense", elem_classes=["ib-defense"])
        gr.Markdown("Similarity of the attacked model's generations to the references, mean over the targets and "
                    "seeds, each attack's default point; the undefended model (`none`) dashed. Below: the plots of "
                    "the runs that include this defense (curves, MSGR bars, image grids).")
        plot = gr.Plot(show_label=False, elem_classes=["ib-plot"])
        gallery = gr.Gallery(show_label=False, columns=3, height=420, object_fit="contain", elem_classes=["ib-gallery"])

    def per_defense(backbone_name: str, name: str | None):
        if not name:
            return None, []
        return (curves_figure(board.curves(b, task, backbone_name, name), name),
                board.figure_files(b, task, backbone_name, name))

    def on_backbone(backbone_name: str):
        names = board.defenses(b, task, backbone_name)
        return (gr.Dropdown(choices=[ALL, *board.attacks(b, task, backbone_name)], value=ALL),
                gr.Dropdown(choices=names, value=names[0] if names else None))

    # then redraw: the dropdown's value may not change (the same defense on both backbones), so no change event
    backbone.change(on_backbone, inputs=backbone, outputs=[attack, defense]).then(
        per_defense, inputs=[backbone, defense], outputs=[plot, gallery])
    defense.change(per_defense, inputs=[backbone, defense], outputs=[plot, gallery])
    return backbone, defense, plot, gallery, per_defense


def build(root: str | Path) -> gr.Blocks:
    """The app over the published folder ``root`` (read once, at start)."""
    b = board.load(root)
    loaders = []
    with gr.Blocks(title="immunobench leaderboard", analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        if b.problems:
            gr.Markdown("**Problems** — not shown, or shown with less provenance:\n"
                        + "\n".join(f"- `{p}`" for p in b.problems), elem_classes=["ib-problems"])
        with gr.Tabs():
            for task in board.tasks(b):
                with gr.Tab(task, elem_classes=["ib-task"]):
                    loaders.append(_task_tab(b, task))
            if not board.tasks(b):
                with gr.Tab("no results"):
                    gr.Markdown(f"No readable results in `{root}` yet.")
            with gr.Tab("How to submit"):
                gr.Markdown(HOW_TO_SUBMIT)
        for backbone, defense, plot, gallery, per_defense in loaders:  # draw each tab's first defense on load
            demo.load(per_defense, inputs=[backbone, defense], outputs=[plot, gallery])
    return demo


def serve(root: str | Path, host: str = "127.0.0.1", port: int | None = None, block: bool = True) -> gr.Blocks:
    """Build and launch; the folder is the one path the app may serve files (the figures) from."""
    demo = build(root)
    demo.launch(server_name=host, server_port=port, allowed_paths=[str(Path(root).resolve())],
                prevent_thread_lock=not block, quiet=not block)
    return demo


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="root", help="a published results folder (default: env IMMUNOBENCH_RESULTS_DIR, "
                        "else a snapshot of the dataset repo in env IMMUNOBENCH_RESULTS)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    args = parser.parse_args()
    serve(results_dir(args.root), args.host, args.port)
