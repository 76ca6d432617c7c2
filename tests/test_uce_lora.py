"""UCE erases in closed form; LoRA adapts without touching base weights and honours frozen tensors."""
import torch

from immunobench import diffusion
from immunobench.cards import get_card
from immunobench.data import ConceptImages, TaskData, start_model_view
from immunobench.plugins import Constraints, get_attack, get_defense


def _kv_out(W, rows):
    return rows @ W.T


def test_uce_maps_targets_to_guide_and_preserves_others(tiny_sd):
    group = get_card("relearn-style").group("2c-1")
    uce = get_defense("uce")
    before = {n: p.detach().clone() for n, p in tiny_sd.unet.named_parameters()}
    result = uce().immunize(tiny_sd, start_model_view(group), uce.Config())
    assert set(result.unet) == set(diffusion.select_parameters(tiny_sd.unet, "xattn-kv"))
    for n, p in tiny_sd.unet.named_parameters():  # the input model is not modified
        assert torch.equal(p, before[n])
    target, guide = diffusion.token_embeddings(tiny_sd, ["an artwork of Claude Monet", "an artwork of art"])
    keep = diffusion.token_embeddings(tiny_sd, ["an artwork of Van Gogh"])[0]
    unpreserved = uce().immunize(tiny_sd, start_model_view(group), uce.Config(preserve="none")).unet
    script = uce().immunize(tiny_sd, start_model_view(group), uce.Config(rows="script")).unet
    for name, W_new in result.unet.items():
        W = before[name]
        # the concept's last subject token now produces what the guide's did under the original W
        # (whole preserved prompts compete a little more with the erasure than the script's rows)
        gap_before = (_kv_out(W, target[-2:-1]) - _kv_out(W, guide[-2:-1])).norm()
        gap_after = (_kv_out(W_new, target[-2:-1]) - _kv_out(W, guide[-2:-1])).norm()
        assert gap_after < 0.5 * gap_before, name
        assert (_kv_out(script[name], target[-2:-1]) - _kv_out(W, guide[-2:-1])).norm() < 0.35 * gap_before, name
        # a preserved artist's outputs move less than when the preserve term is left out
        drift_kept = (_kv_out(W_new, keep[-2:-1]) - _kv_out(W, keep[-2:-1])).norm()
        drift_free = (_kv_out(unpreserved[name], keep[-2:-1]) - _kv_out(W, keep[-2:-1])).norm()
        assert drift_kept < 0.8 * drift_free, name


def test_lora_trains_adapters_only_and_honours_frozen_tensors(tiny_sd):
    group = get_card("relearn-object").group("2c-1")
    g = torch.Generator().manual_seed(0)
    data = TaskData(attack={c: ConceptImages(torch.rand(8, 3, 64, 64, generator=g) * 2 - 1, [group.prompt(c)] * 8)
                            for c in group.targets})
    frozen_name = next(n for n, _ in tiny_sd.unet.named_parameters() if n.endswith("attn2.to_k.weight"))
    base = {n: p.detach().clone() for n, p in tiny_sd.unet.named_parameters()}
    lora = get_attack("lora")
    steps = []
    for step, adapted in lora().adapt(tiny_sd, group, data, lora.Config(), Constraints(frozen=frozenset({frozen_name})),
                                      checkpoints=[0, 5, 10]):
        steps.append(step)
        named = dict(adapted.unet.named_parameters())
        lora_b = {n: p for n, p in named.items() if "lora_B" in n}
        frozen_b = [p for n, p in lora_b.items() if n.startswith(frozen_name.rsplit(".", 1)[0])]
        assert frozen_b and all(torch.count_nonzero(p) == 0 for p in frozen_b)  # frozen: no update ever
        moved = sum(int(torch.count_nonzero(p)) for p in lora_b.values())
        assert (moved == 0) == (step == 0)
    assert steps == [0, 5, 10]
    for n, p in tiny_sd.unet.named_parameters():  # the attacked model is a copy
        assert torch.equal(p, base[n])


def test_uce_concept_rows_hold_the_template_and_erase_every_name_token(tiny_sd):
    """rows="concept": preserved prompts are held whole (template rows included) and a multi-token
    name's leading rows are erased too; rows="script" (train_erase.py) does neither."""
    group = get_card("relearn-style").group("3c-4")  # Van Gogh, Claude Monet, Pablo Picasso
    uce = get_defense("uce")
    W0 = {n: p.detach() for n, p in tiny_sd.unet.named_parameters()}
    concept = uce().immunize(tiny_sd, start_model_view(group), uce.Config(rows="concept")).unet
    script = uce().immunize(tiny_sd, start_model_view(group), uce.Config(rows="script")).unet
    n_prefix = len(tiny_sd.tokenizer("an artwork of").input_ids) - 2
    kept, target, guide = diffusion.token_embeddings(
        tiny_sd, ["an artwork of Kirbi Fagan", "an artwork of Van Gogh", "an artwork of art"])
    template, van = kept[:n_prefix], target[n_prefix : n_prefix + 1]  # "van": not the last name token
    for name in concept:
        W = W0[name]
        template_moved = {rows: (_kv_out(edit[name], template) - _kv_out(W, template)).norm()
                          for rows, edit in (("concept", concept), ("script", script))}
        assert template_moved["concept"] < 0.75 * template_moved["script"], name
        van_gap = {rows: (_kv_out(edit[name], van) - _kv_out(W, guide[-2:-1])).norm()
                   for rows, edit in (("concept", concept), ("script", script))}
        van_gap_before = (_kv_out(W, van) - _kv_out(W, guide[-2:-1])).norm()
        assert van_gap["concept"] < min(0.5 * van_gap_before, van_gap["script"]), name


def test_tiny_sd_presets_leave_the_papers_settings_for_sd():
    from immunobench.plugins import configure

    uce, lora = get_defense("uce"), get_attack("lora")
    sd = "CompVis/stable-diffusion-v1-4"
    assert configure(uce, sd, "relearn").style_guide == "art" and configure(lora, sd, "relearn").lr == 1e-4
    # UCE keeps the paper's guide on tiny-sd too (world v2 captions generic artworks); LoRA takes tiny-sd's lr
    assert configure(uce, "tiny-sd", "relearn") == configure(uce, sd, "relearn")
    assert configure(lora, "tiny-sd", "relearn").lr == 1e-3
    assert configure(lora, "tiny-sd", "relearn", {"lr": 1e-4}).lr == 1e-4  # --set still wins
