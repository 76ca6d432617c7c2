"""The design's folders install as one namespace; nothing generic lands at the top of site-packages."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_one_namespace(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("immunobench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top <= {"immunobench", next(n.split("/")[0] for n in names if ".dist-info/" in n)}, top
    for package in ("defenses", "attacks", "metrics", "tasks", "leaderboard"):
        assert f"immunobench/{package}/__init__.py" in names
        assert package not in top
    for card in ("relearn-style", "relearn-object", "personalization", "_relearn"):
        assert f"immunobench/tasks/{card}.yaml" in names
    assert "immunobench/defenses/none.py" in names
    shipped = [p.relative_to(ROOT).as_posix() for p in (ROOT / "immunobench" / "weights").rglob("*") if p.is_file()]
    assert shipped and all(s in names for s in shipped), sorted(set(shipped) - set(names))
    assert not any(n.startswith("tests/") for n in names)


def test_installed_mapping_resolves():
    import immunobench.attacks
    import immunobench.defenses
    import immunobench.metrics

    assert Path(immunobench.defenses.__file__).parent == ROOT / "defenses"
    assert Path(immunobench.metrics.__file__).parent == ROOT / "metrics"
