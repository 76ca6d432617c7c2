"""The README is a manual that works: its "add a defense" block runs through one cell as written,
it stays short, and every relative link in it and in docs/ points to a file of the repository."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _defense_block() -> str:
    """The first python block of the README's "Add a defense" section, verbatim."""
    section = README.read_text().split("## Add a defense", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "the README's 'Add a defense' section has no python block"
    return blocks[0]


def test_readme_defense_block_runs_through_one_cell(finished, small_card, tmp_path):
    """On the session's small card, in a copy of its finished run's store: the none cell and the start
    model come from there (asserted below), so only the README defense's cells are computed."""
    import shutil

    from immunobench.runner import SCHEMA_VERSION
    from immunobench.store import Store

    code = _defense_block()
    name = re.search(r'@register_defense\("([^"]+)"\)', code).group(1)
    plugin = tmp_path / "readme_defense.py"
    plugin.write_text(code)
    group = "2c-1"
    shutil.copytree(finished[0] / "store", tmp_path / "store")
    args = [sys.executable, "-m", "immunobench.cli", "run", "--plugin", str(plugin), "--defense", name, "--task",
            str(small_card), "--groups", group, "--sample-steps", "2", "--workers", "1", "--store",
            str(tmp_path / "store"), "--out", str(tmp_path / "runs"), "--name", "readme", "--quiet"]
    # a fresh process, so the README's defense stays out of this process's registry
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]

    run = tmp_path / "runs" / "readme"
    results = pd.read_parquet(run / "results.parquet")
    assert {"none", name} == set(results.defense)
    star = results[(results.defense == name) & (results.concept == "*")]
    assert {"MSGR/C", "MRSGR/C", "acc/targets"} <= set(star.metric)

    # the defense changed the model: its immunized weights differ from the start model's, and so
    # do the generations of its targets before the attack (step 0)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert pq.read_schema(run / "results.parquet").metadata[b"immunobench.schema_version"] == str(SCHEMA_VERSION).encode()
    cells = {c["defense"]: c for c in manifest["cells"]}
    assert cells[name]["model_key"] != cells["none"]["model_key"]
    shared = Store(finished[0] / "store")
    assert shared.has(cells["none"]["attack_key"])  # the none cell is the session run's
    store = Store(tmp_path / "store")
    immunized = store.get(cells[name]["model_key"])
    targets = list(manifest["groups"][group])
    assert immunized.meta["info"]["targets"] == targets and immunized.meta["info"]["tensors"] > 0
    start = store.get(cells["none"]["model_key"]).tensors("unet")
    changed = immunized.tensors("unet")
    assert changed and all(not changed[k].equal(start[k]) for k in changed if k in start)
    step0 = results[(results.step == 0) & (results.metric == "sim/C") & results.concept.isin(targets)]
    by_defense = step0.pivot(index="concept", columns="defense", values="value")
    assert (by_defense[name] - by_defense["none"]).abs().max() > 1e-6

    # editing the plugin file (a comment is enough) invalidates exactly its cells: its source hash is
    # in their keys; the no-defense cell and the start model come from the store unchanged
    assert manifest["resolved"]["plugins"][name]["source_sha256"] not in ("", "no-source")
    plugin.write_text(code + "\n# edited\n")
    args[args.index("readme")] = "readme-edited"
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    edited = json.loads((tmp_path / "runs" / "readme-edited" / "manifest.json").read_text())
    assert edited["resolved"]["plugins"][name]["source_sha256"] != manifest["resolved"]["plugins"][name]["source_sha256"]
    again = {c["defense"]: c for c in edited["cells"]}
    assert again[name]["model_key"] != cells[name]["model_key"] and again[name]["attack_key"] != cells[name]["attack_key"]
    assert all(again["none"][k] == cells["none"][k] for k in ("model_key", "attack_key"))
    assert edited["artifacts"]["start"] == manifest["artifacts"]["start"]


def test_readme_is_at_most_200_lines():
    assert len(README.read_text().splitlines()) <= 200


@pytest.mark.parametrize("doc", [README, *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_relative_links_point_to_existing_files(doc):
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)  # code blocks hold commands, not links
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        if not path.exists():
            broken.append(target)
    assert not broken, f"{doc.name}: links to missing files: {broken}"
