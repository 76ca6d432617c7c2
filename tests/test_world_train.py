"""Training the embedded model: a short run lowers the loss, and a stopped run resumes exactly."""
import numpy as np
import pytest
import torch

from immunobench import diffusion
from immunobench.architecture import SDArchitecture
from immunobench.backbones import load_backbone
from immunobench.progress import Progress
from immunobench.world.train import WorldTrainConfig, train_world_model

ARCH = SDArchitecture(unet_channels=(16, 32), vae_channels=(8, 16, 16), text_dim=16, text_heads=2, text_layers=1)


def _squares(n_per_colour=6, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for name, colour in [("red", (230, 20, 20)), ("blue", (20, 20, 230)), ("green", (20, 200, 20))]:
        for _ in range(n_per_colour):
            img = np.full((64, 64, 3), 40, np.uint8)
            x, y = rng.integers(0, 36, 2)
            img[y : y + 28, x : x + 28] = colour
            out.append((img, f"a photo of a {name} square"))
    return out


def _eval_loss(model, examples):
    images = torch.from_numpy(np.stack([e[0] for e in examples])).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        z = diffusion.encode_images(model, images)
        cond = diffusion.encode_prompts(model, [e[1] for e in examples])
        g = torch.Generator().manual_seed(123)
        return float(diffusion.diffusion_loss(model.unet, z, cond, model.scheduler, generator=g))


def test_short_training_lowers_the_loss_and_loads_like_sd(tmp_path):
    examples = _squares()
    cfg = WorldTrainConfig(arch=ARCH, vae_steps=60, unet_steps=80, vae_batch=8, unet_batch=8, checkpoint_every=40)
    report = train_world_model(examples, tmp_path / "model", tmp_path / "work", cfg, Progress(False))
    first, last = report["unet_loss_first_last"]
    assert last < first
    model = load_backbone(str(tmp_path / "model"))  # the one loader, as for SD
    assert abs(model.vae.config.scaling_factor - report["latent_scaling_factor"]) < 1e-6
    # the trained UNet predicts noise better than the untrained one on a fixed draw
    untrained = train_world_model(examples, tmp_path / "untrained", tmp_path / "work0",
                                  WorldTrainConfig(arch=ARCH, vae_steps=60, unet_steps=0, vae_batch=8), Progress(False))
    assert untrained["examples"] == len(examples)
    # the VAE's reconstruction of never-seen instance references is measured, and training improves it
    no_vae = train_world_model(examples, tmp_path / "no-vae", tmp_path / "work-1",
                               WorldTrainConfig(arch=ARCH, vae_steps=0, unet_steps=0), Progress(False))
    assert 0 < report["vae_reference_mse"] < no_vae["vae_reference_mse"]
    assert _eval_loss(model, examples) < _eval_loss(load_backbone(str(tmp_path / "untrained")), examples)


class _StepsTaken(Progress):
    """Counts the steps each stage advances."""

    def __init__(self):
        super().__init__(enabled=False)
        self.taken = {}

    def advanced(self, name, n):
        self.taken[name] += n

    def task(self, name, total, done=0):
        self.taken[name] = 0
        outer = self

        class _T:
            def advance(self, n=1, **_):
                outer.advanced(name, n)

        return _T()


class _KilledAfter(_StepsTaken):
    """Stops the run mid-stage, like a kill, after ``n`` steps in total."""

    def __init__(self, n):
        super().__init__()
        self.left = n

    def advanced(self, name, n):
        super().advanced(name, n)
        self.left -= n
        if self.left == 0:
            raise KeyboardInterrupt


def test_training_resumes_where_it_stopped(tmp_path):
    examples = _squares(3)
    cfg = WorldTrainConfig(arch=ARCH, vae_steps=10, unet_steps=20, vae_batch=4, unet_batch=4, checkpoint_every=5)
    straight = train_world_model(examples, tmp_path / "a", tmp_path / "wa", cfg, Progress(False))
    for kill_at in (7, 18):  # once inside the VAE stage, once inside the UNet stage
        with pytest.raises(KeyboardInterrupt):
            train_world_model(examples, tmp_path / "b", tmp_path / "wb", cfg, _KilledAfter(kill_at))
    resumed = train_world_model(examples, tmp_path / "b", tmp_path / "wb", cfg, Progress(False))
    assert resumed["unet_loss_first_last"] == straight["unet_loss_first_last"]
    a = load_backbone(str(tmp_path / "a")).unet.state_dict()
    b = load_backbone(str(tmp_path / "b")).unet.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_vae_from_reuses_a_finished_vae_stage_that_this_run_would_repeat(tmp_path):
    from immunobench.errors import UserError

    examples = _squares(3)
    base = dict(arch=ARCH, vae_steps=10, unet_steps=4, vae_batch=4, unet_batch=4, checkpoint_every=5)
    train_world_model(examples, tmp_path / "donor", tmp_path / "wd", WorldTrainConfig(**base), Progress(False))
    variant = WorldTrainConfig(**base, rare_token_captions=0.5)  # a caption-only change
    straight = train_world_model(examples, tmp_path / "a", tmp_path / "wa", variant, Progress(False))
    steps = _StepsTaken()
    adopted = train_world_model(examples, tmp_path / "b", tmp_path / "wb", variant, steps, vae_from=tmp_path / "wd")
    assert steps.taken == {"VAE": 0, "UNet + text encoder": 4}  # the VAE stage was adopted, not rerun
    assert adopted["vae_from"] == str(tmp_path / "wd")
    assert adopted["vae_loss_first_last"] == straight["vae_loss_first_last"]
    a, b = (load_backbone(str(tmp_path / m)) for m in ("a", "b"))
    for module in ("vae", "unet"):  # the whole run is the one it would have been
        sa, sb = getattr(a, module).state_dict(), getattr(b, module).state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    for changed, fields in (({"vae_lr": 5e-4}, "vae_lr"), ({"seed": 1}, "seed"), ({"vae_crop": 0}, "vae_crop")):
        with pytest.raises(UserError, match=fields):
            train_world_model(examples, tmp_path / "c", tmp_path / f"wc-{fields}",
                              WorldTrainConfig(**base | changed), Progress(False), vae_from=tmp_path / "wd")
    with pytest.raises(UserError, match="not a `world train --work` folder"):
        train_world_model(examples, tmp_path / "c", tmp_path / "wc", variant, Progress(False), vae_from=tmp_path)


def test_random_crops_are_windows_of_their_images():
    from immunobench.world.train import random_crops

    images = torch.randn(6, 3, 12, 10)
    crops = random_crops(images, 4, torch.Generator().manual_seed(0))
    assert crops.shape == (6, 3, 4, 4)
    for img, crop in zip(images, crops):
        windows = [img[:, t : t + 4, l : l + 4] for t in range(9) for l in range(7)]
        assert sum(torch.equal(crop, w) for w in windows) == 1
    again = random_crops(images, 4, torch.Generator().manual_seed(0))
    assert torch.equal(crops, again)  # offsets come from the generator alone


def test_vae_crops_and_attention_heads_train_a_model_that_loads_with_them(tmp_path, monkeypatch):
    """Crops reach the VAE (and only when asked), and the heads per level are the saved model's."""
    from dataclasses import replace

    from immunobench.world import train

    sizes = []
    crop = train.random_crops
    monkeypatch.setattr(train, "random_crops", lambda x, size, g: sizes.append(size) or crop(x, size, g))
    arch = replace(ARCH, attention_head_dim=(2, 4), cross_attention_levels=2)
    whole = train_world_model(_squares(2), tmp_path / "whole", tmp_path / "w0",
                              WorldTrainConfig(arch=ARCH, vae_steps=2, unet_steps=0, vae_batch=2, vae_crop=0), Progress(False))
    assert sizes == []
    report = train_world_model(_squares(2), tmp_path / "m", tmp_path / "w", WorldTrainConfig(
        arch=arch, vae_steps=3, unet_steps=2, vae_batch=2, unet_batch=2, vae_crop=32), Progress(False))
    assert sizes == [32] * 3 and report["config"]["vae_crop"] == 32 and whole["config"]["vae_crop"] == 0
    train.write_model_card(tmp_path / "m", report)
    assert "32 px crops" in (tmp_path / "m" / "README.md").read_text()
    unet = load_backbone(str(tmp_path / "m")).unet
    assert list(unet.config.attention_head_dim) == [2, 4]
    heads = [unet.down_blocks[i].attentions[0].transformer_blocks[0].attn1.heads for i in (0, 1)]
    assert heads == [2, 4]  # 16 and 32 channels: head size 8 at both levels


def test_world_train_bad_options_are_one_line_exit_2(tmp_path, capsys):
    from immunobench.cli import main

    base = ["world", "train", "--out", str(tmp_path / "m"), "--work", str(tmp_path / "w")]
    for extra, fix in ((["--attention-heads", "3", "4"], "divide the channels"),
                       (["--attention-heads", "2"], "takes 2 numbers"),
                       (["--vae-crop", "70"], "between 8 and the resolution"),
                       (["--device", "nonsense"], "not a torch device")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert fix in err and len(err.splitlines()) == 1
    assert not (tmp_path / "w").exists()  # refused before any work


def test_unattributed_art_changes_only_artwork_captions():
    from immunobench.world.concepts import PRETRAINING, get_concept
    from immunobench.world.train import UNATTRIBUTED_ART_CAPTIONS, pretraining_examples

    kinds = [get_concept(c).kind for c in PRETRAINING for _ in range(4)]
    names = [get_concept(c).name for c in PRETRAINING for _ in range(4)]
    named = pretraining_examples(4, unattributed_art=0.0)
    assert all(name in text for (_, text), kind, name in zip(named, kinds, names) if kind == "style")
    generic = pretraining_examples(4, unattributed_art=1.0)
    for (img_a, text_a), (img_b, text_b), kind in zip(named, generic, kinds):
        assert np.array_equal(img_a, img_b)  # the same images: a cached VAE stays valid
        assert (text_b in UNATTRIBUTED_ART_CAPTIONS) if kind == "style" else (text_b == text_a)
    half = pretraining_examples(4, unattributed_art=0.5)
    assert [t for _, t in half] == [t for _, t in pretraining_examples(4, unattributed_art=0.5)]
    share = np.mean([t in UNATTRIBUTED_ART_CAPTIONS for (_, t), k in zip(half, kinds) if k == "style"])
    assert 0.2 < share < 0.8


def test_anonymous_art_adds_generic_artworks_after_the_world():
    from immunobench.world.render import render_anonymous_artwork
    from immunobench.world.train import UNATTRIBUTED_ART_CAPTIONS, pretraining_examples

    plain = pretraining_examples(2)
    more = pretraining_examples(2, anonymous_art=5)
    assert len(more) == len(plain) + 5
    assert all(np.array_equal(a, b) and s == t for (a, s), (b, t) in zip(plain, more))
    for i, (img, text) in enumerate(more[len(plain):]):
        assert text in UNATTRIBUTED_ART_CAPTIONS
        assert np.array_equal(img, render_anonymous_artwork(i))


def _subparser(parser, name):
    import argparse

    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]


def test_rare_tokens_enter_only_chosen_captions_and_keep_their_words_in_order():
    from immunobench.world.train import insert_rare_tokens, unused_tokens

    model = load_backbone("tiny-sd")
    ids = diffusion.tokenize(model, ["a photo of a castle", "an artwork of claude monet", ""] * 20)
    pool = unused_tokens(ids, model.tokenizer)
    assert not set(pool.tolist()) & set(ids.unique().tolist())  # never a word the captions use, nor BOS/EOS
    g = torch.Generator().manual_seed(0)
    mixed = insert_rare_tokens(ids, 0.5, pool, g)
    eos, rare = int(ids[0, -1]), set(pool.tolist())
    changed = 0
    for before, after in zip(ids, mixed):
        extra = [t for t in after.tolist() if t in rare]
        if extra:
            changed += 1
            assert len(extra) == 1
            kept = after.tolist()
            kept.remove(extra[0])
            assert kept[: len(before) - 1] == before.tolist()[:-1]  # the caption's tokens, in order
            assert kept[0] == before[0] and after[-1] == eos  # after the start token, the end token kept
        else:
            assert torch.equal(before, after)
    assert 15 < changed < 45  # about half of 60
    assert torch.equal(insert_rare_tokens(ids, 0.0, pool, g), ids)


def test_rare_tokens_are_inserted_only_when_asked(tmp_path, monkeypatch):
    """At the default share the insertion never runs, so default training draws what it drew before."""
    from immunobench.world import train

    calls = []
    insert = train.insert_rare_tokens
    monkeypatch.setattr(train, "insert_rare_tokens", lambda *a: calls.append(a[1]) or insert(*a))
    for share in (0.0, 1.0):
        cfg = WorldTrainConfig(arch=ARCH, vae_steps=1, unet_steps=3, vae_batch=2, unet_batch=2,
                               rare_token_captions=share)
        train_world_model(_squares(2), tmp_path / f"m{share}", tmp_path / f"w{share}", cfg, Progress(False))
    assert calls == [1.0] * 3


def test_world_help_states_the_defaults_the_code_uses():
    import inspect
    import re

    from immunobench.cli import build_parser
    from immunobench.world.check import LORA_SEEDS
    from immunobench.world.train import WorldTrainConfig, pretraining_examples

    world = _subparser(build_parser(), "world")

    def stated(command, option):
        action = next(a for a in _subparser(world, command)._actions if option in a.option_strings)
        return re.search(r"\(default ([^;)]+)", action.help).group(1)

    cfg = WorldTrainConfig()
    assert float(stated("train", "--unattributed-art")) == cfg.unattributed_art
    assert int(stated("train", "--anonymous-art")) == cfg.anonymous_art
    assert float(stated("train", "--rare-token-captions")) == cfg.rare_token_captions
    assert int(stated("train", "--vae-crop")) == cfg.vae_crop
    assert tuple(map(int, stated("train", "--attention-heads").split())) == cfg.arch.attention_head_dim
    assert int(stated("check", "--lora-seeds")) == LORA_SEEDS
    # the renderer's defaults are the recipe's: a caller that omits them renders the shipped world
    params = inspect.signature(pretraining_examples).parameters
    assert params["unattributed_art"].default == cfg.unattributed_art
    assert params["anonymous_art"].default == cfg.anonymous_art
