"""The one pipeline: inputs -> analyze -> drive -> mix -> render -> encode.

Every front (CLI, Python API, REST worker, web UI) calls :func:`animate`. It reads top to bottom:

1. **inputs** — the photo (by content, with size limits), the audio (any FFmpeg format), or text
   (spoken offline with espeak-ng), or a motion file;
2. **analyze** — the portrait (face mesh, person mask; cached by content hash) and the speech
   (activity, loudness, pitch, mouth-shape timeline);
3. **drive** — a lip-sync track from the speech and idle life (blinks, head, breathing);
4. **mix** — one :class:`~echomimic.types.MotionTrack` by the driver precedence;
5. **render** — frames one at a time by the chosen renderer plugin;
6. **encode** — H.264 + AAC, while rendering (a second thread), so memory stays flat.

Progress is reported through ``progress(stage, fraction)``; raising
:class:`~echomimic.errors.Cancelled` from it stops the job cleanly (no partial output file).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import EchomimicError, InvalidOption
from .options import AnimateOptions
from .types import Audio, MotionTrack, Portrait, Speech

ProgressFn = Callable[[str, float], None]


@dataclass
class AnimateResult:
    output: Path
    duration: float
    fps: float
    n_frames: int
    width: int
    height: int
    timings: dict[str, float]
    motion: MotionTrack
    speech_method: str = ""
    lang: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("motion")
        d["output"] = str(self.output)
        return d


# ------------------------------------------------------------------------------------------------
# stages
# ------------------------------------------------------------------------------------------------


def load_portrait(image: Any, opts: AnimateOptions) -> Portrait:
    """Inputs + analysis of the photo: decode, analyze (cached), crop/resize to the output frame."""
    from .analysis import analyze_cached, prepare_portrait
    from .media import load_image

    rgb, digest = image if isinstance(image, tuple) else load_image(image, max_pixels=int(opts.max_pixels))
    fa = analyze_cached(rgb, content_hash=digest, face_index=int(opts.face_index))
    return prepare_portrait(rgb, fa, crop=opts.crop, size=int(opts.size), max_side=int(opts.max_side))


def load_speech(*, audio: Any = None, text: str | None = None, transcript: str | None = None,
                opts: AnimateOptions) -> tuple[Speech, Any]:
    """The speech timeline and the audio source to mux (a path, bytes, or an Audio).

    Text is spoken offline (espeak-ng) and its exact phoneme timing drives the mouth; a
    transcript of real audio is aligned to it and replaces blind recognition.
    """
    from .media import load_audio
    from .speech import analyze_speech, speech_from_phones, synthesize

    if text is not None:
        if not str(text).strip():
            raise InvalidOption("text is empty")
        from .speech.textlang import resolve_lang

        lang = resolve_lang(str(text), opts.lang)
        tts_audio, phones = synthesize(str(text), lang=lang, voice=opts.voice,
                                       rate=int(opts.rate), pitch=int(opts.pitch),
                                       volume=int(opts.volume))
        if tts_audio.duration > float(opts.max_duration):
            from .errors import AudioTooLong

            raise AudioTooLong(f"the spoken text lasts {tts_audio.duration:.0f} s, over the "
                               f"limit of {opts.max_duration:.0f} s")
        speech = speech_from_phones(tts_audio, phones)
        speech.lang = lang
        return speech, tts_audio
    a = audio if isinstance(audio, Audio) else load_audio(audio, sample_rate=16000,
                                                         max_duration=float(opts.max_duration))
    if transcript is not None:
        from .speech.align import align_transcript

        return align_transcript(a, transcript, lang=opts.lang, voice=opts.voice), audio
    return analyze_speech(a, lang=opts.lang), audio


def drive(*, speech: Speech | None, motion: MotionTrack | None, n_frames: int,
          opts: AnimateOptions, prompt: str | None = None,
          warnings: list[str] | None = None, body: MotionTrack | None = None,
          body_rest: dict | None = None) -> MotionTrack:
    """Driver tracks mixed into one, by the precedence of the design: lips from speech; the rest
    from a motion file when given, else idle life; prompt actions and the emotion add on top;
    scales last. Prompt phrases that are not understood are appended to ``warnings``.

    Body channels (see :mod:`echomimic.motion.body`): ``body`` (a pose sequence's or a video's
    body track) else a motion file's body channels, else, when ``body_rest`` (the photo's arms in
    shoulder widths) is given, gestures from the speech; the prompt's body actions on top;
    ``gesture_scale`` last."""
    from .motion import idle_track, lipsync_track, mix_tracks, quantize
    from .motion.body import split_body
    from .motion.emotion import emotion_head_scale, emotion_overlay

    motion, motion_body = split_body(motion)
    body_overlays: list[MotionTrack] = []

    fps = float(opts.fps)
    overlays: list[MotionTrack] = []
    emotion, intensity = opts.emotion, float(opts.emotion_intensity)
    if prompt:
        from .motion.prompt import parse_prompt

        res = parse_prompt(prompt, duration=n_frames / fps, fps=fps, speech=speech,
                           body=body_rest)
        for o in res.overlays:
            face_part, body_part = split_body(o)
            overlays.append(face_part)
            if body_part is not None:
                body_overlays.append(body_part)
        if warnings is not None:
            warnings.extend(res.warnings)
        if res.emotion and emotion == "neutral":          # an explicit --emotion wins
            emotion = res.emotion
            if res.emotion_intensity is not None:
                intensity = float(res.emotion_intensity)
    if emotion != "neutral":
        overlays.append(emotion_overlay(n_frames, fps, emotion, intensity))
    lips = None
    if speech is not None:
        lips = lipsync_track(speech, n_frames, fps, expression_scale=float(opts.expression_scale))
    if motion is not None:
        base = motion
    else:
        head = float(opts.head_motion_scale) * emotion_head_scale(emotion, intensity)
        base = idle_track(n_frames, fps, seed=int(opts.seed), speech=speech,
                          head_motion_scale=head, blink_rate=opts.blink_rate,
                          expression_scale=float(opts.expression_scale))
    mixed = mix_tracks(speech=lips, base=base, overlays=overlays, n_frames=n_frames, fps=fps)
    _add_body(mixed, speech=speech, base=body if body is not None else motion_body,
              overlays=body_overlays, rest=body_rest, n_frames=n_frames, opts=opts)
    mixed.meta.update({"seed": int(opts.seed), "renderer": opts.renderer})
    if emotion != "neutral":
        mixed.meta["emotion"] = {"name": emotion, "intensity": intensity}
    if prompt:
        mixed.meta["prompt"] = prompt
    if speech is not None:
        mixed.meta["speech"] = {"method": speech.method, "lang": speech.lang}
    return quantize(mixed)


def _add_body(mixed: MotionTrack, *, speech: Speech | None, base: MotionTrack | None,
              overlays: list[MotionTrack], rest: dict | None, n_frames: int,
              opts: AnimateOptions) -> None:
    """Append the body channels (those that move) to ``mixed``; see :func:`drive`."""
    from .motion.body import mix_body
    from .motion.gestures import speech_gestures

    scale = float(opts.gesture_scale)
    fallback = None
    if (speech is not None and rest is not None and scale > 0
            and (base is None or "weight" in base.meta)):
        fallback = speech_gestures(speech, n_frames, float(opts.fps), seed=int(opts.seed))
    if base is None and fallback is None and not overlays:
        return
    bt = mix_body(base=base, overlays=overlays, n_frames=n_frames, fps=float(opts.fps),
                  scale=scale, fallback=fallback)
    moving = np.flatnonzero(np.abs(bt.values).max(axis=0) > 0) if bt.n_frames else []
    if len(moving):
        mixed.values = np.concatenate([mixed.values, bt.values[:, moving]], axis=1)
        mixed.channels.extend(bt.channels[i] for i in moving)
    sources = ([base.meta.get("generator", "track")] if base is not None else []) + (
        ["speech-gestures"] if fallback is not None else []) + (["prompt"] if overlays else [])
    mixed.meta["body"] = {"sources": sources, "gesture_scale": scale}


def load_video_motion(video: Any, portrait: Portrait, *, speech: Speech | None,
                      n_frames: int | None, opts: AnimateOptions,
                      progress: ProgressFn | None = None) -> MotionTrack:
    """The driving video's motion, retargeted onto the portrait, as the mixer's base track.

    Regions the video does not drive (``drive``) come from idle life; with speech, the lips come
    from the speech whatever the video's mouth does (the mixer's precedence).
    """
    from .motion import idle_track
    from .motion.video import fill_undriven, video_track

    fps = float(opts.fps)
    vt = video_track(video, fps=fps, n_frames=n_frames, drive=opts.drive,
                     motion_scale=float(opts.motion_scale), relative=bool(opts.relative),
                     loop=opts.loop if opts.loop != "speech" else "hold", portrait=portrait,
                     expression_scale=float(opts.expression_scale),
                     head_motion_scale=float(opts.head_motion_scale),
                     progress=progress)
    if {r.strip() for r in opts.drive.split(",")} != {"all"}:
        idle = idle_track(vt.n_frames, fps, seed=int(opts.seed), speech=speech,
                          head_motion_scale=float(opts.head_motion_scale),
                          blink_rate=opts.blink_rate, expression_scale=float(opts.expression_scale))
        vt = fill_undriven(vt, idle)
    return vt


def _analyze_body(portrait: Portrait, opts: AnimateOptions, *, needed: bool) -> dict | None:
    """Detect the photo's skeleton once (cached) for the warp renderer's body layer; sets
    ``portrait.body``. Returns the arms in shoulder widths (for gestures and prompt actions), or
    None when no arm is visible. ``needed``: a pose sequence was given, so a photo without a
    body is an error."""
    from .motion.body import photo_body

    if opts.renderer != "warp" or (float(opts.gesture_scale) == 0 and not needed):
        return None
    return photo_body(portrait, required=needed)


def _body_base(pose: Any, video: Any, portrait: Portrait, body_rest: dict | None, *,
               speech: Speech | None, n_frames: int, opts: AnimateOptions) -> MotionTrack | None:
    """The base body track: a pose sequence, else a driving video's body (when visible)."""
    if body_rest is None or getattr(portrait, "body", None) is None:
        return None
    from .motion.body import base_body_track

    return base_body_track(portrait, pose=pose, video=video, n_frames=n_frames,
                           fps=float(opts.fps), loop=opts.loop, relative=bool(opts.relative))


class _Encoder(threading.Thread):
    """Encodes frames from a bounded queue on a second thread (x264 and swscale release the GIL)."""

    def __init__(self, writer, recycle: "queue.Queue | None" = None):
        super().__init__(daemon=True, name="echomimic-encoder")
        self.writer = writer
        self.recycle = recycle
        self.q: queue.Queue = queue.Queue(maxsize=6)
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.stopping = False

    def run(self) -> None:
        while True:
            frame = self.q.get()
            if frame is None:
                return
            if self.error is not None or self.stopping:
                continue
            t = time.perf_counter()
            try:
                self.writer.write(frame)
            except BaseException as exc:  # surfaced on the main thread
                self.error = exc
            self.seconds += time.perf_counter() - t
            if self.recycle is not None:
                self.recycle.put(frame)

    def put(self, frame: np.ndarray) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(frame)

    def finish(self) -> None:
        self.q.put(None)
        self.join()
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        """Drop what is queued and wait for the thread (before the writer is aborted)."""
        self.stopping = True
        while True:
            try:
                self.q.get_nowait()
            except queue.Empty:
                break
        self.q.put(None)
        self.join()


def render_video(portrait: Portrait, track: MotionTrack, output: str | os.PathLike, *,
                 audio: Any, opts: AnimateOptions, progress: ProgressFn | None = None,
                 preview_every: int = 0, persona: Any = None,
                 ) -> tuple[dict[str, float], dict[str, Any], list[np.ndarray]]:
    """Render ``track`` on ``portrait`` and encode it with ``audio`` to ``output``; with a
    ``persona`` (a loaded :class:`~echomimic.types.Persona`) the mouth shows its interiors.
    OpenCV runs with the renderer's thread count meanwhile (:func:`~echomimic.render.rendering_threads`)."""
    from .render import rendering_threads

    with rendering_threads():
        return _render_video(portrait, track, output, audio=audio, opts=opts, progress=progress,
                             preview_every=preview_every, persona=persona)


def _render_video(portrait: Portrait, track: MotionTrack, output: str | os.PathLike, *,
                  audio: Any, opts: AnimateOptions, progress: ProgressFn | None,
                  preview_every: int, persona: Any,
                  ) -> tuple[dict[str, float], dict[str, Any], list[np.ndarray]]:
    from .media import Mp4Writer
    from .render import get_renderer
    from .safety import content_label, frame_marker

    t0 = time.perf_counter()
    cls = get_renderer(opts.renderer)
    kw: dict[str, Any] = {} if opts.weights is None else {"weights": opts.weights}
    if opts.accelerated:
        kw["accelerated"] = True                 # neural renderers' _acc weights
    if persona is not None:
        if opts.renderer != "warp":
            raise InvalidOption(f"a persona is used by the warp renderer only, not by "
                                f"{opts.renderer!r}")
        kw["persona"] = persona
    renderer = cls(portrait, **kw)
    if hasattr(renderer, "prepare"):   # audio-driven renderers see the whole clip first
        renderer.prepare(track, audio=audio, fps=float(opts.fps), seed=int(opts.seed),
                         progress=progress)
    setup = time.perf_counter() - t0
    h, w = portrait.image.shape[:2]
    marker = frame_marker(h, w, watermark=bool(opts.watermark), label=opts.label,
                          label_corner=opts.label_corner, label_opacity=float(opts.label_opacity),
                          landmarks=portrait.landmarks)
    # a renderer whose frames equal the photo outside a box lets the writer convert (and mark)
    # only that box, reusing the rest of the photo's converted picture
    still: dict[str, Any] = {}
    if hasattr(renderer, "changing_box"):
        still = {"background": portrait.image, "moving_box": renderer.changing_box()}
    writer = Mp4Writer(output, w, h, float(opts.fps), audio=audio, crf=int(opts.crf), preset=opts.preset,
                       format=opts.output_format, metadata=content_label(watermark=bool(opts.watermark)),
                       frame_filter=marker, **still)
    # frame buffers that hold the photo; a renderer that can, writes only what moves into them
    pool: queue.Queue | None = None
    if hasattr(renderer, "render_into"):
        pool = queue.Queue()
        for _ in range(10):
            pool.put(portrait.image.copy())
    enc = _Encoder(writer, pool)
    enc.start()
    render_s = 0.0
    previews: list[np.ndarray] = []
    n = track.n_frames
    chans = track.channels
    values = track.values
    ok = False
    try:
        step = max(1, n // 200)
        for i in range(n):
            t = time.perf_counter()
            m = dict(zip(chans, values[i].tolist()))
            if pool is not None:
                frame = renderer.render_into(m, pool.get())
            else:
                frame = renderer.render(m)
            render_s += time.perf_counter() - t
            if preview_every and i % preview_every == 0:
                previews.append(frame.copy())
            enc.put(frame)
            if progress is not None and (i % step == 0 or i == n - 1):
                progress("render", (i + 1) / n)
        t = time.perf_counter()
        enc.finish()
        info = writer.close()
        tail = time.perf_counter() - t
        ok = True
        body_layer = getattr(renderer, "body", None)
        if body_layer is not None and hasattr(body_layer, "stats"):
            info = dict(info)
            info["body"] = body_layer.report()
    finally:
        if not ok:
            enc.stop()
            writer.abort()
    timings = {"render_setup": setup, "render": render_s, "encode": enc.seconds + tail}
    return timings, info, previews


# ------------------------------------------------------------------------------------------------
# speech analysed in blocks, overlapped with rendering
# ------------------------------------------------------------------------------------------------


def _speech_in_blocks(*, audio: Any, text: Any, transcript: Any, video: Any, motion: Any,
                      pose: Any, prompt: Any, persona: Any, portrait: Portrait,
                      body_rest: dict | None, opts: AnimateOptions) -> bool:
    """Whether the recording is analysed in blocks ahead of the renderer (see
    :mod:`echomimic.motion.blocks`): a recording drives the lips and idle life the rest, with
    no stage that needs the whole clip's motion before the first frame (a driving video or
    motion file, a pose sequence, a prompt or an emotion, a persona's head-motion fit, body
    gestures, a renderer that sees the whole clip first)."""
    from .motion import blocks
    from .render import get_renderer

    if not blocks.ENABLED or audio is None or text is not None or transcript is not None:
        return False
    if video is not None or motion is not None or pose is not None or persona is not None:
        return False
    if prompt or opts.emotion != "neutral" or body_rest is not None:
        return False
    if getattr(portrait, "body", None) is not None or opts.renderer != "warp":
        return False
    cls = get_renderer(opts.renderer)
    if getattr(cls, "needs_whole_clip", False):
        return False
    return blocks.frame_quantum(float(opts.fps), 0.01) is not None


def _start_speech(audio: Any, opts: AnimateOptions):
    """The speech stage's clip-wide part (levels, language, gains); the rest runs in blocks."""
    from .media import load_audio
    from .speech.incremental import SpeechAnalyzer

    a = audio if isinstance(audio, Audio) else load_audio(audio, sample_rate=16000,
                                                         max_duration=float(opts.max_duration))
    analyzer = SpeechAnalyzer(a, lang=opts.lang)
    analyzer.prefetch()       # English utterances decoded in a helper, beside the renderer
    return analyzer, analyzer.speech, audio


def _finish_rows(rows: Any, speech: Speech, opts: AnimateOptions, timings: dict[str, float],
                 motion_out: Any) -> MotionTrack:
    """The finished track of rows made in blocks (the meta :func:`drive` gives), saved to
    ``motion_out``; the producer's busy time is added to the audio analysis."""
    rows.wait()
    meta = {"seed": int(opts.seed), "renderer": opts.renderer,
            "speech": {"method": speech.method, "lang": speech.lang}}
    track = rows.track(meta)
    timings["analyze_audio"] += rows.seconds
    if motion_out is not None:
        from .motion import save_motion

        save_motion(track, motion_out)
    return track


# ------------------------------------------------------------------------------------------------
# the public entry point
# ------------------------------------------------------------------------------------------------


def animate(image: Any, output: str | os.PathLike, *, audio: Any = None, video: Any = None,
            text: str | None = None, transcript: str | None = None, prompt: str | None = None,
            motion: Any = None, motion_out: str | os.PathLike | None = None,
            preview: str | os.PathLike | None = None, progress: ProgressFn | None = None,
            pose: Any = None, persona: Any = None, **options: Any) -> AnimateResult:
    """Make a talking-portrait video.

    Args:
        image: the portrait (path or bytes; PNG, JPEG, WebP, … recognised by content).
        output: path of the video to write (written atomically); its extension (.mp4, .webm,
            .mov, .gif) chooses the format unless ``output_format`` is given.
        audio: speech audio (path or bytes; any format FFmpeg decodes), or an ``Audio``.
        video: a driving video: its head and face motion is retargeted onto the portrait
            (``drive``, ``motion_scale``, ``relative``, ``loop``); with ``audio`` or ``text``
            the lips follow the speech and the rest the video, else the video's own sound is
            kept.
        text: text to speak (offline TTS); the mouth follows its exact phoneme timing.
        transcript: the words of ``audio`` (text or a .txt path); aligned to the recording, it
            replaces blind recognition for the mouth timeline.
        prompt: directed actions and emotion, e.g. "smiles, then nods twice; looks left at the
            end" or "微笑并点头"; phrases that are not understood are listed in
            ``result.meta["warnings"]``.
        motion: a motion file path or :class:`MotionTrack`; alone it reproduces its frames.
        pose: a body-pose sequence (``echomimic.pose/1`` JSON or NPZ path/bytes, or a
            ``PoseSequence``): the arms and hands of a half-body photo follow it (retargeted
            relative to the photo's own skeleton unless ``relative=False``; a short sequence
            loops by ``loop``, or hands over to speech gestures with ``loop="speech"``). Without
            it, a half-body photo gestures with the speech (``gesture_scale``; 0 = still arms).
        motion_out: where to save the motion track that was rendered (versioned JSON).
        preview: where to save a contact sheet (PNG) of frames across the clip.
        persona: a ``.persona`` file (path or bytes, from ``echomimic enroll``) or a
            :class:`~echomimic.types.Persona`: the mouth shows the person's own interiors, and
            their articulation, blink rate and head-motion spread shape the motion.
        progress: ``progress(stage, fraction)`` callback; raise ``Cancelled`` in it to stop.
        **options: see :class:`AnimateOptions` (fps, crop, size, max_side, seed, lang, voice,
            rate, pitch, expression_scale, head_motion_scale, blink_rate, face_index, …;
            ``output_format``, ``watermark``, ``label``, ``label_corner``, ``label_opacity``).

    Returns:
        :class:`AnimateResult` with the output path, duration, fps, frame count, per-stage
        timings (seconds) and the motion track.
    """
    from .motion import load_motion

    opts = AnimateOptions.from_kwargs(**options)
    if video is not None and motion is not None:
        raise InvalidOption("give either a driving video or a motion file, not both")
    if transcript is not None and audio is None:
        raise InvalidOption("a transcript goes with an audio recording (--audio)")
    if audio is not None and text is not None:
        raise InvalidOption("give either audio or text, not both")
    if audio is None and text is None and motion is None and video is None and pose is None:
        raise InvalidOption("nothing drives the portrait: give audio, text, a video, a pose "
                            "sequence or a motion file")
    out = Path(output)
    from .media.writer import format_of

    opts.output_format = format_of(out, opts.output_format)   # mp4, webm, mov or gif
    from .safety.moderation import moderate

    moderate(image=image, audio=audio, video=video, text=text, transcript=transcript,
             prompt=prompt)
    if out.exists() and out.is_dir():
        raise InvalidOption(f"the output {str(out)!r} is a directory")
    if not out.parent.exists():
        raise InvalidOption(f"the output folder {str(out.parent)!r} does not exist")

    if persona is not None:
        from .persona import load_persona

        persona = load_persona(persona)        # checked before any work is done
        if opts.blink_rate is None and persona.blink_rate is not None:
            opts.blink_rate = float(persona.blink_rate)
    report = progress or (lambda stage, frac: None)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    report("analyze", 0.0)
    portrait = load_portrait(image, opts)
    timings["analyze_image"] = time.perf_counter() - t
    t = time.perf_counter()
    body_rest = _analyze_body(portrait, opts, needed=pose is not None)
    timings["analyze_body"] = time.perf_counter() - t

    speech, audio_src = None, None
    t = time.perf_counter()
    analyzer = rows = None
    if _speech_in_blocks(audio=audio, text=text, transcript=transcript, video=video,
                         motion=motion, pose=pose, prompt=prompt, persona=persona,
                         portrait=portrait, body_rest=body_rest, opts=opts):
        analyzer, speech, audio_src = _start_speech(audio, opts)
    elif audio is not None or text is not None:
        speech, audio_src = load_speech(audio=audio, text=text, transcript=transcript, opts=opts)
    timings["analyze_audio"] = time.perf_counter() - t
    if analyzer is None:
        report("analyze", 1.0)

    fps = float(opts.fps)
    n_speech = max(1, int(round(speech.duration * fps))) if speech is not None else None
    track_in: MotionTrack | None = None
    t = time.perf_counter()
    if video is not None:
        track_in = load_video_motion(video, portrait, speech=speech, n_frames=n_speech,
                                     opts=opts, progress=report)
        if speech is None:
            from .media.video import probe_video

            if probe_video(video).get("has_audio"):
                audio_src = video                 # the driving video's own sound
    elif motion is not None:
        if isinstance(motion, MotionTrack):
            track_in = motion
        else:
            from .motion.pose_io import is_pose_file, pose_track

            if is_pose_file(motion):
                track_in = pose_track(motion, fps=fps, n_frames=n_speech, drive=opts.drive,
                                      motion_scale=float(opts.motion_scale),
                                      relative=bool(opts.relative), loop=opts.loop,
                                      portrait=portrait,
                                      expression_scale=float(opts.expression_scale),
                                      head_motion_scale=float(opts.head_motion_scale))
            else:
                track_in = load_motion(motion)
    timings["analyze_video"] = time.perf_counter() - t
    if pose is not None:
        from .motion.body_pose import load_pose_sequence

        pose = pose if hasattr(pose, "body") and hasattr(pose, "fps") else load_pose_sequence(pose)
    if n_speech is not None:
        n_frames = n_speech
    elif track_in is not None:
        n_frames = int(round(track_in.n_frames * fps / track_in.fps))
    else:
        n_frames = max(1, int(round(pose.duration * fps)))     # a pose sequence alone
    t = time.perf_counter()
    body_track = _body_base(pose, video, portrait, body_rest, speech=speech, n_frames=n_frames,
                            opts=opts)
    timings["analyze_body"] += time.perf_counter() - t
    t = time.perf_counter()
    warnings: list[str] = []
    plain = (not prompt and opts.emotion == "neutral")
    if (video is None and pose is None and track_in is not None and speech is None and plain
            and abs(track_in.fps - fps) < 1e-9):
        from .motion import quantize

        track = quantize(track_in)            # --motion alone: exactly its frames
    elif analyzer is not None:
        from .motion.blocks import MotionRows

        # speech analysed in blocks ahead of the renderer: the rows are made as it reads them
        rows = MotionRows(analyzer, n_frames=n_frames, opts=opts, progress=report).start()
        track = rows.view()
    else:
        track = drive(speech=speech, motion=track_in, n_frames=n_frames, opts=opts,
                      prompt=prompt, warnings=warnings, body=body_track,
                      body_rest=body_rest)
    if persona is not None and (speech is not None or track_in is None):
        from .persona import adapt_track

        track = adapt_track(track, persona, lips_from_speech=speech is not None,
                            head_from_idle=track_in is None)
    timings["motion"] = time.perf_counter() - t
    if motion_out is not None and rows is None:
        from .motion import save_motion

        save_motion(track, motion_out)
    report("motion", 1.0)

    every = max(1, -(-track.n_frames // 8)) if preview is not None else 0
    render_track = track
    if pose is not None and opts.renderer != "warp":
        # renderers drawing the pose themselves (echomimic-v2's hand pictures) read the sequence
        # from the track's meta; a copy, so the returned/saved motion stays plain data
        from dataclasses import replace

        render_track = replace(track, meta={**track.meta, "body_pose": pose})
    try:
        rt, info, previews = render_video(portrait, render_track, out, audio=audio_src,
                                          opts=opts, progress=progress, preview_every=every,
                                          persona=persona)
    finally:
        if rows is not None:
            rows.close()
        if analyzer is not None:
            analyzer.close()
    timings.update(rt)
    if rows is not None:
        track = _finish_rows(rows, speech, opts, timings, motion_out)
    if preview is not None and previews:
        from .media import contact_sheet, save_png

        labels = [f"{i * every / fps:.1f}s" for i in range(len(previews))]
        save_png(preview, contact_sheet(previews, cols=4, labels=labels))
    report("done", 1.0)
    h, w = portrait.image.shape[:2]
    return AnimateResult(
        output=Path(info.get("path", out)), duration=track.n_frames / fps, fps=fps,
        n_frames=track.n_frames, width=int(info.get("width", w)), height=int(info.get("height", h)),
        timings=timings, motion=track,
        speech_method=speech.method if speech is not None else "",
        lang=speech.lang if speech is not None else "",
        meta={"face_box": portrait.face_box, "warnings": warnings,
              **({"body": info["body"]} if "body" in info else {})},
    )


__all__ = ["AnimateOptions", "AnimateResult", "animate", "drive", "load_portrait", "load_speech",
           "load_video_motion",
           "render_video", "EchomimicError"]
