"""UCE — Unified Concept Editing (Gandikota et al., WACV 2024), the closed-form erasure that the
re-learning cards start from (MIMA App. C: "The pre-trained weights are from UCE").

For every cross-attention projection W (``attn2.to_k``, ``attn2.to_v``; nn.Linear layout d×c):

    W* = (λW + s_e Σ_i v*_i c_iᵀ + s_p Σ_j W c_j c_jᵀ) (λI + s_e Σ_i c_i c_iᵀ + s_p Σ_j c_j c_jᵀ)⁻¹

c_i: token embeddings of the erased concept's prompts, v*_i = W c*_i the *original* projection of
the guide prompt's aligned tokens ("replace" technique), c_j: embeddings of preserved prompts.

As the card's start model it preserves the card's declared ``start_model.preserve`` prompts (the
relearn cards: the other concepts — setup shared by every defense); as a grid defense it sees only
its ``DefenseData`` and preserves the generic captions it carries.

Follows the paper-era script (``train-scripts/train_erase.py``, which MIMA and FreezeAsGuard copy):
rows from the last subject token through EOS and padding, aligned with the guide prompt's rows;
λ = 0.5, erase scale 1, preserve scale max(0.1, 1/|preserve|); the empty prompt (all 77 rows) is
always preserved; guide "art" for styles, the unconditional guide for objects. Where we differ:
the card's other concepts are preserved for objects too (the script preserved none for objects;
the roadmap specifies "erase towards a guide, preserve others", and in the embedded world erasing
objects without a preserve set cost the other objects 14–19 points of accuracy, measured
2026-11-24; ``preserve="none"`` restores the script's behaviour); each concept is erased both as its bare
name and inside the card's prompt (``--add_prompts`` in the original, whose ``type=bool`` flag
turned on for any string), the guide replaces the concept inside the same sentence, and the
system is solved with ``torch.linalg.solve`` rather than an explicit inverse.

``rows="concept"`` (default; ``rows="script"`` restores the script) takes the rows the paper's
c_i and c_j mean: every token row of the erased *name* (the script skips the leading tokens of a
multi-token name, e.g. "van" of "Van Gogh", each then paired with the guide's last row) and
*whole* preserved prompts (the script preserves them from their last name token on, so the rows
of the shared template "a photo of a" are held only by λ). In SD's 768-dimensional text space the
skipped rows are left alone anyway; in tiny-sd's 64 dimensions the edit moved them, and the other
objects lost 15–30 points of accuracy (world check, 2026-11-24): with whole prompts, 0–4 points.

No backbone preset: tiny-sd, too, erases styles toward the paper's "art". Its former copy (world v1,
every training artwork named its artist) drew Van Gogh for "an artwork of art" and needed the
unconditional guide; the shipped copy (world v2, a quarter of the artworks captioned without their
artist) draws a generic artwork for it, and "art" erased Monet there where "" left him half drawn
(world check, 2026-11-30).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

import torch
from pydantic import Field

from immunobench.diffusion import select_parameters, tokenize
from immunobench.plugins import Defense, Immunized, register_defense


@dataclass(frozen=True)
class UCEConfig:
    erase_scale: Annotated[float, Field(ge=0)] = field(default=1.0, metadata={"help": "s_e (train_erase.py default)"})
    preserve_scale: Annotated[float, Field(ge=0)] | None = field(
        default=None, metadata={"help": "s_p; None = max(0.1, 1/|preserve|) as train_erase.py"})
    lam: Annotated[float, Field(ge=0)] = field(default=0.5, metadata={"help": "λ, pull towards the original W (train_erase.py)"})
    guide: str | None = field(
        default=None, metadata={"help": "guide concept; None = style_guide for styles, '' (unconditional) otherwise"})
    style_guide: str = field(default="art", metadata={"help": "guide for styles (train_erase.py: 'art')"})
    preserve: Literal["captions", "none"] = field(
        default="captions", metadata={"help": "captions = the prompts the runner gives (start model: the card's "
                                              "start_model.preserve); none = the script's objects"})
    rows: Literal["concept", "script"] = field(
        default="concept", metadata={"help": "concept = every row of the erased name, whole preserved prompts; "
                                             "script = rows from the last name token only, as train_erase.py"})


@register_defense("uce")
class UCE(Defense):
    """Closed-form erasure of the group's concepts in cross-attention K/V (UCE, paper-era script)."""

    # 2: preserve the other concepts for objects too; 3: rows="concept"; 4: no tiny-sd preset;
    # 5: preserves the prompts of its DefenseData (the card's start_model.preserve as a start model)
    version = "5"
    Config = UCEConfig

    def immunize(self, model, data, cfg: UCEConfig = UCEConfig()) -> Immunized:
        style = data.concept_type == "style"
        guide = cfg.guide if cfg.guide is not None else (cfg.style_guide if style else "")
        erase_pairs = []  # (concept text, guide text) sharing one sentence
        for concept in data.targets:
            name = data.names[concept]
            for text in (name, data.prompts[concept]):
                erase_pairs.append((text, text.replace(name, guide).strip()))
        keep = list(data.captions) if cfg.preserve == "captions" else []
        edited = erase(model, erase_pairs, keep, cfg)
        return Immunized(unet=edited, info={"erased": list(data.targets), "guide": guide, "preserved": len(keep)})


@torch.no_grad()
def _aligned_rows(model, old: list[str], new: list[str], whole_name: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per pair, rows from the last subject token to the end, truncated to a common length.

    ``whole_name`` adds the rows of the name's earlier tokens (from the first token where the two
    sentences differ), each paired with the guide's last row.
    """
    ids_old, ids_new = tokenize(model, old), tokenize(model, new)
    emb_old, emb_new = model.text_encoder(ids_old)[0], model.text_encoder(ids_new)[0]
    eos = model.tokenizer.eos_token_id
    pairs = []
    for i in range(len(old)):
        # index of the last subject token = (tokens up to EOS) − 2; the empty prompt gives 0 (all rows)
        last_old = int((ids_old[i] == eos).nonzero()[0]) - 1
        last_new = int((ids_new[i] == eos).nonzero()[0]) - 1
        farthest = max(last_old, last_new)
        length = emb_old.shape[1]
        a = emb_old[i, max(last_old, 0) : length - (farthest - last_old)]
        b = emb_new[i, max(last_new, 0) : length - (farthest - last_new)]
        if whole_name and last_old > 0:
            first = int((ids_old[i] != ids_new[i]).nonzero()[0])
            leading = emb_old[i, first:last_old]
            a = torch.cat([leading, a])
            b = torch.cat([emb_new[i, max(last_new, 0)].expand_as(leading), b])
        pairs.append((a, b))
    return pairs


@torch.no_grad()
def _prompt_rows(model, prompts: list[str]) -> list[torch.Tensor]:
    """All 77 rows of each prompt."""
    return list(model.text_encoder(tokenize(model, prompts))[0])


@torch.no_grad()
def erase(model, erase_pairs: list[tuple[str, str]], preserve: list[str], cfg: UCEConfig) -> dict[str, torch.Tensor]:
    """The closed-form edit of every ``attn2.to_k/to_v``; returns the new tensors by name."""
    whole = cfg.rows == "concept"
    targets = _aligned_rows(model, [o for o, _ in erase_pairs], [n for _, n in erase_pairs], whole_name=whole)
    keep_texts = [*preserve, ""]  # the empty prompt is always preserved (train_erase.py)
    kept = _prompt_rows(model, keep_texts) if whole else [a for a, _ in _aligned_rows(model, keep_texts, keep_texts)]
    s_p = cfg.preserve_scale if cfg.preserve_scale is not None else max(0.1, 1.0 / len(keep_texts))
    c = model.text_encoder.config.hidden_size
    eye = torch.eye(c, dtype=torch.float64)
    edited = {}
    for name, weight in select_parameters(model.unet, "xattn-kv").items():
        W = weight.detach().double()
        mat1 = cfg.lam * W
        mat2 = cfg.lam * eye.clone()
        for old, new in targets:
            old, new = old.double(), new.double()
            mat1 += cfg.erase_scale * (new @ W.T).T @ old  # Σ v* cᵀ with v* = W c_guide
            mat2 += cfg.erase_scale * old.T @ old
        for rows in kept:
            rows = rows.double()
            mat1 += s_p * (rows @ W.T).T @ rows
            mat2 += s_p * rows.T @ rows
        edited[name] = torch.linalg.solve(mat2, mat1.T).T.to(weight.dtype)  # mat1 · mat2⁻¹, mat2 symmetric
    return edited
