"""Registries: names are the API; collisions and unknown names are errors that say what to do."""
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint

import pytest

from immunobench import plugins
from immunobench.errors import PluginError, UnknownNameError
from immunobench.plugins import Defense, Similarity
from immunobench.registry import Registry

CLI = [sys.executable, "-m", "immunobench.cli"]


def _defense(version="1"):
    return type("D", (Defense,), {"version": version, "__module__": "tests.fake"})


def test_register_get_aliases_and_patterns():
    reg = Registry("defense", Defense)
    cls = reg.register("mima", "mima-sd15")(_defense())
    assert reg.get("mima") is cls and reg.get("mima-sd15") is cls
    assert cls.registered_name == "mima"
    assert reg.names("mima*") == ["mima", "mima-sd15"]


def test_unknown_name_lists_known_and_suggests_closest():
    reg = Registry("defense", Defense)
    reg.register("mima")(_defense())
    reg.register("imma")(_defense())
    with pytest.raises(UnknownNameError) as err:
        reg.get("mimma")
    msg = str(err.value)
    assert "Did you mean: mima" in msg and "Known defenses: imma, mima" in msg
    assert "\n" not in msg


def test_name_claimed_twice_is_an_error_not_an_override():
    reg = Registry("defense", Defense)
    first = reg.register("mima")(_defense())
    with pytest.raises(PluginError, match="claimed twice"):
        reg.register("mima")(_defense())
    assert reg.get("mima") is first


def test_version_and_base_class_are_required():
    reg = Registry("defense", Defense)
    with pytest.raises(PluginError, match="version"):
        reg.register("x")(_defense(version=""))
    with pytest.raises(PluginError, match="must subclass Defense"):
        reg.register("y")(type("S", (Similarity,), {"version": "1"}))


def test_builtin_discovery_finds_the_none_defense():
    assert "none" in plugins.DEFENSES.names()
    assert "sd-v1-4" in plugins.BACKBONES.names()


def test_plugin_file_registers_and_clashes_are_reported(tmp_path):
    good = tmp_path / "my_defense.py"
    good.write_text(textwrap.dedent('''
        from immunobench.plugins import Defense, register_defense

        @register_defense("test-file-defense")
        class FileDefense(Defense):
            """A defense from a user's file."""
            version = "0.1"
    '''))
    plugins.load_plugin_file(good)
    assert plugins.get_defense("test-file-defense").version == "0.1"

    clash = tmp_path / "clash.py"
    clash.write_text(good.read_text().replace("FileDefense", "Other"))
    with pytest.raises(PluginError, match="claimed twice"):
        plugins.load_plugin_file(clash)


def test_entry_point_plugins_are_loaded(monkeypatch, tmp_path):
    (tmp_path / "ep_plugin_mod.py").write_text(textwrap.dedent('''
        from immunobench.plugins import Defense, register_defense

        @register_defense("test-entry-point-defense")
        class EPDefense(Defense):
            version = "2"
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = EntryPoint(name="mine", value="ep_plugin_mod", group=plugins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(plugins, "entry_points", lambda group: [ep] if group == plugins.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(plugins, "_discovery_started", False)
    plugins.discover()
    assert plugins.get_defense("test-entry-point-defense").version == "2"


def _run(*args):
    return subprocess.run([*CLI, *args], capture_output=True, text=True)


def test_cli_unknown_defense_is_one_line_exit_2(capsys):
    from immunobench.cli import main

    assert main(["show", "defense", "mimaa"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert "unknown defense 'mimaa'" in err and "none" in err


def test_cli_plugin_with_syntax_error_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "broken.py"
    bad.write_text("def immunize(:\n    pass\n")
    from immunobench.cli import main

    assert main(["list", "defenses", "--plugin", str(bad)]) == 2  # nothing registers: safe in this process
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().count("\n") == 0
    assert str(bad) in err and "SyntaxError" in err and "line 1" in err


def test_cli_plugin_file_shows_up_in_list(tmp_path):
    f = tmp_path / "plug.py"
    f.write_text(textwrap.dedent('''
        from immunobench.plugins import Defense, register_defense

        @register_defense("cli-listed")
        class Listed(Defense):
            """Listed through --plugin."""
            version = "3"
    '''))
    r = _run("list", "defenses", "--plugin", str(f))
    assert r.returncode == 0, r.stderr
    assert "cli-listed" in r.stdout and "Listed through --plugin." in r.stdout
