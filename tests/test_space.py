"""The leaderboard Space: board.py's tables on hand-built published folders (mean ± std over seeds, one
backbone per table, schema version 1, filters, worst case, problems listed), `leaderboard serve`'s
refusals, the Space's files, and the app itself in headless Chromium on the session's finished run."""
import ast
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from immunobench.cli import main
from immunobench.leaderboard.space import board

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "leaderboard" / "space"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def _rows(defense="mima", attack="lora", config="default", seeds=(0,), groups=("g1",), step=2, values=None):
    """Group-score rows (concept "*") of one cell at ``step``; ``values``: metric → fn(seed, group)."""
    values = values or {m: (lambda s, g: 1.0) for m in board.FIGURES}
    return pd.DataFrame([{"task": "t", "group": g, "concept": "*", "defense": defense, "attack": attack,
                          "attack_config": config, "seed": s, "split": "eval", "step": step, "metric": m,
                          "value": float(f(s, g))} for m, f in values.items() for s in seeds for g in groups])


def _submit(root: Path, hash16: str, rows: pd.DataFrame, task="t", backbone="tiny-sd", version=2,
            reproduced=False, manifest=None, **entry) -> None:
    """Add one submission to a published folder as `publish --to` lays it out (rows + provenance, index)."""
    if version == 1:
        rows = rows.drop(columns=["attack_config", "split"])
    rows = rows.assign(task=task, backbone=backbone, task_card_hash="c" * 32, code_version=entry.pop("code", "0.1.0"),
                       seeds=",".join(map(str, sorted(rows.seed.unique()))), run_date="2026-01-02T00:00:00",
                       bundle_hash=hash16, schema_version=version, reproduced=reproduced)
    folder = root / "rows" / task / backbone
    folder.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(folder / f"{hash16}.parquet")
    if manifest is not None:
        (root / "bundles").mkdir(exist_ok=True)
        with zipfile.ZipFile(root / "bundles" / f"{hash16}.zip", "w") as z:
            z.writestr("manifest.json", json.dumps(manifest))
    index = json.loads((root / "index.json").read_text()) if (root / "index.json").exists() else {
        "publish_format": 1, "submissions": []}
    index["submissions"].append({"hash16": hash16, "task": task, "backbone": backbone, "reproduced": reproduced,
                                 "schema_version": version, "figures": [], **entry})
    (root / "index.json").write_text(json.dumps(index))


def test_figures_are_the_mean_over_groups_then_mean_and_std_over_seeds(tmp_path):
    # seed 0: groups 10, 20 → 15; seed 1: 30, 40 → 35; mean 25, std (n − 1) = √200 = 14.14
    level = {(0, "g1"): 10, (0, "g2"): 20, (1, "g1"): 30, (1, "g2"): 40}
    values = {m: (lambda s, g: level[s, g]) for m in board.FIGURES}
    _submit(tmp_path, "a" * 16, _rows(seeds=(0, 1), groups=("g1", "g2"), values=values))
    table = board.main_table(board.load(tmp_path), "t", "tiny-sd")
    row = table.iloc[0]
    assert (row["MRSGR L"], row["MRSGR L ±"], row["MSGR D"], row["acc targets"]) == (25.0, 14.14, 25.0, 25.0)
    assert (row.seeds, row.step, row.point, row.defense, row.bundle) == ("0,1", 2, "default", "mima", "a" * 16)
    assert list(table.columns) == board.COLUMNS


def test_backbones_are_never_ranked_together(tmp_path):
    _submit(tmp_path, "a" * 16, _rows(defense="small"), backbone="tiny-sd")
    _submit(tmp_path, "b" * 16, _rows(defense="big"), backbone="sd-v1-4")
    _submit(tmp_path, "c" * 16, _rows(defense="small2"), backbone="tiny-sd")
    b = board.load(tmp_path)
    assert board.backbones(b, "t") == ["tiny-sd", "sd-v1-4"]  # most submissions first: the default
    assert set(board.main_table(b, "t", "tiny-sd").defense) == {"small", "small2"}
    assert set(board.main_table(b, "t", "sd-v1-4").defense) == {"big"}
    with pytest.raises(ValueError, match="never ranked together"):
        board.main_table(b, "t", "")


def test_every_published_schema_version_is_read_and_unreadable_files_are_listed(tmp_path):
    _submit(tmp_path, "a" * 16, _rows(defense="old"), version=1)
    _submit(tmp_path, "b" * 16, _rows(defense="future"), version=3)
    _submit(tmp_path, "c" * 16, _rows(defense="new"))
    (tmp_path / "rows" / "t" / "tiny-sd" / ("d" * 16 + ".parquet")).write_bytes(b"not parquet")
    index = json.loads((tmp_path / "index.json").read_text())
    index["submissions"].append({"hash16": "e" * 16, "task": "t", "backbone": "tiny-sd"})
    (tmp_path / "index.json").write_text(json.dumps(index))
    b = board.load(tmp_path)
    table = board.main_table(b, "t", "tiny-sd")
    assert set(table.defense) == {"old", "new"}
    assert table.set_index("defense").loc["old", "point"] == "default"  # version 1: one point, all reported
    problems = "\n".join(b.problems)
    assert f"{'b' * 16}.parquet: skipped: schema version 3" in problems
    assert f"{'d' * 16}.parquet: skipped" in problems and f"{'d' * 16}.parquet: not in index.json" in problems
    assert f"submission {'e' * 16} has no readable rows file" in problems
    with pytest.raises(board.BoardError):
        board.load(tmp_path / "nothing")


def test_filters_search_and_columns(tmp_path):
    _submit(tmp_path, "a" * 16, pd.concat([_rows(defense="mima", attack="lora"), _rows(defense="mima", attack="dreambooth"),
                                           _rows(defense="none")]), reproduced=True, code="0.1.0")
    _submit(tmp_path, "b" * 16, _rows(defense="gift", attack="lora"), code="0.2.0")
    b = board.load(tmp_path)
    assert len(board.main_table(b, "t", "tiny-sd")) == 3  # `none` is every defense's reference, not a row
    assert set(board.main_table(b, "t", "tiny-sd", attack="dreambooth").defense) == {"mima"}
    assert set(board.main_table(b, "t", "tiny-sd", reproduced_only=True).reproduced) == {"yes"}
    assert len(board.main_table(b, "t", "tiny-sd", reproduced_only=True)) == 2
    assert set(board.main_table(b, "t", "tiny-sd", search="LORA 0.2").defense) == {"gift"}  # every term, any case
    assert board.main_table(b, "t", "tiny-sd", search="nothing-like-it").empty
    shown = board.select_columns(board.main_table(b, "t", "tiny-sd"), ["MRSGR L", "rank"])
    assert list(shown.columns) == ["rank", "defense", "MRSGR L"]


def test_ranking_report_step_worst_case_and_cost(tmp_path):
    by_config = {"default": 5.0, "lora[lr=0.01]": -2.0, "lora[lr=0.1]": 1.0}
    rows = pd.concat([_rows(config=c, values={**{m: (lambda s, g: 0.5) for m in board.FIGURES},
                                              "MRSGR/D": (lambda s, g, v=v: v), "MRSGR/L": (lambda s, g, v=v: v)})
                      for c, v in by_config.items()])
    # checkpoints past the report step (as on the personalization card): MSGR at 4 is not reported
    later = _rows(values={"MSGR/C": lambda s, g: 99.0}, step=4)
    _submit(tmp_path, "a" * 16, pd.concat([rows, later]))
    table = board.main_table(board.load(tmp_path), "t", "tiny-sd")
    assert list(table.point) == ["default", "lora[lr=0.1]", "lora[lr=0.01]", "worst case: lora[lr=0.01]"]
    assert list(table["rank"]) == [1, 2, 3, 4] and set(table.step) == {2}  # the step of the MRSGR rows
    assert 99.0 not in set(table["MSGR C"])
    # with the bundle's manifest: its worst-case choice, report step and immunization cost
    manifest = {"resolved": {"report_step": 2, "attack_sweep": {"variants": {"lora": [
        {"label": c, "report_step": 2} for c in by_config]}}},
        "worst_case": [{"defense": "mima", "attack": "lora", "config": "lora[lr=0.1]"}],
        "cells": [{"defense": "mima", "model_key": k, "cost": {"immunize": {"seconds": s}}} for k, s in (("m1", 3.0), ("m2", 5.0))],
    }
    _submit(tmp_path / "m", "b" * 16, pd.concat([rows, later]), manifest=manifest)
    table = board.main_table(board.load(tmp_path / "m"), "t", "tiny-sd")
    assert list(table.point) == ["default", "lora[lr=0.1]", "worst case: lora[lr=0.1]", "lora[lr=0.01]"]
    assert set(table["cost s"]) == {4.0}


def test_space_files_pin_gradio_and_need_neither_torch_nor_immunobench():
    pins = dict(line.split("==") for line in (SPACE / "requirements.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    assert set(pins) == {"gradio", "pandas", "pyarrow", "matplotlib"}
    front = (SPACE / "README.md").read_text().split("---")[1]
    assert re.search(r"^sdk: gradio$", front, re.M) and re.search(r"^app_file: app.py$", front, re.M)
    assert re.search(r"^sdk_version: (\S+)$", front, re.M).group(1) == pins["gradio"]
    assert f'"gradio=={pins["gradio"]}"' in (ROOT / "pyproject.toml").read_text()
    allowed = {"__future__", "argparse", "os", "json", "math", "zipfile", "dataclasses", "pathlib", "gradio", "pandas",
               "pyarrow", "matplotlib", "huggingface_hub", "board"}
    for file in ("app.py", "board.py"):
        tree = ast.parse((SPACE / file).read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {(n.module or "board").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert imported <= allowed, (file, imported - allowed)


def test_serve_refuses_a_folder_without_results_or_without_gradio_in_one_line(tmp_path, capsys, monkeypatch):
    assert main(["leaderboard", "serve", "--from", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no index.json or rows/" in err and "publish" in err
    _submit(tmp_path, "a" * 16, _rows())
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if not installed: `import gradio` raises ImportError
    assert main(["leaderboard", "serve", "--from", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'immunobench[leaderboard]'" in err


def test_on_the_space_the_results_are_a_snapshot_of_the_dataset_repo(tmp_path, monkeypatch):
    pytest.importorskip("gradio", reason="the app needs gradio: pip install -e '.[test]'")
    import huggingface_hub

    from immunobench.leaderboard.space import app

    asked = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda **kw: asked.append(kw) or str(tmp_path))
    monkeypatch.delenv("IMMUNOBENCH_RESULTS_DIR", raising=False)
    monkeypatch.setenv("IMMUNOBENCH_RESULTS", "owner/immunobench-results")
    assert app.results_dir() == tmp_path and asked == [{"repo_id": "owner/immunobench-results", "repo_type": "dataset"}]
    monkeypatch.setenv("IMMUNOBENCH_RESULTS_DIR", str(tmp_path / "local"))
    assert app.results_dir() == tmp_path / "local" and app.results_dir("given") == Path("given")


# --- the app in a browser -------------------------------------------------------------------------------------


def _browser_missing() -> str | None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    for module in ("selenium", "gradio"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        return (f"browser test needs {', '.join(missing)}: apt-get install chromium chromium-driver; "
                "pip install -e '.[test]'")
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _js_number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(float(value))  # how the table prints a number


@pytest.fixture(scope="module")
def published(finished, small_card, tmp_path_factory):
    """The submission path end to end, as docs/submitting.md gives it: `new defense mydef` → edit → `check-plugin`
    → `run --plugin` → `bundle` → `verify` → `publish --to`, beside the session's finished MIMA run (published
    from its folder) and an older schema-1 submission of another card (a second tab). → (folder, steps' output)."""
    tmp = tmp_path_factory.mktemp("submit")
    out, runs, said = tmp / "published", tmp / "runs", {}
    assert main(["new", "defense", "mydef", "--out", str(tmp)]) == 0
    plugin = tmp / "mydef.py"
    source = plugin.read_text()
    plugin.write_text(source.replace("default=1e-4", "default=1e-3"))  # the author's edit: a larger step
    check = subprocess.run([sys.executable, "-m", "immunobench.cli", "check-plugin", str(plugin)],
                           capture_output=True, text=True)
    said["check"] = (check.returncode, check.stdout + check.stderr)
    store = tmp / "store"
    shutil.copytree(finished[0] / "store", store)  # none's cells come from the session's run; mydef's are computed
    run = subprocess.run([sys.executable, "-m", "immunobench.cli", "run", "--plugin", str(plugin), "--defense", "mydef",
                          "--task", str(small_card), "--groups", "2c-1", "--store", str(store), "--out", str(runs),
                          "--name", "mydef-run", "--sample-steps", "2", "--set", "mydef.steps=2", "--workers", "1", "--quiet"],
                         capture_output=True, text=True)
    said["run"] = (run.returncode, run.stderr[-2000:])
    assert run.returncode == 0, run.stderr[-2000:]
    assert main(["bundle", "mydef-run", "--out", str(runs)]) == 0
    said["verify"] = main(["verify", str(runs / "mydef-run.bundle.zip")])
    said["publish"] = main(["publish", "mydef-run", "--out", str(runs), "--to", str(out)])
    assert main(["publish", str(finished[2]), "--to", str(out)]) == 0
    old = pd.read_parquet(Path(finished[2]) / "results.parquet").replace({"defense": {"mima": "mima-v0"}})
    _submit(out, "0" * 16, old, task="relearn-old", version=1, reproduced=True, code="0.0.9")
    return out, said


@pytest.fixture(scope="module")
def served(published):
    """The url of `immunobench leaderboard serve --from` the published folder."""
    out, _ = published
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    log = open(out.parent / "serve.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "immunobench.cli", "leaderboard", "serve", "--from", str(out),
                               "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                server.kill()
                pytest.fail(f"leaderboard serve did not come up: {(out.parent / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield url
    server.terminate()
    server.wait(10)
    log.close()


@pytest.fixture(scope="module")
def browser(served):
    reason = _browser_missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1400,1900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def test_the_submission_path_end_to_end(published, served):
    """new → edit → check-plugin → run → bundle → verify → publish --to → leaderboard serve (the fixture runs the
    steps; this checks what each one left)."""
    out, said = published
    assert said["check"] == (0, said["check"][1]) and "registers defense mydef" in said["check"][1], said["check"]
    assert said["verify"] == 0 and said["publish"] == 0
    mine = next(s for s in json.loads((out / "index.json").read_text())["submissions"] if "mydef" in s["defenses"])
    rows = pd.read_parquet(out / mine["rows"])
    assert set(rows.defense) == {"none", "mydef"} and (rows.bundle_hash == mine["content_hash"]).all()
    with zipfile.ZipFile(out / mine["bundle"]) as z:
        entry = json.loads(z.read("manifest.json"))["resolved"]["plugins"]["mydef"]
        assert entry["config"]["lr"] == 1e-3 and entry["source"]["lr"] == "paper default"  # the edited file ran
        assert z.read("plugins/mydef.py").decode().count("default=1e-3") == 1
    table = board.main_table(board.load(out), "relearn-small", "tiny-sd")
    assert {"mima", "mydef"} <= {d.split(" [")[0] for d in table["defense"]}
    page = urllib.request.urlopen(served + "config", timeout=10).read().decode()
    assert "mydef" in page and mine["hash16"] in page  # the server holds the published rows


def test_the_app_in_chromium_shows_the_published_run_and_its_filters_and_tabs_work(published, served, browser,
                                                                                      tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, (out, _) = served, published
    index = json.loads((out / "index.json").read_text())["submissions"]
    mima = next(s for s in index if "mima" in s["defenses"])
    hash16 = mima["hash16"]
    table = board.main_table(board.load(out), "relearn-small", "tiny-sd")
    expected = table[table.defense.str.startswith("mima")].iloc[0]

    def visible(css: str) -> str:  # the text of the open tab's elements (the other tabs' are hidden)
        return "\n".join(e.text for e in browser.find_elements(By.CSS_SELECTOR, css) if e.is_displayed())

    def click(css: str) -> None:
        next(e for e in browser.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()).click()

    def open_tab(name: str) -> None:
        wait.until(lambda d: any(b.text.strip() == name for b in d.find_elements(By.CSS_SELECTOR, "button[role=tab]")))
        next(b for b in browser.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text.strip() == name).click()

    wait = WebDriverWait(browser, 30, poll_frequency=0.25)
    browser.get(url)
    open_tab("relearn-small")
    loaded = ("return [...document.querySelectorAll('.ib-gallery img')]"
              ".filter(i => i.offsetParent && i.complete && i.naturalWidth > 0).map(i => i.src)")
    wait.until(lambda d: "mima" in visible(".ib-table") and len(d.execute_script(loaded)) >= 3)
    table = visible(".ib-table")
    cells = set(table.split("\n"))  # the table's text, one cell per line
    assert {"mima [tiny-sd preset, --set]", "lora", "default", hash16, "no", "tiny-sd"} <= cells, table
    for column in ("MSGR C", "MSGR D", "MSGR L", "MRSGR L", "acc others"):
        assert _js_number(expected[column]) in cells, (column, expected[column], table)
    figures = {Path(p).name for p in mima["figures"]}
    shown = " ".join(browser.execute_script(loaded))  # drawn from the server, not just listed
    assert all(Path(f).stem in shown for f in figures), (figures, shown)
    assert browser.find_elements(By.CSS_SELECTOR, ".ib-plot canvas, .ib-plot img, .ib-plot svg")
    browser.save_screenshot(str(tmp_path / "leaderboard.png"))
    if os.environ.get("IMMUNOBENCH_UPDATE_SCREENSHOT") == "1":
        (ROOT / "docs" / "img").mkdir(exist_ok=True)
        shutil.copy(tmp_path / "leaderboard.png", ROOT / "docs" / "img" / "leaderboard.png")

    # a filter: reproduced only empties this tab (the run has not been reproduced) and unticking restores it
    click(".ib-reproduced input[type=checkbox]")
    wait.until(lambda d: "0 of 2 rows" in visible(".ib-count") and "mima" not in visible(".ib-table"))
    click(".ib-reproduced input[type=checkbox]")
    wait.until(lambda d: "2 of 2 rows" in visible(".ib-count") and "mima" in visible(".ib-table"))

    # another tab: the older card's schema-1 submission, reproduced, under its own name
    open_tab("relearn-old")
    wait.until(lambda d: "mima-v0" in visible(".ib-table"))
    cells = set(visible(".ib-table").split("\n"))
    assert {"mima-v0", "yes", "0.0.9", "0" * 16} <= cells and hash16 not in cells
