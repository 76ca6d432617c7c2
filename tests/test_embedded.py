"""The shipped embedded world: tiny-sd loads through the SD loader, weights fit the budget, the
committed world report is well formed, and the check's code path runs end to end."""
import json
from pathlib import Path

import pytest
import torch

from immunobench.backbones import EMBEDDED_WEIGHTS, load_backbone

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_weights_fit_the_budget():
    total = sum(p.stat().st_size for p in EMBEDDED_WEIGHTS.rglob("*") if p.is_file())
    assert total <= 40 * 2**20, f"shipped weights are {total / 2**20:.1f} MiB; the budget is 40 MiB"


def test_shipped_tiny_sd_is_world_trains_default_output():
    """The shipped weights are `world train` at today's defaults, from scratch: that run's report holds
    today's default config (so a config change must ship a new copy), and the shipped VAE reproduces
    the run's latent scale and its reconstruction MSE of the held-out references to the last digit."""
    from immunobench.world.train import WorldTrainConfig, config_record, reference_reconstruction_mse

    run = json.loads((ROOT / "benchmarks/results/world_crop_heads_seed0/train_report.json").read_text())
    assert run["config"] == json.loads(json.dumps(config_record(WorldTrainConfig())))
    model = load_backbone("tiny-sd")
    assert model.vae.config.scaling_factor == run["latent_scaling_factor"]
    assert reference_reconstruction_mse(model, model.resolution) == pytest.approx(run["vae_reference_mse"], rel=1e-5)


def test_tiny_sd_loads_through_the_sd_loader_and_samples_deterministically():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    from immunobench import diffusion

    model = load_backbone("tiny-sd")
    assert isinstance(model.unet, UNet2DConditionModel) and isinstance(model.vae, AutoencoderKL)
    assert isinstance(model.text_encoder, CLIPTextModel)
    assert model.resolution == 64 and model.spec.metric_family == "world"
    from immunobench.plugins import METRICS, judges_for

    assert judges_for("world") == {"C": "clip-world", "D": "dino-world", "L": "lpips-world", "acc": "classifier-world"}
    assert all(name in METRICS for family in ("world", "real") for name in judges_for(family).values())
    a = diffusion.sample(model, ["a photo of a church"], [3], steps=5)
    b = diffusion.sample(model, ["a photo of a church"], [3], steps=5)
    assert torch.equal(a, b)


def test_retrained_weights_keep_the_tiny_sd_spec(tmp_path):
    """`world check --weights DIR` checks a `world train --out DIR` copy with tiny-sd's judges and presets."""
    import shutil
    import subprocess
    import sys

    import pytest

    from immunobench.errors import BackboneError

    copy = tmp_path / "retrained"
    shutil.copytree(EMBEDDED_WEIGHTS / "tiny-sd", copy)
    shipped, retrained = load_backbone("tiny-sd"), load_backbone("tiny-sd", folder=copy)
    assert retrained.name == "tiny-sd" and retrained.folder == copy
    assert retrained.spec.metric_family == "world" and retrained.spec.guidance_scale == shipped.spec.guidance_scale
    assert retrained.fingerprint == shipped.fingerprint  # content, not paths
    with pytest.raises(BackboneError, match="no such folder"):
        load_backbone("tiny-sd", folder=tmp_path / "missing")
    r = subprocess.run([sys.executable, "-m", "immunobench.cli", "world", "check", "--weights", str(tmp_path / "missing"),
                        "--out", str(tmp_path / "report")], capture_output=True, text=True)
    assert r.returncode == 2 and "no such folder" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_committed_world_report_is_well_formed():
    report = json.loads((ROOT / "docs" / "tiny-sd-check" / "world_report.json").read_text())
    assert report["targets"]
    for t in report["targets"]:
        assert set(t) == {"name", "value", "threshold", "direction", "met", "per_seed", "interval", "images"}
        if t["interval"] is not None:  # an accuracy target: the judged sample's interval holds the value
            assert t["interval"][0] <= t["value"] <= t["interval"][1] and t["images"] >= 10
        assert t["direction"] in (">=", "<=")
        assert t["met"] == (t["value"] >= t["threshold"] if t["direction"] == ">=" else t["value"] <= t["threshold"])
        if t["per_seed"] is not None:  # an attack target: the mean over the report's LoRA seeds
            assert len(t["per_seed"]) == len(report["settings"]["lora_seeds"])
            assert t["value"] == pytest.approx(sum(t["per_seed"]) / len(t["per_seed"]), abs=1e-3)
    assert sum(t["per_seed"] is not None for t in report["targets"]) == 4 + 2
    # every target but the worst-concept ones and the similarity gains is a proportion of judged images
    assert sum(t["interval"] is not None for t in report["targets"]) == 2 + 3 + 4 * 3


def test_check_targets_apply_their_direction():
    from immunobench.world.check import Target, _markdown

    assert Target("a", 0.95, 0.95, ">=").met and not Target("a", 0.949, 0.95, ">=").met
    assert Target("b", 0.2, 0.2, "<=").met and not Target("b", 0.21, 0.2, "<=").met
    report = {"date": "2026-11-24", "model": {"name": "tiny-sd", "fingerprint": "x"}, "seconds": 1.0,
              "all_met": False, "targets": [vars(Target("b", 0.21, 0.2, "<="))], "settings": {"weights": "shipped"}}
    assert "| b | 0.210 |  | <= 0.2 | **no** |" in _markdown(report) and "weights `" not in _markdown(report)
    report["settings"]["weights"] = "/tmp/retrained"
    assert "weights `/tmp/retrained`" in _markdown(report)
    report["settings"]["sampler"] = {"sampler": "ddim", "steps": 25, "guidance_scale": 3.0}
    assert "DDIM, 25 steps, guidance 3.0" in _markdown(report)


def test_check_intervals_cover_the_judged_proportion():
    """The report's 95% intervals: Wilson's for one proportion, Newcombe's for a change of two."""
    import numpy as np

    from immunobench.world.check import accuracy_target, change_interval, wilson_interval

    assert wilson_interval(0.5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0.0, 10)[0] == 0.0 and wilson_interval(0.0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    narrow, wide = wilson_interval(0.35, 200), wilson_interval(0.35, 20)
    assert wide[0] < narrow[0] < 0.35 < narrow[1] < wide[1]
    # coverage: over 4000 draws of 20 images at p = 0.35 (Monet's rate under the guide), about 95%
    draws = np.random.default_rng(0).binomial(20, 0.35, 4000) / 20
    covered = np.mean([lo <= 0.35 <= hi for lo, hi in (wilson_interval(k, 20) for k in draws)])
    assert 0.92 <= covered <= 0.99
    # a change: no change is inside the interval of equal proportions, far outside that of 0.2 vs 0.8
    assert change_interval(0.9, 0.9, 70)[0] == 0.0
    lo, hi = change_interval(0.2, 0.8, 100)
    assert 0 < lo < 0.6 < hi
    t = accuracy_target("erased", 0.25, 20, 0.20, "<=")
    assert not t.met and t.images == 20 and t.interval[0] < 0.20 < t.interval[1]  # missed, within the sample's reach


def test_personalize_shows_every_checkpoint():
    from immunobench.plugins import configure, get_attack
    from immunobench.world.check import _Judges, personalize

    model = load_backbone("tiny-sd")
    seen = {}
    cfg = configure(get_attack("lora"), model.name, "personalization")
    sims, refs, last = personalize(model, "castle", _Judges("world"), cfg, [0, 2], 2,
                                   on_checkpoint=lambda step, images: seen.__setitem__(step, images.clone()))
    assert list(seen) == list(sims) == [0, 2]
    assert torch.equal(seen[2], last) and not torch.equal(seen[0], seen[2])  # step 2's LoRA changed the drawing


def test_personalize_trains_and_samples_the_prompt_it_is_given(monkeypatch):
    from immunobench.plugins import configure, get_attack
    from immunobench.world import check

    model = load_backbone("tiny-sd")
    sampled, trained = [], []
    generate, lora = check._generate, get_attack("lora")
    adapt = lora.adapt
    monkeypatch.setattr(check, "_generate", lambda m, prompts, *a: sampled.extend(prompts) or generate(m, prompts, *a))
    monkeypatch.setattr(lora, "adapt", lambda self, m, g, data, *a, **kw: trained.extend(
        p for x in data.attack.values() for p in x.prompts) or adapt(self, m, g, data, *a, **kw))
    cfg = configure(lora, model.name, "personalization")
    check.personalize(model, "castle", check._Judges("world"), cfg, [1], 1)
    assert set(sampled) == set(trained) == {"a photo of pll castle"}  # the card's attack token (group 2c-4)
    sampled.clear(), trained.clear()
    check.personalize(model, "castle", check._Judges("world"), cfg, [1], 1, prompt="a photo of castle")
    assert set(sampled) == set(trained) == {"a photo of castle"}


def test_world_check_runs_end_to_end_and_writes_the_report(tmp_path, monkeypatch):
    """A fast smoke run (2 images, 2 attack steps): the code path of `immunobench world check`."""
    from immunobench.plugins import BACKBONES, get_attack
    from immunobench.world import check
    from immunobench.world.check import PERSONAL_INSTANCES, world_check

    generated, personalized = set(), set()
    generate, lora = check._generate, get_attack("lora")
    adapt = lora.adapt

    def recording_generate(model, prompts, seed0, n):
        generated.update(prompts)
        return generate(model, prompts, seed0, n)

    def recording_adapt(self, model, group, data, *args, **kwargs):
        if set(data.attack) <= set(PERSONAL_INSTANCES):
            personalized.update(p for images in data.attack.values() for p in images.prompts)
        return adapt(self, model, group, data, *args, **kwargs)

    monkeypatch.setattr(check, "_generate", recording_generate)
    monkeypatch.setattr(lora, "adapt", recording_adapt)
    report = world_check(tmp_path, n_eval=2, relearn_step=2, personal_step=2, lora_seeds=2, attack_images=2,
                         sample_steps=2, log=lambda _: None)
    # a personalized instance is judged on the prompt LoRA learned it under (castle was not, before)
    assert len(personalized) == len(PERSONAL_INSTANCES) and personalized <= generated
    names = [t["name"] for t in report["targets"]]
    assert len(names) == 2 + 3 * 2 + 4 * 3 + 2 and len(set(names)) == len(names)
    # attack targets are the mean over the LoRA seeds, each seed's value kept; the others have none
    attack_targets = [t for t in report["targets"] if "LoRA" in t["name"]]
    assert len(attack_targets) == 4 + 2
    for t in attack_targets:
        assert len(t["per_seed"]) == 2 and t["value"] == pytest.approx(sum(t["per_seed"]) / 2, abs=1e-3)
    assert all(t["per_seed"] is None for t in report["targets"] if t not in attack_targets)
    relearned = [t for t in attack_targets if "re-learning" in t["name"]]
    # re-learning pools n_eval images × the group's targets (2 or 3) × the LoRA seeds
    assert sorted(t["images"] for t in relearned) == sorted([2 * 2 * 2, 2 * 3 * 2] * 2)
    assert "95% interval" in (tmp_path / "world_report.md").read_text()
    assert report["settings"]["lora_seeds"] == [0, 1]
    assert set(report["seconds_per_section"]) == {"judges", "generation", "erase and re-learn", "personalization"}
    assert "mean over LoRA seeds 0, 1" in (tmp_path / "world_report.md").read_text()
    assert report["settings"]["n_eval"] == 2 and report["settings"]["attack_images"] == 2
    assert report["settings"]["sampler"]["steps"] == 2  # the smoke run's DDIM steps, recorded
    # the shipped VAE represents the held-out instances (seeds 1 and 2 of world v2 did not: purse 0.65, 0.57)
    assert set(report["details"]["vae_reconstruction"]) == set(PERSONAL_INSTANCES)
    assert min(report["details"]["vae_reconstruction"].values()) > 0.9
    assert "Personalization's ceiling" in (tmp_path / "world_report.md").read_text()
    assert report["settings"]["sampler"]["guidance_scale"] == BACKBONES.get("tiny-sd")().guidance_scale
    saved = json.loads((tmp_path / "world_report.json").read_text())
    assert saved["targets"] == report["targets"]
    assert (tmp_path / "world_report.md").read_text().startswith("# World check")
    assert {p.name for p in (tmp_path / "world_check").iterdir()} >= {
        "relearn-style-tiny-sd.png", "relearn-object-tiny-sd.png", "personalization-purse.png"}
