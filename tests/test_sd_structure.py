"""Stable Diffusion v1-4's own structure, at reduced width, through one cell end to end.

The model has SD v1-4's block types and counts, layers per block, heads, VAE depth and schedule file
(``SDArchitecture.sd_v1_4``) with narrow channels; it is written by ``save_pretrained`` into a Hugging Face
cache laid out as ``hf download CompVis/stable-diffusion-v1-4`` leaves it, and loaded by name as a user's
download is: the ``sd-v1-4`` spec's sampler, presets and caption pool are what run, at 64 px (8×8 latents,
the VAE's factor 8). Only the judges are the world's (``--judges world``): SD's real ones need downloads.
The full-width model is measured in the benchmarks, not here.
"""
import json
import math
import shutil

import pandas as pd
import pytest
import torch

from immunobench.architecture import SD_V1_4, SDArchitecture, build_components, save_components
from immunobench.backbones import fingerprint, load_backbone

from conftest import GROUP

SD_ID = "CompVis/stable-diffusion-v1-4"
# SD v1-4's widths are unet 320, vae 128, text 768, with 32 norm groups; 16 keep one cell near 20 s of CPU
WIDTHS = dict(unet_width=16, vae_width=16, text_dim=48, norm_groups=16, resolution=64)
# parameter counts of SD v1-4's published UNet, VAE and text encoder (CLIP ViT-L/14's): a check, independent of
# SD_V1_4's fields, that they describe SD v1-4
SD_V1_4_PARAMETERS = {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}


@pytest.fixture(scope="module")
def sd_cache(tmp_path_factory):
    """The snapshot folder of a reduced-width SD v1-4 in a Hugging Face cache that this module's tests use."""
    from huggingface_hub import constants

    cache = tmp_path_factory.mktemp("hf") / "hub"
    repo = cache / ("models--" + SD_ID.replace("/", "--"))
    commit = "133a221b8aa7292a167afc5127cb63fb5005638b"  # any 40-hex revision; refs/main names it
    snapshot = repo / "snapshots" / commit
    save_components(build_components(SDArchitecture.sd_v1_4(**WIDTHS), seed=0), snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(constants, "HF_HUB_CACHE", str(cache))
        yield snapshot


def _full_size():
    """SD v1-4's UNet, VAE and text encoder from the published fields, on the meta device (no memory)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        return {"unet": UNet2DConditionModel(**SD_V1_4["unet"]), "vae": AutoencoderKL(**SD_V1_4["vae"]),
                "text_encoder": CLIPTextModel(CLIPTextConfig(**SD_V1_4["text_encoder"]))}


def _tree(module: torch.nn.Module) -> list[tuple[str, str]]:
    return [(name, type(m).__name__) for name, m in module.named_modules()]


def test_the_loaded_model_has_sd_v1_4s_structure(sd_cache):
    model = load_backbone("sd-v1-4")
    assert model.folder == sd_cache and model.spec.source == SD_ID  # the cache's snapshot, by name
    assert (model.spec.sample_steps, model.spec.guidance_scale, model.spec.metric_family) == (50, 7.5, "real")
    assert (model.vae_scale_factor, model.resolution, model.unet.config.sample_size) == (8, 64, 8)

    full = _full_size()
    for part, count in SD_V1_4_PARAMETERS.items():
        assert sum(p.numel() for p in full[part].parameters()) == count, part
        mine = getattr(model, part)
        # the same modules of the same classes under the same names, the same tensors (names and ranks)
        assert _tree(mine) == _tree(full[part]), part
        assert {k: v.dim() for k, v in mine.state_dict().items()} == {k: v.dim() for k, v in full[part].state_dict().items()}

    widths = {"unet": ("block_out_channels", "cross_attention_dim", "sample_size", "norm_num_groups"),
              "vae": ("block_out_channels", "sample_size", "norm_num_groups"),
              "text_encoder": ("hidden_size", "intermediate_size")}
    for part, published in SD_V1_4.items():
        if part == "scheduler":
            continue
        config = getattr(model, part).config
        config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        for key, value in published.items():
            if key not in widths[part]:
                assert config[key] == value, (part, key)
    unet = model.unet.config
    assert unet.norm_num_groups == model.vae.config.norm_num_groups == WIDTHS["norm_groups"]
    assert [c // unet.block_out_channels[0] for c in unet.block_out_channels] == [1, 2, 4, 4]  # SD's 320·(1, 2, 4, 4)
    assert unet.mid_block_type == "UNetMidBlock2DCrossAttn" and unet.cross_attention_dim == model.text_encoder.config.hidden_size
    kinds = [type(m).__name__ for m in model.unet.modules()]
    assert (kinds.count("Transformer2DModel"), kinds.count("ResnetBlock2D")) == (16, 22)  # 3·2 + 3·3 + 1; 4·2 + 4·3 + 2
    heads = {m.heads for m in model.unet.modules() if type(m).__name__ == "Attention"}
    assert heads == {SD_V1_4["unet"]["attention_head_dim"]}  # diffusers' "attention_head_dim" 8 is 8 heads

    written = json.loads((sd_cache / "scheduler" / "scheduler_config.json").read_text())
    assert {k: written[k] for k in SD_V1_4["scheduler"]} == SD_V1_4["scheduler"]  # the file, as SD ships it
    assert model.scheduler.config.clip_sample is False and model.scheduler.config.steps_offset == 1


def test_a_pndm_schedule_without_clip_sample_samples_as_sd_pipelines_do(sd_cache, tmp_path):
    """PNDMScheduler's own save_pretrained writes no clip_sample; the loader sets it false (and steps_offset 1),
    as StableDiffusionPipeline does, so DDIM does not clip the latents and sampling is unchanged."""
    from immunobench.diffusion import sample

    folder = tmp_path / "sd"
    shutil.copytree(sd_cache, folder)
    config = folder / "scheduler" / "scheduler_config.json"
    written = json.loads(config.read_text())
    del written["clip_sample"], written["steps_offset"]
    config.write_text(json.dumps(written))
    with_file, without = load_backbone("sd-v1-4"), load_backbone(str(folder))
    assert without.info["scheduler_fixed"] == {"clip_sample": False, "steps_offset": 1} and not with_file.info
    prompts, seeds = ["an artwork of Claude Monet"], [0]
    assert torch.equal(sample(with_file, prompts, seeds, steps=2), sample(without, prompts, seeds, steps=2))


@pytest.fixture(scope="module")
def sd_run(sd_cache, small_card, tmp_path_factory):
    """One cell of the small card (MIMA and none, LoRA) on the reduced SD v1-4, by name, world judges."""
    from immunobench.progress import Progress
    from immunobench.runner import RunConfig, Runner

    tmp = tmp_path_factory.mktemp("sd-run")
    cfg = RunConfig(task=str(small_card), defenses=("mima",), groups=(GROUP,), model="sd-v1-4", judges="world",
                    out=str(tmp / "runs"), store=str(tmp / "store"), name="sd", sample_steps=2,
                    overrides={"mima": {"steps": 2}}, workers=1)
    runner = Runner(cfg, Progress(False), log=lambda _: None)
    return runner, runner.run()


def test_one_cell_runs_end_to_end_on_sd_v1_4s_structure(sd_cache, sd_run):
    from immunobench.diffusion import select_parameters

    runner, run_dir = sd_run
    assert not runner.failures, runner.failures
    manifest = json.loads((run_dir / "manifest.json").read_text())
    model = manifest["model"]
    assert (model["name"], model["source"], model["folder"]) == ("sd-v1-4", SD_ID, str(sd_cache))
    assert model["fingerprint"] == fingerprint(sd_cache)
    resolved = manifest["resolved"]
    # the sd-v1-4 spec's sampler at the model's resolution; its presets (none: the papers' defaults), not tiny-sd's
    assert resolved["sampler"] == {"sampler": "ddim", "steps": 2, "guidance_scale": 7.5, "resolution": 64}
    mima = resolved["plugins"]["mima"]
    assert "tiny-sd" not in mima["presets"] and mima["config"]["outer_lr"] == mima["paper_default"]["outer_lr"]
    assert resolved["metric_family"] == "world" and manifest["run"]["judges"] == "world"
    assert all(j["name"].endswith("-world") for j in resolved["judges"].values())
    assert resolved["defense_view"]["captions"]["source"].startswith("templates over COCO")  # SD's caption pool

    results = pd.read_parquet(run_dir / "results.parquet")
    assert set(results.defense) == {"none", "mima"} and set(results.group) == {GROUP}
    star = results[results.concept == "*"]
    for metric in ("MSGR/C", "MSGR/D", "MSGR/L", "MRSGR/C", "acc/targets", "acc/others"):
        assert metric in set(star.metric), metric
    assert set(results[results.metric == "MSGR/C"].step) == {0, 2}
    assert all(math.isfinite(v) for v in results.value), results[~results.value.map(math.isfinite)]

    # the immunized UNet differs from the start model (UCE-erased) in exactly the tensors MIMA trains
    cell = next(c for c in manifest["cells"] if c["defense"] == "mima")
    start_key = manifest["artifacts"]["start"][0]
    base = load_backbone("sd-v1-4")
    start = runner.store.get(start_key)
    start = base.with_weights(unet=start.tensors("unet"), text_encoder=start.tensors("text_encoder"))
    immunized = runner.store.get(cell["model_key"])
    assert immunized.meta["stage"] == "immunize"
    immunized = start.with_weights(unet=immunized.tensors("unet"), text_encoder=immunized.tensors("text_encoder"))
    before, after = start.unet.state_dict(), immunized.unet.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == set(select_parameters(start.unet, mima["config"]["upper_params"]))
    assert all(torch.isfinite(after[name]).all() for name in changed)
    assert all(torch.equal(a, b) for a, b in zip(start.text_encoder.state_dict().values(),
                                                  immunized.text_encoder.state_dict().values()))


def test_widths_that_do_not_fit_sd_v1_4s_structure_are_refused():
    assert SDArchitecture.sd_v1_4() == SDArchitecture.sd_v1_4(320, 128, 768, 32, 512)  # the defaults: SD v1-4
    assert SDArchitecture.sd_v1_4().unet_channels == tuple(SD_V1_4["unet"]["block_out_channels"])
    with pytest.raises(ValueError, match="unet_width 20 .*text_dim 50 .*resolution 96"):
        SDArchitecture.sd_v1_4(unet_width=20, vae_width=16, text_dim=50, norm_groups=16, resolution=96)


def test_an_unknown_judges_family_stops_the_run_before_any_work(small_card, tmp_path, capsys):
    from immunobench.cli import main
    from immunobench.errors import UserError
    from immunobench.runner import RunConfig, Runner

    with pytest.raises(UserError, match="unknown metric family 'nosuch'; known: real, world"):
        Runner(RunConfig(task=str(small_card), model="sd-v1-4", judges="nosuch", out=str(tmp_path / "runs"),
                         store=str(tmp_path / "store")))
    assert main(["run", "--task", str(small_card), "--judges", "nosuch", "--out", str(tmp_path / "runs"),
                 "--store", str(tmp_path / "store"), "--quiet"]) == 2
    assert "unknown metric family 'nosuch'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "store").exists()
