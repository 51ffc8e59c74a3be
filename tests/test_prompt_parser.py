"""A1111's prompt language: the doctests of A1111's modules/prompt_parser.py, and more.

Expected values marked "A1111" were produced by A1111's own code (its lark
grammar with lark 1.1.2, the version A1111 pins), the same under several
PYTHONHASHSEED values (A1111's answer for a few ambiguous prompts depends on it).
"""

from __future__ import annotations

import time

import pytest

from pipelines.errors import RequestError
from pipelines.prompt_parser import (
    entry_at,
    has_editing,
    parse_attention,
    prompt_schedule,
    strip_attention,
)

# ---------------------------------------------------------------- emphasis (A1111 doctests)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("\\(literal\\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.5730000000000004),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641000000000006),
                (".", 1.1),
            ],
        ),
    ],
)
def test_attention_a1111_doctests(text: str, expected: list[tuple[str, float]]) -> None:
    assert parse_attention(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", [("", 1.0)]),
        ("[word]", [("word", 1 / 1.1)]),
        ("((word))", [("word", 1.1 * 1.1)]),
        ("(word: 1.3 )", [("word", 1.3)]),  # A1111 allows spaces around the weight
        ("(a:2) (b:-1)", [("a", 2.0), (" ", 1.0), ("b", -1.0)]),
        ("a:1.2) b", [("a:1.2) b", 1.0)]),  # a close with nothing open is text
        ("x \\\\ y \\q", [("x \\ y q", 1.0)]),  # "\\" is a backslash, "\q" drops it
        ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
        ("a BREAKb BREAK", [("a BREAKb", 1.0), ("BREAK", -1.0), ("", 1.0)]),
        # A1111 multiplies the BREAK marker inside brackets: it becomes the word "BREAK"
        ("(a BREAK b)", [("a", 1.1), ("BREAK", -1.1), ("b", 1.1)]),
        ("[(a:1.5) b]", [("a", 1.5 / 1.1), (" b", 1 / 1.1)]),
    ],
)
def test_attention_cases(text: str, expected: list[tuple[str, float]]) -> None:
    assert parse_attention(text) == pytest.approx(expected)


def test_attention_weight_that_is_not_a_number_is_a_field_error() -> None:
    # A1111 raises a bare ValueError here; we name the field and the rule
    with pytest.raises(RequestError) as err:
        parse_attention("a (b:1.2.3)", field="negative_prompt")
    assert err.value.field == "negative_prompt"
    assert "(text:1.2)" in err.value.rule


def test_strip_attention() -> None:
    assert strip_attention("a ((red:1.3)) [fox] BREAK \\(x\\)") == "a red fox (x)"


# ---------------------------------------------------------------- schedules (A1111 doctests)


def _g(text: str) -> list[tuple[int, str]]:
    return prompt_schedule(text, 10)


ALTERNATE = [(s, "a" if s % 2 else "(b:1.1)") for s in range(1, 11)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("test", [(10, "test")]),
        ("a [b:3]", [(3, "a "), (10, "a b")]),
        ("a [b: 3]", [(3, "a "), (10, "a b")]),
        ("a [[[b]]:2]", [(2, "a "), (10, "a [[b]]")]),
        ("[(a:2):3]", [(3, ""), (10, "(a:2)")]),
        ("a [b : c : 1] d", [(1, "a b  d"), (10, "a  c  d")]),
        ("a[b:[c:d:2]:1]e", [(1, "abe"), (2, "ace"), (10, "ade")]),
        ("a [unbalanced", [(10, "a [unbalanced")]),
        ("a [b:.5] c", [(5, "a  c"), (10, "a b c")]),
        ("((a][:b:c [d:3]", [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
        ("[a|(b:1.1)]", ALTERNATE),
        ("[fe|]male", [(s, "female" if s % 2 else "male") for s in range(1, 11)]),
        ("[fe|||]male", [(s, "female" if s % 4 == 1 else "male") for s in range(1, 11)]),
        # The doctest `a [{b|d{:.5] c` expects [[5, 'a  c'], [10, 'a {b|d{ c']], written
        # before `|` meant alternation; A1111's grammar now rejects it: used verbatim.
        ("a [{b|d{:.5] c", [(10, "a [{b|d{:.5] c")]),
    ],
)
def test_schedule_a1111_doctests(text: str, expected: list[tuple[int, str]]) -> None:
    assert _g(text) == expected


def test_schedule_hires_doctests() -> None:
    assert prompt_schedule("a [b:.5] c", 10, hires_steps=10) == [(10, "a b c")]
    assert prompt_schedule("a [b:1.5] c", 10, hires_steps=10) == [(5, "a  c"), (10, "a b c")]
    # an integer `when` counts on from the first pass: step 13 is hires step 3
    assert prompt_schedule("[x:y:13]", 10, hires_steps=10) == [(3, "x"), (10, "y")]


def test_schedule_of_a1111_comment_example() -> None:
    text = (
        "fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75]"
        "[ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]"
    )
    head = "fantasy landscape with a"
    assert prompt_schedule(text, 100) == [
        (25, f"{head} mountain and an oak in foreground shoddy"),
        (50, f"{head} lake and an oak in foreground in background shoddy"),
        (60, f"{head} lake and an oak in foreground in background masterful"),
        (75, f"{head} lake and an oak in background masterful"),
        (100, f"{head} lake and a christmas tree in background masterful"),
    ]


# A1111 (lark 1.1.2): prompts whose grammar has one reading, or whose answer did not
# change across hash seeds.
A1111_CASES: list[tuple[str, list[tuple[int, str]]]] = [
    ("a [(castle:1.3):tower:4] on a hill",
     [(4, "a (castle:1.3) on a hill"), (10, "a tower on a hill")]),
    ("[[a|b]:c:3]", [(1, "a"), (2, "b"), (3, "a")] + [(s, "c") for s in range(4, 11)]),
    ("[a:[b|c]:0.5]",
     [(s, "a") for s in range(1, 6)] + [(s, "bc"[s % 2 == 0]) for s in range(6, 11)]),
    ("(a [b:c:2]:1.2)", [(2, "(a b:1.2)"), (10, "(a c:1.2)")]),
    ("[a::2] [:b:2]", [(2, "a "), (10, " b")]),
    ("\\[a:b:2\\]", [(10, "\\[a:b:2\\]")]),
    ("[a\\:b:2]", [(2, ""), (10, "a\\:b")]),
    ("[a:b:2] | c", [(10, "[a:b:2] | c")]),  # "|" outside [a|b]: no reading, verbatim
    ("[a|b] \\", [(10, "[a|b] \\")]),  # a trailing lone backslash: verbatim
    ("[a: b :  7  ]", [(7, "a"), (10, " b ")]),
    ("[a:b:c:2]", [(10, "[a:b:c:2]")]),
    ("[a:b:2x]", [(10, "[a:b:2x]")]),
    ("[a:b:1.9]", [(10, "a")]),  # "." makes a fraction: 19 steps, clamped to 10
    ("[a:b:1e1]", [(10, "a")]),
    ("[a:b:0]", [(10, "b")]),
    ("[a:-3]", [(10, "a")]),
    ("a, [b:1], c", [(1, "a, , c"), (10, "a, b, c")]),
    ("tree [leaves:snow:5] (winter:0.8) BREAK sky",
     [(5, "tree leaves (winter:0.8) BREAK sky"), (10, "tree snow (winter:0.8) BREAK sky")]),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), A1111_CASES)
def test_schedule_matches_a1111(text: str, expected: list[tuple[int, str]]) -> None:
    assert _g(text) == expected


def test_old_scheduling_reads_numbers_below_one_as_fractions() -> None:
    assert prompt_schedule("[a:b:1.5]", 10, use_old_scheduling=True) == [(1, "a"), (10, "b")]
    assert prompt_schedule("[a:b:0.5]", 10, use_old_scheduling=True) == [(5, "a"), (10, "b")]


def test_ambiguous_bracket_prefers_the_construct() -> None:
    # `[a:3]]`: a schedule and a stray "]", or five stray characters: A1111 answers
    # either, by PYTHONHASHSEED. We take the construct.
    assert _g("[a:3]]") == [(3, "]"), (10, "a]")]


def test_when_beyond_the_steps_never_switches() -> None:
    assert prompt_schedule("[a:b:25]", 20) == [(20, "a")]
    assert prompt_schedule("[a:b:1e999]", 20) == [(20, "a")]  # A1111: OverflowError


def test_has_editing() -> None:
    assert has_editing("a [b:c:3]") and has_editing("[a|b]") and has_editing("((x)) [:y:0.5]")
    assert not has_editing("a (b:1.2) [c] BREAK d")
    assert not has_editing("[a:b:2] | c")  # rejected by the grammar: used verbatim


def test_entry_at_uses_a1111_zero_based_steps() -> None:
    schedule = prompt_schedule("a [b:3]", 10)
    assert [entry_at(schedule, s) for s in range(10)] == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    alternate = prompt_schedule("[a|b]", 4)
    assert [alternate[entry_at(alternate, s)][1] for s in range(4)] == ["a", "a", "b", "a"]


def test_long_and_deep_prompts_parse_fast() -> None:
    long = ", ".join(["(masterpiece:1.2) [red:blue:5] castle [a|b]"] * 60)
    unclosed = "(" * 3000 + "x"
    nested = "[" * 100 + "a|b" + "]" * 100
    start = time.perf_counter()
    assert len(prompt_schedule(long, 20)) == 20
    assert prompt_schedule(unclosed, 20) == [(20, unclosed)]
    assert prompt_schedule(nested, 2)[1] == (2, "[" * 99 + "b" + "]" * 99)
    assert time.perf_counter() - start < 2.0
    # nesting past Python's recursion limit is used verbatim (A1111's lark gets slow there)
    too_deep = "[" * 3000 + "a|b" + "]" * 3000
    assert prompt_schedule(too_deep, 2) == [(2, too_deep)]
