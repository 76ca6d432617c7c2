"""A defense shipped as a package: installed into a venv, found through the ``immunobench.plugins``
entry point (no --plugin flag), run through the grid, and bundled with its installed source."""
import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pandas as pd

from immunobench.scaffold import new_defense

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
    listed = subprocess.run(cli + ["list", "defenses"], capture_output=True, text=True, check=True).stdout
    assert "epdef" in listed
    # the package is in this venv only: the project's own interpreter does not see it
    outer = subprocess.run([sys.executable, "-m", "immunobench.cli", "list", "defenses"], capture_output=True,
                           text=True, check=True).stdout
    assert "epdef" not in outer

    tmp, _, _ = finished
    store = tmp_path / "store"
    shutil.copytree(tmp / "store", store)  # the none cells come from the shared run; only epdef's are computed
    run = subprocess.run(cli + ["run", "--task", str(small_card), "--defense", "epdef", "--groups", GROUP,
                                "--out", str(tmp_path / "runs"), "--store", str(store), "--name", "ep",
                                "--sample-steps", "2", "--set", "epdef.steps=2", "--quiet"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    run_dir = tmp_path / "runs" / "ep"
    results = pd.read_parquet(run_dir / "results.parquet")
    scored = results[(results.defense == "epdef") & (results.metric == "MRSGR/L")]
    assert len(scored) == 1 and scored.value.notna().all()
    entry = json.loads((run_dir / "manifest.json").read_text())["resolved"]["plugins"]["epdef"]
    installed = next((venv / "lib").glob("python3*/site-packages")) / "epdef_plugin.py"
    assert Path(entry["file"]).resolve() == installed.resolve() and entry["source_sha256"] != "no-source"

    bundled = subprocess.run(cli + ["bundle", str(run_dir)], capture_output=True, text=True)
    assert bundled.returncode == 0, bundled.stderr
    verified = subprocess.run(cli + ["verify", f"{run_dir}.bundle.zip"], capture_output=True, text=True)
    assert verified.returncode == 0 and "epdef" in verified.stdout, verified.stderr
