"""Streaming video writer: MP4 or MOV (H.264 + AAC), WebM (VP9 + Opus) or GIF (no sound),
muxed as frames arrive.

Frames go in one at a time; the audio track is decoded, resampled and encoded alongside, up to
each video frame's end time, so neither the encoder nor libavformat's interleaver ever holds
more than a few frames' worth of data: memory stays flat however long the clip is. The file is
written under a temporary name in the destination folder and renamed on success, so a failed
or interrupted render never leaves a broken file at the destination path.

Colour: RGB frames are converted to BT.709 limited-range yuv420p by libswscale and the stream is
tagged BT.709, which is what players assume for HD content and what they honour when tagged.
A GIF (for previews) gets one 256-colour palette, made from its first frame.

Container metadata (``metadata``: tags such as the AI-generated label of
:mod:`echomimic.safety`) is written in every format: as ``udta``/``mdta`` tags in MP4 and MOV,
as Matroska tags in WebM, and as a comment extension in a GIF.
"""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from typing import Callable, Iterator, Mapping, Union

import av
import numpy as np

from ..errors import AudioError, InvalidOption
from ..types import Audio
from .audio import AudioSource, iter_audio_chunks, probe_audio

__all__ = ["Mp4Writer", "VideoWriter", "fps_fraction", "X264_PRESETS", "OUTPUT_FORMATS",
           "format_of", "MEDIA_TYPES"]

#: Output formats: container, video codec, audio codec (None: no sound), pixel format.
OUTPUT_FORMATS: dict[str, dict] = {
    "mp4": {"container": "mp4", "video": "libx264", "audio": "aac", "pix_fmt": "yuv420p"},
    "webm": {"container": "webm", "video": "libvpx-vp9", "audio": "libopus",
             "pix_fmt": "yuv420p"},
    "mov": {"container": "mov", "video": "libx264", "audio": "aac", "pix_fmt": "yuv420p"},
    "gif": {"container": "gif", "video": "gif", "audio": None, "pix_fmt": "pal8"},
}
#: HTTP media type of each output format.
MEDIA_TYPES = {"mp4": "video/mp4", "webm": "video/webm", "mov": "video/quicktime",
               "gif": "image/gif"}


def format_of(path: Union[str, "os.PathLike[str]"], output_format: str | None = None) -> str:
    """The output format of ``path``: ``output_format`` when given (it must agree with the
    file's extension), else the extension's. Raises :class:`InvalidOption` otherwise."""
    suffix = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    choices = ", ".join(OUTPUT_FORMATS)
    if output_format is not None:
        fmt = str(output_format).strip().lower()
        if fmt not in OUTPUT_FORMATS:
            raise InvalidOption(f"output_format must be one of {choices}, got {output_format!r}")
        if suffix and suffix != fmt:
            raise InvalidOption(f"the output {os.path.basename(os.fspath(path))!r} does not end "
                                f"in .{fmt}, the output_format")
        return fmt
    if suffix not in OUTPUT_FORMATS:
        raise InvalidOption(f"the output must be a video file ending in "
                            f"{', '.join('.' + f for f in OUTPUT_FORMATS)}; got "
                            f"{os.path.basename(os.fspath(path))!r}")
    return suffix

# NTSC-style rates written as decimals by users, mapped to their exact values.
#: x264 speed presets, fastest first.
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow", "placebo")

_NTSC = {23.976: Fraction(24000, 1001), 29.97: Fraction(30000, 1001),
         47.952: Fraction(48000, 1001), 59.94: Fraction(60000, 1001),
         119.88: Fraction(120000, 1001)}


def _chmod_default(path: str) -> None:
    """Give a file made with ``mkstemp`` (mode 0600) the permissions a plain ``open`` would."""
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(path, 0o666 & ~umask)
    except OSError:
        pass


def fps_fraction(fps: float | Fraction | int) -> Fraction:
    """Exact frame rate as a fraction: ``25 -> 25/1``, ``29.97 -> 30000/1001``.

    Raises :class:`~echomimic.errors.InvalidOption` for a non-positive or absurd rate.
    """
    if isinstance(fps, Fraction):
        out = fps
    else:
        try:
            f = float(fps)
        except (TypeError, ValueError):
            raise InvalidOption(f"fps must be a number, not {fps!r}") from None
        if not np.isfinite(f) or f <= 0:
            raise InvalidOption(f"fps must be a positive number, not {fps!r}")
        out = next((v for k, v in _NTSC.items() if abs(f - k) < 5e-4), None)
        if out is None:
            out = Fraction(f).limit_denominator(1001)
    if not 0 < out <= 240:
        raise InvalidOption(f"fps must be between 0 and 240, not {fps!r}")
    return out


class Mp4Writer:
    """Write RGB frames (and optionally an audio track) to an H.264/AAC MP4 file.

    Use as a context manager::

        with Mp4Writer("out.mp4", 512, 512, fps=25, audio="speech.wav") as w:
            for frame in frames:          # (height, width, 3) uint8 RGB
                w.write(frame)
        info = w.info                     # {"frames", "duration", "path", "width", "height", ...}

    Leaving the block normally closes the file (:meth:`close`); leaving it with an exception
    discards the partial file (:meth:`abort`).

    Args:
        path: destination ``.mp4``. Written as a temporary file in the same folder and renamed
            when :meth:`close` succeeds.
        width, height: size of the frames passed to :meth:`write`. yuv420p needs even sizes,
            so an odd width or height is **padded by one pixel** replicating the last column or
            row; the encoded size is :attr:`out_width` x :attr:`out_height`.
        fps: frame rate; decimals such as 29.97 map to the exact NTSC rate (30000/1001).
            Frame ``i`` has ``pts = i`` in time base ``1/fps``.
        audio: optional sound: a path, bytes, or decoded :class:`~echomimic.types.Audio`.
            Encoded as AAC at 44.1 kHz when the source is 44.1 kHz (or a multiple), else 48 kHz;
            stereo when the source has two or more channels, else mono. It is trimmed, or padded
            with silence, to the video's duration.
        crf: x264 constant rate factor (lower is better and bigger; 18-23 is typical).
        preset: x264 speed preset (``ultrafast`` ... ``veryslow``).
        audio_bitrate: AAC bit rate in bit/s.
        threads: encoder threads, 0 lets x264 decide (one per core, plus lookahead).
        format: ``mp4`` (H.264 + AAC), ``webm`` (VP9 + Opus), ``mov`` (H.264 + AAC) or ``gif``
            (no sound, 256 colours, for previews); default: from the file's extension, else mp4.
        metadata: container tags written with the file (see the module's docstring).
        frame_filter: called on every frame before it is encoded (it must return a new array of
            the same shape, not change its argument): a visible label, a watermark.
        background, moving_box: a promise that every frame equals ``background`` (an RGB
            picture of the frames' size) outside the box ``moving_box`` (x0, y0, x1, y1), as
            the frames of a portrait whose background stays still. The writer then converts
            (and marks, with a ``frame_filter`` that has ``set_background`` and
            ``apply_region``, such as the watermark) only the part of each frame that can
            change and reuses the rest, converted once: the picture encoded is the same, for
            much less work when the box is small. Ignored for GIF, odd frame sizes and
            filters without those methods.

    Raises:
        AudioError: the audio source cannot be read (raised here, before any frame is written).
        InvalidOption: bad fps, crf (0-51) or preset (see :data:`X264_PRESETS`).
    """

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]"],
        width: int,
        height: int,
        fps: float = 25,
        *,
        audio: AudioSource | Audio | None = None,
        crf: int = 20,
        preset: str = "veryfast",
        audio_bitrate: int = 128000,
        threads: int = 0,
        format: str | None = None,
        metadata: Mapping[str, str] | None = None,
        frame_filter: Callable[[np.ndarray], np.ndarray] | None = None,
        background: np.ndarray | None = None,
        moving_box: tuple[int, int, int, int] | None = None,
    ) -> None:
        width, height = int(width), int(height)
        self.format = format_of(path, format) if format is not None or os.path.splitext(
            os.fspath(path))[1].lower().lstrip(".") in OUTPUT_FORMATS else "mp4"
        self._spec = OUTPUT_FORMATS[self.format]
        self.metadata = {str(k): str(v) for k, v in (metadata or {}).items()}
        self.frame_filter = frame_filter
        if self._spec["audio"] is None:
            audio = None                       # a GIF has no sound
        if preset not in X264_PRESETS:
            raise InvalidOption(f"preset must be one of {', '.join(X264_PRESETS)}, not {preset!r}")
        if not 0 <= int(crf) <= 51:
            raise InvalidOption(f"crf must be between 0 and 51, not {crf!r}")
        if width < 2 or height < 2:
            raise ValueError(f"frame size must be at least 2x2, not {width}x{height}")
        self.path = os.fspath(path)
        self.width = width
        self.height = height
        self.out_width = width + (width & 1)
        self.out_height = height + (height & 1)
        self.fps = fps_fraction(fps)
        self.frames = 0
        self.info: dict | None = None
        self._closed = False

        # Audio plan (probing first, so a bad audio file fails before anything is created).
        self._audio_src = audio
        self._audio_rate = 0
        self._audio_channels = 0
        if audio is not None:
            if isinstance(audio, Audio):
                src_rate, src_ch = int(audio.sample_rate), 1
                if np.asarray(audio.samples).size == 0:
                    raise AudioError("audio has no samples")
            else:
                facts = probe_audio(audio)
                src_rate, src_ch = facts["sample_rate"], facts["channels"]
            self._audio_rate = 44100 if src_rate and src_rate % 44100 == 0 else 48000
            if self._spec["audio"] == "libopus":
                self._audio_rate = 48000        # Opus runs at 48 kHz
            self._audio_channels = 2 if src_ch >= 2 else 1

        folder = os.path.dirname(os.path.abspath(self.path))
        base = os.path.basename(self.path) or "video.mp4"
        fd, self._tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".part", dir=folder)
        os.close(fd)
        try:
            self._open(crf=crf, preset=preset, audio_bitrate=audio_bitrate, threads=threads)
            self._still: dict | None = None
            if background is not None and moving_box is not None:
                self._set_background(background, moving_box)
        except BaseException:
            self._cleanup()
            raise

    # ------------------------------------------------------------------------------------
    def _open(self, *, crf: int, preset: str, audio_bitrate: int, threads: int) -> None:
        spec = self._spec
        options = ({"movflags": "+faststart+use_metadata_tags"}
                   if spec["container"] in ("mp4", "mov") else {})
        self._container = av.open(self._tmp, mode="w", format=spec["container"], options=options)
        if spec["container"] != "gif":
            self._container.metadata.update(self.metadata)
        vs = self._container.add_stream(spec["video"], rate=self.fps)
        vs.width = self.out_width
        vs.height = self.out_height
        vs.pix_fmt = spec["pix_fmt"]
        vs.time_base = 1 / self.fps
        self._palette = None
        if spec["video"] == "gif":
            pass
        else:
            vs.codec_context.thread_count = max(0, int(threads))
            vs.codec_context.color_range = 1        # MPEG (limited)
            vs.codec_context.color_primaries = 1    # BT.709
            vs.codec_context.color_trc = 1          # BT.709
            vs.codec_context.colorspace = 1         # BT.709
        if spec["video"] == "libx264":
            vs.options = {"crf": str(int(crf)), "preset": str(preset)}
        elif spec["video"] == "libvpx-vp9":
            # constant quality; VP9's scale is 0-63 (x264's 20 is about VP9's 32)
            vs.codec_context.bit_rate = 0
            vs.options = {"crf": str(min(63, int(round(int(crf) * 1.6)))), "b": "0",
                          "deadline": "realtime", "cpu-used": "8", "row-mt": "1"}
        self._vstream = vs

        self._astream = None
        self._chunks: Iterator[np.ndarray] | None = None
        if self._audio_src is not None:
            layout = "stereo" if self._audio_channels == 2 else "mono"
            ast = self._container.add_stream(self._spec["audio"], rate=self._audio_rate,
                                             layout=layout)
            ast.bit_rate = int(audio_bitrate)
            ast.time_base = Fraction(1, self._audio_rate)
            self._astream = ast
            self._layout = layout
            self._chunks = iter_audio_chunks(self._audio_src, sample_rate=self._audio_rate,
                                             layout=layout, chunk_seconds=0.5)
            self._pending: np.ndarray = np.zeros((self._audio_channels, 0), np.float32)
            self._audio_done = False   # source exhausted
            self._audio_written = 0    # samples handed to the encoder

    # ------------------------------------------------------------------------------------
    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # ------------------------------------------------------------------------------------
    def _even(self, frame: np.ndarray) -> np.ndarray:
        pad_w = self.out_width - self.width
        pad_h = self.out_height - self.height
        if pad_w or pad_h:
            frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        return frame

    @staticmethod
    def _yuv420(frame: np.ndarray) -> "av.VideoFrame":
        """An RGB array as a yuv420p frame (libswscale: BT.709, limited range)."""
        vf = av.VideoFrame.from_numpy_buffer(frame, format="rgb24")
        return vf.reformat(format="yuv420p", src_colorspace="itu709", dst_colorspace="itu709",
                           dst_color_range="MPEG", threads=1)

    #: pixels converted around the part of a frame that changes and then dropped, so that the
    #: chroma filter of libswscale sees the same neighbours as on the whole frame
    _CONVERT_MARGIN = 16
    #: luma pixels around a change whose chroma the change can reach
    _CHROMA_REACH = 4

    def _set_background(self, still: np.ndarray, box: tuple[int, int, int, int]) -> None:
        """See ``background`` in the class's docstring."""
        still = np.asarray(still)
        if (self._spec["pix_fmt"] != "yuv420p" or self.width & 1 or self.height & 1
                or still.shape != (self.height, self.width, 3) or still.dtype != np.uint8):
            return
        flt = self.frame_filter
        W, H = self.width, self.height
        x0, y0, x1, y1 = (int(v) for v in box)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(W, x1), min(H, y1)
        if x1 <= x0 or y1 <= y0:
            x0, y0, x1, y1 = 0, 0, 2, 2
        still = np.ascontiguousarray(still)
        if flt is None:
            dirty, marked = (x0, y0, x1, y1), still
        elif hasattr(flt, "set_background") and hasattr(flt, "apply_region"):
            dirty = flt.set_background(still, (x0, y0, x1, y1))
            marked = flt(still)
        else:
            return
        # the part pasted into the still picture: what can change, and the chroma samples
        # next to it that libswscale's filter computes from it (one chroma row beyond, on
        # each side), even for the half-size chroma planes; and the part converted around it
        r = self._CHROMA_REACH
        px0, py0 = max(0, (dirty[0] - r) // 2 * 2), max(0, (dirty[1] - r) // 2 * 2)
        px1, py1 = min(W, -(-(dirty[2] + r) // 2) * 2), min(H, -(-(dirty[3] + r) // 2) * 2)
        m = self._CONVERT_MARGIN
        conv = (max(0, px0 - m), max(0, py0 - m), min(W, px1 + m), min(H, py1 + m))
        planes = []
        for plane in self._yuv420(marked).planes:
            a = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
            planes.append(a[:, :plane.width].copy())
        self._still = {"planes": planes, "paste": (px0, py0, px1, py1), "convert": conv,
                       "filter": flt}

    def _over_background(self, frame: np.ndarray) -> "av.VideoFrame":
        """The yuv420p frame of ``frame``: the still picture's, with the part that can change
        converted (and marked) anew."""
        st = self._still
        assert st is not None
        cx0, cy0, cx1, cy1 = st["convert"]
        px0, py0, px1, py1 = st["paste"]
        flt = st["filter"]
        if flt is not None:
            part = flt.apply_region(frame, st["convert"])
        else:
            part = frame[cy0:cy1, cx0:cx1]
        new = self._yuv420(np.ascontiguousarray(part))
        if st["convert"] == (0, 0, self.width, self.height):
            return new                                # the box is the whole frame
        out = av.VideoFrame(self.width, self.height, "yuv420p")
        for k, (plane, src) in enumerate(zip(out.planes, new.planes)):
            s = 1 if k == 0 else 2
            dst = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
            dst[:, :plane.width] = st["planes"][k]
            srca = np.frombuffer(src, np.uint8).reshape(src.height, src.line_size)
            dst[py0 // s:py1 // s, px0 // s:px1 // s] = srca[
                (py0 - cy0) // s:(py1 - cy0) // s, (px0 - cx0) // s:(px1 - cx0) // s]
        return out

    def write(self, frame: np.ndarray) -> None:
        """Encode one (height, width, 3) uint8 RGB frame and the audio up to its end time."""
        if self._closed:
            raise RuntimeError("Mp4Writer is closed")
        frame = np.asarray(frame)
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(
                f"expected a ({self.height}, {self.width}, 3) uint8 RGB frame, "
                f"got {frame.shape} {frame.dtype}"
            )
        if self._still is not None:
            vf = self._over_background(frame)
        else:
            if self.frame_filter is not None:
                frame = self.frame_filter(frame)
            frame = np.ascontiguousarray(self._even(frame))
            if self._spec["pix_fmt"] == "pal8":
                vf = self._paletted(frame)
            else:
                # Wrap the array without a copy; libswscale writes the yuv420p frame.
                vf = self._yuv420(frame)
        vf.pts = self.frames
        for packet in self._vstream.encode(vf):
            self._container.mux(packet)
        self.frames += 1
        if self._astream is not None:
            self._feed_audio(self._samples_at(self.frames))

    def _paletted(self, frame: np.ndarray) -> "av.VideoFrame":
        """A pal8 frame for the GIF encoder, on one palette made from the first frame."""
        from PIL import Image

        img = Image.fromarray(frame)
        if self._palette is None:
            self._palette = img.quantize(256, method=Image.Quantize.MEDIANCUT)
        q = img.quantize(palette=self._palette, dither=Image.Dither.NONE)
        rgb = np.zeros((256, 3), np.uint8)
        pal = np.frombuffer(bytes(q.getpalette() or []), np.uint8)[:768].reshape(-1, 3)
        rgb[:len(pal)] = pal
        argb = np.concatenate([np.full((256, 1), 255, np.uint8), rgb], axis=1)
        return av.VideoFrame.from_ndarray((np.asarray(q, np.uint8), argb), format="pal8")

    # ------------------------------------------------------------------------------------
    def _samples_at(self, n_frames: int) -> int:
        """Number of audio samples that cover the first ``n_frames`` video frames."""
        return int(round(Fraction(n_frames) / self.fps * self._audio_rate))

    def _next_audio(self, need: int) -> np.ndarray:
        """Up to ``need`` samples from the source, padded with silence once it runs out."""
        while self._pending.shape[1] < need and not self._audio_done:
            try:
                chunk = next(self._chunks)  # type: ignore[arg-type]
            except StopIteration:
                self._audio_done = True
                break
            self._pending = np.concatenate([self._pending, chunk], axis=1)
        take = self._pending[:, :need]
        self._pending = self._pending[:, need:]
        if take.shape[1] < need:
            pad = np.zeros((self._audio_channels, need - take.shape[1]), np.float32)
            take = np.concatenate([take, pad], axis=1)
        return np.ascontiguousarray(take, dtype=np.float32)

    def _feed_audio(self, until: int) -> None:
        need = until - self._audio_written
        if need <= 0:
            return
        block = self._next_audio(need)
        af = av.AudioFrame.from_ndarray(block, format="fltp", layout=self._layout)
        af.sample_rate = self._audio_rate
        af.pts = self._audio_written
        af.time_base = self._astream.time_base
        for packet in self._astream.encode(af):
            self._container.mux(packet)
        self._audio_written = until

    # ------------------------------------------------------------------------------------
    def close(self) -> dict:
        """Finish the file and move it to :attr:`path`.

        Returns ``{"frames", "duration", "path", "width", "height", "fps", "audio"}`` where
        ``duration`` is ``frames / fps`` in seconds and width/height the encoded (even) size.
        Calling it again returns the same dict.
        """
        if self._closed:
            if self.info is None:
                raise RuntimeError("Mp4Writer was aborted")
            return self.info
        try:
            if self.frames == 0:
                raise ValueError("no frames were written")
            if self._astream is not None:
                self._feed_audio(self._samples_at(self.frames))
                for packet in self._astream.encode(None):
                    self._container.mux(packet)
            for packet in self._vstream.encode(None):
                self._container.mux(packet)
            self._container.close()
            self._close_audio_source()
            if self._spec["container"] == "gif" and self.metadata:
                _gif_add_comment(self._tmp, self.metadata)
            _chmod_default(self._tmp)
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self.info = {
            "frames": self.frames,
            "duration": float(Fraction(self.frames) / self.fps),
            "path": self.path,
            "width": self.out_width,
            "height": self.out_height,
            "fps": float(self.fps),
            "audio": self._astream is not None,
        }
        return self.info

    def abort(self) -> None:
        """Stop writing and delete the temporary file; :attr:`path` is left untouched."""
        if self._closed:
            return
        self._closed = True
        try:
            self._container.close()
        except Exception:
            pass
        self._cleanup()

    def _close_audio_source(self) -> None:
        chunks = getattr(self, "_chunks", None)
        if chunks is not None and hasattr(chunks, "close"):
            chunks.close()
            self._chunks = None

    def _cleanup(self) -> None:
        self._close_audio_source()
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass

    def __del__(self) -> None:  # a writer dropped without close(): leave no temp file behind
        try:
            if not self._closed and hasattr(self, "_tmp"):
                self.abort()
        except Exception:
            pass


#: The writer of every output format (the historical name says mp4).
VideoWriter = Mp4Writer


def gif_comment_text(metadata: Mapping[str, str]) -> str:
    """The text of the comment extension that carries a GIF's tags: ``key=value`` lines."""
    return "\n".join(f"{k}={' '.join(str(v).split())}" for k, v in metadata.items())


def _gif_add_comment(path: str, metadata: Mapping[str, str]) -> None:
    """Insert a comment extension (GIF89a) with the tags right after the global colour table,
    where readers look for it (Pillow's ``info["comment"]``)."""
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:6] not in (b"GIF89a", b"GIF87a") or len(data) < 13:
        return
    pos = 13
    packed = data[10]
    if packed & 0x80:
        pos += 3 * (2 ** ((packed & 0x07) + 1))
    text = gif_comment_text(metadata).encode("utf-8")
    blocks = bytearray(b"\x21\xfe")
    for i in range(0, len(text), 255):
        chunk = text[i:i + 255]
        blocks += bytes([len(chunk)]) + chunk
    blocks += b"\x00"
    with open(path, "wb") as fh:
        fh.write(b"GIF89a" + data[6:pos] + bytes(blocks) + data[pos:])
