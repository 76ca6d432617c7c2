"""A killed immunization resumes mid-way from its loop snapshot and releases the same tensors, bit
for bit, as a run that was never killed: every looping defense, kills in each phase of the two-phase
ones (FreezeAsGuard's fine-tuning and mask steps, IMMA's concepts, at and between their boundaries).
The runner's side (snapshot under the store key, resumed, then deleted) is in test_runner.py."""
import pytest
import torch

from immunobench.defenses.cp import CP, CPConfig
from immunobench.defenses.esd import ESD, ESDConfig
from immunobench.defenses.freezeasguard import FreezeAsGuard, FreezeAsGuardConfig
from immunobench.defenses.gift import GIFT, GIFTConfig
from immunobench.defenses.imma import IMMA, IMMAConfig
from immunobench.defenses.jt import JT, JTConfig
from immunobench.defenses.mima import MIMA, MIMAConfig
from immunobench.defenses.random_control import RandomConfig, RandomControl
from immunobench.snapshot import LoopSnapshot


class Killed(Exception):
    pass


class KilledAfter(LoopSnapshot):
    """Snapshots after every step; the process "dies" right after its ``saves``-th snapshot."""

    def __init__(self, file, saves: int):
        super().__init__(file, every_s=0)
        self.left = saves

    def save(self, step, state):
        written = super().save(step, state)
        self.left -= 1
        if self.left == 0:
            raise Killed(step)
        return written


TINY_MIMA = {"steps": 4, "outer_lr": 1e-3, "inner_lr": 1e-2, "prior_weight": 1.0}
# defense, config, kills (after how many snapshots): the phases' insides and boundaries
CASES = {
    "mima": (MIMA, MIMAConfig(**TINY_MIMA), [2]),
    "random": (RandomControl, RandomConfig(mima=TINY_MIMA), [1]),
    "esd": (ESD, ESDConfig(iterations=4, lr=1e-3, ddim_steps=2), [2]),
    "gift": (GIFT, GIFTConfig(steps=4, immunize_lr=1e-3, prior_lr=1e-3), [3]),
    "cp": (CP, CPConfig(steps=3, outer_lr=1e-3, inner_lr=1e-1), [1]),
    "jt": (JT, JTConfig(steps=3, lower_lr=1e-3, upper_lr=1e-3), [2]),
    # 2 concepts × 3 steps: at the end of the first concept, inside the second
    "imma": (IMMA, IMMAConfig(steps=3, lower_lr=1e-3, upper_lr=1e-3, adaptation="lora"), [3, 4]),
    # 3 fine-tuning steps, then 3 mask steps: at the end of fine-tuning (before the mask is drawn), among the mask steps
    "freezeasguard": (FreezeAsGuard, FreezeAsGuardConfig(finetune_steps=3, steps=3, user_steps=1, batch_size=2,
                                                         c_sparsity=300.0), [3, 5]),
}


def _immunize(cls, model, view, cfg, snapshot=None):
    defense = cls()
    defense.snapshot = snapshot
    torch.manual_seed(1234)  # as the runner seeds each stage from its key
    return defense.immunize(model, view, cfg)


def _same(a, b) -> None:
    for part in ("unet", "text_encoder"):
        x, y = getattr(a, part), getattr(b, part)
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), f"{part}.{k} differs after the resume"
    assert a.constraints == b.constraints
    assert a.info == b.info  # loss histories included: the resumed run replays nothing and skips nothing


@pytest.mark.parametrize("name", list(CASES))
def test_killed_immunization_resumes_bit_identical(name, tiny_sd, style_view, tmp_path):
    cls, cfg, kills = CASES[name]
    view = style_view
    whole = _immunize(cls, tiny_sd, view, cfg)
    assert whole.unet or whole.constraints.frozen
    for saves in kills:
        file = tmp_path / f"{name}-{saves}.pt"
        with pytest.raises(Killed):
            _immunize(cls, tiny_sd, view, cfg, KilledAfter(file, saves))
        assert file.exists()
        resumed_from = LoopSnapshot(file)
        _same(_immunize(cls, tiny_sd, view, cfg, resumed_from), whole)
        assert resumed_from.resumed_at is not None and resumed_from.resumed_at > 0


def test_a_snapshot_is_written_only_when_due_and_atomically(tmp_path):
    theta = {"w": torch.nn.Parameter(torch.ones(3))}
    opt = torch.optim.AdamW(theta.values(), lr=0.1)
    history: list[float] = []
    state = {"theta": theta, "optimizer": opt, "history": history, "generator": torch.Generator().manual_seed(0)}
    quiet = LoopSnapshot(tmp_path / "s.pt", every_s=3600)
    assert not quiet.save(1, state) and not (tmp_path / "s.pt").exists()
    snap = LoopSnapshot(tmp_path / "s.pt", every_s=0)
    theta["w"].sum().backward()
    opt.step()
    history.append(1.5)
    assert snap.save(1, state)
    assert [p.name for p in tmp_path.iterdir()] == ["s.pt"]  # no temporary file left beside it
    before = theta["w"].detach().clone()
    with torch.no_grad():
        theta["w"].add_(5.0)
    history.append(9.0)
    param = theta["w"]
    assert LoopSnapshot(tmp_path / "s.pt").restore(state) == 1
    assert theta["w"] is param and torch.equal(param, before)  # restored in place: the optimizer still holds it
    assert history == [1.5]
    snap.discard()
    assert not (tmp_path / "s.pt").exists() and LoopSnapshot(tmp_path / "s.pt").restore(state) == 0
