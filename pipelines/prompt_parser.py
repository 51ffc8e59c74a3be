"""A1111's prompt language, parsed the way AUTOMATIC1111's web UI parses it (pure Python).

Users bring prompts written for A1111/Forge/SD.Next, so the syntax and its
edge cases follow A1111 (`modules/prompt_parser.py`), not a cleaner design:

- `parse_attention(text)`: emphasis. `(x)` x1.1, `[x]` /1.1, `(x:1.3)`, nesting,
  escapes `\\( \\) \\[ \\] \\\\`, and `BREAK` as the fragment `("BREAK", -1.0)`.
  Unbalanced brackets are tolerated (an unclosed `(` still multiplies to the end).
- `prompt_schedule(text, steps)`: prompt editing `[from:to:when]`, `[to:when]`,
  `[from::when]` and alternation `[a|b]`, as a list of `(end_step, text)`: the
  text holds for the sampling steps up to `end_step`. A1111's step rule (its
  CFG denoiser counts steps from 0): step `s` uses the first entry with
  `s <= end_step`, see `entry_at`.

A1111 parses schedules with a lark Earley grammar. Earley is slow here (about
0.3 s for a 1,000-character prompt) and resolves ambiguous prompts by set
iteration order, so A1111 itself answers `[a:3]]` differently from one run to
the next (it depends on PYTHONHASHSEED). This module is a small recursive-descent
parser of the same grammar: where the grammar has one reading it gives A1111's
answer; where it has several (a bracket that may be a construct or a stray
character) it takes the construct. Like A1111, a prompt the grammar rejects
(a `|` outside `[a|b]`, a trailing lone backslash) is used verbatim, unscheduled.

A1111's default scheduling (not "use old scheduling"): a `when` written with a
"." is a fraction of the steps (`0.25`, `1.0`), one without is a step number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import RequestError

Fragment = tuple[str, float]
BREAK: Fragment = ("BREAK", -1.0)

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

# -------------------------------------------------------------------- emphasis

# Token classes of A1111's emphasis scanner, tried in this order at each position.
_ATTENTION_TOKEN = re.compile(
    r"""
      (?P<escape>\\[()\[\]\\])          # \( \) \[ \] \\  -> the character itself
    | (?P<backslash>\\)                 # any other backslash is dropped
    | (?P<open>[(\[])
    | :\s*(?P<weight>[+-]?[.\d]+)\s*\)  # ":1.3)" closes a round bracket with a weight
    | (?P<close>[)\]])
    | (?P<text>[^\\()\[\]:]+)
    | (?P<colon>:)
    """,
    re.VERBOSE,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_attention(text: str, field: str = "prompt") -> list[Fragment]:
    """Split `text` into (text, weight) fragments with A1111's emphasis rules.

    Runs of equal weight are merged; `BREAK` (a whole word, outside brackets)
    becomes ("BREAK", -1.0). Inside brackets A1111 multiplies that marker's
    weight too, so it stops being a BREAK and is encoded as the word: kept as is.
    `field` names the request field in errors (A1111 crashes on "(a:1.2.3)").
    """
    res: list[list] = []  # [text, weight] pairs, weights multiplied in A1111's order
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply_from(start: int, factor: float) -> None:
        for item in res[start:]:
            item[1] *= factor

    for m in _ATTENTION_TOKEN.finditer(text):
        kind = m.lastgroup
        token = m.group(0)
        if kind == "escape":
            res.append([token[1], 1.0])
        elif kind == "backslash":
            res.append(["", 1.0])
        elif kind == "open":
            (round_open if token == "(" else square_open).append(len(res))
        elif kind == "weight" and round_open:
            multiply_from(round_open.pop(), _weight(m.group("weight"), token, field))
        elif token == ")" and round_open:
            multiply_from(round_open.pop(), ROUND_MULTIPLIER)
        elif token == "]" and square_open:
            multiply_from(square_open.pop(), SQUARE_MULTIPLIER)
        else:  # plain text, a lone ":", or a closing bracket with nothing open
            for i, part in enumerate(_BREAK.split(token)):
                if i:
                    res.append(list(BREAK))
                res.append([part, 1.0])

    for start in round_open:  # unclosed brackets apply to the end of the prompt
        multiply_from(start, ROUND_MULTIPLIER)
    for start in square_open:
        multiply_from(start, SQUARE_MULTIPLIER)

    merged: list[list] = []
    for item in res:
        if merged and merged[-1][1] == item[1]:
            merged[-1][0] += item[0]
        else:
            merged.append(item)
    return [(t, w) for t, w in merged] or [("", 1.0)]


def _weight(number: str, token: str, field: str) -> float:
    try:
        return float(number)
    except ValueError:
        raise RequestError(
            field, f"the weight in {token!r} is not a number; write it like (text:1.2)"
        ) from None


def strip_attention(text: str) -> str:
    """The text of `text` without emphasis syntax (for encoders that take no weights)."""
    return " ".join(
        " ".join(part for part, w in parse_attention(text) if (part, w) != BREAK).split()
    )


# -------------------------------------------------------------------- schedules


@dataclass(frozen=True)
class _Scheduled:
    before: tuple  # nodes; empty for [to:when]
    after: tuple
    when: str  # the number as written: "." in it makes it a fraction


@dataclass(frozen=True)
class _Alternate:
    options: tuple[tuple, ...]


_Node = str | _Scheduled | _Alternate

_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+")
_WHITESPACE = re.compile(r"\s+")
_NUMBER = re.compile(
    r"[+-]?(?:[0-9]+[eE][+-]?[0-9]+|(?:[0-9]+\.(?:[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+)"
)


class _Reject(Exception):
    """The grammar has no reading of the prompt: A1111 then uses it verbatim."""


class _Parser:
    """Recursive descent over A1111's schedule grammar.

    start:  (prompt | one of "[]():")*            stray brackets only at top level
    prompt: (emphasized | scheduled | alternate | plain | whitespace)*
    emphasized: "(" prompt ")" | "(" prompt ":" prompt ")" | "[" prompt "]"
    scheduled:  "[" [prompt ":"] prompt ":" [ws] NUMBER [ws] "]"
    alternate:  "[" prompt ("|" [prompt])+ "]"
    """

    def __init__(self, text: str) -> None:
        self.s = text
        self.built: dict[int, tuple[list[_Node], int] | None] = {}

    def top(self) -> list[_Node]:
        """Nodes of the whole text at top level; raises _Reject if there is no reading.

        Prefers a construct at each "[" or "("; if what follows then has no reading,
        backtracks and takes the bracket as a stray character instead (iterative,
        with failed suffixes remembered, so long prompts cost linear time).
        """
        s, n = self.s, len(self.s)
        out: list[_Node] = []
        choices: list[list] = []  # [position, len(out) before, construct end, stray tried]
        failed: set[int] = set()
        i = 0
        while i < n:
            c = s[i]
            if i not in failed and c != "|":  # "|" only ever belongs to an alternate
                built = self.construct(i) if c in "[(" else None
                if built is not None and built[1] not in failed:
                    choices.append([i, len(out), built[1], False])
                    out.extend(built[0])
                    i = built[1]
                    continue
                if c in "[]():":  # a stray bracket or colon, kept as text
                    out.append(c)
                    i += 1
                    continue
                m = _PLAIN.match(s, i)
                if m is not None:  # None: a lone backslash at the end
                    out.append(m.group(0))
                    i = m.end()
                    continue
            # no reading from i: undo back to the latest construct not yet tried as a stray
            failed.add(i)
            while choices and choices[-1][3]:
                failed.add(choices.pop()[0])
            if not choices:
                raise _Reject
            choice = choices[-1]
            failed.add(choice[2])
            choice[3] = True
            del out[choice[1] :]
            out.append(s[choice[0]])
            i = choice[0] + 1
        return out

    def prompt(self, i: int) -> tuple[list[_Node], int]:
        """The longest `prompt` from i (never fails; may be empty)."""
        s, n = self.s, len(self.s)
        nodes: list[_Node] = []
        while i < n:
            if s[i] in "[(":
                built = self.construct(i)
                if built is None:
                    break
                nodes.extend(built[0])
                i = built[1]
            else:
                m = _PLAIN.match(s, i)
                if m is None:
                    break
                nodes.append(m.group(0))
                i = m.end()
        return nodes, i

    def construct(self, i: int) -> tuple[list[_Node], int] | None:
        """An emphasized, scheduled or alternate construct at s[i] in "[(", or None."""
        if i not in self.built:
            self.built[i] = self._construct(i)
        return self.built[i]

    def _construct(self, i: int) -> tuple[list[_Node], int] | None:
        s, n = self.s, len(self.s)
        first, j = self.prompt(i + 1)
        if j >= n:
            return None
        if s[i] == "(":
            if s[j] == ")":
                return ["(", *first, ")"], j + 1
            if s[j] == ":":
                second, k = self.prompt(j + 1)
                if k < n and s[k] == ")":
                    return ["(", *first, ":", *second, ")"], k + 1
            return None
        if s[j] == "]":
            return ["[", *first, "]"], j + 1
        if s[j] == "|":
            options = [tuple(first)]
            while j < n and s[j] == "|":
                option, j = self.prompt(j + 1)
                options.append(tuple(option))
            if j < n and s[j] == "]":
                return [_Alternate(tuple(options))], j + 1
            return None
        if s[j] == ":":
            ended = self.when(j + 1)  # [to:when]
            if ended is not None:
                return [_Scheduled((), tuple(first), ended[0])], ended[1]
            second, k = self.prompt(j + 1)  # [from:to:when]
            if k < n and s[k] == ":":
                ended = self.when(k + 1)
                if ended is not None:
                    return [_Scheduled(tuple(first), tuple(second), ended[0])], ended[1]
        return None

    def when(self, i: int) -> tuple[str, int] | None:
        """`[ws] NUMBER [ws] "]"` from i: the number as written and the end, or None."""
        s = self.s
        ws = _WHITESPACE.match(s, i)
        i = ws.end() if ws else i
        number = _NUMBER.match(s, i)
        if number is None:
            return None
        i = number.end()
        ws = _WHITESPACE.match(s, i)
        i = ws.end() if ws else i
        if i < len(s) and s[i] == "]":
            return number.group(0), i + 1
        return None


def _parse(text: str) -> tuple | None:
    try:
        return tuple(_Parser(text).top())
    except (_Reject, RecursionError):  # RecursionError: brackets nested ~1000 deep
        return None


def _when_step(when: str, steps: int, int_offset: int, flt_offset: float, old: bool) -> int:
    """A1111's step for a `when`: a fraction of `steps` if written with ".", else a step."""
    v = float(when)
    if old:
        v = v * steps if v < 1 else v
    elif "." in when:
        v = (v - flt_offset) * steps
    else:
        v = v - int_offset
    # clamped before int() so "1e999" gives the last step where A1111 raises OverflowError
    return int(max(min(v, steps), -1.0))


def _walk(nodes: tuple, visit) -> None:
    for node in nodes:
        if isinstance(node, _Scheduled):
            visit(node)
            _walk(node.before, visit)
            _walk(node.after, visit)
        elif isinstance(node, _Alternate):
            visit(node)
            for option in node.options:
                _walk(option, visit)


def _text_at(nodes: tuple, step: int, whens: dict[int, int], out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Scheduled):
            _text_at(node.before if step <= whens[id(node)] else node.after, step, whens, out)
        else:
            _text_at(node.options[(step - 1) % len(node.options)], step, whens, out)


def has_editing(text: str) -> bool:
    """True if `text` uses prompt editing or alternation (its conditioning changes mid-run)."""
    nodes = _parse(text)
    found: list[object] = []
    if nodes is not None:
        _walk(nodes, found.append)
    return bool(found)


def prompt_schedule(
    text: str, steps: int, hires_steps: int | None = None, use_old_scheduling: bool = False
) -> list[tuple[int, str]]:
    """A1111's get_learned_conditioning_prompt_schedules for one prompt.

    Returns [(end_step, text), ...] sorted by end_step; the last end_step is the
    number of steps (`hires_steps` for a hires pass, where an integer `when`
    counts on from the first pass's `steps` and a fraction from 1.0).
    """
    if hires_steps is None or use_old_scheduling:
        int_offset, flt_offset, total = 0, 0.0, steps
    else:
        int_offset, flt_offset, total = steps, 1.0, hires_steps
    nodes = _parse(text)
    if nodes is None:
        return [(total, text)]
    whens: dict[int, int] = {}
    ends = {total}

    def collect(node: _Scheduled | _Alternate) -> None:
        if isinstance(node, _Alternate):
            ends.update(range(1, total + 1))
            return
        when = _when_step(node.when, total, int_offset, flt_offset, use_old_scheduling)
        whens[id(node)] = when
        if when >= 1:
            ends.add(when)

    _walk(nodes, collect)
    schedule = []
    for end in sorted(ends):
        out: list[str] = []
        _text_at(nodes, end, whens, out)
        schedule.append((end, "".join(out)))
    return schedule


def entry_at(schedule: list[tuple[int, object]], step: int) -> int:
    """Index of the schedule entry in force at sampling step `step` (counted from 0).

    A1111's rule (its denoiser counts from 0 and takes the first entry with
    step <= end_step): `a [b:3]` over 10 steps uses "a " for steps 0..3.
    """
    for index, (end, _) in enumerate(schedule):
        if step <= end:
            return index
    return 0  # past the last end step: A1111 falls back to the first entry
