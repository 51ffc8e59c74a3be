"""The LoRA picker: search the library, add several, a weight slider each, and
trigger words that one click inserts into the prompt.

A fixed number of rows (LORA_ROWS), shown as they fill, rather than components
created at run time: rows can then be filled by any event (PNG Info's "Send to
Generate" included) with plain updates, and the request is read from them by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from ui.catalog import LoraChoice, lora_choices, rescan_loras
from ui.form import lora_weight_spec

if TYPE_CHECKING:
    from pipelines.manager import PipelineManager

LORA_ROWS = 6


@dataclass
class LoraRow:
    row: gr.Row
    name: gr.Textbox
    weight: gr.Slider
    triggers: gr.Textbox
    insert: gr.Button
    remove: gr.Button


@dataclass
class LoraPanel:
    search: gr.Dropdown
    refresh: gr.Button
    rows: list[LoraRow]

    @property
    def names(self) -> list[gr.Textbox]:
        return [r.name for r in self.rows]

    @property
    def weights(self) -> list[gr.Slider]:
        return [r.weight for r in self.rows]

    def outputs(self) -> list[gr.components.Component | gr.Row]:
        """Every component `fill` returns an update for, in its order."""
        out: list[Any] = []
        for r in self.rows:
            out += [r.row, r.name, r.weight, r.triggers]
        return out


def search_choices(choices: Sequence[LoraChoice]) -> list[tuple[str, str]]:
    return [(c.label(), c.name) for c in choices]


def trigger_text(choice: LoraChoice | None) -> str:
    if choice is None:
        return ""
    words = list(choice.triggers)
    if choice.activation_text and choice.activation_text not in words:
        words.insert(0, choice.activation_text)
    return ", ".join(words)


def fill(loras: Mapping[str, float], choices: Sequence[LoraChoice]) -> list[Any]:
    """Updates that show exactly `loras` (name -> weight) in the rows, in order."""
    by_name = {c.name: c for c in choices}
    items = list(loras.items())[:LORA_ROWS]
    out: list[Any] = []
    for i in range(LORA_ROWS):
        if i < len(items):
            name, weight = items[i]
            slider = gr.Slider(**{**lora_weight_spec(), "value": weight})
            out += [gr.Row(visible=True), name, slider, trigger_text(by_name.get(name))]
        else:
            out += [gr.Row(visible=False), "", gr.Slider(value=1.0), ""]
    return out


def insert_triggers(prompt: str, triggers: str) -> str:
    """Append the trigger words the prompt does not contain yet."""
    missing = [t for t in (w.strip() for w in triggers.split(",")) if t and t not in prompt]
    if not missing:
        return prompt
    return ", ".join([p for p in (prompt.strip().rstrip(","),) if p] + missing)


def build_lora_panel(manager: PipelineManager, family: str, prompt: gr.Textbox) -> LoraPanel:
    """Create the picker in the current Blocks context and wire its own events."""
    with gr.Row():
        search = gr.Dropdown(
            search_choices(lora_choices(manager, family)), value=None, label="Add a LoRA",
            info="type to search; trigger words in [brackets]", elem_id="atelier-lora-search",
            scale=4,
        )  # fmt: skip
        refresh = gr.Button("↻ LoRAs", scale=0, min_width=90, elem_id="atelier-lora-refresh")
    rows = []
    for i in range(LORA_ROWS):
        with gr.Row(visible=False, equal_height=True) as row:
            name = gr.Textbox(show_label=False, interactive=False, container=False, scale=2,
                              elem_id=f"atelier-lora-name-{i}")  # fmt: skip
            weight = gr.Slider(**lora_weight_spec(), label="weight", scale=3,
                               elem_id=f"atelier-lora-weight-{i}")  # fmt: skip
            triggers = gr.Textbox(show_label=False, interactive=False, container=False, scale=2,
                                  placeholder="no trigger words")  # fmt: skip
            insert = gr.Button("+ triggers", scale=0, min_width=90, size="sm")
            remove = gr.Button("✕", scale=0, min_width=40, size="sm")
        rows.append(LoraRow(row, name, weight, triggers, insert, remove))
    panel = LoraPanel(search, refresh, rows)

    def add(choice: str | None, *state: Any) -> list[Any]:
        names, weights = list(state[:LORA_ROWS]), list(state[LORA_ROWS:])
        current = {n: w for n, w in zip(names, weights, strict=True) if n}
        choices = lora_choices(manager, None)
        if choice and choice not in current and len(current) < LORA_ROWS:
            preferred = next((c.preferred_weight for c in choices if c.name == choice), None)
            current[choice] = 1.0 if preferred is None else preferred
        return [gr.Dropdown(value=None), *fill(current, choices)]

    search.input(add, [search, *panel.names, *panel.weights], [search, *panel.outputs()],
                 api_name="lora_add", api_visibility="undocumented")  # fmt: skip

    def make_remove(index: int) -> Any:
        def remove_row(*state: Any) -> list[Any]:
            names, weights = list(state[:LORA_ROWS]), list(state[LORA_ROWS:])
            kept = {n: w for i, (n, w) in enumerate(zip(names, weights, strict=True))
                    if n and i != index}  # fmt: skip
            return fill(kept, lora_choices(manager, None))

        return remove_row

    for i, r in enumerate(rows):
        r.remove.click(make_remove(i), [*panel.names, *panel.weights], panel.outputs(),
                       api_name=f"lora_remove_{i}", api_visibility="undocumented")  # fmt: skip
        r.insert.click(insert_triggers, [prompt, r.triggers], prompt,
                       api_name=f"lora_triggers_{i}", api_visibility="undocumented")  # fmt: skip
    return panel


def refresh_search(manager: PipelineManager, family: str) -> gr.Dropdown:
    rescan_loras(manager)
    return gr.Dropdown(choices=search_choices(lora_choices(manager, family)), value=None)


if __name__ == "__main__":  # python -m ui.lora_panel: the picker alone, on the built-in LoRA
    from pipelines import EngineSettings, PipelineManager

    mgr = PipelineManager(EngineSettings(devices=("cpu",)))
    with gr.Blocks() as demo:
        box = gr.Textbox(label="Prompt")
        build_lora_panel(mgr, "sd15", box)
    demo.launch()
