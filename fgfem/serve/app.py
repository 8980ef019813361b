"""The page of ``fgfem serve``: Gradio widgets over ``fgfem.serve.session``.

Why Gradio: it is what the face-editing tools people already use ship (LivePortrait,
FaceFusion), it installs from PyPI with its front end inside the wheel (no CDN), and
its queue gives the two guarantees a live editor needs: one render at a time on the
model (``concurrency_limit=1``; two would fight over 2 cores) and no stale renders
(``trigger_mode="always_last"``: while one render runs, only the newest slider position
waits, the positions in between are dropped).

Every handler returns a dict of the outputs it changes, and turns any failure into one
line in the status bar: the server keeps serving whatever the upload was.
"""

from __future__ import annotations

import functools
import logging
import sys
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fgfem.aus import AU_CODES, NUM_AUS
from fgfem.errors import FgfemError
from fgfem.presets import PRESETS, preset_sliders
from fgfem.serve.session import SLIDER_LIMIT, SLIDER_STEP, EditState, SessionStore, UploadLimits, open_upload
from fgfem.serve.views import LOWER_FACE, UPPER_FACE, au_label, face_view, numbered_faces, preview, readout_markdown

if TYPE_CHECKING:
    import gradio as gr

    from fgfem.editor import Editor

log = logging.getLogger("fgfem.serve")
MODEL = "fgfem-model"  # one concurrency group: uploads, renders, downloads and sweeps share the model

CSS = """
#fgfem-status { min-height: 1.6em; }
#fgfem-status p { margin: 0; }
.fgfem-sliders .wrap { gap: 4px; }
"""
INTRO = (
    "Upload a photo (or pick an example), move the Action Unit sliders and watch the face change. "
    "Sliders are **relative** changes on OpenFace's 0-5 scale; the presets set them from AU profiles measured "
    "on real posed faces. Everything runs on this machine; nothing leaves it."
)


def build_app(
    editor: Editor,
    *,
    work_dir: Path,
    limits: UploadLimits | None = None,
    weights: str | None = None,
    examples: dict[str, Path] | None = None,
    store: SessionStore | None = None,
) -> gr.Blocks:
    """The Blocks app around one loaded ``editor``; ``work_dir`` receives downloads and sweep GIFs."""
    import gradio as gr

    limits = limits or UploadLimits()
    store = store or SessionStore()
    examples = examples or {}
    work_dir.mkdir(parents=True, exist_ok=True)

    with gr.Blocks(title="fgfem expression editor", analytics_enabled=False, delete_cache=(300, 900)) as demo:
        token = gr.State(None)
        gr.Markdown(f"## fgfem: facial expression editor\n{INTRO}")
        sliders: list[gr.Slider] = [None] * NUM_AUS  # type: ignore[list-item]

        def slider_group(title: str, group: tuple[str, ...]) -> None:
            with gr.Accordion(title, open=True, elem_classes="fgfem-sliders"):
                for code in group:
                    sliders[AU_CODES.index(code)] = gr.Slider(
                        -SLIDER_LIMIT, SLIDER_LIMIT, value=0, step=SLIDER_STEP, label=au_label(code),
                        elem_id=f"fgfem-{code.lower()}")

        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=280):
                upload = gr.File(label="Photo", file_types=["image"], type="filepath", elem_id="fgfem-upload",
                                 height=110)
                example = gr.Dropdown(choices=list(examples), value=None, label="...or an example",
                                      visible=bool(examples), elem_id="fgfem-example", interactive=True)
                faces_image = gr.Image(label="Faces (numbered as --face N)", visible=False, interactive=False,
                                       format="jpeg", height=220, elem_id="fgfem-faces")
                face = gr.Radio(["largest"], value="largest", label="Face", visible=False, elem_id="fgfem-face")
                intensity = gr.Slider(0, 2, value=1, step=0.05, label="Overall intensity", elem_id="fgfem-intensity")
                gr.Markdown("**Presets**, measured on real posed faces")
                with gr.Row():
                    preset_buttons = {name: gr.Button(name, size="sm", min_width=60, elem_id=f"fgfem-preset-{name}")
                                      for name in PRESETS}
                    reset = gr.Button("reset", size="sm", min_width=60, variant="stop", elem_id="fgfem-reset")
                slider_group("Upper face (relative change, 0-5 scale)", UPPER_FACE)
            with gr.Column(scale=2, min_width=420):
                status = gr.Markdown("Upload a photo with a face to start.", elem_id="fgfem-status")
                with gr.Row():
                    before = gr.Image(label="before", interactive=False, format="jpeg", height=360,
                                      elem_id="fgfem-before")
                    after = gr.Image(label="after", interactive=False, format="jpeg", height=360,
                                     elem_id="fgfem-after")
                with gr.Row():
                    download_button = gr.Button("full-resolution photo", variant="primary", elem_id="fgfem-download")
                    sweep_button = gr.Button("intensity sweep GIF", elem_id="fgfem-sweep")
                download = gr.File(label="download (exactly what the command below writes)", interactive=False,
                                   visible=False, elem_id="fgfem-file")
                command = gr.Textbox(label="same edit on the command line", interactive=False, lines=2,
                                     buttons=["copy"], elem_id="fgfem-command")
                sweep = gr.Image(label="intensity sweep", interactive=False, type="filepath", visible=False,
                                 height=280, elem_id="fgfem-gif")
                readout = gr.Markdown("", elem_id="fgfem-readout")
                with gr.Accordion("whole photo", open=False):
                    result = gr.Image(label="whole photo (preview)", interactive=False, format="jpeg",
                                      elem_id="fgfem-result")
            with gr.Column(scale=1, min_width=280):
                slider_group("Lower face (relative change, 0-5 scale)", LOWER_FACE)

        controls = [token, face, intensity, *sliders]
        shown = [after, result, command, status]

        def session_or_none(key: str | None) -> Any:
            return store.get(key)

        def rendered(session: Any, state: EditState) -> dict[Any, Any]:
            image = session.render(editor, state)
            faces = session.faces_for(editor, state.face)
            edits = " ".join(state.au_specs()) if any(state.values) else "no change"
            notes = [session.note, *session.last_warnings] if session.note else session.last_warnings
            note = "".join(f" · {one_line(text)}" for text in notes)
            return {
                after: face_view(image, faces),
                result: preview(image),
                command: session.command(state, weights),
                status: f"{one_line(session.file_name)}: {edits} x{state.intensity:g} · update {session.renders} in "
                        f"{session.last_seconds:.2f} s{note}",
            }

        @guarded(status)
        def on_upload(key: str | None, path: str | None) -> dict[Any, Any]:
            if not path:
                return {}
            out = opened_or_kept(key, Path(path), Path(path).name)
            return {**out, example: None} if token in out else out

        @guarded(status)
        def on_example(key: str | None, name: str | None) -> dict[Any, Any]:
            if not name or name not in examples:  # only names the server offered; never a client path
                return {}
            out = opened_or_kept(key, examples[name], examples[name].name)
            return {**out, upload: None} if token in out else out

        def opened_or_kept(key: str | None, path: Path, name: str) -> dict[Any, Any]:
            """A bad upload is one line in the status bar; the photo being edited stays."""
            try:
                return opened(path, name)
            except FgfemError as problem:
                current = session_or_none(key)
                kept = f" (still editing {one_line(current.file_name)})" if current is not None else ""
                return {status: f"**error:** {one_line(str(problem))}{kept}"}

        def opened(path: Path, name: str) -> dict[Any, Any]:
            session = open_upload(editor, path, name, limits)
            store.add(session)
            state = EditState.from_controls([0.0] * NUM_AUS, 1.0, "largest")
            out = rendered(session, state)
            many = len(session.numbered) > 1
            out.update({
                token: session.token,
                before: face_view(session.rgb, session.faces_for(editor, "largest")),
                face: gr.update(choices=session.face_choices, value="largest", visible=many),
                faces_image: gr.update(value=numbered_faces(session.rgb, session.numbered) if many else None,
                                       visible=many),
                intensity: 1.0,
                readout: readout_markdown(session.source_aus(editor, "largest"),
                                          f"{len(session.numbered)} face(s) found"),
                download: gr.update(value=None, visible=False),
                sweep: gr.update(value=None, visible=False),
                **source_infos(session.source_aus(editor, "largest"), reset=True),
            })
            return out

        def source_infos(aus: Any, reset: bool = False) -> dict[Any, Any]:
            """The source face's AU under each slider's label (what the relative change starts from)."""
            return {slider: gr.update(info=f"source face: {float(value):.2f}", **({"value": 0.0} if reset else {}))
                    for slider, value in zip(sliders, aus, strict=True)}

        @guarded(status)
        def on_change(key: str | None, face_choice: str, amount: float, *values: float) -> dict[Any, Any]:
            session = session_or_none(key)
            if session is None:
                return {status: "Upload a photo with a face first."}
            return rendered(session, EditState.from_controls(values, amount, face_choice))

        @guarded(status)
        def on_face(key: str | None, face_choice: str, amount: float, *values: float) -> dict[Any, Any]:
            session = session_or_none(key)
            if session is None:
                return {status: "Upload a photo with a face first."}
            state = EditState.from_controls(values, amount, face_choice)
            out = rendered(session, state)
            out[before] = face_view(session.rgb, session.faces_for(editor, state.face))
            aus = session.source_aus(editor, state.face)
            out[readout] = readout_markdown(aus, f"face {state.face}")
            out.update(source_infos(aus))
            return out

        def on_preset(name: str) -> Callable[..., dict[Any, Any]]:
            @guarded(status)
            def apply(key: str | None, face_choice: str, amount: float) -> dict[Any, Any]:
                session = session_or_none(key)
                if session is None:
                    return {status: "Upload a photo with a face first."}
                values = [round(float(v), 2) for v in preset_sliders(name, session.source_aus(editor, face_choice),
                                                           limit=SLIDER_LIMIT, step=SLIDER_STEP)]
                out = rendered(session, EditState.from_controls(values, amount, face_choice))
                out.update({slider: value for slider, value in zip(sliders, values, strict=True)})
                out[status] = f"preset {name} · {out[status]}"
                return out

            return apply

        @guarded(status)
        def on_reset(key: str | None, face_choice: str, amount: float) -> dict[Any, Any]:
            out: dict[Any, Any] = {slider: 0.0 for slider in sliders}
            session = session_or_none(key)
            if session is not None:
                out.update(rendered(session, EditState.from_controls([0.0] * NUM_AUS, amount, face_choice)))
            return out

        @guarded(status)
        def on_download(key: str | None, face_choice: str, amount: float, *values: float) -> dict[Any, Any]:
            session = session_or_none(key)
            if session is None:
                return {status: "Upload a photo with a face first."}
            state = EditState.from_controls(values, amount, face_choice)
            path = session.write_download(editor, state, work_dir)
            return {download: gr.update(value=str(path), visible=True), command: session.command(state, weights),
                    status: f"wrote {path.name} ({session.rgb.shape[1]}x{session.rgb.shape[0]} px)"}

        @guarded(status)
        def on_sweep(key: str | None, face_choice: str, amount: float, *values: float) -> dict[Any, Any]:
            session = session_or_none(key)
            if session is None:
                return {status: "Upload a photo with a face first."}
            state = EditState.from_controls(values, amount, face_choice)
            path = session.write_sweep(editor, state, work_dir)
            return {sweep: gr.update(value=str(path), visible=True),
                    command: session.command(state, weights) + "\n" + session.sweep_command(state, weights),
                    status: f"sweep 0 to x{state.intensity:g} ({path.name})"}

        everything = [token, before, face, faces_image, intensity, readout, download, sweep, *shown, *sliders]
        model = {"concurrency_limit": 1, "concurrency_id": MODEL, "show_progress": "minimal"}
        upload.upload(on_upload, [token, upload], [*everything, example], **model)
        example.input(on_example, [token, example], [*everything, upload], **model)
        gr.on([slider.input for slider in sliders] + [intensity.input], on_change, controls, shown,
              trigger_mode="always_last", **model)
        face.input(on_face, controls, [before, readout, *shown, *sliders], trigger_mode="always_last", **model)
        for name, button in preset_buttons.items():
            button.click(on_preset(name), [token, face, intensity], [*shown, *sliders], **model)
        reset.click(on_reset, [token, face, intensity], [*shown, *sliders], **model)
        download_button.click(on_download, controls, [download, command, status], **model)
        sweep_button.click(on_sweep, controls, [sweep, command, status], **model)
    return demo


@functools.cache
def model_thread() -> ThreadPoolExecutor:
    """The one thread that runs the model, the face backend and the paste-back for every request.

    Gradio hands each request to whichever worker thread is free, and threads come and go; torch's
    and oneDNN's per-thread scratch memory came with them: measured, the server grew by ~0.3 MB per
    slider update. One long-lived thread keeps it flat, and costs nothing, since renders run one at
    a time anyway.
    """
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="fgfem-model")


def guarded(status: Any) -> Callable[[Callable[..., dict[Any, Any]]], Callable[..., dict[Any, Any]]]:
    """Run a handler on the model thread; any failure becomes one line in the status bar (bugs: a traceback
    on the server's stderr too)."""

    def wrap(handler: Callable[..., dict[Any, Any]]) -> Callable[..., dict[Any, Any]]:
        @functools.wraps(handler)
        def run(*args: Any) -> dict[Any, Any]:
            return model_thread().submit(attempt, *args).result()

        def attempt(*args: Any) -> dict[Any, Any]:
            try:
                return handler(*args)
            except FgfemError as problem:
                return {status: f"**error:** {one_line(str(problem))}"}
            except MemoryError:
                return {status: "**error:** out of memory; try a smaller photo"}
            except Exception as problem:  # a bug: one line in the page, the traceback on the server's stderr
                traceback.print_exc(file=sys.stderr)
                return {status: f"**error:** unexpected {type(problem).__name__}: {one_line(str(problem))}"}

        return run

    return wrap


def one_line(text: str, limit: int = 300) -> str:
    """Whitespace collapsed, Markdown specials escaped, length capped: a message, never a dump."""
    flat = " ".join(str(text).split())
    for char in "\\`*_[]<>#|":
        flat = flat.replace(char, "\\" + char)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
