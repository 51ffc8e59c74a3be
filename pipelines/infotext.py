"""The AUTOMATIC1111 "parameters" text (infotext), written and read as A1111 does.

Format (A1111 `create_infotext` / `parse_generation_parameters`)::

    <prompt, one or more lines>
    Negative prompt: <negative prompt, one or more lines>     (only if non-empty)
    Key: value, Key 2: value, ...                              (the params line)

- The params line is `Key: value` pairs joined by ", ", in the caller's order;
  None values are left out. A value is written JSON-quoted (json.dumps,
  ensure_ascii=False) when it contains "," ":" or a newline (A1111's rule) or a
  double quote or carriage return (our addition: without it a value such as
  `"x"` would come back unquoted as `x`; A1111 reads the quoted form the same).
- Numbers print as A1111 shows them: 7.0 -> "7", 7.5 -> "7.5".
- Reading: the last line is the params line only if the pair regex finds at
  least 3 pairs in it, otherwise it belongs to the prompt (so a prompt ending
  in "a: b, c: d" stays a prompt). A line starting "Negative prompt:" begins the
  negative prompt, which runs until the params line. Every line is stripped,
  as A1111 does, so leading/trailing spaces of prompt lines do not survive.
- Values come back as raw strings, JSON-unquoted; "Size: 512x768" stays
  "512x768" (A1111 splits it into Size-1/Size-2; our callers split it).

Nothing here imports torch or gradio.
"""

from __future__ import annotations

import json
import re

__all__ = [
    "format_infotext",
    "format_value",
    "lora_hashes_value",
    "parse_infotext",
    "parse_lora_hashes",
    "quote",
    "unquote",
]

# A1111's own pattern (modules/infotext_utils.py), unchanged: key, then a quoted
# JSON string or anything up to the next comma.
RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
# A key must be something RE_PARAM can read back as one key.
_RE_KEY = re.compile(r"\w[\w \-/]+")
NEGATIVE_PREFIX = "Negative prompt:"
_MIN_PARAMS = 3  # fewer pairs than this on the last line: it is prompt text


def format_value(value: object) -> str:
    """The text of one value: floats without a trailing ".0", all else via str()."""
    if isinstance(value, float) and not isinstance(value, bool):
        text = str(value)
        # 7.0 -> "7", but keep "1e+20" / "nan" / "inf" as Python prints them.
        return text[:-2] if text.endswith(".0") else text
    return str(value)


def quote(text: str) -> str:
    """JSON-quote `text` if it could not be read back raw from the params line."""
    if not any(c in text for c in ',:\n\r"'):
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    """Undo quote(): JSON-decode a value in double quotes; anything else as is."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    # A JSON string literal always decodes to str; be safe anyway.
    return value if isinstance(value, str) else text


def format_infotext(prompt: str, negative_prompt: str, params: dict[str, object]) -> str:
    """The infotext of one image: prompt, optional negative prompt, params line.

    Raises ValueError for a key A1111's reader could not parse back (it must be
    a word character followed by at least one of: word characters, space, "-", "/").
    """
    pairs = []
    for key, value in params.items():
        if value is None:
            continue
        if not _RE_KEY.fullmatch(key):
            raise ValueError(
                f"infotext key {key!r} must be a word character followed by word "
                "characters, spaces, '-' or '/' (at least 2 characters)"
            )
        pairs.append(f"{key}: {quote(format_value(value))}")
    negative = f"\n{NEGATIVE_PREFIX} {negative_prompt}" if negative_prompt else ""
    # Same assembly and final strip() as A1111's create_infotext.
    return f"{prompt}{negative}\n{', '.join(pairs)}".strip()


def _params_of(line: str) -> list[tuple[str, str]]:
    return RE_PARAM.findall(line)


def parse_infotext(text: str) -> tuple[str, str, dict[str, str]]:
    """(prompt, negative prompt, params) of an infotext; values are raw strings."""
    *lines, last = text.strip().split("\n")
    pairs = _params_of(last)
    if len(pairs) < _MIN_PARAMS:
        # Not a params line: it is the last line of the prompt/negative prompt.
        lines.append(last)
        pairs = []

    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for raw in lines:
        line = raw.strip()
        if line.startswith(NEGATIVE_PREFIX):
            in_negative = True
            line = line[len(NEGATIVE_PREFIX) :].strip()
        (negative if in_negative else prompt).append(line)

    params = {key: unquote(value) for key, value in pairs}
    return "\n".join(prompt), "\n".join(negative), params


def _lora_name(name: str) -> str:
    # A1111 drops these from the alias so the list stays splittable.
    return name.replace(":", "").replace(",", "").strip()


def lora_hashes_value(pairs: list[tuple[str, str]]) -> str:
    """The "Lora hashes" value: "name: hash, name2: hash2" (A1111 order and form)."""
    return ", ".join(f"{_lora_name(name)}: {short}" for name, short in pairs)


def parse_lora_hashes(value: str) -> dict[str, str]:
    """{name: hash} from a "Lora hashes" value; malformed items are skipped."""
    found: dict[str, str] = {}
    for item in value.split(","):
        name, sep, short = item.rpartition(":")
        name, short = name.strip(), short.strip()
        if sep and name and short:
            found[name] = short
    return found
