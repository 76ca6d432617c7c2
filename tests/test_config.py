"""Plugin configs: values coerced and checked by their field's type, errors that say what is allowed,
presets checked at registration, and presets visible in `show`, the manifest and the leaderboard."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Literal

import pytest
from pydantic import Field

from immunobench import plugins
from immunobench.cli import main
from immunobench.config import options
from immunobench.errors import ConfigError, PluginError
from immunobench.plugins import Defense, configure, get_attack, get_defense, resolve_config


def _set(plugin: str, field_: str, value: str, kind: str = "relearn"):
    """A value as `--set plugin.field=value` passes it: text, coerced by the field's type."""
    cls = get_defense(plugin) if plugin in plugins.DEFENSES else get_attack(plugin)
    return resolve_config(cls, "tiny-sd", kind, {field_: value},
                          origin=lambda f, v: f"--set {plugin}.{f}={v}").config


def test_command_line_text_is_coerced_by_the_fields_type():
    assert _set("mima", "steps", "100").steps == 100 and isinstance(_set("mima", "steps", "100").steps, int)
    assert _set("mima", "outer_lr", "1e-3").outer_lr == 1e-3  # YAML 1.1 reads "1e-3" as text; float() does not
    assert _set("uce", "guide", "null").guide is None  # str | None: YAML's null
    assert _set("uce", "guide", "1").guide == "1"  # a str field keeps digits as text
    assert _set("lora", "target_modules", "[to_q, to_k]").target_modules == ("to_q", "to_k")
    # a Python caller's typed values pass unchanged (and build the same artifact keys as before)
    assert configure(get_defense("mima"), "tiny-sd", "relearn", {"steps": 2}).steps == 2


@pytest.mark.parametrize("plugin, field_, value, expected", [
    ("mima", "steps", "abc", ["--set mima.steps=abc", "valid integer", "int >= 0", "defense mima", "paper default 300"]),
    ("mima", "steps", "-1", ["greater than or equal to 0", "int >= 0"]),
    ("mima", "steps", "true", ["valid integer"]),  # a boolean is no step count
    ("mima", "outer_lr", "0", ["greater than 0", "float > 0"]),
    ("lora", "rank", "0", ["attack lora", "int >= 1", "paper default 4"]),
    ("uce", "rows", "concepts", ["uce.rows=concepts", "Did you mean 'concept'?", "'concept' | 'script'"]),
    ("mima", "merge_rows", "rows", ["'concept' | 'prompt'"]),
])
def test_bad_values_name_plugin_field_value_and_what_is_allowed(plugin, field_, value, expected):
    with pytest.raises(ConfigError) as err:
        _set(plugin, field_, value)
    message = str(err.value)
    assert "\n" not in message
    for text in expected:
        assert text in message, (text, message)


def test_unknown_field_suggests_the_closest():
    with pytest.raises(ConfigError) as err:
        _set("mima", "stesp", "3")
    assert "--set mima.stesp=3: defense mima has no field 'stesp'. Did you mean: steps?" in str(err.value)
    with pytest.raises(ConfigError, match="defense none takes no options"):
        _set("none", "steps", "3")


def test_cli_bad_set_is_one_line_exit_2(tmp_path, capsys):
    code = main(["run", "--task", "relearn-style", "--set", "uce.rows=concepts", "--out", str(tmp_path / "runs"),
                 "--store", str(tmp_path / "store"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("immunobench: error: --set uce.rows=concepts: ") and "Did you mean 'concept'?" in err


def test_presets_resolve_in_order_and_record_their_source():
    resolved = resolve_config(get_defense("mima"), "tiny-sd", "personalization", {"steps": "7"})
    assert resolved.paper_default["steps"] == 300 and resolved.paper_default["outer_lr"] == 3e-5
    assert list(resolved.presets) == ["personalization", "tiny-sd", "tiny-sd/personalization"]
    assert resolved.config.steps == 7 and resolved.source["steps"] == "override"
    assert resolved.config.outer_lr == 2e-4 and resolved.source["outer_lr"] == "preset tiny-sd"
    assert resolved.source["merge_rows"] == "paper default"
    # every step value of the presets is shadowed by --set; personalization's outer_lr by tiny-sd's
    assert resolved.presets_in_force == ["tiny-sd"]


# --- presets are checked when the plugin registers -------------------------------------------

@dataclass(frozen=True)
class _Cfg:
    steps: Annotated[int, Field(ge=1)] = field(default=10, metadata={"help": "steps"})
    mode: Literal["a", "b"] = field(default="a", metadata={"help": "mode"})


def _register(name: str, presets: dict, config=_Cfg):
    plugins.discover()  # the backbones are known, so a backbone key is checked at once
    cls = type("P", (Defense,), {"version": "1", "Config": config, "presets": presets, "__module__": __name__})
    return plugins.Registry("defense", Defense, check=plugins._check_config).register(name)(cls)


@pytest.mark.parametrize("presets, expected", [
    ({"tiny-sdd": {"steps": 2}}, "preset key 'tiny-sdd' names no task kind (relearn, personalization) and no "
                                 "registered backbone"),
    ({"tiny-sd/relearning": {"steps": 2}}, "preset key 'tiny-sd/relearning' is not 'backbone/kind'"),
    ({"nobody/relearn": {"steps": 2}}, "preset key 'nobody/relearn'"),
    ({"relearn": {"stesp": 2}}, "defense bad: preset 'relearn': stesp=2: defense bad has no field 'stesp'. Did you mean: steps?"),
    ({"tiny-sd": {"steps": 0}}, "defense bad: preset 'tiny-sd': steps=0: input should be greater than or equal to 1"),
    ({"tiny-sd": {"mode": "c"}}, "allowed: 'a' | 'b'"),
])
def test_a_bad_preset_fails_registration_naming_plugin_and_key(presets, expected):
    with pytest.raises(PluginError) as err:
        _register("bad", presets)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_good_presets_register_and_a_default_outside_its_range_does_not():
    cls = _register("good", {"relearn": {"steps": "3"}, "tiny-sd": {"mode": "b"}, "sd-v1-4/personalization": {}})
    assert configure(cls, "tiny-sd", "relearn") == _Cfg(steps=3, mode="b")

    @dataclass(frozen=True)
    class Broken:
        steps: Annotated[int, Field(ge=1)] = field(default=0, metadata={"help": "steps"})

    with pytest.raises(PluginError, match="Config.steps default 0"):
        _register("broken", {}, config=Broken)


def test_backbone_keys_are_checked_once_discovery_has_registered_the_backbones(monkeypatch):
    monkeypatch.setattr(plugins, "_discovery_done", False)
    monkeypatch.setattr(plugins, "_PRESETS_TO_CHECK", [])
    cls = _register("early", {"sd-v9": {"steps": 2}})  # before discovery: the backbone may be yet to come
    assert plugins._PRESETS_TO_CHECK == [("defense early", cls)]
    monkeypatch.setattr(plugins, "_discovery_started", False)
    monkeypatch.setattr(plugins, "_discover_all", lambda: None)
    with pytest.raises(PluginError, match="preset key 'sd-v9' names no task kind"):
        plugins.discover()


# --- every field explains itself --------------------------------------------------------------

def _builtins():
    for registry in (plugins.DEFENSES, plugins.ATTACKS, plugins.METRICS):
        for name in registry.names():
            cls = registry.get(name)
            if cls.__module__.startswith("immunobench."):
                yield name, cls


def test_every_builtin_config_field_has_help_and_registers_valid_presets():
    seen = 0
    for name, cls in _builtins():
        config = getattr(cls, "Config", object)
        for option in options(config):
            assert option.help, f"{name}.{option.name} has no help text"
            seen += 1
        if dataclasses.is_dataclass(config):
            assert not hasattr(config, "__post_init__"), f"{name}: declare ranges on the fields, not in __post_init__"
    assert seen >= 20


def test_show_prints_type_range_paper_default_presets_help_and_value_in_force(capsys):
    assert main(["show", "defense", "mima", "--task", "relearn-style"]) == 0
    out = capsys.readouterr().out
    block = out[out.index("\n  steps:"):out.index("\n  inner_lr:")]
    assert "steps: int >= 0" in block and "outer steps" in block and "paper default: 300" in block
    assert "preset personalization: 500" in block and "preset tiny-sd: 60" in block
    assert "in force on tiny-sd, relearn: 60 (preset tiny-sd)" in block
    assert "merge_rows: 'concept' | 'prompt'" in out

    assert main(["show", "attack", "lora", "--model", "sd-v1-4"]) == 0
    out = capsys.readouterr().out
    assert "in force on sd-v1-4, relearn: 0.0001 (paper default)" in out  # no kind given: each kind
    assert "in force on sd-v1-4, personalization: 0.0001 (paper default)" in out
    assert main(["show", "task", "relearn-style", "--model", "sd-v1-4"]) == 2


# --- presets are visible in the manifest and the leaderboard ----------------------------------

def test_the_manifest_records_paper_default_presets_and_value_in_force(tmp_path):
    from immunobench.runner import RunConfig, Runner

    runner = Runner(RunConfig(task="relearn-style", defenses=("mima",), store=str(tmp_path / "store"),
                              overrides={"mima": {"steps": "2"}}), log=lambda _: None)
    record = runner.resolved_config(get_defense("mima"), "mima").manifest()  # what manifest.json's resolved.plugins holds
    assert record["paper_default"]["steps"] == 300 and record["paper_default"]["prior_weight"] == 1.0
    assert record["presets"] == {"tiny-sd": {"outer_lr": 2e-4, "inner_lr": 1e-2, "steps": 60, "prior_weight": 5.0}}
    assert record["config"]["steps"] == 2 and record["config"]["prior_weight"] == 5.0
    assert record["source"]["steps"] == "override" and record["source"]["prior_weight"] == "preset tiny-sd"
    assert record["overrides"] == {"steps": 2} and record["presets_in_force"] == ["tiny-sd"]


def test_the_leaderboard_labels_rows_run_under_a_preset():
    from test_report import _manifest, _results

    from immunobench.leaderboard.report import leaderboard

    manifest = _manifest()
    manifest["resolved"].update(defenses=["none", "mima"], attacks=["lora"], plugins={
        "none": {"presets_in_force": [], "overrides": {}},
        "mima": {"presets_in_force": ["tiny-sd"], "overrides": {}},
        "lora": {"presets_in_force": [], "overrides": {"rank": 8}},
    })
    results = _results()
    text, tidy = leaderboard(results, manifest)
    assert "| mima [tiny-sd preset] (lora [--set]) | CLIP |" in text
    assert "| mima [tiny-sd preset] (lora [--set]) after attack |" in text
    assert "| none (lora [--set]) after attack |" in text
    assert "immunobench show defense mima --model tiny-sd" in text
    assert set(tidy.defense) == {"none", "mima"}  # the data keeps the plugin's name
