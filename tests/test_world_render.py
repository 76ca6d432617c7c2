"""The concept world: catalogue, deterministic renders, distinguishable concepts, captions, datasets.

Distinguishability is checked without any learned judge: a nearest-centroid classifier on
hand-made features (colour histogram, colour layout, gradient-orientation histograms).
Measured when these thresholds were set (64 px, 24 train / 12 test renders per class):
target artists 1.00, target objects 0.75 (chance 0.125 and 0.1); the mean distance between an
instance's reference views is 0.38-0.58 of their mean distance to random category members. The asserted thresholds are well below those numbers.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from immunobench.world import (
    CATEGORIES,
    CONCEPTS,
    INSTANCES,
    OTHER_ARTISTS,
    OTHER_OBJECTS,
    PRETRAINING,
    STYLES,
    TARGET_ARTISTS,
    TARGET_OBJECTS,
    NearestCentroid,
    caption,
    get_concept,
    handcrafted_features,
    load_imagefolder,
    plan,
    prompt,
    reference_views,
    render,
    render_batch,
    render_object_in_style,
    save_imagefolder,
    to_dataset,
    training_pairs,
)
from immunobench.world.captions import STYLE_TEMPLATES

ONE_OF_EACH_KIND = ["claude-monet", "church", "category-cat", "cat"]


# ---------------------------------------------------------------- catalogue
def test_catalogue_has_the_papers_concepts():
    assert {get_concept(a).name for a in TARGET_ARTISTS} == {
        "Claude Monet", "Kirbi Fagan", "Kelly McKernan", "Van Gogh", "Kilian Eng", "Thomas Kinkade", "Pablo Picasso",
        "Tyler Edlin"}
    assert TARGET_OBJECTS == ["cassette-player", "chain-saw", "church", "gas-pump", "tench", "garbage-truck",
                              "english-springer", "golf-ball", "parachute", "french-horn"]
    assert get_concept("english-springer").name == "English springer"
    assert len(OTHER_ARTISTS) >= 4 and len(OTHER_OBJECTS) >= 10 and len(CATEGORIES) == 13
    expected = {"purse": ("purse", "luggage_purse1"), "plant": ("houseplant", "decoritems_houseplant1"),
                "woodenpot": ("wooden pot", "decoritems_woodenpot"), "sofa": ("sofa", "furniture_sofa1"),
                "castle": ("castle", "scene_castle"), "motorbike": ("motorbike", "transport_motorbike1"),
                "lighthouse": ("lighthouse", "scene_lighthouse"), "glasses": ("glasses", "wearable_glasses"),
                "guitar": ("guitar", "instrument_music1"), "car": ("car", "transport_car1"),
                "chair": ("chair", "furniture_chair1"), "cat": ("cat", "pet_cat1"), "flower": ("flower", "flower_1")}
    assert {i: (get_concept(i).category, get_concept(i).cc101_folder) for i in INSTANCES} == expected
    for i in INSTANCES:
        c = get_concept(i)
        assert c.kind == "instance" and not c.in_pretraining and i not in PRETRAINING
        assert c.category_id in CATEGORIES and c.category_id in PRETRAINING


def test_lookup_resolves_table6_names_and_suggests_on_typos():
    assert get_concept("VanGogh").id == "van-gogh"
    assert get_concept("Mckernan").id == "kelly-mckernan"
    assert get_concept("springer").id == "english-springer"
    assert get_concept("horn").id == "french-horn"
    assert get_concept("chain saw").id == "chain-saw"
    assert get_concept("luggage_purse1").id == "purse"
    with pytest.raises(KeyError, match="van-gogh"):
        get_concept("van-gohg")


# ---------------------------------------------------------------- determinism
@pytest.mark.parametrize("cid", ONE_OF_EACH_KIND)
def test_same_inputs_give_identical_pixels_and_others_differ(cid):
    a = render(cid, 3, seed=7)
    assert np.array_equal(a, render(cid, 3, seed=7))
    assert not np.array_equal(a, render(cid, 4, seed=7))
    assert not np.array_equal(a, render(cid, 3, seed=8))


def test_renders_do_not_depend_on_process_or_global_rng():
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    here = render("van-gogh", 2, seed=1, size=32)
    assert np.random.rand() == expected_next  # the renderer never touches the global RNG
    code = ("import numpy as np; from immunobench.world import render; "
            "import sys; sys.stdout.buffer.write(render('van-gogh', 2, seed=1, size=32).tobytes())")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, check=True).stdout
    assert np.array_equal(np.frombuffer(out, np.uint8).reshape(here.shape), here)


def test_importing_the_world_loads_neither_torch_nor_datasets():
    code = "import sys, immunobench.world; print('torch' in sys.modules, 'datasets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# ---------------------------------------------------------------- every concept renders
@pytest.mark.parametrize("size", [64, 32])
def test_every_concept_renders_with_content(size):
    for cid in CONCEPTS:
        img = render(cid, 0, 0, size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8, cid
        assert img.std() > 10, f"{cid} renders almost flat"
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 40, f"{cid} has too few colours"


@pytest.mark.parametrize("cid", ONE_OF_EACH_KIND)
def test_layout_does_not_depend_on_size(cid):
    big = render(cid, 1, 0, 64).astype(np.float32)
    small = render(cid, 1, 0, 32).astype(np.float32)
    shrunk = np.asarray(Image.fromarray(big.astype(np.uint8)).resize((32, 32), Image.BOX), np.float32)
    assert np.corrcoef(shrunk.ravel(), small.ravel())[0, 1] > 0.85


def test_render_batch_is_the_renders_scaled_to_unit_range():
    items = [("church", 0), ("kilian-eng", 1)]
    batch = render_batch(items, seed=2, size=32)
    assert tuple(batch.shape) == (2, 3, 32, 32) and str(batch.dtype) == "torch.float32"
    assert float(batch.min()) >= -1.0 and float(batch.max()) <= 1.0
    first = render("church", 0, 2, 32).astype(np.float32) / 127.5 - 1.0
    assert np.allclose(batch[0].permute(1, 2, 0).numpy(), first, atol=1e-6)


def test_object_in_style_is_the_object_repainted():
    church_monet = render_object_in_style("church", "claude-monet", 0, size=32)
    assert church_monet.shape == (32, 32, 3)
    assert np.array_equal(church_monet, render_object_in_style("church", "claude-monet", 0, size=32))
    assert not np.array_equal(church_monet, render_object_in_style("church", "van-gogh", 0, size=32))
    assert render_object_in_style("purse", "van-gogh", 0, size=32).std() > 10  # instances too
    with pytest.raises(ValueError, match="style"):
        render_object_in_style("claude-monet", "van-gogh", 0)
    with pytest.raises(ValueError, match="not a style"):
        render_object_in_style("church", "tench", 0)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="index"):
        render("church", -1)
    with pytest.raises(ValueError, match="size"):
        render("church", 0, size=4)
    with pytest.raises(KeyError):
        render("no-such-concept", 0)


def test_artworks_never_show_target_objects():
    for style in STYLES:
        for i in range(30):
            p = plan(style, i)
            assert p.object_id is None or p.object_id not in TARGET_OBJECTS


# ---------------------------------------------------------------- distinguishability
def _nearest_centroid_accuracy(concept_ids, n_train=24, n_test=12, size=64) -> float:
    train_x, train_y, test_x, test_y = [], [], [], []
    for label, cid in enumerate(concept_ids):
        feats = handcrafted_features(np.stack([render(cid, i, 0, size) for i in range(n_train + n_test)]))
        train_x.append(feats[:n_train])
        test_x.append(feats[n_train:])
        train_y += [label] * n_train
        test_y += [label] * n_test
    clf = NearestCentroid().fit(np.concatenate(train_x), np.array(train_y))
    return clf.score(np.concatenate(test_x), np.array(test_y))


def test_target_artists_are_told_apart_by_simple_features():
    # measured 1.00 (chance 0.125)
    assert _nearest_centroid_accuracy(TARGET_ARTISTS) >= 0.8


def test_target_objects_are_told_apart_by_simple_features():
    # measured 0.75 (chance 0.1); objects vary in pose, colour and background, so this is harder
    assert _nearest_centroid_accuracy(TARGET_OBJECTS) >= 0.55


def test_instance_views_are_closer_to_each_other_than_to_their_category():
    for iid in INSTANCES:
        c = get_concept(iid)
        views = handcrafted_features(np.stack(reference_views(iid, size=64)))
        members = handcrafted_features(np.stack([render(c.category_id, i, 0, 64) for i in range(10)]))
        both = np.concatenate([views, members])
        mu, sd = both.mean(0), both.std(0) + 1e-6
        v, m = (views - mu) / sd, (members - mu) / sd
        view_view = np.linalg.norm(v[:, None] - v[None], axis=-1)
        view_member = np.linalg.norm(v[:, None] - m[None], axis=-1)
        within = view_view[~np.eye(len(v), dtype=bool)].mean()
        assert within < 0.75 * view_member.mean(), iid  # measured ratio 0.38-0.58
        nearest_other_view = (view_view + np.eye(len(v)) * 1e9).min(1)
        assert (nearest_other_view < view_member.min(1)).all(), iid


# ---------------------------------------------------------------- captions
def test_prompts_follow_the_papers_templates():
    assert prompt("claude-monet") == "an artwork of Claude Monet"
    assert prompt("church") == "a photo of a church"
    assert prompt("english-springer") == "a photo of an English springer"
    assert prompt("category-wooden-pot") == "a photo of a wooden pot"
    assert prompt("plant") == "a photo of sks houseplant"
    assert prompt("purse", identifier="<new1>") == "a photo of <new1> purse"
    assert caption("church", 5, variants=False) == "a photo of a church"


def test_captions_are_deterministic_and_name_what_is_shown():
    for cid in ONE_OF_EACH_KIND:
        assert caption(cid, 3, 1) == caption(cid, 3, 1)
    for style in TARGET_ARTISTS:
        for i in range(12):
            text = caption(style, i)
            assert get_concept(style).name in text
            bare = {t.format(artist=get_concept(style).name) for t in STYLE_TEMPLATES}
            p = plan(style, i)
            if p.scene == "object" and text not in bare:
                assert get_concept(p.object_id).name in text
    for i in range(6):
        assert "English springer" in caption("english-springer", i)
        assert "sks cat" in caption("cat", i)


def test_training_pairs_match_render_and_caption():
    pairs = list(training_pairs(["van-gogh", "church"], 2, seed=3, size=32))
    assert [cid for _, _, cid in pairs] == ["van-gogh", "van-gogh", "church", "church"]
    image, text, cid = pairs[3]
    assert np.array_equal(image, render("church", 1, 3, 32)) and text == caption("church", 1, 3)


# ---------------------------------------------------------------- datasets
def test_imagefolder_round_trip(tmp_path):
    pairs = list(training_pairs(["kilian-eng", "gas-pump", "guitar"], 2, size=32))
    ds = to_dataset(pairs)
    assert ds.column_names == ["image", "caption", "concept"]
    folder = save_imagefolder(ds, tmp_path / "world")
    assert (folder / "metadata.jsonl").exists()
    back = load_imagefolder(folder, cache_dir=tmp_path / "cache")
    assert back["caption"] == [t for _, t, _ in pairs]
    assert back["concept"] == [c for _, _, c in pairs]
    for row, (image, _, _) in zip(back, pairs):
        assert np.array_equal(np.asarray(row["image"].convert("RGB")), image)
    with pytest.raises(FileExistsError):
        save_imagefolder(ds, folder)


def test_anonymous_artworks_are_deterministic_and_each_by_its_own_painter():
    from immunobench.world.render import render_anonymous_artwork
    from immunobench.world.rng import stream
    from immunobench.world.scenes import SCENES
    from immunobench.world.styles import anonymous_style

    a = render_anonymous_artwork(5, seed=2)
    assert a.shape == (64, 64, 3) and a.std() > 5
    assert np.array_equal(a, render_anonymous_artwork(5, seed=2))
    assert not np.array_equal(a, render_anonymous_artwork(6, seed=2))
    styles = [anonymous_style(stream("t", i), tuple(SCENES)) for i in range(20)]
    ramps = {tuple(dict(s.steps)["gradient_map"]["ramp"]) for s in styles}
    assert len(ramps) == 20  # every painter has a palette of its own
    assert len({tuple(name for name, _ in s.steps) for s in styles}) >= 4  # and brushes differ
