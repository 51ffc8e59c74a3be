"""A1111 infotext, file hashes and PNG outputs: exact format, round trips, threads."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from pathlib import Path

import pytest
from PIL import Image

from pipelines.hashes import (
    addnet_hash,
    clear_hash_cache,
    file_sha256,
    folder_model_hash,
    lora_short_hash,
    model_hash,
)
from pipelines.infotext import (
    format_infotext,
    format_value,
    lora_hashes_value,
    parse_infotext,
    parse_lora_hashes,
)
from pipelines.outputs import read_png_parameters, save_png

A1111_TEXT = (
    "masterpiece, 1girl, <lora:detail:0.8>\n"
    "Negative prompt: lowres, bad anatomy\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1057871485, "
    "Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, "
    'Lora hashes: "detail: 1a2b3c4d5e6f", Version: v1.10.1'
)
A1111_PARAMS = {
    "Steps": "20",
    "Sampler": "DPM++ 2M",
    "Schedule type": "Karras",
    "CFG scale": "7",
    "Seed": "1057871485",
    "Size": "512x512",
    "Model hash": "6ce0161689",
    "Model": "v1-5-pruned-emaonly",
    "Lora hashes": "detail: 1a2b3c4d5e6f",
    "Version": "v1.10.1",
}
BASE = {"Steps": 20, "Sampler": "Euler a", "CFG scale": 7.0, "Seed": 1, "Size": "512x768"}


# -- infotext ------------------------------------------------------------------


def test_parses_real_a1111_text() -> None:
    prompt, negative, params = parse_infotext(A1111_TEXT)
    assert prompt == "masterpiece, 1girl, <lora:detail:0.8>"
    assert negative == "lowres, bad anatomy"
    assert params == A1111_PARAMS
    assert list(params) == list(A1111_PARAMS)  # order kept
    assert parse_lora_hashes(params["Lora hashes"]) == {"detail": "1a2b3c4d5e6f"}


def test_formats_real_a1111_text_byte_for_byte() -> None:
    params: dict[str, object] = {
        "Steps": 20,
        "Sampler": "DPM++ 2M",
        "Schedule type": "Karras",
        "CFG scale": 7.0,
        "Seed": 1057871485,
        "Size": "512x512",
        "Model hash": "6ce0161689",
        "Model": "v1-5-pruned-emaonly",
        "VAE": None,  # skipped
        "Lora hashes": lora_hashes_value([("detail", "1a2b3c4d5e6f")]),
        "Version": "v1.10.1",
    }
    text = format_infotext("masterpiece, 1girl, <lora:detail:0.8>", "lowres, bad anatomy", params)
    assert text == A1111_TEXT


def test_a1111_multiline_prompt_and_negative() -> None:
    text = (
        "a castle\non a hill, at night\n"
        "Negative prompt: blurry,\nworst quality\n"
        "Steps: 30, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 768x512, "
        'Hires upscale: 2, Denoising strength: 0.7, Hires prompt: "a, b", Version: v1.9.4'
    )
    prompt, negative, params = parse_infotext(text)
    assert prompt == "a castle\non a hill, at night"
    assert negative == "blurry,\nworst quality"
    assert params["CFG scale"] == "7.5"
    assert params["Hires prompt"] == "a, b"
    assert params["Version"] == "v1.9.4"


@pytest.mark.parametrize(
    ("value", "text"),
    [(7.0, "7"), (7.5, "7.5"), (0.75, "0.75"), (20, "20"), (-1.0, "-1"), ("x", "x")],
)
def test_format_value(value: object, text: str) -> None:
    assert format_value(value) == text


TRICKY_PROMPTS = [
    ("a red fox", "lowres"),
    ("line one\nline two\nline three", "bad,\nworse"),
    # last prompt line looks like a params line with 2 pairs
    ("a portrait\nstyle: oil, mood: dark", ""),
    # ... and with 3 pairs: only the real (appended) params line counts
    ("style: oil, mood: dark, light: soft", "noise: high, grain: yes, blur: some"),
    ("weights (a:1.2), [b|c], {d}", "x: y"),
    ("日本の城、桜 🌸 — «ünïcödé»", "низкое качество"),
    ("", "only negative"),
    ('quote " and, comma', 'neg "quoted"'),
]


@pytest.mark.parametrize(("prompt", "negative"), TRICKY_PROMPTS)
def test_round_trip_tricky_prompts(prompt: str, negative: str) -> None:
    text = format_infotext(prompt, negative, BASE)
    assert parse_infotext(text) == (
        prompt,
        negative,
        {"Steps": "20", "Sampler": "Euler a", "CFG scale": "7", "Seed": "1", "Size": "512x768"},
    )


def test_empty_negative_writes_no_negative_line() -> None:
    text = format_infotext("a cat", "", BASE)
    assert "Negative prompt" not in text
    assert text == "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x768"
    assert parse_infotext(text)[1] == ""


@pytest.mark.parametrize(
    "value",
    [
        'say "hi", then: go',
        '"fully quoted"',
        'a"b',
        "multi\nline, value",
        "back\\slash, x",
        "ünï: çödé",
        "trailing\r",
    ],
)
def test_tricky_values_round_trip(value: str) -> None:
    text = format_infotext("p", "", {**BASE, "Extra": value, "Version": "v"})
    assert len(text.split("\n")) == 2  # params stay on one line
    assert parse_infotext(text)[2]["Extra"] == value


def test_quoting_matches_a1111() -> None:
    params = {**BASE, "Aa": "x, y", "Bb": "k: v", "Cc": "plain", "Uu": "ünï, x"}
    last = format_infotext("p", "", params).split("\n")[-1]
    assert 'Aa: "x, y"' in last
    assert 'Bb: "k: v"' in last
    assert "Cc: plain" in last
    assert 'Uu: "ünï, x"' in last  # ensure_ascii=False: no \\u escapes


def test_last_line_with_fewer_than_three_pairs_is_prompt() -> None:
    prompt, negative, params = parse_infotext("a cat\nstyle: oil, mood: dark")
    assert prompt == "a cat\nstyle: oil, mood: dark"
    assert (negative, params) == ("", {})


def test_bad_unquote_falls_back_to_raw() -> None:
    text = 'p\nSteps: 20, Seed: 1, Broken: "a\\qb", Size: 8x8'
    assert parse_infotext(text)[2]["Broken"] == '"a\\qb"'


def test_bad_key_rejected() -> None:
    for key in ("K:ey", "A", "x,y", " lead"):
        with pytest.raises(ValueError, match="word character"):
            format_infotext("p", "", {key: 1})


def test_lora_hashes_round_trip() -> None:
    value = lora_hashes_value([("detail", "1a2b3c4d5e6f"), ("my:lora,x", "abcdefabcdef")])
    assert value == "detail: 1a2b3c4d5e6f, mylorax: abcdefabcdef"
    text = format_infotext("p", "", {**BASE, "Lora hashes": value})
    params = parse_infotext(text)[2]
    assert parse_lora_hashes(params["Lora hashes"]) == {
        "detail": "1a2b3c4d5e6f",
        "mylorax": "abcdefabcdef",
    }
    assert parse_lora_hashes("") == {}
    assert parse_lora_hashes("junk, a: 1") == {"a": "1"}


# -- hashes --------------------------------------------------------------------


def _write_safetensors(path: Path, payload: bytes, meta: dict[str, str] | None = None) -> None:
    header = {"w": {"dtype": "U8", "shape": [len(payload)], "data_offsets": [0, len(payload)]}}
    if meta:
        header["__metadata__"] = meta  # type: ignore[assignment]
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8 bytes
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + payload)


def test_addnet_hash_is_sha256_of_payload(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 5000  # > 1 MiB: several chunks
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    _write_safetensors(a, payload)
    _write_safetensors(b, payload, meta={"ss_note": "a different header"})
    expected = hashlib.sha256(payload).hexdigest()
    assert addnet_hash(a) == expected
    assert addnet_hash(b) == expected  # the header does not count
    assert lora_short_hash(a) == expected[:12]
    assert file_sha256(a) == hashlib.sha256(a.read_bytes()).hexdigest()
    assert file_sha256(a) != file_sha256(b)


def test_addnet_hash_refuses_non_safetensors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\xff" * 16)
    with pytest.raises(ValueError, match="not a .safetensors"):
        addnet_hash(bad)


def test_model_hash_of_known_bytes(tmp_path: Path) -> None:
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"abc")
    # sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
    assert model_hash(path) == "ba7816bf8f"
    assert file_sha256(str(path)).startswith("ba7816bf8f01cfea")


def test_hash_cache_invalidates_on_change(tmp_path: Path) -> None:
    clear_hash_cache()
    path = tmp_path / "m.safetensors"
    _write_safetensors(path, b"first")
    assert addnet_hash(path) == hashlib.sha256(b"first").hexdigest()
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    _write_safetensors(path, b"second payload")
    assert addnet_hash(path) == hashlib.sha256(b"second payload").hexdigest()
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_hash_cache_hashes_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipelines.hashes as hashes

    clear_hash_cache()
    calls = []
    real = hashes._sha256_whole

    def counting(path: Path) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(hashes, "_sha256_whole", counting)
    path = tmp_path / "m.bin"
    path.write_bytes(b"x" * 1000)
    threads = [threading.Thread(target=file_sha256, args=(path,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    file_sha256(tmp_path / "." / "m.bin")  # same file, other spelling
    assert len(calls) == 1


def test_folder_model_hash(tmp_path: Path) -> None:
    model = tmp_path / "model"
    for rel, data in [
        ("unet/diffusion_pytorch_model.safetensors", b"unet"),
        ("text_encoder/model.safetensors", b"te"),
        ("vae/diffusion_pytorch_model.safetensors", b"vae"),
    ]:
        (model / rel).parent.mkdir(parents=True, exist_ok=True)
        (model / rel).write_bytes(data)
    unet_hex = hashlib.sha256(b"unet").hexdigest()
    assert folder_model_hash(model) == hashlib.sha256(unet_hex.encode()).hexdigest()[:10]

    # transformer + transformer_2, sorted by relative path
    flux = tmp_path / "flux"
    for rel, data in [
        ("transformer_2/b.safetensors", b"t2"),
        ("transformer/b.safetensors", b"t1b"),
        ("transformer/a.safetensors", b"t1a"),
        ("vae/x.safetensors", b"vae"),
    ]:
        (flux / rel).parent.mkdir(parents=True, exist_ok=True)
        (flux / rel).write_bytes(data)
    joined = "".join(hashlib.sha256(d).hexdigest() for d in (b"t1a", b"t1b", b"t2"))
    assert folder_model_hash(flux) == hashlib.sha256(joined.encode()).hexdigest()[:10]

    # no denoiser folder: all *.safetensors; hidden folders ignored
    other = tmp_path / "other"
    (other / "sub").mkdir(parents=True)
    (other / ".cache").mkdir()
    (other / "sub" / "w.safetensors").write_bytes(b"w")
    (other / ".cache" / "junk.safetensors").write_bytes(b"junk")
    w_hex = hashlib.sha256(b"w").hexdigest()
    assert folder_model_hash(other) == hashlib.sha256(w_hex.encode()).hexdigest()[:10]

    # then *.bin
    old = tmp_path / "old"
    (old / "unet").mkdir(parents=True)
    (old / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"bin")
    b_hex = hashlib.sha256(b"bin").hexdigest()
    assert folder_model_hash(old) == hashlib.sha256(b_hex.encode()).hexdigest()[:10]

    # a single checkpoint file: the plain model hash
    assert folder_model_hash(old / "unet" / "diffusion_pytorch_model.bin") == b_hex[:10]

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError):
        folder_model_hash(empty)


# -- outputs -------------------------------------------------------------------


def _image(color: tuple[int, int, int] = (200, 30, 30)) -> Image.Image:
    return Image.new("RGB", (16, 16), color)


@pytest.mark.parametrize(
    "infotext",
    [
        A1111_TEXT,
        "日本の城 🌸\nNegative prompt: низкое\nSteps: 1, Seed: 2, Size: 8x8",
        "line\nline2\nSteps: 1, Seed: 2, Size: 8x8",
    ],
)
def test_save_then_read(tmp_path: Path, infotext: str) -> None:
    path = save_png(_image(), tmp_path / "new" / "folder", infotext)
    assert path.name == "00000.png"
    assert read_png_parameters(path) == infotext
    with Image.open(path) as im:
        assert read_png_parameters(im) == infotext
        assert im.size == (16, 16)


def test_latin1_text_is_tEXt_and_unicode_is_iTXt(tmp_path: Path) -> None:
    plain = save_png(_image(), tmp_path, "café, Steps: 1")
    fancy = save_png(_image(), tmp_path, "城, Steps: 1")
    assert b"tEXtparameters\x00caf\xe9" in plain.read_bytes()
    assert b"iTXtparameters" in fancy.read_bytes()


def test_numbering_with_seed(tmp_path: Path) -> None:
    (tmp_path / "00041-7.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_bytes(b"")
    (tmp_path / "12abc.png").write_bytes(b"")
    first = save_png(_image(), tmp_path, "x", seed=1234)
    second = save_png(_image(), tmp_path, "x", seed=1234)
    third = save_png(_image(), tmp_path, "x")
    assert [first.name, second.name, third.name] == [
        "00042-1234.png",
        "00043-1234.png",
        "00044.png",
    ]
    assert (tmp_path / "00041-7.png").read_bytes() == b""  # untouched


def test_many_threads_one_folder(tmp_path: Path) -> None:
    paths: list[Path] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(t: int) -> None:
        try:
            for i in range(10):
                text = f"thread {t} image {i}\nSteps: {i}, Seed: {t}, Size: 16x16"
                stem = "same" if i % 3 == 0 else None
                p = save_png(_image((t * 20, i * 20, 0)), tmp_path, text, stem=stem, seed=t)
                with lock:
                    paths.append(p)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(paths) == 80 and len(set(paths)) == 80
    on_disk = sorted(p for p in tmp_path.iterdir())
    assert on_disk == sorted(paths)  # no temp files left behind
    texts = {read_png_parameters(p) for p in paths}
    assert len(texts) == 80
    numbers = [p.name.split("-")[0] for p in paths if not p.name.startswith("same")]
    assert len(numbers) == len(set(numbers))  # distinct sequence numbers in-process


def test_stem_collision_appends_suffix(tmp_path: Path) -> None:
    names = [save_png(_image(), tmp_path, f"t{i}", stem="fox_01.v2").name for i in range(3)]
    assert names == ["fox_01.v2.png", "fox_01.v2-1.png", "fox_01.v2-2.png"]
    assert read_png_parameters(tmp_path / "fox_01.v2.png") == "t0"
    assert read_png_parameters(tmp_path / "fox_01.v2-2.png") == "t2"


@pytest.mark.parametrize("stem", ["../x", "", ".hidden", "a/b", "a b", "x" * 129, "-x", "ü"])
def test_bad_stem(tmp_path: Path, stem: str) -> None:
    with pytest.raises(ValueError, match=r"must match \^\[A-Za-z0-9\]"):
        save_png(_image(), tmp_path, "p", stem=stem)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_png(_image(), tmp_path, "p", seed=1)
    assert list(tmp_path.iterdir()) == []


def test_png_without_parameters(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    _image().save(path)
    assert read_png_parameters(path) is None


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
@pytest.mark.parametrize("order", ["utf-16-be", "utf-16-le"])
def test_reads_exif_user_comment(tmp_path: Path, fmt: str, order: str) -> None:
    text = "日本 fox\nSteps: 20, Seed: 1, Size: 16x16"
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + text.encode(order)
    path = tmp_path / f"img.{fmt.lower()}"
    _image().save(path, format=fmt, exif=exif.tobytes())
    assert read_png_parameters(path) == text
