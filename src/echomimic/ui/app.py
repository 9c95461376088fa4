"""The Gradio page: a portrait, a driver (speech, a video, both, or text) and the options.

:func:`build_app` makes the :class:`gradio.Blocks`; :func:`launch` serves it (``echomimic ui``).
The page calls the same pipeline as the command line, through a backend
(:class:`~echomimic.ui.backend.LocalBackend` in this process, or
:class:`~echomimic.ui.backend.RemoteBackend` on a REST server). Its option controls are made from
:mod:`echomimic.options` (:mod:`echomimic.ui.options`).

Nothing on the page comes from the internet: the theme uses the system's fonts, Gradio's
analytics and version check are off, and there is no share link.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import os
import threading
from pathlib import Path
from typing import Any

from ..errors import EchomimicError
from .backend import STAGE_LABELS, Job, LocalBackend, RemoteBackend, overall_fraction, work_root
from .options import GROUPS, MODES, OptionSpec, collect_options, option_specs

__all__ = ["build_app", "launch", "offline_environment", "theme", "CSS", "MODE_LABELS"]

log = logging.getLogger("echomimic.ui")

#: Tab titles of the modes.
MODE_LABELS: dict[str, str] = {"audio": "Audio", "video": "Video", "mixed": "Mixed",
                               "text": "Text"}

#: Extra styling: a narrow page stays usable (controls wrap, the video fits the width).
CSS = """
.gradio-container { max-width: 1280px !important; margin: 0 auto; }
#result video { max-height: 70vh; width: 100%; object-fit: contain; background: #000; }
#face-status p { margin: 0.2em 0; }
@media (max-width: 640px) {
  .gradio-container { padding: 6px !important; }
  h1 { font-size: 1.4em !important; }
}
"""

#: Texts of the text-mode examples (no file needed; the language is detected).
TEXT_EXAMPLES: list[list[str]] = [
    ["Hello! I am a talking portrait, made from a single photo."],
    ["你好，很高兴认识你。今天天气很好。"],
    ["Guten Morgen! Wie geht es Ihnen heute? Ich freue mich, Sie zu sehen."],
    ["¡Hola! Encantada de conocerte. Hoy hace muy buen tiempo."],
]


def offline_environment() -> None:
    """Turn off what Gradio and the Hugging Face hub would fetch from the internet.

    Called before Gradio is imported: no analytics, no version check, no hub look-ups.
    """
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("GRADIO_SHARE", "False")


def theme():
    """Gradio's default theme with the system's own fonts (no web fonts are fetched)."""
    import gradio as gr

    return gr.themes.Default(
        font=[gr.themes.Font("system-ui"), gr.themes.Font("-apple-system"),
              gr.themes.Font("Segoe UI"), gr.themes.Font("Roboto"), "sans-serif"],
        font_mono=[gr.themes.Font("ui-monospace"), gr.themes.Font("Menlo"),
                   gr.themes.Font("Consolas"), "monospace"])


# ------------------------------------------------------------------------------------------------
# controls
# ------------------------------------------------------------------------------------------------


def _control(spec: OptionSpec):
    """The Gradio component of one option."""
    import gradio as gr

    kw: dict[str, Any] = {"label": spec.label, "info": spec.info or None,
                          "value": spec.ui_default(),
                          "elem_id": f"opt-{(spec.only_modes or (spec.group,))[0]}-{spec.name}"}
    if spec.widget == "slider":
        return gr.Slider(minimum=spec.minimum, maximum=spec.maximum, step=spec.step, **kw)
    if spec.widget == "number":
        return gr.Number(minimum=spec.minimum, maximum=spec.maximum,
                         precision=0 if spec.type is int else None, **kw)
    if spec.widget == "dropdown":
        return gr.Dropdown(choices=list(spec.choices), allow_custom_value=spec.custom,
                           filterable=True, **kw)
    if spec.widget == "radio":
        return gr.Radio(choices=list(spec.choices), **kw)
    if spec.widget == "checkboxes":
        return gr.CheckboxGroup(choices=list(spec.choices), **kw)
    if spec.widget == "checkbox":
        return gr.Checkbox(**kw)
    return gr.Textbox(**kw)


def _controls(specs: list[OptionSpec], group: str,
              mode: str | None = None) -> list[tuple[OptionSpec, Any]]:
    """The controls of ``group``; drawn in the tab of ``mode``, they serve that mode only."""
    out = []
    for s in specs:
        if s.group == group:
            spec = dataclasses.replace(s, only_modes=(mode,)) if mode else s
            out.append((spec, _control(spec)))
    return out


# ------------------------------------------------------------------------------------------------
# event handlers (plain functions of plain values; the page wires them)
# ------------------------------------------------------------------------------------------------


def preview_handler(image: str | None, crop: str, size: Any, max_side: Any,
                    face_index: Any) -> tuple[Any, str]:
    """The marked preview and its message for the photo at ``image``."""
    from .preview import portrait_preview

    if not image:
        return None, "Upload a portrait photo: the detected face is marked here before rendering."
    opts: dict[str, Any] = {"crop": crop or "none"}
    for name, value in (("size", size), ("max_side", max_side), ("face_index", face_index)):
        if value not in (None, ""):
            opts[name] = int(float(value))
    res = portrait_preview(image, **opts)
    if not res.ok:
        message = res.message
        if "_" not in message.split(" ")[0]:            # not an option's name
            message = message[:1].upper() + message[1:]
        advice = " Choose another photo." if res.code.startswith(("image", "no_face")) else ""
        return None, f"**⚠ {html.escape(message)}**{advice}"
    return res.image, f"✔ {html.escape(res.message)}"


def demo_inputs() -> tuple[str, str]:
    """The bundled demo's photo and synthesized speech (made offline), as file paths."""
    from ..demo import make_demo_inputs

    inputs = make_demo_inputs(work_root() / "demo")
    return str(inputs.image), str(inputs.audio)


class _Reporter:
    """Feeds a page's progress bar from the backend's ``progress(stage, fraction)``."""

    def __init__(self, progress: Any, remote: bool):
        self.progress = progress
        self.remote = remote
        self.overall = 0.0
        self.stages: list[str] = []

    def __call__(self, stage: str, fraction: float) -> None:
        if self.remote:
            self.overall = max(self.overall, min(1.0, max(0.0, float(fraction))))
        else:
            self.overall = overall_fraction(stage, fraction, self.overall)
        if not self.stages or self.stages[-1] != stage:
            self.stages.append(stage)
        if self.progress is not None:
            self.progress(self.overall, desc=STAGE_LABELS.get(stage, stage.replace("_", " ")))


def run_job(backend: Any, job: Job, progress: Any = None, *, api_key: str | None = None):
    """Run ``job`` on ``backend`` with ``progress`` (a ``gr.Progress`` or ``None``).

    Returns the :class:`~echomimic.ui.backend.JobResult`. User errors come out as
    ``gr.Error`` with the error's one-line message; anything else as a short ``gr.Error``
    (the details go to the log), never as a traceback on the page.
    """
    import gradio as gr

    reporter = _Reporter(progress, getattr(backend, "remote", False))
    try:
        if getattr(backend, "remote", False):
            return backend.run(job, reporter, api_key=api_key)
        return backend.run(job, reporter)
    except EchomimicError as exc:
        raise gr.Error(html.escape(" ".join(exc.message.split())), title="Cannot make the video",
                       print_exception=False) from None
    except gr.Error:
        raise
    except Exception:
        log.exception("the job failed")
        raise gr.Error("Something went wrong while making the video (the details are in the "
                       "server's log).", title="Internal error", print_exception=False) from None


# ------------------------------------------------------------------------------------------------
# the page
# ------------------------------------------------------------------------------------------------


def build_app(backend: LocalBackend | RemoteBackend | None = None):
    """The Gradio :class:`~gradio.Blocks` of the web UI, running jobs on ``backend``.

    Elements the tests and scripts address have ``elem_id``s: ``portrait``, ``face-preview``,
    ``face-status``, ``demo-button``, the tabs ``tab-audio``/``tab-video``/``tab-mixed``/
    ``tab-text`` with inputs ``audio-input``, ``video-input``, ``mixed-audio``, ``mixed-video``,
    ``text-input``; ``prompt``, ``generate``, ``result``, ``summary``, ``download-video``,
    ``download-motion``; each option ``opt-<group>-<name>``.
    """
    offline_environment()
    import gradio as gr

    backend = backend if backend is not None else LocalBackend()
    remote = bool(getattr(backend, "remote", False))
    specs = option_specs(remote=remote, lazy=True)
    placed: list[tuple[OptionSpec, Any]] = []

    with gr.Blocks(title="echomimic: talking portraits", analytics_enabled=False,
                   delete_cache=(3600, 3600)) as demo:
        mode = gr.State("audio")
        gr.Markdown(
            "# echomimic: talking portraits\n"
            "A portrait photo and speech (a recording, a video or text) become a video of that "
            f"person speaking. Runs on {html.escape(backend.describe())}; nothing leaves it.")
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=320):
                with gr.Row(equal_height=True):
                    portrait = gr.Image(label="Portrait photo", type="filepath",
                                        sources=["upload", "clipboard"], elem_id="portrait",
                                        height=280, min_width=160)
                    face_preview = gr.Image(label="Detected face", interactive=False,
                                            elem_id="face-preview", height=280, min_width=160,
                                            buttons=[])
                face_status = gr.Markdown(
                    "Upload a portrait photo: the detected face is marked here before "
                    "rendering.", elem_id="face-status")
                demo_button = gr.Button("Load the demo (photo + synthesized speech)",
                                        size="sm", elem_id="demo-button")
                with gr.Tabs(selected="audio", elem_id="modes") as tabs:
                    with gr.Tab(MODE_LABELS["audio"], id="audio", elem_id="tab-audio") as t_audio:
                        audio_in = gr.Audio(label="Speech", type="filepath", format=None,
                                            sources=["upload", "microphone"],
                                            elem_id="audio-input")
                        transcript = gr.Textbox(label="Transcript (optional)", lines=2,
                                                info="The words of the recording: the mouth "
                                                "follows them instead of blind recognition.",
                                                elem_id="transcript")
                        placed += _controls(specs, "speech", "audio")
                    with gr.Tab(MODE_LABELS["video"], id="video", elem_id="tab-video") as t_video:
                        video_in = gr.File(label="Driving video (any format; its sound is "
                                                 "kept)", file_types=["video"], type="filepath",
                                           elem_id="video-input", height=140)
                        with gr.Accordion(GROUPS["video"], open=False):
                            placed += _controls(specs, "video", "video")
                    with gr.Tab(MODE_LABELS["mixed"], id="mixed", elem_id="tab-mixed") as t_mixed:
                        gr.Markdown("Audio + video: the lips follow the speech, the head and face "
                                    "follow the video.")
                        mixed_audio = gr.Audio(label="Speech", type="filepath", format=None,
                                               sources=["upload", "microphone"],
                                               elem_id="mixed-audio")
                        mixed_video = gr.File(label="Driving video (any format)",
                                              file_types=["video"], type="filepath",
                                              elem_id="mixed-video", height=140)
                        mixed_transcript = gr.Textbox(label="Transcript (optional)", lines=1,
                                                      elem_id="mixed-transcript")
                        with gr.Accordion(GROUPS["video"], open=False):
                            placed += _controls(specs, "video", "mixed")
                        placed += _controls(specs, "speech", "mixed")
                    with gr.Tab(MODE_LABELS["text"], id="text", elem_id="tab-text") as t_text:
                        text_in = gr.Textbox(label="Text to speak", lines=3,
                                             placeholder="Type what the person should say.",
                                             elem_id="text-input")
                        text_controls = _controls(specs, "voice", "text")
                        placed += text_controls
                        gr.Examples(TEXT_EXAMPLES, inputs=[text_in], label="Examples",
                                    cache_examples=False)
                prompt = gr.Textbox(label="Prompt (optional)", lines=1, elem_id="prompt",
                                    placeholder='e.g. "smiles, then nods twice; looks left at '
                                                'the end"')
                persona_in = gr.File(label="Persona (optional): a .persona file from "
                                     "`echomimic enroll`, the person's own mouth",
                                     file_types=[".persona"], type="filepath",
                                     elem_id="persona-input", height=100)
                main = [s for s in specs if s.group == "main"]
                for k in range(0, len(main), 2):
                    with gr.Row():
                        placed += [(s, _control(s)) for s in main[k:k + 2]]
                with gr.Accordion(GROUPS["body"], open=False, elem_id="half-body"):
                    pose_in = gr.File(label="Pose sequence (echomimic.pose/1 JSON or NPZ; "
                                            "without it a half-body photo gestures with the "
                                            "speech)", file_types=[".json", ".npz"],
                                      type="filepath", elem_id="pose-input", height=100)
                    placed += _controls(specs, "body")
                with gr.Accordion(GROUPS["motion"], open=False):
                    placed += _controls(specs, "motion")
                with gr.Accordion(GROUPS["advanced"], open=False):
                    placed += _controls(specs, "advanced")
                    api_key = gr.Textbox(
                        label="API key of the server", type="password", visible=remote,
                        placeholder=("from ECHOMIMIC_API_KEY" if os.environ.get(
                            "ECHOMIMIC_API_KEY") else "none"), elem_id="api-key")
                generate = gr.Button("Make the video", variant="primary", elem_id="generate")
            with gr.Column(scale=4, min_width=320):
                result = gr.Video(label="Result", interactive=False, elem_id="result",
                                  autoplay=False)
                summary = gr.Markdown("", elem_id="summary")
                with gr.Row():
                    dl_video = gr.DownloadButton("Download video (mp4)", visible=False,
                                                 elem_id="download-video", size="sm")
                    dl_motion = gr.DownloadButton("Download motion (JSON)", visible=False,
                                                  elem_id="download-motion", size="sm")

        # -- choices that need the pipeline's modules: filled when the page loads --------------
        lazy = [(s, c) for s, c in placed if s.lazy]
        if lazy:
            def fill_choices():
                return [gr.Dropdown(choices=list(s.resolve_choices())) for s, _ in lazy]

            demo.load(fill_choices, None, [c for _, c in lazy], queue=False,
                      show_progress="hidden")

        # -- mode ---------------------------------------------------------------------------------
        for tab, name in ((t_audio, "audio"), (t_video, "video"), (t_mixed, "mixed"),
                          (t_text, "text")):
            tab.select(lambda n=name: n, None, mode, queue=False, show_progress="hidden")

        # -- preview ------------------------------------------------------------------------------
        by_name = {s.name: c for s, c in placed if s.group in ("main", "advanced")}
        frame_inputs = [portrait] + [by_name.get(n) or gr.State(None)
                                     for n in ("crop", "size", "max_side", "face_index")]
        for trigger in [portrait.change] + [by_name[n].change for n in ("crop", "face_index")
                                            if n in by_name]:
            trigger(preview_handler, frame_inputs, [face_preview, face_status],
                    concurrency_id="preview", concurrency_limit=2, show_progress="minimal")

        def load_demo():
            image, audio = demo_inputs()
            return image, audio, gr.Tabs(selected="audio"), "audio"

        demo_button.click(load_demo, None, [portrait, audio_in, tabs, mode],
                          concurrency_id="preview")

        # -- generate -----------------------------------------------------------------------------
        option_components = [c for _, c in placed]
        option_specs_placed = [s for s, _ in placed]
        fixed = [mode, portrait, audio_in, transcript, video_in, mixed_audio, mixed_video,
                 mixed_transcript, text_in, prompt, api_key, pose_in,
                 persona_in]

        def generate_fn(data: dict, progress=gr.Progress()):
            mode_v = data[mode]
            mixed = mode_v == "mixed"
            options = collect_options(option_specs_placed,
                                      [data[c] for c in option_components], mode_v)
            job = Job(mode=mode_v, image=data[portrait],
                      audio=data[mixed_audio if mixed else audio_in],
                      video=data[mixed_video if mixed else video_in], text=data[text_in],
                      transcript=data[mixed_transcript if mixed else transcript],
                      prompt=data[prompt], options=options, pose=data[pose_in],
                      persona=data[persona_in])
            res = run_job(backend, job, progress, api_key=data[api_key])
            for w in res.warnings:
                gr.Warning(html.escape(w))
            motion = str(res.motion) if res.motion else None
            return (str(res.video), f"**Done:** {html.escape(res.describe())}",
                    gr.DownloadButton(value=str(res.video), visible=True),
                    gr.DownloadButton(value=motion, visible=motion is not None))

        generate.click(generate_fn, set(fixed + option_components),
                       [result, summary, dl_video, dl_motion], api_name="generate",
                       concurrency_id="render", concurrency_limit=1)
    return demo


def launch(*, host: str = "127.0.0.1", port: int = 7860, server: str | None = None,
           api_key: str | None = None, block: bool = True, quiet: bool = False):
    """Serve the web UI on ``host:port`` (``server``: run jobs on that REST server).

    With ``block=False`` it returns the running :class:`~gradio.Blocks` (``.close()`` stops it).
    """
    offline_environment()
    backend = RemoteBackend(server, api_key) if server else LocalBackend()
    demo = build_app(backend)
    demo.queue(default_concurrency_limit=1, max_size=32)
    demo.launch(server_name=host, server_port=int(port), share=False, inbrowser=False,
                show_error=False, quiet=quiet, prevent_thread_lock=True, ssr_mode=False,
                pwa=False, mcp_server=False, enable_monitoring=False,
                footer_links=["api", "settings"], theme=theme(), css=CSS,
                allowed_paths=[str(work_root())], max_file_size="200mb")
    threading.Thread(target=warm_up, name="echomimic-ui-warm-up", daemon=True).start()
    if block:
        try:
            demo.block_thread()
        finally:
            demo.close()
    return demo


def warm_up() -> None:
    """Import the pipeline's modules and load the face models while the page is idle.

    The page answers before this runs (it starts after the server is up), and the first video
    is then as fast as the next ones.
    """
    try:
        from ..analysis import load_models
        from ..pipeline import AnimateOptions  # noqa: F401
        from ..speech import analyze_speech  # noqa: F401
        from ..motion import idle_track  # noqa: F401
        from ..render import get_renderer

        get_renderer("warp")
        load_models()                  # made once, under the analysis lock
    except Exception:  # only a head start: a real problem shows when a job runs
        log.debug("warm-up failed", exc_info=True)
