"""The personalization card end to end: instance photos split into disjoint views, one class prompt
per target, each other concept adapted alone for MRSGR (shared by every group that scores it), the
others judged by their categories, and the mean over attacks of MIMA §5.2."""
import pandas as pd
import pytest
import torch
import yaml

from immunobench.cards import category_key, get_card
from immunobench.progress import Progress
from immunobench.references import customconcept101, split_views
from immunobench.runner import Runner, RunConfig

OTHERS = ["purse", "plant", "woodenpot", "sofa"]


@pytest.fixture(scope="module")
def small_card(tmp_path_factory):
    card = get_card("personalization").model_dump(mode="json", exclude={"path"})
    card.update(task="pers-small", checkpoints=[0, 2], report_step=2, others=OTHERS,
                data={"source": "references", "defense_images": 2, "attack_images": 3, "eval_images": 2},
                regularization={"prompt": "{category}", "images": 2})
    path = tmp_path_factory.mktemp("cards") / "pers-small.yaml"
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    return path


def _runner(card, tmp, groups=("2c-1",), workers=1):
    return Runner(RunConfig(task=str(card), defenses=("mima",), attacks=("lora",), groups=groups, out=str(tmp / "runs"),
                            store=str(tmp / "store"), sample_steps=2, workers=workers, overrides={"mima": {"steps": 2}}),
                  Progress(False), log=lambda _: None)


@pytest.fixture(scope="module")
def finished(small_card, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pers")
    runner = _runner(small_card, tmp, groups=("2c-1", "2c-2"), workers=2)
    run_dir = runner.run()
    return runner, run_dir, pd.read_parquet(run_dir / "results.parquet")


def test_views_are_disjoint_and_counted(small_card, tmp_path):
    runner = _runner(small_card, tmp_path)
    runner.prepare()
    group = runner.card.group("2c-1")
    data, keys = runner.task_data(group, seed=0)
    for c in group.targets:  # defense 2, attack 3, references 2 of one instance's renders, no photo twice
        split = [data.defense[c].images, data.attack[c].images, data.references[c]]
        assert [len(x) for x in split] == [2, 3, 2]
        flat = torch.cat(split).flatten(1)
        assert torch.cdist(flat, flat).add(torch.eye(len(flat)) * 1e9).min() > 0
        assert data.defense[c].prompts[0] == group.prompt(c, phase="defense")  # "a photo of sks purse"
        assert data.attack[c].prompts[0] == group.prompt(c, phase="attack")
    assert data.defense[group.targets[0]].prompts[0].split()[3] == "sks"
    assert data.attack[group.targets[1]].prompts[0].split()[3] == "pll"  # the second target's own token
    others = [c for c in group.others]
    assert set(data.attack) == set(group.targets) | set(others) and set(data.defense) == set(group.targets)
    for c in others:  # an other is adapted alone: it is the lone target, with the first attack token
        assert data.attack[c].prompts[0] == f"a photo of ktn {runner.card.concepts[c].category}"
    # one regularization set per target category (MIMA §5.2), each the card's count
    assert sorted(set(data.regularization.prompts)) == ["houseplant", "purse"]
    assert len(data.regularization.images) == 4
    view = runner.defense_view(group, data)  # the defense sees no other's photos or name
    assert set(view.images) == set(group.targets)
    assert not any(o in " ".join(view.prompts.values()) for o in ("sofa", "wooden pot"))


def test_an_instance_that_is_not_a_target_has_no_token():
    group = get_card("personalization").group("2c-1")
    with pytest.raises(ValueError, match="alone"):
        group.prompt("sofa")
    assert group.probe("sofa") == (category_key("sofa"), "a photo of a sofa")
    assert group.probe("plant") == ("category-houseplant", "a photo of a houseplant")


def test_split_views_with_few_photos():
    assert [len(r) for r in split_views(18, 5, 5, 8).values()] == [5, 5, 8]
    assert [len(r) for r in split_views(4, 5, 5, 8).values()] == [1, 1, 2]
    assert [len(r) for r in split_views(6, 5, 5, 8).values()] == [2, 2, 2]
    views = split_views(10, 5, 5, 8)
    assert sorted(i for r in views.values() for i in r) == list(range(10))


def test_customconcept101_folder(tmp_path, monkeypatch):
    from PIL import Image

    from immunobench.cards import Concept
    from immunobench.errors import UserError

    monkeypatch.setenv("IMMUNOBENCH_CUSTOMCONCEPT101", str(tmp_path))
    concept = Concept(name="purse", category="purse", cc101_folder="luggage_purse1")
    with pytest.raises(UserError, match="benchmark_dataset.zip"):
        customconcept101("purse", concept, 18, 32)
    folder = tmp_path / "benchmark_dataset" / "luggage_purse1"
    folder.mkdir(parents=True)
    for i in range(5):
        Image.new("RGB", (48, 40), (50 * i, 10, 200)).save(folder / f"{i:02d}.jpg")
    photos, source = customconcept101("purse", concept, 18, 32)
    assert photos.shape == (5, 3, 32, 32) and photos.min() >= -1 and photos.max() <= 1
    assert "5 photos" in source and "luggage_purse1" in source


def test_others_adapted_alone_and_shared(finished):
    runner, run_dir, df = finished
    assert not runner.failures
    report = runner.report_step
    for group in ("2c-1", "2c-2"):
        g = runner.card.group(group)
        mima = df[(df.group == group) & (df.defense == "mima")]
        # paired rows for targets and for every other (from its own adaptation), MRSGR derived
        paired = set(mima[mima.metric == "paired/D"].concept)
        assert paired == set(g.targets) | set(g.others)
        assert len(mima[mima.metric.str.startswith("MRSGR/")]) == 3
        # the others' accuracy is judged on their categories' probes, before and after the attack
        acc = df[(df.group == group) & (df.metric == "acc")]
        assert {category_key(runner.card.concepts[o].category) for o in g.others} <= set(acc.concept)
        assert set(df[(df.group == group) & (df.metric == "acc/others")].step) == {0, report}
    cells = {(c["group"], c["defense"]): c for c in runner.cells}
    for g1, g2 in (("2c-1", "2c-2"),):
        shared = set(runner.card.group(g1).others) & set(runner.card.group(g2).others)  # plant... as others
        none1, none2 = set(cells[(g1, "none")]["alone_keys"]), set(cells[(g2, "none")]["alone_keys"])
        mima1, mima2 = set(cells[(g1, "mima")]["alone_keys"]), set(cells[(g2, "mima")]["alone_keys"])
        assert len(none1 & none2) == len(shared) >= 1  # the undefended adaptation of a concept: once for both groups
        assert not mima1 & mima2  # each group's immunized model adapts its others itself
    assert "attack-alone" in cells[("2c-1", "mima")]["cost"]


def test_mean_over_attacks():
    from immunobench.leaderboard.results import COLUMNS, mean_over_attacks

    base = {"task": "t", "group": "2c-1", "concept": "*", "defense": "mima", "seed": 0, "step": 40}
    rows = [{**base, "attack": a, "metric": m, "value": v} for a, m, v in
            [("dreambooth", "MSGR/C", 10.0), ("textual_inversion", "MSGR/C", 20.0),
             ("dreambooth", "MRSGR/C", 1.0), ("dreambooth", "acc/targets", 0.5)]]
    out = mean_over_attacks(pd.DataFrame(rows, columns=COLUMNS))
    # MSGR/C: both attacks → 15; MRSGR/C: one attack missing → left out, not averaged over fewer
    assert out.to_dict("records") == [{**base, "attack": "mean", "metric": "MSGR/C", "value": 15.0}]


def test_class_images_drawn_once_per_model_and_class_prompt(small_card, tmp_path):
    """DreamBooth and Custom Diffusion share one stored draw of each class prompt by the attacked model,
    across the targets' run and the others' adaptations alone; the draw is the model's own sampling."""
    from immunobench.diffusion import sample
    from immunobench.finetune import CLASS_IMAGE_SEED_OFFSET

    runner = Runner(RunConfig(task=str(small_card), defenses=("none",), attacks=("dreambooth", "custom_diffusion"),
                              groups=("2c-1",), out=str(tmp_path / "runs"), store=str(tmp_path / "store"),
                              sample_steps=2, workers=1,
                              overrides={"dreambooth": {"num_class_images": 2, "lr": 1e-4},
                                         "custom_diffusion": {"class_images": 2}}),
                     Progress(False), log=lambda _: None)
    runner.run()
    assert not runner.failures
    group = runner.card.group("2c-1")
    classes = {group.class_prompt(c) for c in group.scored}  # purse, houseplant and the two others' categories
    assert runner.stats["computed"]["class-images"]["count"] == len(classes) == 4
    assert runner.stats["cached"]["class-images"] == len(classes)  # the second attack reuses every draw
    art = runner.store.get(runner.keys["class-images"][0])
    seeds = [CLASS_IMAGE_SEED_OFFSET, CLASS_IMAGE_SEED_OFFSET + 1]  # run seed 0
    assert art.meta["seeds"] == seeds
    drawn = sample(runner.model, [art.meta["prompt"]] * 2, seeds, steps=2)
    stored = art.tensors()["images"].float() / 127.5 - 1
    assert (stored - drawn).abs().max() <= 1 / 127.5 + 1e-6
