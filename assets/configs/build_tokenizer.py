"""Writes clip-tokenizer/vocab.json and merges.txt from open_clip's BPE file.

Run once, by hand, when the files need to be made again:

    pip download open-clip-torch==3.3.0 --no-deps -d /tmp/oc
    python assets/configs/build_tokenizer.py /tmp/oc/open_clip_torch-3.3.0-py3-none-any.whl

Why: SD 1.x, SD 2.x and SDXL all tokenize with CLIP's byte-level BPE (OpenAI's
`bpe_simple_vocab_16e6`, which open_clip ships); a single-file checkpoint has
no tokenizer, so Atelier ships one instead of fetching it from the Hub. The
vocabulary is laid out exactly as open_clip's `SimpleTokenizer` builds it (the
256 byte characters, their `</w>` forms, the 48,894 merges, then the two
special tokens, 49,408 in all), with Hugging Face's names for the specials, so
`CLIPTokenizer` gives the same ids as open_clip's `tokenize`.
"""

from __future__ import annotations

import gzip
import json
import sys
import zipfile
from pathlib import Path

N_MERGES = 49152 - 256 - 2  # as open_clip.tokenizer.SimpleTokenizer


def bytes_to_unicode() -> list[str]:
    """open_clip's byte -> character table, in its own order (printable bytes first)."""
    printable = (("!", "~"), ("¡", "¬"), ("®", "ÿ"))
    bs = [b for lo, hi in printable for b in range(ord(lo), ord(hi) + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as zf:
        text = gzip.decompress(zf.read("open_clip/bpe_simple_vocab_16e6.txt.gz")).decode()
    merges = [tuple(line.split()) for line in text.split("\n")[1 : N_MERGES + 1]]
    chars = bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    out = Path(__file__).parent / "clip-tokenizer"
    out.mkdir(exist_ok=True)
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == 49408, len(vocab)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, separators=(",", ":")))
    lines = ["#version: 0.2", *(" ".join(m) for m in merges)]
    (out / "merges.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
