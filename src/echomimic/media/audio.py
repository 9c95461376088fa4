"""Decode audio of any format FFmpeg reads, streaming, with PyAV.

:func:`load_audio` gives the mono float32 signal the analysis stage works on (16 kHz by default);
:func:`iter_audio_chunks` streams the same source at an output rate and layout for muxing.
Both decode packet by packet and resample as they go (``av.AudioResampler``), so the source's
PCM at its original rate is never held in memory as a whole.

Downmixing: mono and stereo sources are mixed in NumPy (stereo to mono is ``(L + R) / 2``,
mono to stereo duplicates the channel), so levels are kept and nothing clips. Sources with
more channels (5.1 ...) use FFmpeg's standard downmix matrix, clipped to [-1, 1].
"""

from __future__ import annotations

import io
import os
from contextlib import contextmanager
from typing import Iterator, Union

import av
import numpy as np

from ..errors import AudioError, AudioTooLong
from ..types import Audio

__all__ = ["load_audio", "probe_duration", "probe_audio", "iter_audio_chunks", "open_media"]

AudioSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]

#: Demuxers that read other files or URLs named inside the input (playlists, concat lists,
#: image sequences, session descriptions). Refused for untrusted input.
_REFERENCING_FORMATS = {
    "hls", "applehttp", "dash", "concat", "ffconcat", "image2", "image2pipe", "tee", "sdp",
    "rtsp", "rtp", "mpegdash", "imf", "avisynth", "vapoursynth",
}

# Tolerance on the decoded length versus ``max_duration`` (encoder padding, rounding).
_DURATION_SLACK = 0.25


def describe(src: object) -> str:
    """Short description of a media source for error messages."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return f"data ({len(src)} bytes)"
    if isinstance(src, Audio):
        return f"audio {src.source!r}" if src.source else "audio samples"
    try:
        return repr(os.fspath(src))  # type: ignore[arg-type]
    except TypeError:
        return repr(src)


def _short(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) if isinstance(exc, av.FFmpegError) else None
    text = (text or str(exc)).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]


@contextmanager
def open_media(src: AudioSource, error: type = AudioError, what: str = "audio"):
    """Open ``src`` (path or bytes) with PyAV for reading, as a context manager.

    Paths are opened by Python and handed to FFmpeg as a file object, so a string is never
    interpreted as an FFmpeg URL or protocol; demuxers that would open other files named
    inside the input (playlists, concat lists) are refused. Failures raise ``error``.
    """
    name = describe(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise error(f"{what} {name} is empty")
        fh = io.BytesIO(bytes(src))
    elif isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        try:
            fh = open(path, "rb")
        except FileNotFoundError:
            raise error(f"{what} file {name} not found") from None
        except IsADirectoryError:
            raise error(f"{what} {name} is a directory, not a file") from None
        except OSError as exc:
            raise error(f"{what} file {name} cannot be read ({exc.strerror or exc})") from None
        try:
            if os.fstat(fh.fileno()).st_size == 0:
                raise error(f"{what} file {name} is empty")
        except BaseException:
            fh.close()
            raise
    else:
        raise TypeError(f"expected a path or bytes, not {type(src).__name__}")
    try:
        try:
            container = av.open(fh, mode="r", metadata_errors="ignore")
        except av.FFmpegError as exc:
            raise error(f"{what} {name} is not a readable media file ({_short(exc)})") from None
        except (OSError, ValueError, EOFError) as exc:
            raise error(f"{what} {name} is not a readable media file ({_short(exc)})") from None
        try:
            fmt = (container.format.name or "").split(",")
            if _REFERENCING_FORMATS.intersection(fmt):
                raise error(f"{what} {name}: {container.format.name} playlists are not accepted")
            yield container
        finally:
            container.close()
    finally:
        fh.close()


def _stream_duration(container, stream) -> float | None:
    """Duration in seconds from the stream header, else the container; ``None`` if unknown."""
    if stream is not None and stream.duration is not None and stream.time_base is not None:
        d = float(stream.duration * stream.time_base)
        if d > 0:
            return d
    if container.duration is not None and container.duration > 0:
        return container.duration / float(av.time_base)
    return None


def _first_audio_stream(container, name: str):
    streams = container.streams.audio
    if not streams:
        raise AudioError(f"{name} has no audio track")
    return streams[0]


def probe_duration(src: AudioSource) -> float | None:
    """Duration in seconds of the first audio stream (or the container), from headers only.

    Returns ``None`` when the file does not say (e.g. some raw streams). Nothing is decoded.
    Raises :class:`AudioError` when the file cannot be opened or has no audio stream.
    """
    with open_media(src) as container:
        stream = _first_audio_stream(container, describe(src))
        return _stream_duration(container, stream)


def probe_audio(src: AudioSource) -> dict:
    """Header facts about the first audio stream: ``sample_rate``, ``channels``, ``codec``,
    ``duration`` (seconds or ``None``). Raises :class:`AudioError` when unreadable."""
    with open_media(src) as container:
        stream = _first_audio_stream(container, describe(src))
        ctx = stream.codec_context
        return {
            "sample_rate": int(ctx.sample_rate or stream.rate or 0),
            "channels": int(ctx.channels or 0),
            "codec": ctx.name,
            "duration": _stream_duration(container, stream),
        }


def _mix(planar: np.ndarray, channels: int) -> np.ndarray:
    """Mix a (c, n) float32 block to ``channels`` (1 or 2) channels, levels preserved."""
    c = planar.shape[0]
    if c == channels:
        return planar
    if channels == 1:
        return planar.mean(axis=0, keepdims=True, dtype=np.float32)
    if c == 1:
        return np.repeat(planar, channels, axis=0)
    return planar[:channels]


class _Resampler:
    """``av.AudioResampler`` to float planar at ``rate`` that survives mid-stream format changes."""

    def __init__(self, rate: int, channels: int):
        self.rate = rate
        self.channels = channels
        self._res = None
        self._key = None
        self._downmixed = False

    def _make(self, frame) -> None:
        n_in = frame.layout.nb_channels
        # <= 2 channels: keep the layout and mix in NumPy; more: FFmpeg's downmix matrix.
        self._downmixed = n_in > 2
        layout = frame.layout.name if n_in <= 2 else ("mono" if self.channels == 1 else "stereo")
        self._res = av.AudioResampler(format="fltp", layout=layout, rate=self.rate)
        self._key = (frame.format.name, frame.layout.name, frame.sample_rate)

    def _convert(self, frames) -> Iterator[np.ndarray]:
        for out in frames:
            arr = out.to_ndarray().astype(np.float32, copy=False)  # (c, n), planar
            if arr.ndim == 1:
                arr = arr[None, :]
            # Resampling overshoots a little near full scale; FFmpeg's downmix matrix can too.
            np.clip(arr, -1.0, 1.0, out=arr)
            yield _mix(arr, self.channels)

    def push(self, frame) -> Iterator[np.ndarray]:
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if self._res is not None and key != self._key:
            yield from self.flush()
        if self._res is None:
            self._make(frame)
        frame.pts = None  # we concatenate samples; timestamps gaps are not reproduced
        yield from self._convert(self._res.resample(frame))

    def flush(self) -> Iterator[np.ndarray]:
        if self._res is not None:
            yield from self._convert(self._res.resample(None))
        self._res = None
        self._key = None


def _decode(
    src: AudioSource,
    *,
    sample_rate: int,
    channels: int,
    max_duration: float | None,
) -> Iterator[np.ndarray]:
    """Yield (channels, n) float32 blocks of the first audio stream of ``src`` at ``sample_rate``.

    Raises AudioTooLong (from the header, or once the decoded length passes the limit) and
    AudioError (unreadable, no audio stream, nothing decodable, zero samples).
    """
    if sample_rate <= 0:
        raise ValueError("sample_rate must be positive")
    name = describe(src)
    with open_media(src) as container:
        stream = _first_audio_stream(container, name)
        if max_duration is not None:
            declared = _stream_duration(container, stream)
            if declared is not None and declared > max_duration:
                raise AudioTooLong(
                    f"audio {name} is {declared:.1f} s long, more than the limit of "
                    f"{max_duration:g} s"
                )
        limit = None if max_duration is None else int((max_duration + _DURATION_SLACK) * sample_rate)
        resampler = _Resampler(sample_rate, channels)
        total = 0
        decoded_frames = 0
        errors = 0
        last_error: BaseException | None = None

        def emit(blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
            nonlocal total
            for block in blocks:
                if block.shape[1] == 0:
                    continue
                total += block.shape[1]
                if limit is not None and total > limit:
                    raise AudioTooLong(
                        f"audio {name} is longer than the limit of {max_duration:g} s"
                    )
                yield block

        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.FFmpegError as exc:  # a damaged packet: skip it, as ffmpeg does
                    errors += 1
                    last_error = exc
                    if errors > 1000 and decoded_frames == 0:
                        break
                    continue
                for frame in frames:
                    if frame.samples == 0:
                        continue
                    decoded_frames += 1
                    yield from emit(resampler.push(frame))
            yield from emit(resampler.flush())
        except av.FFmpegError as exc:  # demuxing failed (truncated container ...)
            if total == 0:
                raise AudioError(f"audio {name} is corrupt ({_short(exc)})") from None
            # Keep what was decoded before the damage, like players do.
        if total == 0:
            if last_error is not None:
                raise AudioError(
                    f"audio {name} could not be decoded ({_short(last_error)})"
                ) from None
            raise AudioError(f"audio {name} has no audio samples")


def load_audio(
    src: AudioSource,
    *,
    sample_rate: int = 16000,
    max_duration: float | None = 600.0,
) -> Audio:
    """Decode the first audio track of ``src`` to mono float32 at ``sample_rate``.

    Any format FFmpeg decodes is accepted (WAV in all its variants, MP3, FLAC, Ogg Vorbis/Opus,
    M4A/AAC, the sound of a video file ...), at any rate and channel count; recognition is by
    content, not by extension. Silence is not an error.

    Args:
        src: a path or the file's bytes.
        sample_rate: output rate in Hz.
        max_duration: longest accepted duration in seconds (``None``: no limit). Checked on
            the header before decoding, and again while decoding for headers that lie.

    Raises:
        AudioTooLong: the audio is longer than ``max_duration``.
        AudioError: missing, empty, corrupt or non-media data, no audio stream, or no samples.
    """
    blocks = [b[0] for b in _decode(src, sample_rate=sample_rate, channels=1,
                                     max_duration=max_duration)]
    samples = np.concatenate(blocks).astype(np.float32, copy=False)
    if isinstance(src, (bytes, bytearray, memoryview)):
        source = f"<{len(src)} bytes>"
    else:
        source = os.fspath(src)
    return Audio(samples=np.ascontiguousarray(samples), sample_rate=int(sample_rate), source=source)


def _layout_channels(layout: str) -> int:
    if layout == "mono":
        return 1
    if layout == "stereo":
        return 2
    raise ValueError(f"layout must be 'mono' or 'stereo', not {layout!r}")


def _decode_audio_object(audio: Audio, *, sample_rate: int, channels: int) -> Iterator[np.ndarray]:
    """Resample in-memory :class:`Audio` samples, block by block, like :func:`_decode`."""
    x = np.ascontiguousarray(np.asarray(audio.samples, dtype=np.float32).reshape(-1))
    if x.size == 0:
        raise AudioError(f"{describe(audio)} has no audio samples")
    if int(audio.sample_rate) == int(sample_rate):
        step = max(1, int(sample_rate))
        for i in range(0, x.size, step):
            yield _mix(x[None, i:i + step], channels)
        return
    resampler = _Resampler(sample_rate, channels)
    step = max(1, int(audio.sample_rate))
    for i in range(0, x.size, step):
        frame = av.AudioFrame.from_ndarray(x[None, i:i + step], format="fltp", layout="mono")
        frame.sample_rate = int(audio.sample_rate)
        yield from resampler.push(frame)
    yield from resampler.flush()


def iter_audio_chunks(
    src: AudioSource | Audio,
    *,
    sample_rate: int,
    layout: str = "mono",
    chunk_seconds: float = 1.0,
    max_duration: float | None = None,
) -> Iterator[np.ndarray]:
    """Stream ``src`` as float32 chunks at ``sample_rate`` in ``layout`` ("mono" or "stereo").

    Each chunk is **channels-first**: shape ``(channels, n)`` with ``n = round(chunk_seconds *
    sample_rate)`` samples, except the last one, which is shorter. Values are in [-1, 1].
    ``src`` may be a path, bytes, or an already decoded :class:`~echomimic.types.Audio`.
    Decoding is lazy: a consumer that stops early never decodes the rest.

    Raises the same errors as :func:`load_audio` (when the generator is advanced).
    """
    channels = _layout_channels(layout)
    size = max(1, int(round(chunk_seconds * sample_rate)))
    if isinstance(src, Audio):
        blocks = _decode_audio_object(src, sample_rate=sample_rate, channels=channels)
    else:
        blocks = _decode(src, sample_rate=sample_rate, channels=channels, max_duration=max_duration)
    pending: list[np.ndarray] = []
    have = 0
    try:
        for block in blocks:
            pending.append(block)
            have += block.shape[1]
            if have < size:
                continue
            buf = np.concatenate(pending, axis=1)
            n_full = buf.shape[1] // size
            for k in range(n_full):
                yield np.ascontiguousarray(buf[:, k * size:(k + 1) * size])
            rest = buf[:, n_full * size:]
            pending = [rest] if rest.shape[1] else []
            have = rest.shape[1]
        if have:
            yield np.ascontiguousarray(np.concatenate(pending, axis=1))
    finally:
        close = getattr(blocks, "close", None)
        if close is not None:
            close()
