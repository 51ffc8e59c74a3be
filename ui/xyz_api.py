"""The `/xyz` API endpoint: an X/Y/Z plot as one job, for gradio_client.

The base request takes /generate's common fields (image inputs are not offered
here; ControlNet plots go through the studio); each axis is a type (A1111's names,
e.g. "Steps", "CFG Scale", "Sampler", "Prompt S/R") and its values in A1111's
syntax. Returns the grid PNGs (one per Z value, then all Z side by side when there
are several), every cell's PNG (unless grid_only), and the grid's infotext.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from ui.context import StudioContext

XYZ_DESCRIPTION = (
    "X/Y/Z plot: up to three axes (x_type/x_values, ...; types as A1111 names them: Seed, "
    "Steps, CFG Scale, Prompt S/R, Sampler, Checkpoint name, VAE, Clip skip, Size, "
    "Denoising, LoRA weight, ControlNet weight, Hires upscaler, Hires steps, Hires upscale, "
    "Hires sampler) over a base request (/generate's fields). Values: '1-5', '1-10 (+2)', "
    "'10-20 [3]', '0.5-1.5 (+0.25)', or a comma list. Runs as one job (progress over every "
    "cell). Returns the grid PNGs, the cells' PNGs and the grid's infotext; a bad value "
    "fails with 'x: rule' before anything runs."
)


def plot_of(ctx: StudioContext, values: dict[str, Any], axes: dict[str, Any],
            extras: dict[str, Any], grid_only: bool) -> Any:  # fmt: skip
    from pipelines.xyz_job import XyzJob
    from ui.form import request_from_widgets
    from ui.hires_panel import apply_extras
    from ui.xyz_panel import plot_axes

    request = apply_extras(request_from_widgets(values), extras)
    return XyzJob(request, plot_axes(axes), save_to=ctx.store.outputs_dir,
                  keep_cells=not grid_only)  # fmt: skip


def build_xyz_api(ctx: StudioContext) -> gr.Blocks:
    from ui.components import WholeNumber
    from ui.hires_panel import api_inputs
    from ui.runner import endpoint_stream, gpu, shown_as_gradio_errors

    blank = "blank = the model family's default"
    with gr.Blocks() as blocks, gr.Column(visible=False):
        inputs = {
            "x_type": gr.Textbox("", label="x_type: axis type, e.g. 'Steps'; blank = none"),
            "x_values": gr.Textbox("", label="x_values: e.g. '10-30 (+10)' or 'Euler a, DDIM'"),
            "y_type": gr.Textbox("", label="y_type: blank = none"),
            "y_values": gr.Textbox("", label="y_values"),
            "z_type": gr.Textbox("", label="z_type: blank = none"),
            "z_values": gr.Textbox("", label="z_values"),
            "prompt": gr.Textbox(None, label="prompt (required): what to draw"),
            "negative_prompt": gr.Textbox("", label="negative_prompt"),
            "model": gr.Textbox("", label="model: blank = the server's default model"),
            "scheduler": gr.Textbox("", label=f"scheduler: {blank}"),
            "steps": WholeNumber(None, label=f"steps: {blank}"),
            "cfg": gr.Number(None, label=f"cfg: {blank}"),
            "seed": WholeNumber(-1, label="seed: -1 = one random seed for the whole plot"),
            "width": WholeNumber(None, label=f"width: {blank}"),
            "height": WholeNumber(None, label=f"height: {blank}"),
            "loras": gr.JSON(None, label='loras: {"LoRA name": weight}; blank = none'),
            "clip_skip": WholeNumber(None, label="clip_skip: blank = 1"),
            "vae": gr.Textbox("", label="vae: blank = the model's own"),
            "grid_only": gr.Checkbox(False, label="grid_only: return (and save) the grids only"),
            **api_inputs(),
        }  # fmt: skip
        grids = gr.File(file_count="multiple", label="grids")
        cells = gr.File(file_count="multiple", label="cells")
        infotext = gr.Textbox(label="infotext")
        trigger = gr.Button()

        def xyz(
            x_type: str = "", x_values: str = "", y_type: str = "", y_values: str = "",
            z_type: str = "", z_values: str = "", prompt: str = "", negative_prompt: str = "",
            model: str = "", scheduler: str = "", steps: float | None = None,
            cfg: float | None = None, seed: float = -1, width: float | None = None,
            height: float | None = None, loras: Any = None, clip_skip: float | None = None,
            vae: str = "", grid_only: bool = False, styles: Any = None,
            enable_hr: bool = False, hr_scale: float | None = None,
            hr_resize_x: float | None = None, hr_resize_y: float | None = None,
            hr_upscaler: str = "", hr_second_pass_steps: float | None = None,
            denoising_strength: float | None = None, hr_prompt: str = "",
            hr_negative_prompt: str = "", hr_sampler_name: str = "",
            request: gr.Request = None,  # type: ignore[assignment]
            progress: gr.Progress = gr.Progress(),  # noqa: B008
        ) -> Iterator[tuple[Any, Any, Any]]:  # fmt: skip
            values = {"prompt": prompt, "negative_prompt": negative_prompt, "model": model,
                      "scheduler": scheduler, "steps": steps, "cfg": cfg, "seed": seed,
                      "width": width, "height": height, "loras": loras,
                      "clip_skip": clip_skip, "vae": vae}  # fmt: skip
            axes = {"x_type": x_type, "x_values": x_values, "y_type": y_type,
                    "y_values": y_values, "z_type": z_type, "z_values": z_values}  # fmt: skip
            extras = {"styles": styles, "enable_hr": enable_hr, "hr_scale": hr_scale,
                      "hr_resize_x": hr_resize_x, "hr_resize_y": hr_resize_y,
                      "hr_upscaler": hr_upscaler, "hr_second_pass_steps": hr_second_pass_steps,
                      "denoising_strength": denoising_strength, "hr_prompt": hr_prompt,
                      "hr_negative_prompt": hr_negative_prompt,
                      "hr_sampler_name": hr_sampler_name}  # fmt: skip
            with shown_as_gradio_errors():
                job = plot_of(ctx, values, axes, extras, grid_only)

            def publish(result: Any) -> tuple[Any, Any, Any]:
                paths = [str(p) for p in ctx.store.publish(result)]
                n = len(result.grids)
                return paths[:n], paths[n:], result.grid_infotexts[0]

            yield from endpoint_stream(ctx.manager, job, ctx.caller(request), publish, 3, progress)

        trigger.click(gpu(xyz), list(inputs.values()), [grids, cells, infotext], api_name="xyz",
                      api_description=XYZ_DESCRIPTION, show_progress="hidden",
                      **ctx.gpu_event())  # fmt: skip
    return blocks


if __name__ == "__main__":  # python -m ui.xyz_api: the endpoint alone
    from ui.studio import standalone

    standalone(build_xyz_api)
