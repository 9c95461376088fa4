"""whisper-tiny audio features for EchoMimic V1 (the ``Audio2Feature`` of the reference code).

Written from the whisper model description (no ``openai-whisper`` package): the log-mel front end,
the audio encoder, and the per-video-frame windows the denoising UNet attends to.

- :func:`log_mel_spectrogram`: 16 kHz mono -> (80, frames) normalised log-mel (hop 10 ms).
- :class:`AudioEncoder`: conv1 -> GELU -> conv2 (stride 2) -> GELU -> + positions -> 4 blocks;
  all 5 stages are returned (``ln_post`` is not used).
- :func:`audio_features`: the mel in 30 s windows, each zero-padded to 3000 frames, encoded, and
  trimmed to half its mel length: (positions, 5, 384), 50 positions per second.
- :func:`feature_chunks`: video frame i takes positions c-4 ... c+5 around c = int(i*50/fps),
  clamped, flattened position-major to (50, 384); the loop overshoots by one frame like the
  reference's.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_FRAMES = 3000            # mel frames in a 30 s window


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    mel = f / f_sp
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@lru_cache(maxsize=4)
def mel_filters(n_mels: int = 80, sr: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """Slaney-style mel filterbank (n_mels, 1 + n_fft/2), float32: whisper's ``mel_filters.npz``
    (= ``librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)``)."""
    fftfreqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2.0), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, len(fftfreqs)), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2: n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, None]
    return weights


def log_mel_spectrogram(wav: np.ndarray | torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """(n_mels, len/160) log-mel of a 16 kHz waveform, normalised like whisper's front end."""
    audio = torch.as_tensor(np.asarray(wav, dtype=np.float32))
    window = torch.hann_window(N_FFT)
    stft = torch.stft(audio, N_FFT, HOP, window=window, return_complex=True)
    mags = stft[..., :-1].abs() ** 2
    mel = torch.from_numpy(mel_filters(n_mels)) @ mags
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return super().forward(x.float()).type(x.dtype)


class MultiHeadAttention(nn.Module):
    """whisper's attention (query/value/out with bias, key without)."""

    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        b, n, c = x.shape
        h = self.n_head
        q = self.query(x).view(b, n, h, -1).transpose(1, 2)
        k = self.key(x).view(b, n, h, -1).transpose(1, 2)
        v = self.value(x).view(b, n, h, -1).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.out(o.transpose(1, 2).reshape(b, n, c))


class ResidualAttentionBlock(nn.Module):
    """x + attn(attn_ln(x)); x + mlp(mlp_ln(x))."""

    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = LayerNorm(n_state)
        self.mlp = nn.Sequential(nn.Linear(n_state, n_state * 4), nn.GELU(), nn.Linear(n_state * 4, n_state))
        self.mlp_ln = LayerNorm(n_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


class AudioEncoder(nn.Module):
    """whisper's audio encoder; ``forward`` returns all 5 stages (b, 5, ctx, state)."""

    def __init__(self, n_mels: int, n_ctx: int, n_state: int, n_head: int, n_layer: int):
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, n_state, 3, padding=1)
        self.conv2 = nn.Conv1d(n_state, n_state, 3, stride=2, padding=1)
        from .rule import whisper_sinusoids

        self.register_buffer("positional_embedding", whisper_sinusoids(n_ctx, n_state))
        self.blocks = nn.ModuleList([ResidualAttentionBlock(n_state, n_head) for _ in range(n_layer)])
        self.ln_post = LayerNorm(n_state)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:  # noqa: D102
        dtype = self.conv1.weight.dtype
        x = F.gelu(self.conv1(mel.to(dtype)))
        x = F.gelu(self.conv2(x)).permute(0, 2, 1)
        x = (x + self.positional_embedding[: x.shape[1]]).to(x.dtype)
        stages = [x]
        for blk in self.blocks:
            x = blk(x)
            stages.append(x)
        return torch.stack(stages, dim=1)


class WhisperAudio(nn.Module):
    """The encoder half of a whisper checkpoint (keys ``encoder.*``)."""

    def __init__(self, dims: dict[str, int]):
        super().__init__()
        self.dims = dict(dims)
        self.encoder = AudioEncoder(dims["n_mels"], dims["n_audio_ctx"], dims["n_audio_state"],
                                    dims["n_audio_head"], dims["n_audio_layer"])

    @property
    def width(self) -> int:
        """Feature width (384 for whisper-tiny)."""
        return int(self.dims["n_audio_state"])


@torch.no_grad()
def audio_features(model: WhisperAudio, wav: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(positions, n_layer + 1, state) features, 50 positions per second (``audio2feat``)."""
    mel = log_mel_spectrogram(wav, model.dims["n_mels"])
    out = []
    n_ctx = model.dims["n_audio_ctx"]
    win = 2 * n_ctx
    for seek in range(0, mel.shape[-1], win):
        seg = mel[:, seek: seek + win]
        frames = seg.shape[-1]
        if frames < win:
            seg = F.pad(seg, (0, win - frames))
        emb = model.encoder(seg[None])[0]                  # (5, n_ctx, state)
        out.append(emb.transpose(0, 1)[: int(frames / 2)].float())
    if not out:
        return torch.zeros(0, model.dims["n_audio_layer"] + 1, model.width)
    return torch.cat(out, dim=0)


def chunk_indices(n_positions: int, fps: float, left: int = 2, right: int = 2) -> list[list[int]]:
    """Per video frame, the clamped feature positions it reads (``feature2chunks``)."""
    mult = 50.0 / fps
    rows: list[list[int]] = []
    i = 0
    while True:
        start = int(i * mult)
        centre = int(i * 50 / fps)
        rows.append([min(max(0, j), n_positions - 1)
                     for j in range(centre - left * 2, centre + (right + 1) * 2)])
        i += 1
        if start > n_positions:
            break
    return rows


def feature_chunks(features: torch.Tensor, fps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """((frames, 10 * stages, state) windows, (frames, 10) indices) for a video at ``fps``."""
    idx = torch.tensor(chunk_indices(features.shape[0], fps), dtype=torch.int64)
    chunks = features[idx.reshape(-1)].reshape(idx.shape[0], -1, features.shape[-1])
    return chunks, idx
