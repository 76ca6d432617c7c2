"""Bad input, all of it: each case below prints one line on stderr, exits with code 2, shows no
traceback, is refused before any work starts (no generation, training or report rendering; no run
folder) and leaves every file it could reach — the store included — as it was."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from immunobench.cli import main

ERROR_LINE = re.compile(r"^immunobench[\w -]*: error: \S")
RUN = ["run", "--task", "relearn-style", "--groups", "2c-1"]

# The work a bad input must never reach: each raises WorkStarted when called.
WORK = ["immunobench.runner.Runner._walk", "immunobench.runner.Runner._compute_in_workers",
        "immunobench.store.Store.put", "immunobench.world.check.world_check",
        "immunobench.world.train.pretraining_examples", "immunobench.world.train.train_world_model",
        "immunobench.world.judges.train_judges", "immunobench.leaderboard.report.render_report"]


class WorkStarted(BaseException):
    """Not an Exception: nothing on the way may catch it and carry on."""


def run(*extra: str, out: str = "{out}", store: str = "{store}") -> list[str]:
    return [*RUN, *extra, "--out", out, "--store", store]


def card(**changes) -> dict:
    """relearn-style as a file's mapping, with ``changes`` applied (None deletes a key)."""
    from immunobench.cards import get_card

    data = get_card("relearn-style").model_dump(mode="json", exclude={"path"})
    for key, value in changes.items():
        data.pop(key) if value is None else data.__setitem__(key, value)
    return data


def case(name: str, argv: list[str], expected: str, marks=()):
    """A bad input: argv with {placeholders} for the fixture's paths, a fragment its error must contain."""
    return pytest.param(argv, expected, id=name, marks=marks)


CASES = [
    # run: names, numbers, devices
    case("unknown-task", ["run", "--task", "relearn-styel", "--out", "{out}", "--store", "{store}"], "Did you mean: relearn-style"),
    case("missing-task", ["run", "--out", "{out}"], "--task"),
    case("unknown-defense", run("--defense", "mimaa"), "unknown defense 'mimaa'"),
    case("empty-defense-list", run("--defense", ","), "comma-separated"),
    case("unknown-attack", run("--attack", "lorra"), "unknown attack 'lorra'"),
    case("unknown-group", run("--groups", "9c-9"), "unknown group '9c-9'"),
    case("seed-not-a-number", run("--seeds", "x"), "invalid int value"),
    case("negative-workers", run("--workers", "-1"), "--jobs/--workers"),
    case("negative-jobs", run("--jobs", "-1"), "--jobs"),
    case("address-without-ray", run("--address", "auto"), "add --executor ray"),
    case("negative-eval-images", run("--eval-images", "-1"), "--eval-images"),
    case("not-a-device", run("--device", "gpu0"), "not a torch device"),
    case("personalization-unknown-group", ["run", "--task", "personalization", "--groups", "2c-9", "--out", "{out}",
                                           "--store", "{store}"], "unknown group '2c-9'"),
    # run: overrides the card itself would reject
    case("report-step-not-a-checkpoint", run("--report-step", "3"), "not one of the checkpoints"),
    case("checkpoints-unsorted", run("--checkpoints", "400", "0"), "strictly increasing"),
    case("checkpoints-duplicated", run("--checkpoints", "0", "0", "400"), "strictly increasing"),
    case("checkpoints-miss-report-step", run("--checkpoints", "0", "50"), "400 is not one of the checkpoints"),
    case("negative-checkpoint", run("--checkpoints", "-5", "400"), "non-negative"),
    # run: nothing a user names writes outside --out/--store
    case("name-climbs-out", run("--name", "../escaped"), "one folder name"),
    case("name-absolute", run("--name", "/tmp/escaped"), "one folder name"),
    case("name-with-separator", run("--name", "a/b"), "one folder name"),
    case("name-dotdot", run("--name", ".."), "one folder name"),
    case("out-under-a-file", run(out="{file}/runs"), "is a file, not a folder"),
    case("out-unwritable", run(out="/proc/immunobench-runs"), "cannot write"),
    case("store-under-a-file", run(store="{file}/store"), "is a file, not a folder"),
    case("store-unwritable", run(store="/proc/immunobench-store"), "cannot write"),
    # run: --model
    case("model-uncached-hub-id", run("--model", "nobody/no-such-model"), "nobody/no-such-model"),
    case("model-empty-folder", run("--model", "{empty}"), "{empty}"),
    # run: --set
    case("set-not-a-number", run("--set", "mima.steps=abc"), "mima"),
    case("set-unknown-field", run("--set", "mima.stesp=3"), "stesp"),
    case("set-not-a-choice", run("--set", "uce.rows=concepts"), "rows"),
    case("set-unknown-plugin", run("--set", "nosuchplugin.x=1"), "'nosuchplugin' is not a plugin of this run"),
    case("set-without-value", run("--set", "mima.steps"), "PLUGIN.FIELD=VALUE"),
    # run: --attack-sweep
    case("sweep-without-values", run("--attack-sweep", "lora.lr"), "ATTACK.FIELD=VALUE"),
    case("sweep-empty-value", run("--attack-sweep", "lora.lr=1e-4,"), "ATTACK.FIELD=VALUE"),
    case("sweep-field-twice", run("--attack-sweep", "lora.lr=1e-4", "lora.lr=1e-3"), "swept twice"),
    case("sweep-unknown-field", run("--attack-sweep", "lora.rnak=4,16"), "Did you mean: rank"),
    case("sweep-not-a-number", run("--attack-sweep", "lora.lr=1e-4,fast"), "--attack-sweep lora.lr=fast"),
    case("sweep-out-of-range", run("--attack-sweep", "lora.rank=0,4"), "--attack-sweep lora.rank=0"),
    case("sweep-not-an-attack-of-the-run", run("--attack-sweep", "mima.steps=1,2"), "'mima' is not an attack of this run"),
    case("sweep-budget-not-a-checkpoint", run("--attack-sweep", "lora.report_step=100,125"), "not one of the run's checkpoints"),
    case("sweep-seed", run("--attack-sweep", "lora.seed=1,2"), "--seeds"),
    # --plugin
    case("plugin-missing-file", run("--plugin", "{tmp}/nope.py"), "no such file"),
    case("plugin-registers-nothing", run("--plugin", "{plugins}/nothing.py"), "registers nothing"),
    case("plugin-syntax-error", ["list", "defenses", "--plugin", "{plugins}/syntax.py"], "SyntaxError"),
    case("plugin-raises-on-import", ["list", "defenses", "--plugin", "{plugins}/raises.py"], "ZeroDivisionError"),
    case("plugin-claims-mima", ["list", "defenses", "--plugin", "{plugins}/clash.py"], "claimed twice"),
    # task cards
    case("card-bad-yaml", run("--task", "{cards}/bad-yaml.yaml"), "not valid YAML"),
    case("card-not-a-mapping", run("--task", "{cards}/list.yaml"), "a YAML mapping"),
    case("card-unknown-field", run("--task", "{cards}/unknown-field.yaml"), "checkpoint: unknown key"),
    case("card-unknown-concept", run("--task", "{cards}/unknown-concept.yaml"), "unknown concept 'nobody'"),
    case("card-report-step-not-a-checkpoint", run("--task", "{cards}/report-step.yaml"), "not one of the checkpoints"),
    case("card-epsilon-out-of-range", run("--task", "{cards}/epsilon.yaml"), "worst_case.epsilon"),
    case("card-include-cycle", ["show", "task", "{cards}/cycle.yaml"], "include cycle"),
    case("card-missing-file", ["show", "task", "{cards}/absent.yaml"], "no such task card file"),
    # report and runs: run folders
    case("report-unknown-run", ["report", "no-such-run", "--out", "{runs}"], "not a run folder"),
    case("report-not-a-run-folder", ["report", "{tmp}", "--out", "{runs}"], "not a run folder"),
    case("report-missing-manifest", ["report", "no-manifest", "--out", "{runs}"], "manifest.json"),
    case("report-corrupt-manifest", ["report", "corrupt-manifest", "--out", "{runs}"], "corrupt manifest"),
    case("report-manifest-not-a-run", ["report", "foreign-manifest", "--out", "{runs}"], "corrupt manifest (no run"),
    case("report-corrupt-results", ["report", "corrupt-results", "--out", "{runs}"], "results.parquet: unreadable"),
    case("runs-corrupt-manifest", ["runs", "--out", "{runs}"], "corrupt manifest"),
    # show and list
    case("show-unknown-defense", ["show", "defense", "mimaa"], "Did you mean: mima"),
    case("show-unknown-kind", ["show", "defenses", "mima"], "invalid choice"),
    case("show-unknown-task", ["show", "task", "relearn"], "unknown task 'relearn'"),
    case("show-unknown-backbone", ["show", "backbone", "nobody/no-such-model"], "nobody/no-such-model"),
    case("list-unknown-kind", ["list", "defences"], "invalid choice"),
    case("list-missing-include-path", ["list", "tasks", "--include-path", "{tmp}/no-such-folder"], "no such folder"),
    case("list-broken-card-on-include-path", ["list", "tasks", "--include-path", "{cards}"], "{cards}"),
    # world
    case("world-no-subcommand", ["world"], "required"),
    case("world-check-out-under-a-file", ["world", "check", "--out", "{file}/check"], "is a file, not a folder"),
    case("world-check-out-unwritable", ["world", "check", "--out", "/proc/immunobench-check"], "cannot write"),
    case("world-check-name-climbs-out", ["world", "check", "--out", "{out}", "--name", "../x"], "one folder name"),
    case("world-check-zero-evals", ["world", "check", "--out", "{out}", "--n-eval", "0"], "--n-eval"),
    case("world-check-missing-weights", ["world", "check", "--out", "{out}", "--weights", "{tmp}/none"], "--weights"),
    case("world-train-out-under-a-file", ["world", "train", "--out", "{file}/model", "--work", "{tmp}/work"], "is a file"),
    case("world-train-bad-crop", ["world", "train", "--out", "{out}", "--vae-crop", "3"], "--vae-crop"),
    case("world-train-judges-unwritable", ["world", "train-judges", "--out", "/proc/judges"], "cannot write"),
]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time, and every folder."""
    found = {}
    for path in sorted(root.rglob("*")):
        stat = path.stat()
        found[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns) if path.is_file() else ("dir",)
    return found


@pytest.fixture
def tree(tmp_path) -> Path:
    """A store holding an artifact and an old leftover, broken cards, plugins and run folders."""
    tmp = tmp_path
    store = tmp / "store"
    (store / "ab" / "ab12").mkdir(parents=True)
    (store / "ab" / "ab12" / "meta.json").write_text('{"key": "ab12"}')
    (store / "tmp" / "ab12.killed").mkdir(parents=True)  # a killed writer's leftover: old enough to clean
    os.utime(store / "tmp" / "ab12.killed", (time.time() - 7200,) * 2)
    (tmp / "a-file").write_text("not a folder")
    (tmp / "empty").mkdir()
    (tmp / "cwd").mkdir()

    cards = tmp / "cards"
    cards.mkdir()
    (cards / "bad-yaml.yaml").write_text("task: x\ngroups: [unclosed\n")
    (cards / "list.yaml").write_text("- a\n- b\n")
    (cards / "cycle.yaml").write_text("include: cycle.yaml\ntask: cycle\n")
    typo = card(task="unknown-field")
    typo["checkpoint"] = typo.pop("checkpoints")
    for name, data in {"unknown-field": typo,
                       "unknown-concept": card(task="unknown-concept", groups={"g": ["nobody"]}),
                       "report-step": card(task="report-step", report_step=7),
                       "epsilon": card(task="epsilon", worst_case={"epsilon": 1.5})}.items():
        (cards / f"{name}.yaml").write_text(yaml.safe_dump(data))

    plugins = tmp / "plugins"
    plugins.mkdir()
    (plugins / "nothing.py").write_text("from immunobench.plugins import Defense\n\nclass Forgot(Defense):\n"
                                        "    version = '1'\n")
    (plugins / "syntax.py").write_text("def immunize(:\n")
    (plugins / "raises.py").write_text("1 / 0\n")
    (plugins / "clash.py").write_text("from immunobench.plugins import Defense, register_defense\n\n"
                                      "@register_defense('mima')\nclass Mine(Defense):\n    version = '1'\n")

    runs = tmp / "runs"
    for name in ("no-manifest", "corrupt-manifest", "foreign-manifest", "corrupt-results"):
        (runs / name).mkdir(parents=True)
        (runs / name / "results.parquet").write_bytes(b"PAR1 truncated" if name == "corrupt-results" else b"")
    (runs / "corrupt-manifest" / "manifest.json").write_text('{"run": {"task": ')
    (runs / "foreign-manifest" / "manifest.json").write_text('{"name": "someone else\'s"}')
    manifest = {"run": {"task": "t"}, "resolved": {}, "model": {"name": "m"}, "timings": {}, "failures": [], "date": ""}
    (runs / "corrupt-results" / "manifest.json").write_text(json.dumps(manifest))
    return tmp


def _paths(tree: Path) -> dict[str, str]:
    return {"tmp": str(tree), "store": str(tree / "store"), "out": str(tree / "cwd" / "out"), "file": str(tree / "a-file"),
            "empty": str(tree / "empty"), "cards": str(tree / "cards"), "plugins": str(tree / "plugins"),
            "runs": str(tree / "runs")}


@pytest.fixture
def no_work(monkeypatch, tree):
    """Work raises WorkStarted; the working directory is inside the snapshot, so stray output shows."""
    import immunobench.leaderboard.report  # noqa: F401 — so that their attributes can be replaced
    import immunobench.world.check  # noqa: F401
    import immunobench.world.judges  # noqa: F401
    import immunobench.world.train  # noqa: F401

    def forbidden(*args, **kwargs):
        raise WorkStarted("work started on bad input")

    for target in WORK:
        monkeypatch.setattr(target, forbidden)
    monkeypatch.chdir(tree / "cwd")


@pytest.mark.parametrize("argv, expected", CASES)
def test_bad_input_is_one_line_exit_2_before_any_work(argv, expected, tree, no_work, capsys):
    paths = _paths(tree)
    argv = [a.format(**paths) for a in argv]
    before = _snapshot(tree)
    started = time.time()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    seconds = time.time() - started
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and ERROR_LINE.match(lines[0]), err
    assert expected.format(**paths) in lines[0]
    assert "Traceback" not in out + err
    assert _snapshot(tree) == before  # the store, the run folders, the cards, the working directory
    assert seconds < 30, f"took {seconds:.0f} s: validation should not need the work"


def test_there_are_at_least_30_cases():
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("argv, expected", [
    (run(out="{file}/runs"), "is a file, not a folder"),
    (["world", "check", "--out", "{file}/check", "--n-eval", "1"], "is a file, not a folder"),
    (["report", "corrupt-manifest", "--out", "{runs}"], "corrupt manifest"),
    (["list", "defenses", "--plugin", "{plugins}/nothing.py"], "registers nothing"),
], ids=["run-out", "world-check-out", "report-corrupt-manifest", "plugin-registers-nothing"])
def test_the_process_prints_one_line_and_no_traceback(argv, expected, tree):
    """In a real process: what reaches the terminal, not what a test harness caught."""
    argv = [a.format(**_paths(tree)) for a in argv]
    before = _snapshot(tree)
    r = subprocess.run([sys.executable, "-m", "immunobench.cli", *argv], capture_output=True, text=True,
                       cwd=tree / "cwd", timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert len(r.stderr.splitlines()) == 1 and ERROR_LINE.match(r.stderr) and expected in r.stderr
    assert _snapshot(tree) == before


def test_overrides_the_card_accepts_pass_and_set_the_run(tree, no_work):
    """The good twins of the override cases: what a card file may say, the command line may say."""
    from immunobench.runner import RunConfig, Runner

    paths = _paths(tree)
    runner = Runner(RunConfig(task="relearn-style", groups=("2c-1",), out=paths["out"], store=paths["store"],
                              checkpoints=(0, 3, 7), report_step=3, eval_images=2, name="fine"),
                    log=lambda _: None)
    assert (runner.checkpoints, runner.report_step, runner.eval_images) == ([0, 3, 7], 3, 2)
    assert runner.run_dir == Path(paths["out"]) / "fine"
    assert not runner.run_dir.exists()  # made when the run starts, not when it is checked


def test_world_check_writes_a_run_folder_not_the_working_directory(tmp_path, monkeypatch, capsys):
    """By default `world check` writes runs/world-check-<date>-<time>/, as `run` does; --out is the folder of
    run folders and --name the run folder's name."""
    import immunobench.world.check

    written = []

    def fake_check(out, **kwargs):
        written.append(Path(out))
        return {"targets": [{"name": "t", "met": True}], "seconds": 0.0}

    monkeypatch.setattr(immunobench.world.check, "world_check", fake_check)
    monkeypatch.chdir(tmp_path)
    assert main(["world", "check"]) == 0
    assert main(["world", "check", "--out", "elsewhere", "--name", "mine"]) == 0
    assert re.fullmatch(r"runs/world-check-\d{8}-\d{6}", str(written[0]))
    assert written[1] == Path("elsewhere/mine")
    assert f"report in {written[1]}/world_report.md" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # the check itself makes the folder; nothing else was written
