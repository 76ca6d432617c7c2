"""Submitting a defense: `new defense` writes a file that passes `check-plugin` and immunizes as its
docstring says; `check-plugin` names every problem of a broken file, one line each, and exits 2."""
import copy
import importlib.util
import sys

import pytest
import torch

import immunobench.plugins as plugins
from immunobench.cli import main
from immunobench.diffusion import diffusion_loss, encode_images, encode_prompts
from immunobench.errors import UserError
from immunobench.plugin_check import check_file
from immunobench.scaffold import new_defense

HEAD = "from dataclasses import dataclass, field\nfrom immunobench.plugins import Defense, Immunized, register_defense\n"
GOOD_CLASS = '''
@register_defense("{name}")
class D(Defense):
    version = "1"

    @dataclass(frozen=True)
    class Config:
        scale: float = field(default=0.1, metadata={{"help": "how much"}})

    def immunize(self, model, data, cfg):
        return Immunized()
'''
BROKEN = {  # file body → the line check-plugin must print (a fragment of it)
    "nothing": ("x = 1\n", "registers nothing"),
    "two": (GOOD_CLASS.format(name="sub-one") + GOOD_CLASS.format(name="sub-two"), "registers 2 plugins"),
    "signature": (GOOD_CLASS.format(name="sub-sig").replace("(self, model, data, cfg)", "(self, model, data)"),
                  "must be immunize(self, model, data, cfg)"),
    "no method": (GOOD_CLASS.format(name="sub-nometh").replace("def immunize", "def immunise"),
                  "does not define immunize(self, model, data, cfg)"),
    "version": (GOOD_CLASS.format(name="sub-ver").replace('version = "1"', ""), "non-empty `version`"),
    "default": (GOOD_CLASS.format(name="sub-def").replace('field(default=0.1, metadata={"help": "how much"})',
                                                          'field(metadata={"help": "how much"})'), "has no default"),
    "help": (GOOD_CLASS.format(name="sub-help").replace('metadata={"help": "how much"}', "metadata={}"),
             "Config.scale has no help text"),
    "taken": (GOOD_CLASS.format(name="mima"), "the name is taken by immunobench.defenses.mima.MIMA"),
    "import": ("import os\nvalue = 1\nraise RuntimeError('boom')\n", ":5: RuntimeError on import: boom"),
    "syntax": ("def f(:\n", ":3: SyntaxError"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_check_plugin_names_each_problem(case, tmp_path):
    body, expected = BROKEN[case]
    file = tmp_path / f"{case.replace(' ', '_')}.py"
    file.write_text(HEAD + body)
    before = plugins.DEFENSES.names()
    problems, _ = check_file(file)
    assert any(expected in p for p in problems), problems
    assert all("\n" not in p for p in problems)
    assert plugins.DEFENSES.names() == before  # checking registers nothing in the caller


def test_check_plugin_passes_a_good_file_and_reports_all_problems_of_a_bad_one(tmp_path):
    good = tmp_path / "good.py"
    good.write_text(HEAD + GOOD_CLASS.format(name="sub-good"))
    assert check_file(good) == ([], ["defense sub-good (version '1', 1 config field(s))"])
    bad = tmp_path / "bad.py"  # no version and no help: both reported, not only the first
    bad.write_text(HEAD + GOOD_CLASS.format(name="sub-bad").replace('version = "1"', "")
                   .replace('metadata={"help": "how much"}', "metadata={}"))
    problems, _ = check_file(bad)
    assert len(problems) == 2 and "version" in problems[0] and "help text" in problems[1]


def test_new_defense_passes_check_plugin_in_a_fresh_interpreter(tmp_path, capsys):
    """check-plugin imports the file in a fresh interpreter of its own, so the CLI is called in-process here."""
    assert main(["new", "defense", "my-def", "--out", str(tmp_path)]) == 0
    file = tmp_path / "my_def.py"
    capsys.readouterr()
    assert main(["check-plugin", str(file)]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {file} registers defense my-def")
    file.write_text(file.read_text().replace('version = "0.1"', 'version = ""'))
    assert main(["check-plugin", str(file)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "version" in err
    assert main(["new", "defense", "my-def", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--force" in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["My Def", "mima", "class"])
def test_new_defense_refuses_bad_names(name, tmp_path):
    with pytest.raises(UserError):
        new_defense(name, tmp_path)


def test_the_template_raises_the_targets_loss_and_changes_only_cross_attention_kv(tiny_sd, style_view, tmp_path,
                                                                                 monkeypatch):
    file = new_defense("tmpl-check", tmp_path)
    registered = {}  # imported with a recording decorator: the registry stays as the other tests expect it
    monkeypatch.setattr(plugins, "register_defense", lambda name: lambda cls: registered.setdefault(name, cls))
    spec = importlib.util.spec_from_file_location("tmpl_check", file)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "tmpl_check", module)
    spec.loader.exec_module(module)
    cls = registered["tmpl-check"]
    view, images = style_view, style_view.images
    out = cls().immunize(tiny_sd, view, cls.Config(lr=1e-3, steps=5))
    assert out.unet and all(".attn2.to_k." in k or ".attn2.to_v." in k for k in out.unet)
    unet = copy.deepcopy(tiny_sd.unet)
    with torch.no_grad():
        latents = torch.cat([encode_images(tiny_sd, images[c].images) for c in view.targets])
        cond = torch.cat([encode_prompts(tiny_sd, images[c].prompts) for c in view.targets])
        before = diffusion_loss(unet, latents, cond, tiny_sd.scheduler, generator=torch.Generator().manual_seed(5))
        unet.load_state_dict(out.unet, strict=False)
        after = diffusion_loss(unet, latents, cond, tiny_sd.scheduler, generator=torch.Generator().manual_seed(5))
    assert after > before


def test_check_plugin_cli_on_a_missing_file(tmp_path, capsys):
    assert main(["check-plugin", str(tmp_path / "nope.py")]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "Traceback" not in err


def test_source_hash_follows_the_plugin_file(tmp_path, monkeypatch):
    from immunobench.defenses.mima import MIMA

    file = tmp_path / "hashed.py"
    file.write_text("class P:\n    version = '1'\n")
    spec = importlib.util.spec_from_file_location("hashed_plugin", file)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "hashed_plugin", module)
    spec.loader.exec_module(module)
    first = plugins.source_hash(module.P)
    file.write_text("class P:\n    version = '1'\n# a comment changes the file, so the keys\n")
    assert plugins.source_hash(module.P) != first and len(first) == 16
    assert plugins.source_hash(MIMA) == plugins.source_hash(MIMA) != first
