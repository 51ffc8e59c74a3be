"""Cost of A1111 prompt parsing and weighting per request, without the text encoder's forward.

    python bench/prompt_bench.py [--bpe bpe_simple_vocab_16e6.txt.gz] [--repeat 200]

Runs the real `encode_prompt_schedule` on a stand-in pipeline whose text
encoders return precomputed hidden states (SD 1.5: 768 wide; SDXL: 768 + 1280
and a 1280 pooled output), so what is timed is everything around the forward
pass: schedule parsing, emphasis parsing, tokenizing, chunking, tensors, the
weights and mean restore, concatenation. The prompt is 300 tokens with emphasis,
a BREAK and one prompt edit (two schedule entries), with a 40-token negative.

Tokenizer: CLIP's real BPE when `--bpe` points at the vocabulary file that
open_clip ships (`open_clip/bpe_simple_vocab_16e6.txt.gz`, the same merges as
the SD/SDXL tokenizers); otherwise the built-in byte-level tokenizer (one token
per character: the same token count, cheaper tokenizing). Target: < 5 ms.
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.prompt_encoding import Chunker, encode_prompt_schedule  # noqa: E402
from pipelines.prompt_parser import prompt_schedule  # noqa: E402
from pipelines.tiny_tokenizers import bytes_to_unicode, clip_tokenizer  # noqa: E402

WORDS = ("(masterpiece:1.2), best quality, a [red:blue:0.5] castle on a hill, ((dramatic light)), "
         "[blurry], highly detailed, intricate stone walls, ")  # fmt: skip
NEGATIVE = "lowres, bad anatomy, bad hands, text, error, missing fingers, cropped, worst quality"


def real_clip_tokenizer(bpe: Path) -> Any:
    """CLIP's tokenizer built from open_clip's merges file, as OpenAI built its vocab."""
    from transformers import CLIPTokenizer

    with gzip.open(bpe, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    chars = bytes_to_unicode()
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(
        vocab={t: i for i, t in enumerate(vocab)},
        merges=merges,
        model_max_length=77,
    )


class StandInEncoder(torch.nn.Module):
    """Returns fixed hidden states of the real width: the forward pass costs ~nothing."""

    def __init__(self, width: int, projection: int | None) -> None:
        super().__init__()
        self.config = SimpleNamespace(num_hidden_layers=12, hidden_size=width)
        self.embedding = torch.nn.Embedding(1, width)
        self.states = torch.randn(1, 77, width)
        self.pooled = None if projection is None else torch.randn(1, projection)

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.embedding

    def forward(self, ids: torch.Tensor, output_hidden_states: bool = False) -> Any:
        states = self.states.expand(ids.shape[0], -1, -1)
        pooled = None if self.pooled is None else self.pooled.expand(ids.shape[0], -1)
        return SimpleNamespace(
            last_hidden_state=states, hidden_states=(states,) * 13, text_embeds=pooled
        )


def stand_in_pipe(family: str, tokenizer: Any) -> Any:
    pipe = SimpleNamespace(config={"force_zeros_for_empty_prompt": True},
                           _execution_device=torch.device("cpu"), tokenizer=tokenizer,
                           text_encoder=StandInEncoder(768, None))  # fmt: skip
    if family == "sdxl":
        pipe.tokenizer_2 = tokenizer
        pipe.text_encoder_2 = StandInEncoder(1280, 1280)
    return pipe


def prompt_of(tokenizer: Any, tokens: int, edit: bool) -> str:
    """WORDS repeated and cut to `tokens` tokens, a BREAK in the middle, one edit or none."""
    words = (WORDS * 40).split(" ")
    if not edit:
        words = [w.replace("[red:blue:0.5]", "red") for w in words]
    while len(tokenizer(" ".join(words), add_special_tokens=False).input_ids) > tokens:
        words.pop()
    half = len(words) // 2
    return " ".join(words[:half] + ["BREAK"] + words[half:])


def timed(fn: Any, repeat: int) -> tuple[float, float]:
    """Median CPU time and median wall time in ms (the CPU is shared: wall time waits)."""
    fn()  # warm-up (the first call imports diffusers)
    cpu, wall = [], []
    for _ in range(repeat):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append((time.process_time() - c) * 1000)
        wall.append((time.perf_counter() - w) * 1000)
    return statistics.median(cpu), statistics.median(wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bpe", type=Path, help="open_clip's bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tokenizer = real_clip_tokenizer(args.bpe) if args.bpe else clip_tokenizer()
    print(f"tokenizer: {'CLIP BPE (49408)' if args.bpe else 'byte-level (tiny)'}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n")  # fmt: skip
    print("| prompt (300 tokens, emphasis, BREAK) | entries | work | CPU ms | wall ms |")
    print("|---|---|---|---|---|")
    for edit in (False, True):
        prompt = prompt_of(tokenizer, 300, edit)
        name = "+ one edit [red:blue:0.5]" if edit else "no prompt editing"
        entries = len(prompt_schedule(prompt, 20))
        rows = [("schedule parse, prompt + negative",
                 lambda p=prompt: (prompt_schedule(p, 20), prompt_schedule(NEGATIVE, 20))),
                ("emphasis + tokenize + chunks, 1 encoder",
                 lambda p=prompt: Chunker(tokenizer).chunk(p))]  # fmt: skip
        for family in ("sd15", "sdxl"):
            pipe = stand_in_pipe(family, tokenizer)
            rows.append((f"whole request {family} (no encoder forward)",
                         lambda p=prompt, s=pipe, f=family:
                             encode_prompt_schedule(s, f, p, NEGATIVE, 20)))  # fmt: skip
        for work, fn in rows:
            cpu, wall = timed(fn, args.repeat)
            print(f"| {name} | {entries} | {work} | {cpu:.2f} | {wall:.2f} |")


if __name__ == "__main__":
    main()
