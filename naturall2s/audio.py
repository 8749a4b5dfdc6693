"""Audio I/O and frame-level features at 100 Hz (log-mel, F0/voicing, loudness) plus Griffin-Lim.

Length convention (see DESIGN.md): a clip of ``T`` video frames has exactly ``4T`` audio frames and
``640T`` samples. Every feature here returns ``N // HOP_LENGTH`` frames for ``N`` samples; frame ``k`` is
centred on sample ``160k`` (centred STFT with the extra last frame dropped) and stands for samples
``[160k, 160k + 160)``.

The torchaudio transforms are built once per process (and per device / setting) and cached.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from naturall2s.errors import NoAudioError
from naturall2s.files import atomic_path

SAMPLE_RATE = 16000  # Hz
HOP_LENGTH = 160  # samples per audio frame (100 Hz)
SAMPLES_PER_VIDEO_FRAME = 640  # 16000 / 25 fps: exactly 4 audio frames per video frame
N_FFT = 640
WIN_LENGTH = 640
N_MELS = 80
F_MIN = 55.0  # Hz
F_MAX = 7600.0  # Hz
F0_MIN = 60.0  # Hz
F0_MAX = 400.0  # Hz

LOG_CLAMP = 1e-5  # log_mel = log(max(mel magnitude, LOG_CLAMP)); so log(LOG_CLAMP) is "silence"
LOUDNESS_FLOOR_DB = -100.0  # loudness of digital silence
MEL_NORM = "slaney"  # mel filter normalisation and scale (librosa / HiFi-GAN convention)
MEL_SCALE = "slaney"
GRIFFIN_LIM_ITERS = 32
LIMIT_KNEE = 0.9  # soft_limit leaves samples below this untouched...
LIMIT_CEILING = 0.98  # ...and bends the rest smoothly towards this peak, never reached (no sample at full scale)
PCM16_SCALE = 32767.0  # float [-1, 1] <-> 16-bit PCM (the cache stores audio as int16)


# --------------------------------------------------------------------------------------------- I/O
def load_audio(path: str | Path, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file as mono float32 in [-1, 1], resampled to ``sample_rate``.

    Returns (N,) float32. Raises :class:`NoAudioError` when the file is missing or not readable audio.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise NoAudioError(f"audio file not found: {path}")
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError on unreadable files
        raise NoAudioError(f"cannot read audio from {path}: {e}") from e
    return resample(wav.mean(axis=1), sr, sample_rate)


def resample(wav: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Resample (N,) float audio from ``orig_sr`` to ``new_sr`` Hz (torchaudio's windowed sinc). -> (M,) float32."""
    wav = np.asarray(wav, dtype=np.float32)
    if int(orig_sr) == int(new_sr):
        return wav
    import torchaudio.functional as AF

    out = AF.resample(torch.from_numpy(np.ascontiguousarray(wav)), int(orig_sr), int(new_sr))
    return out.numpy().astype(np.float32, copy=False)


def save_audio(path: str | Path, wav, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write (N,) float audio (clipped to [-1, 1]) atomically: a temp file in the same folder, then os.replace.

    The format follows the extension (``.wav`` is 16-bit PCM, ``.flac``, ``.ogg``...). Returns the path.
    """
    import soundfile as sf

    path = Path(path)
    data = np.clip(_to_numpy(wav).astype(np.float32).reshape(-1), -1.0, 1.0)
    with atomic_path(path) as tmp:
        sf.write(tmp, data, int(sample_rate), format=_sf_format(path))
    return path


def soft_limit(wav: torch.Tensor, *, knee: float = LIMIT_KNEE, ceiling: float = LIMIT_CEILING) -> torch.Tensor:
    """A peak limiter without look-ahead: |x| <= ``knee`` passes unchanged, louder samples are bent by a tanh
    curve (continuous slope 1 at the knee) towards ``ceiling``, which they approach but never reach; so no
    output sample sits at full scale (a clamp to [-1, 1] would flatten the peaks into a square wave)."""
    mag = wav.abs()
    span = ceiling - knee
    bent = knee + span * torch.tanh((mag - knee) / span)
    return torch.where(mag > knee, torch.sign(wav) * bent, wav)


def _sf_format(path: Path) -> str:
    """soundfile format name for a path's extension (WAV when there is none)."""
    ext = path.suffix.lower().lstrip(".")
    return {"": "WAV", "wav": "WAV", "flac": "FLAC", "ogg": "OGG"}.get(ext, ext.upper())


def _to_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def fit_length(x, n: int):
    """Pad with zeros or trim the last axis of ``x`` (numpy array or tensor) to exactly ``n``. Same type out."""
    length = x.shape[-1]
    if length == n:
        return x
    if length > n:
        return x[..., :n]
    pad = n - length
    if isinstance(x, torch.Tensor):
        return torch.nn.functional.pad(x, (0, pad))
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)])


# --------------------------------------------------------------------------------------- features
def tensor_cache(build):
    """``functools.lru_cache`` for builders of constant tensors and modules (filterbanks, windows, transforms), built
    outside inference mode: a value first made under ``torch.inference_mode`` (the studio, streaming, evaluation)
    would be an inference tensor, which a later training step in the same process cannot save for backward (adapting
    a speaker in the studio after a synthesis, or tests in one process)."""

    @functools.lru_cache(maxsize=None)
    @functools.wraps(build)
    def cached(*args, **kwargs):
        with torch.inference_mode(False):
            return build(*args, **kwargs)

    return cached


@tensor_cache
def _mel_transform(device: str):
    """The MelSpectrogram (magnitude, centred, hann) shared by log_mel; one per device per process."""
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=SAMPLE_RATE, n_fft=N_FFT, win_length=WIN_LENGTH, hop_length=HOP_LENGTH,
        f_min=F_MIN, f_max=F_MAX, n_mels=N_MELS, window_fn=torch.hann_window, power=1.0,
        center=True, pad_mode="reflect", norm=MEL_NORM, mel_scale=MEL_SCALE,
    ).to(device)


def _pad_for_reflect(wav: torch.Tensor) -> torch.Tensor:
    """Zero-pad very short signals so the centred STFT's reflect padding (N_FFT // 2) is defined."""
    need = N_FFT // 2 + 1
    return fit_length(wav, need) if wav.shape[-1] < need else wav


def log_mel(wav: torch.Tensor) -> torch.Tensor:
    """Natural-log mel magnitude spectrogram. wav (..., N) float @ SAMPLE_RATE -> (..., N_MELS, N // HOP_LENGTH).

    Magnitude (power 1) mel with slaney filters, clamped at LOG_CLAMP before the log. Differentiable.
    """
    if not isinstance(wav, torch.Tensor):
        wav = torch.as_tensor(np.asarray(wav, dtype=np.float32))
    n_frames = wav.shape[-1] // HOP_LENGTH
    mel = _mel_transform(str(wav.device))(_pad_for_reflect(wav.float()))
    return torch.log(torch.clamp(mel[..., :n_frames], min=LOG_CLAMP))


def f0_voicing(wav: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F0 track with pyworld (DIO + StoneMask, 10 ms hop, search range F0_MIN..F0_MAX Hz).

    wav (N,) float @ SAMPLE_RATE -> (f0 (N // HOP_LENGTH,) float32 Hz with 0 where unvoiced,
    voiced (N // HOP_LENGTH,) bool).
    """
    import pyworld

    x = np.ascontiguousarray(_to_numpy(wav).reshape(-1), dtype=np.float64)
    n_frames = x.shape[0] // HOP_LENGTH
    if n_frames == 0:
        return np.zeros(0, np.float32), np.zeros(0, bool)
    period_ms = 1000.0 * HOP_LENGTH / SAMPLE_RATE
    f0, t = pyworld.dio(x, SAMPLE_RATE, f0_floor=F0_MIN, f0_ceil=F0_MAX, frame_period=period_ms)
    f0 = pyworld.stonemask(x, f0, t, SAMPLE_RATE)
    f0 = fit_length(f0.astype(np.float32), n_frames)  # dio gives N / HOP + 1 frames at t = 10 ms * k
    voiced = f0 > 0
    return np.where(voiced, f0, 0.0).astype(np.float32), voiced


@tensor_cache
def _a_weighting_db(n_fft: int, sample_rate: int) -> torch.Tensor:
    """A-weighting gain in dB (IEC 61672) at the n_fft // 2 + 1 rfft bin frequencies. -> (n_fft // 2 + 1,)"""
    f = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    f2 = f**2
    ra = (12194.0**2 * f2**2) / (
        (f2 + 20.6**2) * torch.sqrt((f2 + 107.7**2) * (f2 + 737.9**2)) * (f2 + 12194.0**2)
    )
    return (20 * torch.log10(torch.clamp(ra, min=1e-20)) + 2.0).float()


def loudness(wav):
    """A-weighted frame level in dBFS (a full-scale 1 kHz sine reads about -3 dB; silence LOUDNESS_FLOOR_DB).

    Per centred hann frame (N_FFT, HOP_LENGTH): 10·log10 of the A-weighted mean square of the windowed
    signal (Parseval over the one-sided spectrum). wav (..., N) tensor or numpy -> (..., N // HOP_LENGTH)
    of the same kind (float32).
    """
    as_numpy = not isinstance(wav, torch.Tensor)
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32)) if as_numpy else wav.float()
    n_frames = x.shape[-1] // HOP_LENGTH
    window = torch.hann_window(WIN_LENGTH, device=x.device)
    lead = x.shape[:-1]
    padded = _pad_for_reflect(x)
    spec = torch.stft(padded.reshape(-1, padded.shape[-1]), N_FFT,
                      hop_length=HOP_LENGTH, win_length=WIN_LENGTH, window=window, center=True,
                      pad_mode="reflect", return_complex=True)[..., :n_frames]  # (B', F_bins, frames)
    power = spec.real**2 + spec.imag**2
    weight = (10 ** (_a_weighting_db(N_FFT, SAMPLE_RATE) / 10)).to(x.device)
    weight[1:-1] *= 2  # one-sided spectrum: interior bins count twice
    mean_square = (power * weight[:, None]).sum(-2) / (N_FFT * (window**2).sum())
    db = 10 * torch.log10(torch.clamp(mean_square, min=10 ** (LOUDNESS_FLOOR_DB / 10)))
    db = db.reshape(*lead, n_frames)
    return db.numpy() if as_numpy else db


# -------------------------------------------------------------------------------------- inversion
@tensor_cache
def _griffin_lim_transforms(n_iter: int, device: str):
    """(InverseMelScale, GriffinLim) matching log_mel's parameters; one pair per setting per process."""
    import torchaudio

    inverse_mel = torchaudio.transforms.InverseMelScale(
        n_stft=N_FFT // 2 + 1, n_mels=N_MELS, sample_rate=SAMPLE_RATE, f_min=F_MIN, f_max=F_MAX,
        norm=MEL_NORM, mel_scale=MEL_SCALE, driver="gelsd" if device == "cpu" else "gels",
    ).to(device)
    griffin = torchaudio.transforms.GriffinLim(
        n_fft=N_FFT, n_iter=n_iter, win_length=WIN_LENGTH, hop_length=HOP_LENGTH,
        window_fn=torch.hann_window, power=1.0, momentum=0.99, rand_init=False,
    ).to(device)
    return inverse_mel, griffin


def griffin_lim(mel, *, n_iter: int = GRIFFIN_LIM_ITERS) -> np.ndarray:
    """Waveform from a log-mel (as made by :func:`log_mel`): least-squares inverse mel, then Griffin-Lim.

    mel (N_MELS, F) natural-log magnitude (tensor or numpy) -> (F * HOP_LENGTH,) float32 numpy.
    """
    m = torch.as_tensor(_to_numpy(mel), dtype=torch.float32)
    if m.ndim != 2 or m.shape[0] != N_MELS:
        raise ValueError(f"griffin_lim expects a ({N_MELS}, F) log-mel, got {tuple(m.shape)}")
    n_frames = m.shape[1]
    if n_frames == 0:
        return np.zeros(0, np.float32)
    inverse_mel, griffin = _griffin_lim_transforms(int(n_iter), "cpu")
    magnitude = torch.exp(m)
    magnitude = torch.cat([magnitude, magnitude[:, -1:]], dim=1)  # restore the dropped last frame
    with torch.no_grad():
        wav = griffin(inverse_mel(magnitude))
    return fit_length(wav.numpy().astype(np.float32), n_frames * HOP_LENGTH)
