"""Tokenizers for the tiny built-in models, built in memory (nothing is downloaded),
and the text-encoder configs whose token ids and vocab size must agree with them.

- CLIP: a byte-level BPE with no merges. Its vocab is laid out like the real
  CLIP vocab (the 256 byte characters, then their `</w>` forms, then the two
  special tokens), so any text tokenizes, one byte per token.
- T5 / UMT5: a small Unigram (SentencePiece-style) vocab of ASCII characters and
  "▁x" word starts, with T5's fixed layout `<pad>`=0, `</s>`=1, `<unk>`=2.

`clip_text_config` / `t5_config_kwargs` give the matching (tiny) text-encoder
configs: CLIP's bos/eos/pad ids are the tokenizer's (CLIP pools at the first eos
id, so a mismatch silently pools the wrong token), vocab sizes cover the vocab.

Each tokenizer saves with `save_pretrained` and reloads from that folder through
`AutoTokenizer` / the pipeline's own loader, offline.
"""

from __future__ import annotations

import string

from transformers import CLIPTextConfig, CLIPTokenizer, T5Tokenizer

CLIP_MAX_LENGTH = 77  # what every SD/SDXL/Flux CLIP tokenizer pads to
T5_MAX_LENGTH = 512  # FluxPipeline and WanPipeline pad T5 prompts to max_sequence_length=512


def bytes_to_unicode() -> list[str]:
    """The 256 printable characters GPT-2/CLIP byte-level BPE uses for bytes 0..255."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return [mapping[b] for b in range(256)]


def clip_vocab() -> dict[str, int]:
    """Byte chars (0..255), their `</w>` forms (256..511), then start/end of text."""
    chars = bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({f"{c}</w>": 256 + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


def clip_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP tokenizer: bos=512, eos=pad=unk=513, vocab size 514."""
    return CLIPTokenizer(vocab=clip_vocab(), merges=[], model_max_length=CLIP_MAX_LENGTH)


def t5_vocab() -> list[tuple[str, float]]:
    """Unigram pieces with scores: specials, "▁", ASCII characters, "▁" + lowercase letter."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    singles = string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation
    pieces += [(c, -5.0) for c in singles]
    pieces += [(f"▁{c}", -4.0) for c in string.ascii_lowercase]
    return pieces


def t5_tokenizer(model_max_length: int = T5_MAX_LENGTH) -> T5Tokenizer:
    """A T5-style Unigram tokenizer (pad=0, eos=1, unk=2), no sentinel `<extra_id_*>` tokens."""
    return T5Tokenizer(vocab=t5_vocab(), extra_ids=0, model_max_length=model_max_length)


def clip_text_config(hidden_act: str = "quick_gelu") -> CLIPTextConfig:
    """A 2-layer, 32-wide CLIP text config whose special ids match `clip_tokenizer()`."""
    tok = clip_tokenizer()
    return CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=CLIP_MAX_LENGTH,
        projection_dim=32,
        hidden_act=hidden_act,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )


def t5_config_kwargs() -> dict[str, object]:
    """Kwargs of a 2-layer, d_model=32 T5Config / UMT5Config matching `t5_tokenizer()`."""
    return {
        "vocab_size": len(t5_vocab()),
        "d_model": 32,  # = Flux joint_attention_dim and Wan text_dim
        "d_kv": 8,
        "d_ff": 37,
        "num_layers": 2,
        "num_heads": 4,
        "relative_attention_num_buckets": 8,
        "feed_forward_proj": "gated-gelu",  # T5 v1.1 / UMT5, as Flux and Wan use
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
    }
