"""Textual Inversion and Custom Diffusion: the learned token is bound to the card's words, only the
allowed tensors move, frozen ones stay bit-identical, the input model is untouched, and each lowers
its own loss on its concept."""
import copy
from dataclasses import replace

import pytest
import torch

from immunobench.cards import get_card
from immunobench.data import ConceptImages, TaskData
from immunobench.diffusion import diffusion_loss, encode_images, encode_prompts
from immunobench.plugins import Constraints, get_attack
from immunobench.tokens import add_tokens, check_prompt, embedding_name



def _data(group, n=4, seed=0):
    """Per target a few smooth, distinct images (a colour field with a bright square), so a few steps
    have something to fit."""
    g = torch.Generator().manual_seed(seed)
    attack = {}
    for k, c in enumerate(group.targets):
        x = torch.rand(n, 3, 1, 1, generator=g).expand(n, 3, 64, 64).clone() * 2 - 1
        x[:, k % 3, 8 + 8 * k : 32 + 8 * k, 8:40] = 1.0
        attack[c] = ConceptImages(x, [group.prompt(c)] * n)
    return TaskData(attack=attack)


def _snapshot(model):
    return ({n: p.detach().clone() for n, p in model.unet.named_parameters()},
            {n: p.detach().clone() for n, p in model.text_encoder.named_parameters()})


def _fixed_loss(model, group, data, n_draws=4):
    """The ε-loss of ``model`` on the attack images under their card prompts, fixed noise and timesteps."""
    g = torch.Generator().manual_seed(123)
    concepts = [c for c in group.targets if c in data.attack]
    images = torch.cat([data.attack[c].images for c in concepts])
    prompts = [p for c in concepts for p in data.attack[c].prompts]
    with torch.no_grad():
        latents = encode_images(model, images)
        cond = encode_prompts(model, prompts)
        return sum(float(diffusion_loss(model.unet, latents, cond, model.scheduler, generator=g))
                   for _ in range(n_draws)) / n_draws


def test_add_tokens_binds_card_words_to_one_new_id_each(tiny_sd):
    before = len(tiny_sd.tokenizer)
    learned = add_tokens(tiny_sd, {"ktn": "ktn", "Claude Monet": "Claude Monet"},
                         ["a photo of ktn purse", "an artwork of Claude Monet"])
    tok = learned.model.tokenizer
    assert len(tok) == before + 2 and len(tiny_sd.tokenizer) == before  # the input tokenizer is a different object
    assert sorted(learned.ids.values()) == [before, before + 1]
    ids = tok("a photo of ktn purse").input_ids
    assert ids.count(learned.ids["ktn"]) == 1 and len(ids) == 7  # BOS a photo of <ktn> purse EOS
    # CLIP lower-cases: any case of the word reads as the same token; a word inside another word does not
    assert tok("an artwork of CLAUDE MONET").input_ids == tok("an artwork of Claude Monet").input_ids
    assert learned.ids["ktn"] not in tok("a photo of ktnx purse").input_ids
    E0 = tiny_sd.text_encoder.get_input_embeddings().weight
    E = learned.embedding
    assert E.shape[0] == before + 2
    assert learned.embedding_name.startswith("text_encoder.") and learned.embedding_name.endswith("token_embedding.weight")
    pieces = tiny_sd.tokenizer("Claude Monet", add_special_tokens=False).input_ids
    assert len(pieces) > 1 and torch.allclose(E[learned.ids["Claude Monet"]], E0[pieces].mean(0))
    assert torch.equal(E[:before], E0)
    with pytest.raises(ValueError, match="tokenizes"):  # the check catches a word that is not its one new id
        check_prompt(tok, "a photo of ktn purse", {"ktn": learned.ids["Claude Monet"]})


def test_textual_inversion_trains_only_new_rows_and_lowers_its_loss(tiny_sd):
    group = get_card("personalization").group("2c-1")  # purse ← ktn, plant ← pll
    data = _data(group, n=2)
    unet0, text0 = _snapshot(tiny_sd)
    ti = get_attack("textual_inversion")
    cfg = replace(ti.Config(), lr=5e-2, batch_size=2)
    steps, first, last = [], None, None
    for step, adapted in ti().adapt(tiny_sd, group, data, cfg, Constraints(), checkpoints=[0, 2, 10]):
        steps.append(step)
        loss = _fixed_loss(adapted, group, data)
        first = loss if step == 0 else first
        last = loss
        E = adapted.text_encoder.get_input_embeddings().weight
        assert E.shape[0] == len(tiny_sd.tokenizer) + 2  # one new token per concept
        new_ids = [adapted.tokenizer.convert_tokens_to_ids(t) for t in ("<ktn>", "<pll>")]
        assert adapted.tokenizer(group.prompt("purse")).input_ids.count(new_ids[0]) == 1
        assert adapted.tokenizer(group.prompt("plant")).input_ids.count(new_ids[1]) == 1
        n = len(tiny_sd.tokenizer)
        assert torch.equal(E[:n], text0[embedding_name(tiny_sd.text_encoder).removeprefix("text_encoder.")])  # every old row bit-identical
        moved = [not torch.equal(E[i], adapted_init) for i, adapted_init in zip(new_ids, _inits(tiny_sd, ["ktn", "pll"]))]
        assert all(moved) == (step > 0) and any(moved) == (step > 0)
        for name, p in adapted.text_encoder.named_parameters():
            if "token_embedding" not in name:
                assert torch.equal(p, text0[name]), name
        for name, p in adapted.unet.named_parameters():
            assert torch.equal(p, unet0[name]), name
    assert steps == [0, 2, 10]
    assert last < first
    _assert_untouched(tiny_sd, unet0, text0)


def test_custom_diffusion_trains_kv_and_both_modifiers_and_honours_frozen(tiny_sd):
    group = get_card("personalization").group("2c-1")
    data = _data(group, n=2)
    unet0, text0 = _snapshot(tiny_sd)
    kv = [n for n in unet0 if n.endswith(("attn2.to_k.weight", "attn2.to_v.weight"))]
    frozen_kv = kv[0]
    cd = get_attack("custom_diffusion")
    cfg = replace(cd.Config(), lr=1e-2, class_images=1, batch_size=1)
    model = copy.copy(tiny_sd)  # class images drawn in 4 DDIM steps: the prior's path, at a test's cost
    model.spec = replace(tiny_sd.spec, sample_steps=4)
    steps = []
    losses = {}
    for step, adapted in cd().adapt(model, group, data, cfg, Constraints(frozen=frozenset({frozen_kv})),
                                    checkpoints=[0, 2, 10]):
        steps.append(step)
        losses[step] = _fixed_loss(adapted, group, data)
        unet = dict(adapted.unet.named_parameters())
        for name, p in unet.items():
            changed = not torch.equal(p, unet0[name])
            if name in kv and name != frozen_kv:
                assert changed == (step > 0), name
            else:
                assert not changed, name  # attn1, q, out, the frozen K/V, everything else
        E = adapted.text_encoder.get_input_embeddings().weight
        n = len(tiny_sd.tokenizer)
        assert torch.equal(E[:n], text0[embedding_name(tiny_sd.text_encoder).removeprefix("text_encoder.")])
        new_ids = [adapted.tokenizer.convert_tokens_to_ids(t) for t in ("<ktn>", "<pll>")]
        assert sorted(new_ids) == [n, n + 1]
        for i, init in zip(new_ids, _inits(tiny_sd, ["ktn", "pll"])):  # both modifiers learn (not the repo's bug)
            assert (not torch.equal(E[i], init)) == (step > 0)
        for name, p in adapted.text_encoder.named_parameters():
            if "token_embedding" not in name:
                assert torch.equal(p, text0[name]), name
    assert steps == [0, 2, 10]
    assert losses[10] < losses[0]
    _assert_untouched(tiny_sd, unet0, text0)


def test_custom_diffusion_with_every_kv_frozen_trains_its_tokens_only(tiny_sd):
    group = get_card("relearn-object").group("2c-1")
    unet0, text0 = _snapshot(tiny_sd)
    frozen = frozenset(n for n in unet0 if ".attn2.to_k." in n or ".attn2.to_v." in n)
    cd = get_attack("custom_diffusion")
    cfg = replace(cd.Config(), lr=1e-2, class_images=0)
    *_, (step, adapted) = cd().adapt(tiny_sd, group, _data(group, n=1), cfg, Constraints(frozen=frozen), checkpoints=[3])
    for name, p in adapted.unet.named_parameters():
        assert torch.equal(p, unet0[name]), name
    E = adapted.text_encoder.get_input_embeddings().weight
    n = len(tiny_sd.tokenizer)
    assert E.shape[0] == n + 2
    for row, init in zip(E[n:], _inits(tiny_sd, [group.concept_name(c) for c in group.targets])):
        assert not torch.equal(row, init)


def test_token_attacks_refuse_a_frozen_embedding_matrix(tiny_sd):
    group = get_card("relearn-style").group("2c-1")
    frozen = frozenset({embedding_name(tiny_sd.text_encoder)})
    for name in ("textual_inversion", "custom_diffusion"):
        attack = get_attack(name)
        with pytest.raises(ValueError, match="freeze the token embedding matrix"):
            next(attack().adapt(tiny_sd, group, _data(group), attack.Config(), Constraints(frozen=frozen),
                                checkpoints=[0]))


def test_style_names_become_one_token_and_templates_hold_the_name(tiny_sd):
    """Re-learning cards: the erased name itself is the token; TI's style templates contain it."""
    from immunobench.attacks.textual_inversion import STYLE_TEMPLATES

    group = get_card("relearn-style").group("2c-1")  # Claude Monet, Kirbi Fagan
    ti = get_attack("textual_inversion")
    step, adapted = next(ti().adapt(tiny_sd, group, _data(group, n=2), ti.Config(), Constraints(), checkpoints=[0]))
    monet = adapted.tokenizer.convert_tokens_to_ids("<claude-monet>")
    for template in STYLE_TEMPLATES:
        assert adapted.tokenizer(template.format("Claude Monet")).input_ids.count(monet) == 1
    assert adapted.tokenizer(group.prompt("claude-monet")).input_ids.count(monet) == 1


def _inits(model, words):
    E0 = model.text_encoder.get_input_embeddings().weight
    return [E0[model.tokenizer(w, add_special_tokens=False).input_ids].mean(0) for w in words]


def _assert_untouched(model, unet0, text0):
    assert len(model.text_encoder.get_input_embeddings().weight) == len(model.tokenizer)
    for n, p in model.unet.named_parameters():
        assert torch.equal(p, unet0[n]), n
    for n, p in model.text_encoder.named_parameters():
        assert torch.equal(p, text0[n]), n
