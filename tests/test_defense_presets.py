"""Every defense's `tiny-sd` preset comes from one protocol (benchmarks/defense_presets.py, docs/defenses.md).

A defense whose protocol result is committed (benchmarks/results/defense_presets/<name>.json) runs on
tiny-sd at exactly the setting that result chose; the result is the protocol's (its nine settings, on
selection seeds the tables never use) and its choice follows the rule when recomputed from its own
figures. A defense whose protocol has not run keeps its paper defaults on tiny-sd."""
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _sweep import SELECTION_SEEDS  # noqa: E402
from defense_presets import SETTINGS  # noqa: E402
from mima_tiny_sd import choose  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "defense_presets"


@pytest.mark.parametrize("defense", sorted(SETTINGS))
def test_the_tiny_sd_preset_is_the_protocols_choice(defense):
    from immunobench.plugins import configure, get_defense

    cls = get_defense(defense)
    paper, tiny = configure(cls, "sd-v1-4", "relearn"), configure(cls, "tiny-sd", "relearn")
    path = RESULTS / f"{defense}.json"
    if not path.exists():
        assert tiny == paper, f"{defense} has a tiny-sd preset that no protocol result backs"
        return
    result = json.loads(path.read_text())
    assert {label: s["overrides"] for label, s in result["settings"].items()} == SETTINGS[defense]
    assert tuple(result["selection_seeds"]) == SELECTION_SEEDS
    assert (result["task"], result["group"]) == ("relearn-style", "2c-1")
    assert all(len(s["per_seed"]) == len(SELECTION_SEEDS) for s in result["settings"].values())
    assert result["chosen"] == choose(result["summary"])
    if result["chosen"] is None:  # no setting kept the others: the paper defaults stay, and the docs say so
        assert tiny == paper
    else:
        assert _in_force(tiny) == _in_force(replace(paper, **result["settings"][result["chosen"]]["overrides"]))


def _in_force(cfg) -> dict:
    """The config as it acts: IMMA's rates left unset are its adaptation script's (defenses/imma.py), so a
    preset may leave them unset where the chosen setting is the script's own and stay right for another
    adaptation."""
    values = asdict(cfg)
    fill = getattr(sys.modules[type(cfg).__module__], "resolved", None)
    return {**values, **(fill(cfg) if fill else {})}
