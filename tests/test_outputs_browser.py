"""The outputs folder as the Outputs tab lists it (ui/outputs_browser.py), without a
server: order, search, paging, owners, and what may never be opened."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from pipelines.infotext import format_infotext
from pipelines.outputs import save_png
from ui.outputs_browser import OWNERS_FILE, OutputsBrowser


def png(folder: Path, name: str, prompt: str, mtime: float) -> Path:
    text = format_infotext(prompt, "blurry", {"Steps": 2, "Sampler": "Euler", "CFG scale": 7,
                                              "Seed": 1, "Size": "8x8"})  # fmt: skip
    path = save_png(Image.new("RGB", (8, 8), "red"), folder, text, stem=name)
    os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    png(tmp_path, "old", "a red fox in snow", 1000)
    png(tmp_path, "mid", "a lighthouse at dusk", 2000)
    png(tmp_path, "new", "a Red Panda", 3000)
    (tmp_path / "notes.txt").write_text("not an output")
    (tmp_path / ".hidden.png").write_bytes((tmp_path / "old.png").read_bytes())
    return tmp_path


def test_newest_first_only_outputs(folder: Path) -> None:
    names = [e.name for e in OutputsBrowser(folder).entries()]
    assert names == ["new.png", "mid.png", "old.png"]


def test_search_matches_prompt_words_case_insensitively(folder: Path) -> None:
    browser = OutputsBrowser(folder)
    assert [e.name for e in browser.entries(query="RED")] == ["new.png", "old.png"]
    assert [e.name for e in browser.entries(query="red fox")] == ["old.png"]
    assert browser.entries(query="steps") == []  # parameters are not the prompt
    assert [e.name for e in browser.entries(query="blurry")] == ["new.png", "mid.png", "old.png"]


def test_pages_are_clamped(folder: Path) -> None:
    browser = OutputsBrowser(folder)
    first, page, pages = browser.page(None, "", 1, per_page=2)
    assert ([e.name for e in first], page, pages) == (["new.png", "mid.png"], 1, 2)
    last, page, _ = browser.page(None, "", 99, per_page=2)
    assert ([e.name for e in last], page) == (["old.png"], 2)
    assert browser.page(None, "", 0, per_page=2)[1] == 1


def test_owners_recorded_and_enforced(folder: Path) -> None:
    browser = OutputsBrowser(folder)
    browser.record([folder / "old.png", folder / "new.png"], "user:alice")
    browser.record([folder / "mid.png"], "user:bob")
    # a fresh browser (a restarted server) reads the owners back
    again = OutputsBrowser(folder)
    assert [e.name for e in again.entries("user:alice")] == ["new.png", "old.png"]
    assert [e.name for e in again.entries("user:bob")] == ["mid.png"]
    assert len(again.entries(None)) == 3  # a private studio lists everything
    with pytest.raises(KeyError):
        again.open("mid.png", "user:alice")
    assert again.open("mid.png", "user:bob") == folder / "mid.png"


def test_a_torn_owners_line_is_skipped(folder: Path) -> None:
    (folder / OWNERS_FILE).write_text(
        json.dumps({"file": "old.png", "owner": "user:alice"}) + '\n{"file": "mid.p'
    )
    assert [e.name for e in OutputsBrowser(folder).entries("user:alice")] == ["old.png"]


@pytest.mark.parametrize(
    "name", ["../old.png", "sub/old.png", ".hidden.png", "notes.txt/..", "/etc/passwd", ""]
)
def test_only_plain_visible_files_of_the_folder_open(folder: Path, name: str) -> None:
    with pytest.raises(KeyError):
        OutputsBrowser(folder).open(name, None)


def test_a_symlink_out_of_the_folder_is_never_listed_or_opened(folder: Path, tmp_path_factory):
    secret = tmp_path_factory.mktemp("elsewhere") / "secret.png"
    secret.write_bytes((folder / "old.png").read_bytes())
    (folder / "link.png").symlink_to(secret)
    browser = OutputsBrowser(folder)
    assert "link.png" not in [e.name for e in browser.entries()]
    with pytest.raises(KeyError):
        browser.open("link.png", None)


def test_thumbnails_are_small_and_copies_exact(folder: Path, tmp_path_factory) -> None:
    big = folder / "big.png"
    Image.new("RGB", (1024, 512), "blue").save(big)
    into = tmp_path_factory.mktemp("served")
    thumb = OutputsBrowser.thumbnail(big, into)
    with Image.open(thumb) as im:
        assert max(im.size) == 256 and im.format == "JPEG"
    copy = OutputsBrowser.full_copy(folder / "old.png", into)
    assert copy.read_bytes() == (folder / "old.png").read_bytes()


def test_no_folder_lists_nothing() -> None:
    browser = OutputsBrowser(None)
    assert browser.entries() == [] and browser.page(None, "", 1) == ([], 1, 1)
    browser.record([Path("/tmp/x.png")], "user:a")  # saving off: nothing to record
