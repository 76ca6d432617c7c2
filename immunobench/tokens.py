"""Learned tokens: a Backbone whose tokenizer reads some words as new token ids with their own
embedding rows — what Textual Inversion and Custom Diffusion train.

The runner samples an attacked model with the card's own prompts ("a photo of ktn purse", "an
artwork of Claude Monet") and knows nothing about tokens, so the new token is bound to the words
those prompts use for the concept (``concept_words``).

Why a placeholder and not ``add_tokens(word)``: CLIP's BPE vocabulary already holds "ktn", "pll"
and "ucd" as word pieces (Custom Diffusion's initializers; that is why its modifier is "<new1>"
and "ktn" only its initializer), and transformers/tokenizers give an added token that is already a
vocabulary entry that entry's *existing* id. So each bound word gets a fresh placeholder token
("<ktn>", "<claude-monet>"), and the copied tokenizer rewrites whole-word occurrences of the word
(case-insensitively: CLIP lower-cases every prompt) to it before tokenizing. The attacker's prompt
"a photo of ktn purse" then reads exactly as Custom Diffusion's "photo of a <new1> purse".
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping

import torch

from .finetune import TEXT_ENCODER_PREFIX

if TYPE_CHECKING:  # pragma: no cover
    from .backbones import Backbone
    from .cards import ConceptGroup


class BoundTokenizer:
    """A tokenizer that reads each bound word as its placeholder token; everything else is the
    wrapped tokenizer's (special ids, lengths, decoding)."""

    def __init__(self, inner, placeholders: Mapping[str, str]):
        self._inner = inner
        self._placeholders = {w.lower(): p for w, p in placeholders.items()}
        words = sorted(self._placeholders, key=len, reverse=True)  # longest first: "chain saw" before "chain"
        self._pattern = re.compile(r"(?<!\w)(" + "|".join(re.escape(w) for w in words) + r")(?!\w)", re.IGNORECASE)

    def rewrite(self, text: str) -> str:
        return self._pattern.sub(lambda m: self._placeholders[m.group(0).lower()], text)

    def _rewrite_any(self, text):
        return self.rewrite(text) if isinstance(text, str) else [self.rewrite(t) for t in text]

    def __call__(self, text, *args, **kwargs):
        return self._inner(self._rewrite_any(text), *args, **kwargs)

    def tokenize(self, text: str, **kwargs):
        return self._inner.tokenize(self.rewrite(text), **kwargs)

    def encode(self, text, *args, **kwargs):
        return self._inner.encode(self._rewrite_any(text), *args, **kwargs)

    def __len__(self) -> int:
        return len(self._inner)

    def __getattr__(self, name: str):
        # dunders (copy, pickle) and our own fields must not reach the wrapped tokenizer
        if name.startswith("__") or name in ("_inner", "_placeholders", "_pattern"):
            raise AttributeError(name)
        return getattr(self._inner, name)


@dataclass
class LearnedTokens:
    """``model``: the adapted Backbone (its own tokenizer and text encoder; UNet and VAE shared with
    the input model). ``ids``: bound word → its new id. ``embedding``: the input embedding matrix of
    the copied text encoder, ``embedding_name`` its constraint name."""

    model: "Backbone"
    ids: dict[str, int]
    embedding: torch.nn.Parameter
    embedding_name: str

    def rows(self) -> torch.Tensor:
        return torch.tensor(sorted(self.ids.values()), dtype=torch.long)


def placeholder(word: str) -> str:
    return "<" + "-".join(word.lower().split()) + ">"


def embedding_name(text_encoder: torch.nn.Module) -> str:
    """The constraint name ("text_encoder." + parameter name) of the token embedding matrix."""
    weight = text_encoder.get_input_embeddings().weight
    return TEXT_ENCODER_PREFIX + next(n for n, p in text_encoder.named_parameters() if p is weight)


def require_trainable_embedding(model: "Backbone", frozen: Iterable[str], attack: str) -> None:
    name = embedding_name(model.text_encoder)
    if name in set(frozen):
        raise ValueError(f"{attack} trains new token embeddings, but the defense's constraints freeze the token "
                         f"embedding matrix {name!r}; {attack} cannot run under these constraints")


def add_tokens(model: "Backbone", inits: Mapping[str, str], prompts: Iterable[str] = ()) -> LearnedTokens:
    """Bind each word of ``inits`` (word → text whose embedding initialises it) to one new token.

    The new row is the mean of the input embeddings of ``init``'s BPE pieces. Every prompt in
    ``prompts`` must tokenize each bound word it contains as exactly that one new id (ValueError
    otherwise). ``model`` is untouched: tokenizer and text encoder are deep copies.
    """
    if not inits:
        raise ValueError("no words to bind to new tokens")
    base_tok = model.tokenizer._inner if isinstance(model.tokenizer, BoundTokenizer) else model.tokenizer
    tokenizer = copy.deepcopy(base_tok)
    marks = {w: placeholder(w) for w in inits}
    if len(set(marks.values())) != len(marks):
        raise ValueError(f"words {list(inits)} do not give distinct tokens (case and spacing are ignored)")
    size = len(tokenizer)
    added = tokenizer.add_tokens(list(marks.values()))
    ids = {w: tokenizer.convert_tokens_to_ids(p) for w, p in marks.items()}
    if added != len(marks) or len(tokenizer) != size + len(marks) or min(ids.values()) < size:
        raise ValueError(f"the tokenizer already knows some of the tokens {list(marks.values())}")
    if isinstance(model.tokenizer, BoundTokenizer):  # words bound earlier keep their placeholders
        marks = {**model.tokenizer._placeholders, **marks}
    bound = BoundTokenizer(tokenizer, marks)

    text_encoder = copy.deepcopy(model.text_encoder)
    old = text_encoder.get_input_embeddings()
    with torch.no_grad():
        init_rows = []
        for word, init in inits.items():
            pieces = base_tok(init, add_special_tokens=False).input_ids
            if not pieces:
                raise ValueError(f"the initializer {init!r} of {word!r} has no tokens")
            init_rows.append(old.weight[torch.tensor(pieces, device=old.weight.device)].mean(0))
        weight = torch.cat([old.weight, torch.stack(init_rows)])
    # built by hand, not resize_token_embeddings: that draws the new rows from the global RNG
    new = torch.nn.Embedding(weight.shape[0], weight.shape[1], padding_idx=old.padding_idx,
                             device=weight.device, dtype=weight.dtype)
    new.weight = torch.nn.Parameter(weight, requires_grad=False)
    text_encoder.set_input_embeddings(new)
    text_encoder.config.vocab_size = weight.shape[0]

    adapted = model.with_weights()
    adapted.tokenizer, adapted.text_encoder = bound, text_encoder
    for prompt in prompts:
        check_prompt(bound, prompt, ids)
    return LearnedTokens(adapted, ids, new.weight, embedding_name(text_encoder))


def check_prompt(tokenizer: BoundTokenizer, prompt: str, ids: Mapping[str, int]) -> None:
    """Each bound word in ``prompt`` reads as its one new id, once per occurrence."""
    tokens = tokenizer(prompt).input_ids
    for word, token_id in ids.items():
        occurrences = len(re.findall(r"(?<!\w)" + re.escape(word) + r"(?!\w)", prompt, re.IGNORECASE))
        if tokens.count(token_id) != occurrences:
            raise ValueError(f"{prompt!r} tokenizes {word!r} as {tokens} ({tokens.count(token_id)} × its new id "
                             f"{token_id}, expected {occurrences})")


def concept_words(group: "ConceptGroup", concepts: Iterable[str]) -> dict[str, str]:
    """Concept → the word its attack prompt names it by, which a learned token replaces: the
    attacker's identifier on instance cards ("ktn"), the concept's name otherwise ("Claude Monet")."""
    words = {}
    for c in concepts:
        if group.card.concept_type == "instance":
            words[c] = group.card.identifiers.attack[group.targets.index(c)]
        else:
            words[c] = group.concept_name(c)
        if words[c] not in group.prompt(c):
            raise ValueError(f"{words[c]!r} does not occur in {c}'s attack prompt {group.prompt(c)!r}")
    if len(set(w.lower() for w in words.values())) != len(words):
        raise ValueError(f"concepts {list(words)} share a word ({list(words.values())}); each needs its own token")
    return words


def restore_rows(embedding: torch.nn.Parameter, keep: torch.Tensor):
    """A callable that resets every row of ``embedding`` but ``keep`` to its current values
    (diffusers' textual_inversion.py after each step: AdamW's weight decay touches the whole matrix)."""
    frozen = torch.ones(embedding.shape[0], dtype=torch.bool)
    frozen[keep] = False
    frozen = frozen.to(embedding.device)
    original = embedding.detach()[frozen].clone()

    def restore() -> None:
        with torch.no_grad():
            embedding[frozen] = original

    return restore


def zero_other_grads(embedding: torch.nn.Parameter, keep: torch.Tensor):
    """A callable that zeroes the gradient of every row but ``keep`` (diffusers'
    train_custom_diffusion.py mask over *all* modifier ids, not the released repo's loop that
    skips the last one)."""
    mask = torch.ones(embedding.shape[0], dtype=torch.bool)
    mask[keep] = False
    mask = mask.to(embedding.device)

    def zero() -> None:
        if embedding.grad is not None:
            embedding.grad[mask] = 0

    return zero


def learn_concept_tokens(model: "Backbone", group: "ConceptGroup", data, frozen: Iterable[str], attack: str):
    """What Textual Inversion and Custom Diffusion start from: the targets' attack split, one new token per
    concept bound to its words, and a copy of the text encoder in which only the embedding matrix trains
    → (training set, concepts, {concept: word}, ``LearnedTokens``)."""
    from .finetune import attack_training_set

    require_trainable_embedding(model, frozen, attack)
    train_set = attack_training_set(model, group, data)
    concepts = list(dict.fromkeys(train_set.concepts))
    words = concept_words(group, concepts)
    learned = add_tokens(model, {w: w for w in words.values()}, [group.prompt(c) for c in concepts])
    learned.model.text_encoder.requires_grad_(False)
    learned.embedding.requires_grad_(True)
    return train_set, concepts, words, learned
