"""A1111's prompt encoding for CLIP text encoders (SD 1.x/2.x and SDXL), as diffusers kwargs.

What A1111 (`sd_hijack_clip.py`, emphasis "Original") does, and so what this does:
- the prompt is split into weighted fragments (`prompt_parser.parse_attention`),
  each tokenized without BOS/EOS;
- tokens fill chunks of 75; a full chunk backs up to its last comma if that is
  within 20 tokens (A1111's `comma_padding_backtrack`), `BREAK` starts a new chunk;
  each chunk is framed as BOS + 75 + EOS, its padding EOS then replaced after the
  first EOS by the tokenizer's pad token (A1111's `id_pad`; SD 1.x pads with EOS);
- each chunk goes through the encoder on its own; the hidden states are multiplied
  by their tokens' weights and rescaled so the chunk's mean is what it was
  (`z = z * w; z = z * (old_mean / new_mean)`, the mean over the whole batch of texts
  encoded together, as A1111 encodes a prompt's schedule entries together);
- chunks are concatenated along the sequence; texts of one batch are padded to the
  same number of chunks with empty chunks; positive and negative are padded to
  the same length with the encoding of "" (A1111's "pad prompt/negative prompt";
  its default runs them unpadded, which diffusers' `cat([neg, pos])` cannot).
Layers: SD takes the last layer, or with clip skip N hidden_states[-N] through the
final layer norm (diffusers 0.42's own clip_skip crashes on transformers 5).
SDXL takes hidden_states[-2] of CLIP-L and CLIP-G without the norm (as diffusers
and A1111; A1111 ignores clip skip on SDXL unless `sdxl_clip_l_skip`), features
concatenated, and the pooled `text_embeds` of CLIP-G for the first chunk.
Textual inversion: `embeddings` maps a trigger word to its vectors; where the
word's tokens occur they are replaced by the vectors (never split across chunks).

A prompt without emphasis, BREAK or more than 75 tokens gives exactly diffusers'
`encode_prompt` tensors. Weights are skipped when all are 1, because in fp16
A1111's rescale by old_mean/new_mean is not exactly 1 even then. Call it with the
request's LoRAs active: text-encoder LoRA layers apply as in diffusers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import RequestError
from .prompt_parser import (
    BREAK,
    entry_at,
    has_editing,
    parse_attention,
    prompt_schedule,
    strip_attention,
)

CHUNK_LENGTH = 75  # prompt tokens per chunk; a chunk is 77 with BOS and EOS
FRAME = CHUNK_LENGTH + 2
COMMA_PADDING_BACKTRACK = 20  # A1111's default
ENCODER_KEYS = {"text_encoder": "clip_l", "text_encoder_2": "clip_g"}  # A1111 SDXL TI keys
FAMILIES = ("sd15", "sdxl")

Vectors = torch.Tensor | Mapping[str, torch.Tensor]


@dataclass
class Chunk:
    """77 token ids and weights; `fixes` put TI vectors at (offset, vectors)."""

    tokens: list[int]
    multipliers: list[float]
    fixes: list[tuple[int, torch.Tensor]]


@dataclass(frozen=True)
class ChunkedPrompt:
    chunks: list[Chunk]
    token_count: int  # as A1111 counts it for its "75/150" counter


class Chunker:
    """A1111's tokenize_line for one tokenizer (and the TI vectors of its encoder)."""

    def __init__(
        self,
        tokenizer: Any,
        vectors: Mapping[str, torch.Tensor] | None = None,
        convert: Callable[[str], str] | None = None,
    ) -> None:
        """`vectors`: TI trigger word -> (n, width); `convert`: diffusers' maybe_convert_prompt."""
        self.tokenizer = tokenizer
        self.bos = tokenizer.bos_token_id
        self.eos = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id
        self.pad = self.eos if pad is None else pad
        comma = tokenizer.convert_tokens_to_ids(",</w>")
        self.comma = None if comma == tokenizer.unk_token_id else comma
        # diffusers' own TI loader adds tokens: expand them only when there are some
        self.convert = convert if len(tokenizer) > tokenizer.vocab_size else None
        self.lookup: dict[int, list[tuple[list[int], torch.Tensor]]] = {}
        names = list(vectors or {})
        for name, ids in zip(names, self.tokenize(names), strict=True):
            if ids:
                self.lookup.setdefault(ids[0], []).append((ids, vectors[name]))  # type: ignore[index]
        for matches in self.lookup.values():
            matches.sort(key=lambda m: -len(m[0]))  # longest name first, as A1111

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids without BOS/EOS, in one tokenizer call (empty texts skip it)."""
        todo = [t for t in texts if t]
        if self.convert is not None:
            todo = [self.convert(t) for t in todo]
        found = iter(
            self.tokenizer(todo, add_special_tokens=False, truncation=False, verbose=False)[
                "input_ids"
            ]
            if todo
            else ()
        )
        return [next(found) if t else [] for t in texts]

    def empty_chunk(self) -> Chunk:
        return Chunk([self.bos, self.eos] + [self.pad] * CHUNK_LENGTH, [1.0] * FRAME, [])

    def chunk(self, text: str, field: str = "prompt") -> ChunkedPrompt:
        return self.chunk_many([(text, field)])[0]

    def chunk_many(self, items: list[tuple[str, str]]) -> list[ChunkedPrompt]:
        """Chunks of each (text, field); all fragments tokenized in one call."""
        unique = {text: field for text, field in items}
        parsed = {text: parse_attention(text, field) for text, field in unique.items()}
        pieces = list({piece: None for frags in parsed.values() for piece, _ in frags})
        ids = dict(zip(pieces, self.tokenize(pieces), strict=True))  # schedules repeat pieces
        done = {
            text: self._chunks(frags, [ids[p] for p, _ in frags]) for text, frags in parsed.items()
        }
        return [done[text] for text, _ in items]

    def _chunks(self, parsed: list[tuple[str, float]], ids_of: list[list[int]]) -> ChunkedPrompt:
        chunks: list[Chunk] = []
        tokens: list[int] = []
        mults: list[float] = []
        fixes: list[tuple[int, torch.Tensor]] = []
        count = 0
        last_comma = -1

        def next_chunk(is_last: bool = False) -> None:
            nonlocal tokens, mults, fixes, count, last_comma
            count += len(tokens) if is_last else CHUNK_LENGTH
            pad = CHUNK_LENGTH - len(tokens)
            framed = [self.bos, *tokens, *[self.eos] * (pad + 1)]
            end = framed.index(self.eos)  # A1111: after the first EOS comes the pad token
            framed[end + 1 :] = [self.pad] * (FRAME - end - 1)
            fixed = [(o + 1, v) for o, v in fixes]
            chunks.append(Chunk(framed, [1.0, *mults, *[1.0] * (pad + 1)], fixed))
            tokens, mults, fixes, last_comma = [], [], [], -1

        for ids, (piece, weight) in zip(ids_of, parsed, strict=True):
            if (piece, weight) == BREAK:
                next_chunk()
                continue
            pos = 0
            while pos < len(ids):
                token = ids[pos]
                if token == self.comma:
                    last_comma = len(tokens)
                elif (
                    COMMA_PADDING_BACKTRACK
                    and len(tokens) == CHUNK_LENGTH
                    and last_comma != -1
                    and len(tokens) - last_comma <= COMMA_PADDING_BACKTRACK
                ):
                    cut = last_comma + 1  # move the words after the comma to the next chunk
                    moved = tokens[cut:], mults[cut:], [(o - cut, v) for o, v in fixes if o >= cut]
                    fixes = [(o, v) for o, v in fixes if o < cut]  # (A1111 loses moved TI vectors)
                    tokens, mults = tokens[:cut], mults[:cut]
                    next_chunk()
                    tokens, mults, fixes = moved
                if len(tokens) == CHUNK_LENGTH:
                    next_chunk()
                found = self._embedding_at(ids, pos) if self.lookup else None
                if found is None:
                    tokens.append(token)
                    mults.append(weight)
                    pos += 1
                    continue
                length, vectors = found
                if len(tokens) + vectors.shape[0] > CHUNK_LENGTH:
                    next_chunk()
                fixes.append((len(tokens), vectors))
                tokens += [0] * vectors.shape[0]  # placeholders; the vectors replace them
                mults += [weight] * vectors.shape[0]
                pos += length
        if tokens or not chunks:
            next_chunk(is_last=True)
        return ChunkedPrompt(chunks, count)

    def _embedding_at(self, ids: list[int], pos: int) -> tuple[int, torch.Tensor] | None:
        for name_ids, vectors in self.lookup.get(ids[pos], ()):
            if ids[pos : pos + len(name_ids)] == name_ids:
                return len(name_ids), vectors
        return None


def apply_emphasis(z: torch.Tensor, multipliers: torch.Tensor) -> torch.Tensor:
    """A1111 "Original": scale each token's states by its weight, then restore the mean."""
    original_mean = z.mean()
    z = z * multipliers.reshape(multipliers.shape + (1,)).expand(z.shape)
    return z * (original_mean / z.mean())


# ------------------------------------------------------------------ encoders


@dataclass(frozen=True)
class _Encoder:
    key: str  # "text_encoder" or "text_encoder_2"
    model: Any
    device: torch.device  # where its forward runs (offload hooks included)
    chunker: Chunker
    skip: int | None  # hidden_states[-skip], or None for last_hidden_state
    norm: Any  # the final layer norm applied after a skip (SD), or None
    pooled: bool


def _encoders(
    pipe: Any,
    family: str,
    clip_skip: int,
    sdxl_clip_l_skip: bool,
    embeddings: Mapping[str, Vectors] | None,
) -> list[_Encoder]:
    from diffusers.utils.torch_utils import get_module_execution_device

    if family not in FAMILIES:
        raise ValueError(f"A1111 prompt encoding covers {', '.join(FAMILIES)}, not {family!r}")
    keys = ["text_encoder"] if family == "sd15" else ["text_encoder", "text_encoder_2"]
    keys = [k for k in keys if getattr(pipe, k, None) is not None]
    layers = getattr(pipe, keys[0]).config.num_hidden_layers
    if not 1 <= clip_skip <= layers:
        raise RequestError("clip_skip", f"must be 1..{layers} for this model (1 = last layer)")
    convert = getattr(pipe, "maybe_convert_prompt", None)
    out = []
    for key in keys:
        model = getattr(pipe, key)
        tokenizer = getattr(pipe, "tokenizer" if key == "text_encoder" else "tokenizer_2")
        to_text = None if convert is None else lambda t, tok=tokenizer: convert(t, tok)
        chunker = Chunker(tokenizer, _vectors_for(key, family, model, embeddings), to_text)
        device = get_module_execution_device(model)
        if family == "sd15":  # A1111 clip skip: 1 = last layer, N = hidden_states[-N] + norm
            skip = None if clip_skip == 1 else clip_skip
            norm = None if skip is None else getattr(model, "text_model", model).final_layer_norm
        else:  # SDXL: penultimate layer, no norm; clip skip only on CLIP-L, if asked
            skip = clip_skip if key == "text_encoder" and sdxl_clip_l_skip else 2
            norm = None
        out.append(_Encoder(key, model, device, chunker, skip, norm, key == "text_encoder_2"))
    return out


def _vectors_for(
    key: str, family: str, model: Any, embeddings: Mapping[str, Vectors] | None
) -> dict[str, torch.Tensor]:
    """The TI vectors of each trigger word for one encoder, checked against its width."""
    out: dict[str, torch.Tensor] = {}
    width, name_of = model.config.hidden_size, ENCODER_KEYS[key]
    for word, value in (embeddings or {}).items():
        if isinstance(value, torch.Tensor) and family != "sd15":
            rule = f"embedding {word!r} has one set of vectors; SDXL needs clip_l and clip_g"
            raise RequestError("prompt", rule)
        vectors = value if isinstance(value, torch.Tensor) else value.get(name_of, value.get(key))
        if vectors is None:
            raise RequestError("prompt", f"embedding {word!r} has no vectors for {name_of}")
        vectors = vectors.reshape(-1, vectors.shape[-1])
        if vectors.shape[-1] != width or not 1 <= vectors.shape[0] <= CHUNK_LENGTH:
            raise RequestError(
                "prompt",
                f"embedding {word!r} has {vectors.shape[0]} vectors of width {vectors.shape[-1]}; "
                f"this model's {name_of} takes 1..{CHUNK_LENGTH} of width {width}",
            )
        out[word] = vectors
    return out


def _forward(enc: _Encoder, batch: list[Chunk]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One chunk position for every text of the batch: weighted states and pooled output."""
    ids = torch.tensor([c.tokens for c in batch], device=enc.device)
    fixes = [(b, o, v) for b, c in enumerate(batch) for o, v in c.fixes]
    handle = None
    if fixes:  # TI: the vectors replace the placeholders' token embeddings, this call only

        def put_vectors(module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
            output = output.clone()
            for b, o, v in fixes:
                output[b, o : o + v.shape[0]] = v.to(output.device, output.dtype)
            return output

        handle = enc.model.get_input_embeddings().register_forward_hook(put_vectors)
    try:
        output = enc.model(ids, output_hidden_states=enc.skip is not None)
    finally:
        if handle is not None:
            handle.remove()
    z = output.last_hidden_state if enc.skip is None else output.hidden_states[-enc.skip]
    z = z if enc.norm is None else enc.norm(z)
    if any(w != 1.0 for c in batch for w in c.multipliers):
        z = apply_emphasis(z, torch.tensor([c.multipliers for c in batch], device=z.device))
    return z, (output.text_embeds if enc.pooled else None)


def _encode(
    encoders: list[_Encoder],
    chunked: list[list[ChunkedPrompt]],
    count: int,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, 77 * count, width) states and the pooled output of texts encoded as one batch.

    `chunked[e][b]`: text b's chunks by encoder e. A text short of the batch's
    longest gets empty chunks in the batch (A1111); a chunk position no text
    reaches is the encoding of "" (padding to the other side of CFG).
    """
    width = sum(e.model.config.hidden_size for e in encoders)
    out = torch.empty(len(chunked[0]), FRAME * count, width, dtype=dtype, device=device)
    pooled, offset = None, 0
    for enc, per_text in zip(encoders, chunked, strict=True):
        empty = None
        span = slice(offset, offset + enc.model.config.hidden_size)
        for k in range(count):
            rows = [p.chunks[k] if k < len(p.chunks) else None for p in per_text]
            if all(r is None for r in rows):
                if empty is None:
                    empty = _forward(enc, [enc.chunker.empty_chunk()])[0]
                z = empty
            else:
                z, p = _forward(enc, [r or enc.chunker.empty_chunk() for r in rows])
                pooled = p.to(device) if k == 0 and p is not None else pooled
            out[:, FRAME * k : FRAME * (k + 1), span] = z
        offset = span.stop
    return out, pooled


# ------------------------------------------------------------------ public API


@torch.no_grad()
def encode_prompt_schedule(
    pipe: Any,
    family: str,
    prompt: str,
    negative_prompt: str | None,
    steps: int,
    clip_skip: int = 1,
    do_cfg: bool = True,
    *,
    embeddings: Mapping[str, Vectors] | None = None,
    sdxl_clip_l_skip: bool = False,
    hires_steps: int | None = None,
) -> list[tuple[int, dict[str, torch.Tensor]]]:
    """[(end_step, kwargs)]: diffusers `__call__` kwargs in force up to each end step.

    Prompt and negative prompt are scheduled separately (as A1111) and merged;
    every entry has the same token length, so a step callback can swap them
    (`schedule_callback`). Entry 0 goes to the call; with one entry there is no
    prompt editing. `steps` is what A1111 schedules over (its "Sampling steps").
    """
    encoders = _encoders(pipe, family, clip_skip, sdxl_clip_l_skip, embeddings)
    pos_sched = prompt_schedule(prompt, steps, hires_steps)
    neg_sched = prompt_schedule(negative_prompt or "", steps, hires_steps) if do_cfg else []
    # SDXL (diffusers with force_zeros_for_empty_prompt, and A1111): "" is all zeros
    zeros = family == "sdxl" and bool(pipe.config.get("force_zeros_for_empty_prompt", False))
    zeros = zeros and all(t == "" for _, t in neg_sched)
    items = [(t, "prompt") for _, t in pos_sched]
    if not zeros:
        items += [(t, "negative_prompt") for _, t in neg_sched]
    chunked = [e.chunker.chunk_many(items) for e in encoders]  # one tokenizer call each
    count = max(len(c.chunks) for per in chunked for c in per)
    dtype = getattr(pipe, encoders[-1].key).dtype
    device = pipe._execution_device
    n = len(pos_sched)
    pos, pos_pooled = _encode(encoders, [per[:n] for per in chunked], count, dtype, device)
    neg = neg_pooled = None
    if neg_sched and zeros:
        neg = torch.zeros((len(neg_sched), *pos.shape[1:]), dtype=dtype, device=device)
        if pos_pooled is not None:
            neg_pooled = pos_pooled.new_zeros((len(neg_sched), pos_pooled.shape[1]))
    elif neg_sched:
        neg, neg_pooled = _encode(encoders, [per[n:] for per in chunked], count, dtype, device)

    entries = []
    for end in sorted({e for e, _ in pos_sched} | {e for e, _ in neg_sched}):
        i = entry_at(pos_sched, end)
        kwargs = {"prompt_embeds": pos[i : i + 1]}
        if pos_pooled is not None:
            kwargs["pooled_prompt_embeds"] = pos_pooled[i : i + 1]
        if neg is not None:
            j = entry_at(neg_sched, end)
            kwargs["negative_prompt_embeds"] = neg[j : j + 1]
            if neg_pooled is not None:
                kwargs["negative_pooled_prompt_embeds"] = neg_pooled[j : j + 1]
        entries.append((end, kwargs))
    return entries


def encode_for_pipeline(
    pipe: Any,
    family: str,
    prompt: str,
    negative_prompt: str | None,
    clip_skip: int = 1,
    do_cfg: bool = True,
    *,
    embeddings: Mapping[str, Vectors] | None = None,
    sdxl_clip_l_skip: bool = False,
) -> dict[str, torch.Tensor]:
    """The diffusers kwargs for prompts without prompt editing (emphasis, BREAK, long prompts).

    Pass them instead of `prompt`/`negative_prompt`. A prompt with `[a:b:N]` or
    `[a|b]` needs the step count: use `encode_prompt_schedule`.
    """
    for name, text in (("prompt", prompt), ("negative_prompt", negative_prompt or "")):
        if has_editing(text):
            raise RequestError(
                name, "uses prompt editing; encode it with encode_prompt_schedule(steps=...)"
            )
    entries = encode_prompt_schedule(
        pipe, family, prompt, negative_prompt, 1, clip_skip, do_cfg,
        embeddings=embeddings, sdxl_clip_l_skip=sdxl_clip_l_skip,
    )  # fmt: skip
    return entries[0][1]


def schedule_tensor_inputs(family: str) -> list[str]:
    """What `callback_on_step_end_tensor_inputs` must hold for `schedule_callback`."""
    return ["prompt_embeds", "add_text_embeds"] if family == "sdxl" else ["prompt_embeds"]


def schedule_callback(
    schedule: list[tuple[int, dict[str, torch.Tensor]]],
    then: Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]] | None = None,
) -> Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]:
    """A `callback_on_step_end` that switches the conditioning at A1111's steps.

    It runs after loop step i (from 0); what it returns is used from step i + 1,
    so it returns step i + 1's entry when that differs from step i's. The loop's
    tensors are `cat([negative, positive])` under CFG, each repeated per image;
    SDXL's pooled output is `add_text_embeds`. Steps past the last end step (PNDM
    and Heun loop more often than `steps`) keep the last entry, where A1111 goes
    back to the first. `then` (progress, cancel) runs first; its outputs are kept.
    """
    last = schedule[-1][0]

    def callback(pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        out = dict(then(pipe, i, t, kwargs) or {}) if then is not None else {}
        nxt = entry_at(schedule, min(i + 1, last))
        if nxt != entry_at(schedule, min(i, last)):
            entry, cfg = schedule[nxt][1], bool(pipe.do_classifier_free_guidance)
            out["prompt_embeds"] = _loop_tensor(
                kwargs, "prompt_embeds", entry, "prompt_embeds", cfg
            )
            if "pooled_prompt_embeds" in entry:
                out["add_text_embeds"] = _loop_tensor(
                    kwargs, "add_text_embeds", entry, "pooled_prompt_embeds", cfg
                )
        return out

    return callback


def _loop_tensor(
    kwargs: dict[str, Any], name: str, entry: dict, key: str, cfg: bool
) -> torch.Tensor:
    if name not in kwargs:
        raise ValueError(
            f"callback_on_step_end_tensor_inputs must include {name!r} to swap prompts"
        )
    current = kwargs[name]
    copies = current.shape[0] // (2 if cfg else 1)
    parts = [entry["negative_" + key], entry[key]] if cfg else [entry[key]]
    return torch.cat([p.expand(copies, *p.shape[1:]) for p in parts]).to(
        current.device, current.dtype
    )


# ------------------------------------------------------------------ one job's conditioning


@dataclass
class Conditioning:
    """A job's prompts, encoded once: the call's kwargs (instead of `prompt` and
    `negative_prompt`), the prompt-editing schedule, and warnings for the result."""

    kwargs: dict[str, Any]
    schedule: list[tuple[int, dict[str, torch.Tensor]]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def callback(
        self, family: str, then: Callable[..., dict[str, Any]]
    ) -> tuple[Callable[..., dict[str, Any]], list[str]]:
        """(callback_on_step_end, its tensor inputs): `then` alone without prompt editing."""
        if len(self.schedule) <= 1:
            return then, ["latents"]
        return schedule_callback(self.schedule, then), ["latents", *schedule_tensor_inputs(family)]


def condition(
    pipe: Any,
    family: str,
    prompt: str,
    negative_prompt: str | None,
    steps: int,
    guidance_scale: float,
    *,
    clip_skip: int = 1,
    embeddings: Mapping[str, Vectors] | None = None,
    sdxl_clip_l_skip: bool = False,
) -> Conditioning:
    """Encode a job's prompts once (call it with the job's LoRAs active).

    SD/SDXL: A1111's encoding (emphasis, chunks, BREAK, editing, TI, clip skip).
    Other families (Flux): the T5/CLIP prompt takes no A1111 weights, so the syntax
    is removed and a warning says what was ignored; a plain prompt passes as is.
    """
    if family not in FAMILIES:
        return _plain_text(family, prompt, steps)
    unet = getattr(pipe, "unet", None)
    cond_dim = None if unet is None else unet.config.get("time_cond_proj_dim")
    do_cfg = guidance_scale > 1 and cond_dim is None  # diffusers' do_classifier_free_guidance
    schedule = encode_prompt_schedule(
        pipe, family, prompt, negative_prompt, steps, clip_skip, do_cfg,
        embeddings=embeddings, sdxl_clip_l_skip=sdxl_clip_l_skip,
    )  # fmt: skip
    return Conditioning(dict(schedule[0][1]), schedule)


def _plain_text(family: str, prompt: str, steps: int) -> Conditioning:
    warnings = []
    text = prompt
    if has_editing(prompt):
        text = prompt_schedule(prompt, steps)[0][1]
        warnings.append(
            f"{family}: prompt editing ([a:b:N], [a|b]) is not supported; "
            "the prompt of the first step was used for the whole run"
        )
    weighted = any(w != 1.0 for _, w in parse_attention(text))  # BREAK is weight -1
    if weighted:
        warnings.append(
            f"{family}: emphasis weights and BREAK are not applied to this model's text "
            "encoders; the words were used without them"
        )
    if weighted or "\\" in text or text != prompt:
        text = strip_attention(text)
    return Conditioning({"prompt": text}, [], warnings)
