"""A defense shipped as a package: installed into a venv, found through the ``immunobench.plugins``
entry point (no --plugin flag), run through the grid, and bundled with its installed source."""
import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pandas as pd

from immunobench.cli import main
from immunobench.leaderboard.bundle import read_bundle
from immunobench.scaffold import new_defense
from immunobench.store import Store

from conftest import GROUP

PYPROJECT = """[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "immunobench-epdef"
version = "0.1"

[project.entry-points."immunobench.plugins"]
epdef = "epdef_plugin"

[tool.setuptools]
py-modules = ["epdef_plugin"]
"""


def _venv_with_package(tmp: Path) -> Path:
    """A new venv holding only the plugin package; immunobench and torch come from this interpreter's
    site-packages through a .pth line (the venv is the user's, the heavy packages are not reinstalled)."""
    pkg = tmp / "pkg"
    new_defense("epdef", out=pkg)
    (pkg / "epdef.py").rename(pkg / "epdef_plugin.py")
    (pkg / "pyproject.toml").write_text(PYPROJECT)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp / "dist"), str(pkg)], check=True, capture_output=True)
    (wheel,) = (tmp / "dist").glob("immunobench_epdef-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "_outer.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--prefix", str(venv),
                    str(wheel)], check=True, capture_output=True)
    assert (site / "epdef_plugin.py").is_file()
    return venv


def test_an_installed_plugin_package_is_found_by_its_entry_point_and_runs(finished, small_card, tmp_path):
    venv = _venv_with_package(tmp_path)
    python = str(venv / "bin" / "python")
    cli = [python, "-m", "immunobench.cli"]
    found = "from importlib.metadata import entry_points; print([e.name for e in entry_points(group='immunobench.plugins')])"
    assert "epdef" in subprocess.run([python, "-c", found], capture_output=True, text=True, check=True).stdout
    # the package is in that venv only: the project's own interpreter does not see it
    assert "epdef" not in subprocess.run([sys.executable, "-c", found], capture_output=True, text=True,
                                         check=True).stdout

    tmp, _, _ = finished
    store = tmp_path / "store"
    shutil.copytree(tmp / "store", store)  # the none cells come from the shared run; only epdef's are computed
    run = subprocess.run(cli + ["run", "--task", str(small_card), "--defense", "epdef", "--groups", GROUP,
                                "--out", str(tmp_path / "runs"), "--store", str(store), "--name", "ep",
                                "--sample-steps", "2", "--set", "epdef.steps=2", "--workers", "1", "--quiet"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    run_dir = tmp_path / "runs" / "ep"
    results = pd.read_parquet(run_dir / "results.parquet")
    scored = results[(results.defense == "epdef") & (results.metric == "MRSGR/L")]
    assert len(scored) == 1 and scored.value.notna().all()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    entry = manifest["resolved"]["plugins"]["epdef"]
    installed = next((venv / "lib").glob("python3*/site-packages")) / "epdef_plugin.py"
    assert Path(entry["file"]).resolve() == installed.resolve() and entry["source_sha256"] != "no-source"

    assert Store(tmp / "store").has(next(c for c in manifest["cells"] if c["defense"] == "none")["attack_key"])

    # bundling reads the installed file the manifest names (in this process: no registry involved)
    assert main(["bundle", str(run_dir)]) == 0
    assert main(["verify", f"{run_dir}.bundle.zip"]) == 0
    assert read_bundle(f"{run_dir}.bundle.zip")["plugins/epdef.py"] == installed.read_bytes()
