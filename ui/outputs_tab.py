"""The Outputs tab: the outputs folder's images and videos, newest first, paged,
searchable by prompt, each with its parameters and "Send to Generate" / "Send to
PNG Info" (wired in ui/studio.py, where the other tabs exist).

What a viewer sees and how files are served: ui/outputs_browser.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from ui.context import StudioContext
from ui.outputs_browser import PER_PAGE, paged


@dataclass
class OutputsTab:
    blocks: gr.Blocks
    infotext: gr.Textbox  # the selected file's parameters
    selected: gr.State  # served copy of the selected file (for PNG Info)
    send_generate: gr.Button
    send_pnginfo: gr.Button
    load: Any  # (fn, outputs) that fills the first page when the tab opens


def page_updates(
    ctx: StudioContext, viewer: str | None, query: str, page: float | None
) -> tuple[Any, ...]:
    """(gallery items, names on the page, page number, "page k of n · N files")."""
    browser = ctx.store.browser
    if browser.folder is None:
        return [], [], 1, "Saving is off on this server (outputs_dir = off): nothing to list."
    every = browser.entries(viewer, query or "")
    entries, page_no, pages = paged(every, int(page or 1))
    folder = ctx.store.new_folder()
    items = []
    for e in entries:
        thumb = browser.thumbnail(browser.open(e.name, viewer), folder)
        items.append((str(thumb), e.name))
    note = f"Page {page_no} of {pages} · {len(every)} file(s)"
    if query:
        note += f" matching “{query}”"
    if not entries:
        note = "No outputs yet." if not query else f"Nothing matches “{query}”."
    return items, [e.name for e in entries], page_no, note


def selected_updates(
    ctx: StudioContext, viewer: str | None, names: list[str], index: int | None
) -> tuple[str, str | None, Any, Any]:
    """(parameters text, served copy of the file, Send to Generate, Send to PNG Info)."""
    browser = ctx.store.browser
    if index is None or not names or index >= len(names):
        return "", None, gr.Button(interactive=False), gr.Button(interactive=False)
    try:
        path = browser.open(names[index], viewer)
        entry = browser.entry(names[index], viewer)
    except (KeyError, OSError):
        raise gr.Error("That file is no longer in the outputs folder.") from None
    copy = browser.full_copy(path, ctx.store.new_folder())
    image = entry.kind == "image"
    text = entry.text
    return (text, str(copy), gr.Button(interactive=image and bool(text)),
            gr.Button(interactive=image))  # fmt: skip


def build_outputs_tab(ctx: StudioContext) -> OutputsTab:
    def viewer(request: gr.Request | None) -> str | None:
        return ctx.outputs_viewer(request)

    with gr.Blocks() as blocks:
        with gr.Row(equal_height=True):
            query = gr.Textbox(label="Search prompts", placeholder="words in the prompt",
                               scale=4, elem_id="atelier-outputs-search")  # fmt: skip
            refresh = gr.Button("↻", scale=0, min_width=44, elem_id="atelier-outputs-refresh")
        with gr.Row(equal_height=True):
            prev = gr.Button("◀", scale=0, min_width=44, elem_id="atelier-outputs-prev")
            page = gr.Number(1, precision=0, minimum=1, label="Page", scale=0, min_width=80,
                             elem_id="atelier-outputs-page")  # fmt: skip
            nxt = gr.Button("▶", scale=0, min_width=44, elem_id="atelier-outputs-next")
            note = gr.Markdown(elem_id="atelier-outputs-note")
        gallery = gr.Gallery(label=f"Outputs (newest first, {PER_PAGE} a page)", columns=4,
                             height="auto", object_fit="contain", allow_preview=True,
                             interactive=False, elem_id="atelier-outputs-gallery")  # fmt: skip
        infotext = gr.Textbox(label="Parameters", lines=4, interactive=False, buttons=["copy"],
                              elem_id="atelier-outputs-infotext")  # fmt: skip
        with gr.Row():
            send_generate = gr.Button("Send to Generate", size="sm", interactive=False,
                                      elem_id="atelier-outputs-to-generate")  # fmt: skip
            send_pnginfo = gr.Button("Send to PNG Info", size="sm", interactive=False,
                                     elem_id="atelier-outputs-to-pnginfo")  # fmt: skip
        names = gr.State([])
        selected = gr.State(None)

        def show(q: str, p: float | None, request: gr.Request) -> tuple[Any, ...]:
            return page_updates(ctx, viewer(request), q, p)

        listing = [gallery, names, page, note]
        light = {"api_visibility": "undocumented", "concurrency_limit": None}

        def first(q: str, request: gr.Request) -> tuple[Any, ...]:
            return show(q, 1, request)

        def back(q: str, p: float | None, request: gr.Request) -> tuple[Any, ...]:
            return show(q, (p or 1) - 1, request)

        def forward(q: str, p: float | None, request: gr.Request) -> tuple[Any, ...]:
            return show(q, (p or 1) + 1, request)

        refresh.click(show, [query, page], listing, api_name="outputs", **light)
        query.submit(first, [query], listing, **light)
        page.submit(show, [query, page], listing, **light)
        prev.click(back, [query, page], listing, **light)
        nxt.click(forward, [query, page], listing, **light)

        def pick(evt: gr.SelectData, items: list[str], request: gr.Request) -> tuple[Any, ...]:
            return selected_updates(ctx, viewer(request), items, evt.index)

        gallery.select(pick, [names], [infotext, selected, send_generate, send_pnginfo],
                       **light)  # fmt: skip

        def first_page(request: gr.Request) -> tuple[Any, ...]:
            return show("", 1, request)

    return OutputsTab(blocks, infotext, selected, send_generate, send_pnginfo,
                      (first_page, listing))  # fmt: skip
