"""benchmarks/bench_sd_shapes.py: SD v1-4's exact configs, and its ops count what the project's code runs."""
import copy
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_sd_shapes as bench  # noqa: E402
from _bench import stage_flops  # noqa: E402


def test_sd_v1_4_configs_give_its_parameter_counts():
    from immunobench.architecture import sd_v1_4_components

    parts = sd_v1_4_components(device="meta")  # shapes only: instant, no memory
    counts = {k: sum(p.numel() for p in parts[k].parameters()) for k in ("unet", "text_encoder", "vae")}
    assert counts == {"unet": 859_520_964, "text_encoder": 123_060_480, "vae": 83_653_863}
    assert parts["unet"].config.sample_size * 2 ** (len(parts["vae"].config.block_out_channels) - 1) == 512


def _fresh(tiny_sd):
    """A copy with modules of its own (the ops add adapters and grads; the meta check moves them)."""
    model = copy.copy(tiny_sd)
    for part in ("unet", "vae", "text_encoder", "scheduler"):  # diffusers moves the schedule to the latents' device
        setattr(model, part, copy.deepcopy(getattr(tiny_sd, part)))
    return model


def _step_flops(op, model, size):
    prepared = bench.prepare(op, model, size)
    prepared.step()
    return stage_flops(prepared.step)


def test_lora_step_counts_as_the_attack(tiny_sd):
    from immunobench.attacks.lora import LoRA
    from immunobench.cards import get_card
    from immunobench.data import ConceptImages, TaskData
    from immunobench.plugins import configure

    group = get_card("relearn-style").group("3c-1")
    data = TaskData()
    for c in group.targets:
        data.attack[c] = ConceptImages(torch.rand(4, 3, 64, 64) * 2 - 1, [group.prompt(c)] * 4)
    steps = LoRA().adapt(tiny_sd, group, data, configure(LoRA, "sd-v1-4", "relearn", None), checkpoints=range(1, 10))
    next(steps)
    assert _step_flops("lora_b4", _fresh(tiny_sd), 16) == stage_flops(lambda: next(steps))


def test_mima_step_counts_as_immunize(tiny_sd):
    from immunobench.captions import all_card_names, generic_captions, scored_names
    from immunobench.cards import get_card
    from immunobench.data import ConceptImages, defense_view
    from immunobench.defenses.mima import MIMA
    from immunobench.plugins import configure

    card = get_card("relearn-style")
    group = card.group("2c-1")
    captions, source = generic_captions(tiny_sd.spec, all_card_names() | scored_names([card]))
    images = {c: ConceptImages(torch.rand(1, 3, 64, 64) * 2 - 1, [group.prompt(c, phase="defense")])
              for c in group.targets}
    view = defense_view(group, images, ConceptImages(torch.rand(1, 3, 64, 64) * 2 - 1, [card.regularization.prompt]),
                        tuple(captions), source)

    def immunize(steps):
        MIMA().immunize(tiny_sd, view, configure(MIMA, "sd-v1-4", "relearn", {"steps": steps}))

    one_step = stage_flops(lambda: immunize(2)) - stage_flops(lambda: immunize(1))
    assert _step_flops("mima_n2", _fresh(tiny_sd), 16) == one_step


def test_sampling_step_counts_as_partial_sample(tiny_sd):
    from immunobench.diffusion import partial_sample

    def run(done):
        partial_sample(tiny_sd, ["an artwork of Kelly McKernan"], [0], done, steps=bench.SAMPLE_STEPS)

    assert _step_flops("sample_cfg", tiny_sd, 16) == stage_flops(lambda: run(2)) - stage_flops(lambda: run(1))


@pytest.mark.parametrize("op", ["lora_b1", "mima_n2", "sample_cfg"])
def test_meta_counts_equal_real_ones(tiny_sd, op):
    """FLOPs and live bytes counted on the meta device are those of the real step (fused attention included)."""
    plan = bench.prepare(op, _fresh(tiny_sd), 16).info.get("merge_plan")  # the meta model cannot factor one

    def on(device):
        return bench.count_on_meta(op, None, [16], plan, model=lambda: _fresh(tiny_sd).to(device))["16"]

    assert on("meta") == on("cpu")
