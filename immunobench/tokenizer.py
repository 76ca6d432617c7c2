"""The CLIP tokenizer, built offline, and the checks that catch a silently broken one.

Offline, ``CLIPTokenizer.from_pretrained`` of an uncached hub id can hand back a tokenizer with a
two-token vocabulary instead of raising; every prompt then encodes to unknown tokens and the
model quietly conditions on nothing. open_clip ships the CLIP BPE vocabulary that SD's
tokenizer was made from, so a real one can be rebuilt with ids identical to SD's.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from transformers import CLIPTokenizer

from .errors import BackboneError

CLIP_VOCAB_SIZE = 49408
CLIP_MAX_LENGTH = 77
# SD v1.x ids of this prompt (BOS ... EOS), as its own tokenizer gives them.
KNOWN_PROMPT = "a photo of a cat"
KNOWN_PROMPT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]
# open_clip spells the two special tokens differently from SD's tokenizer files.
_OPEN_CLIP_SPECIALS = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}


def clip_tokenizer_from_open_clip(model_max_length: int = CLIP_MAX_LENGTH) -> CLIPTokenizer:
    """SD's CLIPTokenizer, rebuilt from the BPE file that ships inside open_clip."""
    from open_clip.tokenizer import SimpleTokenizer

    bpe = SimpleTokenizer()
    merges = [" ".join(pair) for pair, _ in sorted(bpe.bpe_ranks.items(), key=lambda kv: kv[1])]
    # Files, not in-memory objects: the constructor's in-memory types differ across transformers versions.
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = Path(tmp, "vocab.json"), Path(tmp, "merges.txt")
        vocab = {_OPEN_CLIP_SPECIALS.get(token, token): i for token, i in bpe.encoder.items()}
        vocab_file.write_text(json.dumps(vocab))
        merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=model_max_length)
    validate_tokenizer(tokenizer, CLIP_VOCAB_SIZE, model_max_length, source="open_clip's BPE vocabulary")
    return tokenizer


def validate_tokenizer(tokenizer, vocab_size: int, max_length: int, source: str) -> None:
    """Fail loudly unless the tokenizer matches its text encoder and encodes a known prompt."""
    n = len(tokenizer)
    if n != vocab_size:
        raise BackboneError(
            f"{source}: tokenizer has {n} tokens but the text encoder expects {vocab_size}; the tokenizer "
            "files are missing or broken (an uncached hub id loaded offline does this) — re-download the model"
        )
    if tokenizer.model_max_length != max_length:
        raise BackboneError(
            f"{source}: tokenizer model_max_length is {tokenizer.model_max_length}, the text encoder has "
            f"{max_length} positions; fix tokenizer/tokenizer_config.json"
        )
    ids = tokenizer(KNOWN_PROMPT).input_ids
    if n == CLIP_VOCAB_SIZE and ids != KNOWN_PROMPT_IDS:
        raise BackboneError(
            f"{source}: tokenizer encodes {KNOWN_PROMPT!r} as {ids}, not SD's {KNOWN_PROMPT_IDS}; "
            "its vocabulary or merges file is not CLIP's — re-download the model"
        )
    unk = tokenizer.unk_token_id
    body = ids[1:-1]
    if not body or (unk is not None and unk in body and unk != tokenizer.eos_token_id):
        raise BackboneError(f"{source}: tokenizer maps {KNOWN_PROMPT!r} to unknown tokens {ids}")
