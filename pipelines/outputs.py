"""Saving generated images as PNGs that carry their A1111 infotext, and reading it back.

Format: the infotext goes in a PNG text chunk named `parameters`, as a tEXt
chunk when it is latin-1 text (as A1111 writes it) and as iTXt (UTF-8)
otherwise, so A1111's PNG Info, civitai and image viewers read it.

File names (policy):
- With a stem: `<stem>.png`, then `<stem>-1.png`, `<stem>-2.png`, ... if taken.
  A stem must match STEM_RULE (no paths, no hidden files) or ValueError.
- Without: A1111-style numbering `NNNNN-<seed>.png` (or `NNNNN.png` without a
  seed), NNNNN one more than the highest number any file name in the folder
  starts with (`00000` in an empty folder, like A1111).

Concurrency: a name is claimed with os.open(O_CREAT | O_EXCL), which fails if
the name exists, so an existing file is never overwritten, not even by another
process. The PNG is encoded in memory, written to a hidden temporary file in
the same folder and moved onto the claimed name with os.replace, so the final
name never shows a half-written PNG (only, for a moment, the empty claim).
In-process, automatic numbering is also serialised per folder so threads get
distinct numbers; two processes numbering one folder can pick the same number
with different seeds, but still never overwrite each other.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from .errors import RequestError

__all__ = [
    "STEM_RULE",
    "check_stem",
    "read_image_texts",
    "read_png_parameters",
    "save_image",
    "save_png",
    "save_result",
    "check_task_id",
]

PARAMETERS_KEY = "parameters"
STEM_RULE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_STEM = re.compile(STEM_RULE)
_NUMBER = re.compile(r"[0-9]+")
_MAX_TRIES = 100_000  # names tried before giving up; only a broken folder gets there
# Modes PNG stores as they are; anything else (CMYK, F, YCbCr, ...) becomes RGB.
_PNG_MODES = {"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"}
_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
# EXIF tags other than UserComment that name the studio or its metadata scheme.
_EXIF_NAMES = {0x0131: "Software", 0x927C: "MakerNote"}

_locks_guard = threading.Lock()
_folder_locks: dict[str, threading.Lock] = {}


def check_stem(stem: str) -> str:
    """Return `stem` if it is a safe file stem, else raise ValueError naming the rule."""
    if not isinstance(stem, str) or not _STEM.fullmatch(stem):
        raise ValueError(
            f"file stem {stem!r} must match {STEM_RULE}: 1-128 characters of letters, "
            "digits, '.', '_' or '-', starting with a letter or digit (no paths, no hidden files)"
        )
    return stem


def _folder_lock(folder: Path) -> threading.Lock:
    with _locks_guard:
        return _folder_locks.setdefault(str(folder.resolve()), threading.Lock())


def _png_bytes(image: Image.Image, infotext: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    try:
        infotext.encode("latin-1")
    except UnicodeEncodeError:
        info.add_itxt(PARAMETERS_KEY, infotext)
    else:
        info.add_text(PARAMETERS_KEY, infotext)
    if image.mode not in _PNG_MODES:
        image = image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def _try_claim(path: Path) -> bool:
    """Create `path` empty if it does not exist; False if it does."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _next_number(folder: Path) -> int:
    """One more than the highest leading number of a file name (A1111's rule)."""
    highest = -1
    with os.scandir(folder) as entries:
        for entry in entries:
            head = os.path.splitext(entry.name)[0].split("-")[0]
            if _NUMBER.fullmatch(head):
                highest = max(highest, int(head))
    return highest + 1


def _claim_stem(folder: Path, stem: str) -> Path:
    for i in range(_MAX_TRIES):
        path = folder / (f"{stem}.png" if i == 0 else f"{stem}-{i}.png")
        if _try_claim(path):
            return path
    raise FileExistsError(f"no free name for stem {stem!r} in {folder}")


def _claim_numbered(folder: Path, seed: int | None) -> Path:
    suffix = "" if seed is None else f"-{int(seed)}"
    # The lock makes threads see each other's claims when listing; O_EXCL
    # below still guards against other processes.
    with _folder_lock(folder):
        n = _next_number(folder)
        for _ in range(_MAX_TRIES):
            path = folder / f"{n:05d}{suffix}.png"
            if _try_claim(path):
                return path
            n += 1
    raise FileExistsError(f"no free numbered name in {folder}")


def _publish(folder: Path, final: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".atelier-", suffix=".png.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp makes 0600 files; the claim was made with 0644 less the umask, as any
        # new file: the PNG gets that mode, so other users and web servers can read it.
        os.chmod(tmp, final.stat().st_mode & 0o777)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_png(
    image: Image.Image,
    folder: str | os.PathLike[str],
    infotext: str,
    stem: str | None = None,
    seed: int | None = None,
) -> Path:
    """Save `image` as a new PNG in `folder` with `infotext` as `parameters`.

    Returns the path written. Never overwrites a file; see the module docstring
    for the naming policy. Creates `folder` if missing.
    """
    if stem is not None:
        check_stem(stem)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Encode first: a failing encode claims no name, and the claim stays empty
    # only for as long as the write takes.
    data = _png_bytes(image, infotext)
    final = _claim_stem(folder, stem) if stem is not None else _claim_numbered(folder, seed)
    try:
        _publish(folder, final, data)
    except BaseException:
        final.unlink(missing_ok=True)  # give the claimed name back
        raise
    return final


_CHARSET_PREFIXES = (b"ASCII\0\0\0", b"UNICODE\0", b"JIS\0\0\0\0\0", b"\0" * 8)


def _decode_user_comment(raw: bytes | str) -> str | None:
    """Text of an EXIF UserComment (8-byte charset prefix, then the text).

    Some studios (Fooocus) store the text with no charset prefix at all: then the
    whole value is the text (cutting 8 bytes off it would lose the start)."""
    if isinstance(raw, str):
        return raw.strip("\0") or None
    prefix, body = raw[:8], raw[8:]
    if prefix not in _CHARSET_PREFIXES:
        return raw.decode("utf-8", errors="ignore").strip("\0") or None
    if prefix == b"UNICODE\0":
        # piexif (A1111) writes UTF-16 big-endian; some tools write little-endian.
        # The infotext is mostly ASCII, so the zero bytes show the byte order.
        if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
            text = body.decode("utf-16", errors="replace")
        else:
            little = body[1::2].count(0) > body[0::2].count(0)
            text = body.decode("utf-16-le" if little else "utf-16-be", errors="replace")
    else:
        # ASCII, JIS or undefined charset: A1111 falls back to lenient UTF-8.
        text = body.decode("utf-8", errors="ignore")
    return text.strip("\0") or None


def _exif_text(im: Image.Image, tag: int) -> str | None:
    """An EXIF text tag from the Exif IFD (where A1111 writes it) or from IFD0 (where
    Fooocus does)."""
    if "exif" not in im.info:
        return None
    exif = im.getexif()
    value = exif.get_ifd(_EXIF_IFD).get(tag) or exif.get(tag)
    if not value:
        return None
    if tag == _USER_COMMENT:
        return _decode_user_comment(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="ignore")
    return str(value).strip("\0") or None


def _parameters_of(im: Image.Image) -> str | None:
    value = im.info.get(PARAMETERS_KEY)
    if value is None:
        # PNG text chunks after the image data are only in .text (it loads them).
        value = (getattr(im, "text", None) or {}).get(PARAMETERS_KEY)
    if value is not None:
        return str(value)
    # JPEG/WebP as A1111 saves them: EXIF UserComment.
    text = _exif_text(im, _USER_COMMENT)
    if text:
        return text
    comment = im.info.get("comment")  # GIF / JPEG COM segment
    if isinstance(comment, bytes):
        return comment.decode("utf-8", errors="replace") or None
    return comment or None


def read_png_parameters(source: str | os.PathLike[str] | Image.Image) -> str | None:
    """The infotext stored in an image, or None.

    PNG: the `parameters` text chunk (tEXt, zTXt or iTXt). JPEG/WebP: the EXIF
    UserComment, as A1111 writes it; a JPEG/GIF comment as a last resort.
    """
    if isinstance(source, Image.Image):
        return _parameters_of(source)
    with Image.open(source) as im:
        return _parameters_of(im)


def _texts_of(im: Image.Image) -> dict[str, str]:
    texts: dict[str, str] = {}
    chunks = getattr(im, "text", None) or {}
    for key, value in {**im.info, **chunks}.items():
        if isinstance(key, str) and isinstance(value, str):
            texts[key] = value
    if PARAMETERS_KEY not in texts and (comment := _exif_text(im, _USER_COMMENT)):
        texts[PARAMETERS_KEY] = comment
    for tag, name in _EXIF_NAMES.items():
        if name not in texts and (value := _exif_text(im, tag)):
            texts[name] = value
    return texts


def read_image_texts(source: str | os.PathLike[str] | Image.Image) -> dict[str, str]:
    """Every text an image carries that a studio may have put its parameters in:
    PNG text chunks by keyword (`parameters`, `prompt`, `workflow`, `Comment`, ...),
    and for JPEG/WebP the EXIF UserComment as `parameters`, Software as `Software`
    and MakerNote as `MakerNote` (Fooocus names its scheme there).
    pipelines.pnginfo tells the formats apart."""
    if isinstance(source, Image.Image):
        return _texts_of(source)
    with Image.open(source) as im:
        return _texts_of(im)


def check_task_id(task_id: str | None) -> None:
    if task_id is not None and not (isinstance(task_id, str) and _STEM.match(task_id)):
        raise RequestError("task_id", f"must match {STEM_RULE} (no paths), got {task_id!r}")


def save_image(
    image: Image.Image,
    folder: str | os.PathLike[str],
    infotext: str,
    seed: int,
    n: int,
    task_id: str | None = None,
) -> Path:
    """Image `n` of a job: `<task_id>-<n>.png` with a task id, else numbered A1111-style."""
    stem = f"{task_id}-{n}" if task_id is not None else None
    return save_png(image, folder, infotext, stem=stem, seed=seed)


def save_result(
    result: Any, folder: str | os.PathLike[str], task_id: str | None = None
) -> list[Path]:
    """Save every image of a GenerationResult; with a task id, as `<task_id>-<n>.png`."""
    check_task_id(task_id)
    made = zip(result.images, result.seeds, result.infotexts, strict=True)
    return [save_image(image, folder, info, seed, n, task_id)
            for n, (image, seed, info) in enumerate(made)]  # fmt: skip
