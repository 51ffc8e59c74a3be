"""The Generate tab's Styles accordion: choose A1111 styles (applied in order when the
job runs; the infotext holds the expanded prompt), and save the current prompts as a
new style in the styles file. Handlers are plain functions of the manager."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr


@dataclass
class StylesPanel:
    styles: gr.Dropdown  # multiselect, in the order chosen
    name: gr.Textbox
    save: gr.Button
    refresh: gr.Button
    message: gr.Markdown


def style_choices(manager: Any) -> list[str]:
    return manager.styles.names()


def save_style(manager: Any, name: str, prompt: str, negative: str,
               chosen: list[str] | None) -> tuple[Any, str]:  # fmt: skip
    """Save the prompts as style `name`: (the dropdown, with it offered, and a message)."""
    from pipelines.errors import RequestError

    try:
        style = manager.styles.save(name, prompt or "", negative or "")
    except RequestError as e:
        return gr.Dropdown(), f"**{e.field}**: {e.rule}"
    names = style_choices(manager)
    return (gr.Dropdown(choices=names, value=[c for c in chosen or [] if c in names]),
            f"Saved style **{style.name}**.")  # fmt: skip


def refreshed(manager: Any, chosen: list[str] | None) -> Any:
    names = style_choices(manager)
    return gr.Dropdown(choices=names, value=[c for c in chosen or [] if c in names])


def build_styles_panel(manager: Any, prompt: Any, negative: Any) -> StylesPanel:
    """The accordion's contents (the caller opens the accordion, collapsed) and its events."""
    with gr.Row(equal_height=True):
        styles = gr.Dropdown(style_choices(manager), value=[], multiselect=True, scale=4,
                             label="Styles (applied in order)",
                             elem_id="atelier-styles")  # fmt: skip
        refresh = gr.Button("↻", scale=0, min_width=44, elem_id="atelier-styles-refresh")
    with gr.Row(equal_height=True):
        name = gr.Textbox("", label="New style name", scale=4, elem_id="atelier-style-name")
        save = gr.Button("Save prompts as style", scale=0, min_width=160,
                         elem_id="atelier-style-save")  # fmt: skip
    message = gr.Markdown("", elem_id="atelier-style-message")
    save.click(lambda n, p, ng, c: save_style(manager, n, p, ng, c),
               [name, prompt, negative, styles], [styles, message], api_name="save_style",
               api_visibility="undocumented", concurrency_limit=None)  # fmt: skip
    refresh.click(lambda c: refreshed(manager, c), styles, styles, api_name="refresh_styles",
                  api_visibility="undocumented", concurrency_limit=None)  # fmt: skip
    return StylesPanel(styles, name, save, refresh, message)
