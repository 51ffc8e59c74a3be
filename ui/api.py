"""The `/generate` API endpoint, for gradio_client and other programs.

Keyword arguments as the README shows them; every one but `prompt` is optional
(blank or None = the model family's default, seed -1 = random). Returns the PNG
files (each carries its infotext), the first image's infotext and its seed
(image k of the batch used seed + k). `batch_count` (calls in a row)
is optional too. Image-to-image / inpainting: `init_image`, `mask_image` (files),
`strength`, `mask_blur`; ControlNet: `controlnets` (a list of unit dicts, or its
JSON text) with `control_images` (one file per unit, in order).

`/preprocess` returns the control map of an image (a PNG file) for a
preprocessor and a size, exactly as the engine would compute it.

Its inputs are hidden components: what the endpoint accepts is then exactly
what the engine validates (no slider clamps or rounds a bad width on the way).
`client.view_api()` shows each parameter's label and type only, so the labels say
what a value means and what blank means; each endpoint's `api_description` says
the rest. Image files are opened by pipelines.images.open_image (the pixel limit is
checked from the header before decoding); a bad file names its parameter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import gradio as gr

from ui.components import WholeNumber
from ui.context import PREPROCESS_GROUP, StudioContext
from ui.control_panel import run_preprocessor
from ui.form import api_images, request_from_widgets
from ui.hires_panel import api_inputs, apply_extras
from ui.runner import endpoint_stream, gpu, shown_as_gradio_errors

GENERATE_DESCRIPTION = (
    "Generate images: text to image, image to image (init_image), inpainting (init_image "
    "+ mask_image) and ControlNet (controlnets + control_images), with the studio's engine "
    "and queue. Only prompt is required; a blank or omitted parameter takes the model "
    "family's default. Returns the PNG files (each carries its parameters), the first "
    "image's infotext and its seed (image k of a batch used seed + k). A bad value or file "
    "fails with 'field: rule'. While it runs, job.status().progress_data reports the "
    "steps done and the total (over every image of the request)."
)
PREPROCESS_DESCRIPTION = (
    "The control map (a PNG file) that a ControlNet unit with this preprocessor would use "
    "for an image, at width x height (blank = the model family's default size)."
)


def request_default(name: str) -> Any:
    from pipelines.request import GenerationRequest

    return next(f.default for f in fields(GenerationRequest) if f.name == name)


def image_label(name: str, what: str, max_pixels: int) -> str:
    return f"{name}: {what} (an image file of at most {max_pixels / 1e6:g} megapixels)"


def build_api(ctx: StudioContext) -> gr.Blocks:
    pixels = ctx.manager.settings.max_image_pixels
    family = "blank = the model family's default"
    with gr.Blocks() as blocks, gr.Column(visible=False):
        inputs = {
            "prompt": gr.Textbox(None, label="prompt (required): what to draw"),
            "negative_prompt": gr.Textbox("", label="negative_prompt: what to avoid"),
            "model": gr.Textbox("", label="model: a model name as the studio lists it; "
                                "blank = the server's default model"),
            "scheduler": gr.Textbox("", label=f"scheduler: sampler, e.g. 'DPM++ 2M Karras'; "
                                    f"{family}"),
            "steps": WholeNumber(None, label=f"steps: denoising steps; {family}"),
            "cfg": gr.Number(None, label=f"cfg: guidance scale; {family}"),
            "seed": WholeNumber(-1, label="seed: seed of the first image; -1 = random"),
            "width": WholeNumber(None, label=f"width: pixels; {family}"),
            "height": WholeNumber(None, label=f"height: pixels; {family}"),
            "batch_size": WholeNumber(1, label="batch_size: images per call"),
            "loras": gr.JSON(None, label='loras: {"LoRA name": weight, ...} (or its JSON '
                             "text); blank = none"),
            "batch_count": WholeNumber(1, label="batch_count: calls in a row, each of "
                                       "batch_size images"),
            # Files, not gr.Image: an image component would decode them on the way in.
            "init_image": gr.File(None, type="filepath", label=image_label(
                "init_image", "start from this picture (image to image, inpainting)", pixels)),
            "mask_image": gr.File(None, type="filepath", label=image_label(
                "mask_image", "inpainting mask, white = repaint, init_image's size", pixels)),
            "strength": gr.Number(None, label="strength: denoising strength with init_image, "
                                  f"0 < s <= 1; blank = {request_default('strength')}"),
            "mask_blur": WholeNumber(None, label="mask_blur: blur of the mask's edge in "
                                     f"pixels; blank = {request_default('mask_blur')}"),
            "controlnets": gr.JSON(None, label='controlnets: ControlNet units, e.g. [{"model": '
                                   '"tiny-sd-controlnet", "module": "canny", "weight": 1.0}]'),
            "control_images": gr.File(None, file_count="multiple", type="filepath",
                                      label=image_label("control_images", "one per ControlNet "
                                                        "unit, in order", pixels)),
            "inpaint_area": gr.Textbox(None, label="inpaint_area: 'whole' or 'masked' (only a "
                                       f"crop around the mask); blank = "
                                       f"{request_default('inpaint_area')}"),
            "inpaint_padding": WholeNumber(None, label="inpaint_padding: pixels around the "
                                           "mask with inpaint_area 'masked'; blank = "
                                           f"{request_default('inpaint_padding')}"),
            "clip_skip": WholeNumber(None, label="clip_skip: text encoder layer from the end, "
                                     "1 = last (A1111's meaning); blank = 1"),
            "vae": gr.Textbox("", label="vae: a VAE of the server's VAE folder by name, e.g. "
                              "'sdxl_vae.safetensors'; blank = Automatic (the model's own)"),
            **api_inputs(),  # styles, hires fix (ui/hires_panel.py; issue 14)
            "task_id": gr.Textbox("", label="task_id: your name for this task (letters, digits, "
                                  "._-); names its files; with Redis on, /task tells its "
                                  "status; blank = a name is made"),
        }  # fmt: skip
        # Short labels: view_api prints an output's label as its name.
        images = gr.File(file_count="multiple", label="images")
        infotext = gr.Textbox(label="infotext")
        seed_used = gr.Number(label="seed", precision=0)
        trigger = gr.Button()

        def generate(
            prompt: str,
            negative_prompt: str = "",
            model: str = "",
            scheduler: str = "",
            steps: float | None = None,
            cfg: float | None = None,
            seed: float = -1,
            width: float | None = None,
            height: float | None = None,
            batch_size: float = 1,
            loras: Any = None,
            batch_count: float = 1,
            init_image: str | None = None,
            mask_image: str | None = None,
            strength: float | None = None,
            mask_blur: float | None = None,
            controlnets: Any = None,
            control_images: list[str] | None = None,
            inpaint_area: str | None = None,
            inpaint_padding: float | None = None,
            clip_skip: float | None = None,
            vae: str = "",
            styles: Any = None,
            enable_hr: bool = False,
            hr_scale: float | None = None,
            hr_resize_x: float | None = None,
            hr_resize_y: float | None = None,
            hr_upscaler: str = "",
            hr_second_pass_steps: float | None = None,
            denoising_strength: float | None = None,
            hr_prompt: str = "",
            hr_negative_prompt: str = "",
            hr_sampler_name: str = "",
            task_id: str = "",
            request: gr.Request = None,  # type: ignore[assignment]
            progress: gr.Progress = gr.Progress(),  # noqa: B008
        ) -> Iterator[tuple[Any, Any, Any]]:
            values = {"prompt": prompt, "negative_prompt": negative_prompt, "model": model,
                      "scheduler": scheduler, "steps": steps, "cfg": cfg, "seed": seed,
                      "width": width, "height": height, "batch_size": batch_size,
                      "batch_count": batch_count, "loras": loras, "strength": strength,
                      "mask_blur": mask_blur, "controlnets": controlnets,
                      "inpaint_area": inpaint_area,
                      "inpaint_padding": inpaint_padding,
                      "clip_skip": clip_skip, "vae": vae}  # fmt: skip
            from pipelines.image_job import ImageJob

            def publish(result: Any) -> tuple[Any, Any, Any]:
                paths = ctx.store.publish(result, ctx.caller(request))
                return [str(p) for p in paths], result.infotexts[0], result.seeds[0]

            with shown_as_gradio_errors(), refusals_recorded(ctx, task_id, ctx.caller(request)):
                job = ImageJob(
                    apply_extras(
                        request_from_widgets(values),
                        {
                            "styles": styles,
                            "enable_hr": enable_hr,
                            "hr_scale": hr_scale,
                            "hr_resize_x": hr_resize_x,
                            "hr_resize_y": hr_resize_y,
                            "hr_upscaler": hr_upscaler,
                            "hr_prompt": hr_prompt,
                            "hr_second_pass_steps": hr_second_pass_steps,
                            "denoising_strength": denoising_strength,
                            "hr_negative_prompt": hr_negative_prompt,
                            "hr_sampler_name": hr_sampler_name,
                        },
                    ),  # fmt: skip
                    api_images(init_image, mask_image, control_images, pixels).inputs(),
                    save_to=ctx.store.outputs_dir,  # each image saved as it is decoded
                    task_id=task_id or None,  # checked by the engine (field task_id)
                )
            yield from endpoint_stream(ctx.manager, job, ctx.caller(request), publish, 3, progress)

        trigger.click(gpu(generate), list(inputs.values()), [images, infotext, seed_used],
                      api_name="generate", api_description=GENERATE_DESCRIPTION,
                      show_progress="hidden", **ctx.gpu_event())  # fmt: skip

        pre_inputs = [
            gr.File(None, type="filepath", label=image_label("image", "the picture", pixels)),
            gr.Textbox("canny", label="module: preprocessor, e.g. canny, shuffle, none"),
            WholeNumber(None, label=f"width: pixels; {family} size"),
            WholeNumber(None, label=f"height: pixels; {family} size"),
            WholeNumber(100, label="low_threshold: canny's low threshold, 0-255"),
            WholeNumber(200, label="high_threshold: canny's high threshold, 0-255"),
            WholeNumber(0, label="seed: for preprocessors that draw at random (shuffle)"),
            gr.Textbox("", label="model: whose family sets the default size; blank = the "
                       "server's default model"),
        ]  # fmt: skip
        control_map = gr.File(label="control map")
        pre_trigger = gr.Button()

        def preprocess(
            image: str | None,
            module: str = "canny",
            width: float | None = None,
            height: float | None = None,
            low_threshold: float = 100,
            high_threshold: float = 200,
            seed: float = 0,
            model: str = "",
        ) -> str:
            """The control map (PNG) of `image` for `module` at width x height (default:
            the model family's default size)."""
            with shown_as_gradio_errors():
                family = ctx.manager.registry.family_of(model or ctx.default_model)
                size = (family.default_size if width in (None, "") else width,
                        family.default_size if height in (None, "") else height)  # fmt: skip
                out = run_preprocessor(ctx.manager, image, module, *size, low_threshold,
                                       high_threshold, seed, model or None)  # fmt: skip
            path = ctx.store.scratch_file(".png")
            out.save(path)
            return str(path)

        # CPU work outside the device group: previews do not wait behind generations.
        pre_trigger.click(preprocess, pre_inputs, control_map, api_name="preprocess",
                          api_description=PREPROCESS_DESCRIPTION, show_progress="hidden",
                          **PREPROCESS_GROUP)  # fmt: skip
        task_inputs = [gr.Textbox("", label="task_id: the task_id you gave /generate, or the "
                                  "task's full name as /task returns it; blank = your "
                                  "latest task")]  # fmt: skip
        task_state = gr.JSON(label="task")
        task_trigger = gr.Button()

        def task(task_id: str, request: gr.Request = None) -> dict[str, Any]:  # type: ignore
            return task_status(ctx, task_id, request)

        task_trigger.click(task, task_inputs, task_state, api_name="task",
                           api_description=TASK_DESCRIPTION, show_progress="hidden",
                           queue=False)  # fmt: skip
    return blocks


@contextlib.contextmanager
def refusals_recorded(ctx: StudioContext, task_id: str | None, caller: str) -> Iterator[None]:
    """A request refused before it reaches the engine (a bad file, a bad value) is still
    a failed task in Redis, naming the field (the engine records its own refusals)."""
    from pipelines.errors import AtelierError

    try:
        yield
    except AtelierError as e:
        ctx.manager.refused(task_id or None, e, caller)
        raise


TASK_DESCRIPTION = (
    "The status of one of your tasks, as the server keeps it in Redis (needs the server's "
    "redis_url): task (its name there: <you>:<task_id>), status (queued, running, done, "
    "failed, cancelled), progress 0..1, step, total, outputs (S3 URLs when S3 is set, "
    "else file paths), error, error_field. Only your own tasks are found. A blank task_id "
    "gives your latest task (with the name the server made when you gave none)."
)


def task_status(ctx: StudioContext, task_id: str, request: gr.Request | None) -> dict[str, Any]:
    """The caller's own task as this server last knew it (the same fields as its Redis
    hash). The name is namespaced by the caller, so nobody reads another's task."""
    from pipelines.status import task_key

    reporter = ctx.manager.reporter
    if reporter is None:
        raise gr.Error("task status needs Redis: start the server with --redis-url")
    caller = ctx.caller(request)
    given = (task_id or "").strip()
    prefix = f"{caller}:"
    if not given:  # the caller's newest task, e.g. one the server named
        name = reporter.latest(caller)
        state = reporter.state(name) if name else None
    else:
        name = given if given.startswith(prefix) else task_key(given, caller)
        state = reporter.state(name)
        if state is None:  # a name the server made (no task_id given): the caller's own only
            other = reporter.state(given)
            if other is not None and other.get("caller") == caller:
                name, state = given, other
    if state is None:
        what = f"task {given!r}" if given else "task"
        raise gr.Error(f"task_id: no {what} of yours on this server")
    return {"task": name, **state}


if __name__ == "__main__":  # python -m ui.api: the API alone, without the studio page
    from ui.studio import standalone

    standalone(build_api)
