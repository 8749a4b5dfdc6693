"""Objective metrics for generated speech against the real recording of the same clip.

Every signal metric takes ``ref`` (the real audio) and ``deg`` (the system's output), both (N,) float in
[-1, 1] at ``sample_rate`` Hz (default :data:`~naturall2s.audio.SAMPLE_RATE`), and matches their lengths with
:func:`align_pair` — the one place that decides how unequal lengths are handled.

| metric | unit / range | better |
|---|---|---|
| :func:`stoi`, :func:`estoi` | intelligibility index, ~0..1 | higher |
| :func:`pesq_nb`, :func:`pesq_wb` | MOS-LQO, about 1.0..4.5 (nb) / 1.0..4.64 (wb) | higher |
| :func:`mcd` | mel-cepstral distortion, dB, >= 0 | lower |
| :func:`f0_rmse_cents` | cents (100 = one semitone), >= 0 | lower |
| :func:`voicing_error` | fraction of frames, 0..1 | lower |
| :func:`wer`, :func:`cer` | error rate, >= 0 (can exceed 1 with insertions) | lower |
| :func:`speaker_similarity` | cosine, -1..1 | higher |
| :func:`rtf` | compute seconds per second of audio | lower |
| :func:`comb_db` | pause buzz: 100 Hz comb in the pauses, dB (~0 for room tone / noise) | lower |

Signal metrics return ``nan`` when they are undefined for a pair (e.g. PESQ finds no speech in the reference,
no frame is voiced in both signals); aggregation skips nan values and reports how many were used.
"""
from __future__ import annotations

import functools
import math
import re

import numpy as np

from naturall2s import audio

STOI_RATE = 16000  # Hz: STOI/ESTOI are computed on 16 kHz input (pystoi resamples internally to 10 kHz)
PESQ_RATE = 16000  # Hz: both PESQ modes take 16 kHz input (see pesq_nb)
PESQ_SILENCE_DITHER = 1e-7  # amplitude of the dither that stands in for an all-zero degraded signal
MCD_ORDER = 24  # mel-cepstral coefficients c1..c24 compared (c0, the frame energy, is excluded)
MCD_ALPHA = 0.42  # all-pass frequency-warping constant approximating the mel scale at 16 kHz (SPTK's value)
MCD_FFT_SIZE = 1024  # pyworld CheapTrick FFT size at 16 kHz: envelopes have MCD_FFT_SIZE // 2 + 1 bins
MCD_SCALE = 10.0 / math.log(10.0) * math.sqrt(2.0)  # dB factor of the Kubichek (1993) MCD
CENTS_PER_OCTAVE = 1200.0
COMB_RATE = 16000  # Hz: the comb measure runs at 16 kHz with the project's 100 Hz frames (hop HOP_LENGTH)
COMB_N_FFT = 1280  # 80 ms Hann window: 12.5 Hz bins, so 100 Hz multiples (bin 8h) and the 50 Hz offsets (8h +- 4) separate
COMB_PITCH_HZ = 100.0  # the comb's spacing: the iSTFT generators' frame rate (hop 160 at 16 kHz)
COMB_HARMONICS = 40  # harmonics h = 1..40: comb bins 100 Hz..4 kHz, their mid bins 50 Hz..4.05 kHz
COMB_QUIET_DB = 30.0  # without a pause mask: frames more than this many dB below the loudest frame are pauses
COMB_MIN_FRAMES = 10  # fewer usable pause frames (100 ms, after the window erosion) -> nan


# -------------------------------------------------------------------------------------- alignment
def align_pair(ref, deg) -> tuple[np.ndarray, np.ndarray]:
    """Match lengths by trimming both signals (or frame tracks) to the shorter one, from the end.

    No time warping and no padding: both start at the first video frame and systems produce 640 samples per
    video frame (DESIGN.md), so lengths differ only at the end (e.g. a video's audio track a few tens of
    milliseconds shorter than its frames), and trimming keeps samples and 10 ms frames compared in step.
    ref (N,), deg (M,) -> both (min(N, M),) as float64 (boolean tracks stay bool).
    """
    ref, deg = np.asarray(ref).reshape(-1), np.asarray(deg).reshape(-1)
    n = min(ref.shape[0], deg.shape[0])
    return _as_float(ref[:n]), _as_float(deg[:n])


def _as_float(x: np.ndarray) -> np.ndarray:
    """float64 copy of a numeric array; boolean arrays are returned as they are."""
    return x if x.dtype == bool else x.astype(np.float64)


def _prepared(ref, deg, sample_rate: int, target_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Both signals at ``target_rate`` (resampled if needed), length-matched by :func:`align_pair`."""
    ref = audio.resample(np.asarray(ref, np.float32).reshape(-1), sample_rate, target_rate)
    deg = audio.resample(np.asarray(deg, np.float32).reshape(-1), sample_rate, target_rate)
    return align_pair(ref, deg)


# ------------------------------------------------------------------------------- intelligibility
def stoi(ref, deg, *, sample_rate: int = audio.SAMPLE_RATE) -> float:
    """Short-Time Objective Intelligibility (Taal et al. 2011; pystoi), computed on 16 kHz input.

    Range about 0..1 (1 for identical signals, near 0 for unrelated noise); higher is better.
    pystoi drops frames more than 40 dB below the reference's loudest before scoring.
    """
    from pystoi import stoi as _stoi

    r, d = _prepared(ref, deg, sample_rate, STOI_RATE)
    return float(_stoi(r, d, STOI_RATE, extended=False))


def estoi(ref, deg, *, sample_rate: int = audio.SAMPLE_RATE) -> float:
    """Extended STOI (Jensen & Taal 2016; pystoi ``extended=True``) on 16 kHz input.

    Range about 0..1 (it can dip slightly below 0 for unrelated signals); higher is better.
    """
    from pystoi import stoi as _stoi

    r, d = _prepared(ref, deg, sample_rate, STOI_RATE)
    return float(_stoi(r, d, STOI_RATE, extended=True))


# ------------------------------------------------------------------------------------- quality
def _pesq(ref, deg, sample_rate: int, mode: str) -> float:
    """PESQ MOS-LQO at 16 kHz in ``mode`` ('nb' or 'wb'); nan when the reference holds no utterance.

    An all-zero ``deg`` (which the PESQ C code cannot score) is replaced by a fixed -140 dBFS dither, so digital
    silence gets PESQ's floor score (about 1.08 nb / 1.03 wb) instead of an error.
    """
    from pesq import NoUtterancesError, pesq

    r, d = _prepared(ref, deg, sample_rate, PESQ_RATE)
    if not np.any(d):
        d = PESQ_SILENCE_DITHER * np.random.default_rng(0).standard_normal(d.shape[0])
    try:
        return float(pesq(PESQ_RATE, r.astype(np.float32), d.astype(np.float32), mode))
    except NoUtterancesError:
        return float("nan")


def pesq_nb(ref, deg, *, sample_rate: int = audio.SAMPLE_RATE) -> float:
    """Narrow-band PESQ (ITU-T P.862) MOS-LQO, about 1.0..4.5; higher is better.

    Computed with the ``pesq`` package's 'nb' mode on the 16 kHz signals (P.862 accepts 8 or 16 kHz input and
    applies its telephone-band IRS filter itself), not by first resampling to 8 kHz.
    """
    return _pesq(ref, deg, sample_rate, "nb")


def pesq_wb(ref, deg, *, sample_rate: int = audio.SAMPLE_RATE) -> float:
    """Wide-band PESQ (ITU-T P.862.2) MOS-LQO at 16 kHz, about 1.0..4.64; higher is better."""
    return _pesq(ref, deg, sample_rate, "wb")


# ------------------------------------------------------------------------------ mel-cepstrum
@functools.lru_cache(maxsize=8)
def _freqt_matrix(n_cepstrum: int, order: int, alpha: float) -> np.ndarray:
    """The linear map of SPTK's ``freqt`` (cepstrum -> all-pass-warped cepstrum) as a matrix.

    Returns W (n_cepstrum, order + 1) with ``mc = c @ W`` for c (..., n_cepstrum). Built by running the
    freqt recursion on the identity basis (freqt is linear in its input), once per setting per process.
    """
    beta = 1.0 - alpha * alpha
    basis = np.eye(n_cepstrum)  # row b is the b-th unit cepstrum
    g = np.zeros((n_cepstrum, order + 1))
    for i in range(n_cepstrum - 1, -1, -1):  # SPTK feeds c[m1], ..., c[0]
        d = g.copy()
        g[:, 0] = basis[:, i] + alpha * d[:, 0]
        if order >= 1:
            g[:, 1] = beta * d[:, 0] + alpha * d[:, 1]
        for j in range(2, order + 1):
            g[:, j] = d[:, j - 1] + alpha * (d[:, j] - g[:, j - 1])
    return g


def mel_cepstrum(wav, *, sample_rate: int = audio.SAMPLE_RATE, order: int = MCD_ORDER,
                 alpha: float = MCD_ALPHA, f0: np.ndarray | None = None) -> np.ndarray:
    """Mel-cepstrum per 10 ms frame: WORLD spectral envelope -> real cepstrum -> all-pass warping.

    The envelope is pyworld CheapTrick on :func:`naturall2s.audio.f0_voicing`'s F0 (frames of HOP_LENGTH
    samples); the cepstrum of its log power is warped with SPTK's ``freqt`` (alpha 0.42 ~ mel at 16 kHz),
    the steps of SPTK/pysptk ``sp2mc`` (on the causal half of the cepstrum).
    wav (N,) @ ``sample_rate`` -> (N // HOP_LENGTH, order + 1), column 0 being c0 (log energy).
    ``f0``: that F0 track of the 16 kHz signal when the caller already has it (saves a second pitch analysis).
    """
    import pyworld

    x = audio.resample(np.asarray(wav, np.float32).reshape(-1), sample_rate, audio.SAMPLE_RATE)
    if f0 is None:
        f0, _ = audio.f0_voicing(x)
    if f0.shape[0] == 0:
        return np.zeros((0, order + 1))
    t = np.arange(f0.shape[0]) * (audio.HOP_LENGTH / audio.SAMPLE_RATE)
    sp = pyworld.cheaptrick(x.astype(np.float64), f0.astype(np.float64), t, audio.SAMPLE_RATE,
                            fft_size=MCD_FFT_SIZE)  # (frames, MCD_FFT_SIZE // 2 + 1) power envelope
    c = np.fft.irfft(np.log(np.maximum(sp, 1e-16)), axis=1)[:, : MCD_FFT_SIZE // 2 + 1]  # causal half
    c[:, 0] /= 2.0  # with c[1:] of the log power, this is the minimum-phase cepstrum of log|X|
    c[:, -1] /= 2.0  # the Nyquist quefrency is shared by both halves
    return c @ _freqt_matrix(c.shape[1], order, alpha)


def mcd_from_cepstra(mc_ref: np.ndarray, mc_deg: np.ndarray) -> float:
    """Mean mel-cepstral distortion in dB between two (F, order + 1) mel-cepstra, frame by frame.

    MCD = mean over frames of (10 / ln 10) * sqrt(2 * sum_{d>=1} (mc_ref[d] - mc_deg[d])^2); c0 is excluded.
    Frames are matched by index after trimming to the shorter track (no DTW: the lengths match by design).
    All frames count, silence included. 0 for identical input; lower is better.
    """
    n = min(mc_ref.shape[0], mc_deg.shape[0])
    if n == 0:
        return float("nan")
    diff = mc_ref[:n, 1:] - mc_deg[:n, 1:]
    return float(np.mean(MCD_SCALE * np.sqrt(np.sum(diff * diff, axis=1))))


def mcd(ref, deg, *, sample_rate: int = audio.SAMPLE_RATE, order: int = MCD_ORDER) -> float:
    """Mel-cepstral distortion (dB, >= 0; lower is better) of c1..c``order`` (:func:`mel_cepstrum`), no DTW.

    For scale: 0 for identical signals; two different real sentences of the same GRID speaker score about 8 dB.
    """
    r, d = align_pair(ref, deg)
    kwargs = {"sample_rate": sample_rate, "order": order}
    return mcd_from_cepstra(mel_cepstrum(r, **kwargs), mel_cepstrum(d, **kwargs))


# ------------------------------------------------------------------------------------ prosody
def f0_rmse_cents_from_tracks(f0_ref, f0_deg) -> float:
    """RMSE in cents between two F0 tracks (Hz, 0 = unvoiced) over the frames voiced (> 0) in both.

    cents = 1200 * log2(f0_deg / f0_ref). Tracks are length-matched by :func:`align_pair`. nan when no frame
    is voiced in both.
    """
    r, d = align_pair(f0_ref, f0_deg)
    both = (r > 0) & (d > 0)
    if not both.any():
        return float("nan")
    cents = CENTS_PER_OCTAVE * np.log2(d[both] / r[both])
    return float(np.sqrt(np.mean(cents * cents)))


def f0_rmse_cents(ref, deg, *, sample_rate: int = audio.SAMPLE_RATE) -> float:
    """F0 RMSE in cents (>= 0, lower is better; 100 cents = a semitone) over frames voiced in both signals.

    F0 of both signals from :func:`naturall2s.audio.f0_voicing` (pyworld DIO + StoneMask, 10 ms frames).
    """
    r, d = _prepared(ref, deg, sample_rate, audio.SAMPLE_RATE)
    return f0_rmse_cents_from_tracks(audio.f0_voicing(r)[0], audio.f0_voicing(d)[0])


def voicing_error_from_tracks(voiced_ref, voiced_deg) -> float:
    """Fraction (0..1) of frames whose voiced/unvoiced decision differs; tracks matched by :func:`align_pair`."""
    r, d = align_pair(np.asarray(voiced_ref, bool), np.asarray(voiced_deg, bool))
    if r.shape[0] == 0:
        return float("nan")
    return float(np.mean(r != d))


def voicing_error(ref, deg, *, sample_rate: int = audio.SAMPLE_RATE) -> float:
    """Voicing decision error: fraction (0..1, lower is better) of 10 ms frames where one signal is voiced
    and the other is not, voicing from :func:`naturall2s.audio.f0_voicing`."""
    r, d = _prepared(ref, deg, sample_rate, audio.SAMPLE_RATE)
    return voicing_error_from_tracks(audio.f0_voicing(r)[1], audio.f0_voicing(d)[1])


# ---------------------------------------------------------------------------------------- text
_NOT_WORD = re.compile(r"[^a-z0-9' ]+")


def normalize_text(text: str) -> str:
    """Lower-case, punctuation to spaces (apostrophes kept), whitespace collapsed.

    ``"Bin, BLUE!"`` -> ``"bin blue"``.
    """
    return " ".join(_NOT_WORD.sub(" ", text.lower()).split())


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate (S + D + I) / words in the reference, on :func:`normalize_text` text (jiwer 4).

    0 is perfect; 1/6 for one wrong word of six; can exceed 1 with insertions. The reference must not be empty.
    """
    import jiwer

    ref = normalize_text(reference)
    if not ref:
        raise ValueError("wer: the reference text is empty")
    return float(jiwer.wer(ref, normalize_text(hypothesis)))


def word_hits(reference: str, hypothesis: str) -> list[bool]:
    """Per word of the (normalised) reference: was it recognised? From jiwer's minimum-edit alignment, a word is
    hit when it is aligned to the same word; substituted and deleted words are misses (insertions belong to no
    reference word). ``("bin blue at f", "bin red at")`` -> ``[True, False, True, False]``."""
    import jiwer

    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref:
        raise ValueError("word_hits: the reference text is empty")
    hits = [False] * len(ref.split())
    if not hyp:
        return hits
    for chunk in jiwer.process_words(ref, hyp).alignments[0]:
        if chunk.type == "equal":
            hits[chunk.ref_start_idx:chunk.ref_end_idx] = [True] * (chunk.ref_end_idx - chunk.ref_start_idx)
    return hits


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate (edit distance over characters, spaces included) on :func:`normalize_text` text."""
    import jiwer

    ref = normalize_text(reference)
    if not ref:
        raise ValueError("cer: the reference text is empty")
    return float(jiwer.cer(ref, normalize_text(hypothesis)))


# ------------------------------------------------------------------------------------- speaker
def speaker_similarity(emb_a, emb_b) -> float:
    """Cosine similarity (-1..1, higher = more alike) of two speaker embeddings (D,)."""
    a = np.asarray(emb_a, np.float64).reshape(-1)
    b = np.asarray(emb_b, np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"speaker_similarity: embeddings differ in size ({a.shape[0]} vs {b.shape[0]})")
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(np.dot(a, b) / norm) if norm > 0 else float("nan")


# ------------------------------------------------------------------------------------ pause buzz
def quiet_frames(wav, *, below_db: float = COMB_QUIET_DB) -> np.ndarray:
    """Frames more than ``below_db`` dB below the loudest: wav (N,) @ 16 kHz -> (N // HOP_LENGTH,) bool.

    Frame energy is the sum of squares of the frame's HOP_LENGTH samples ``[160k, 160k + 160)``.
    """
    x = np.asarray(wav, np.float64).reshape(-1)
    n = x.shape[0] // audio.HOP_LENGTH
    energy = np.sum(x[: n * audio.HOP_LENGTH].reshape(n, audio.HOP_LENGTH) ** 2, axis=1)
    if n == 0 or energy.max() <= 0:
        return np.ones(n, dtype=bool)  # digital silence: every frame is a pause
    return energy < energy.max() * 10.0 ** (-below_db / 10.0)


def loud_frames(wav, *, within_db: float = COMB_QUIET_DB) -> float:
    """Share of the 10 ms frames (0..1) within ``within_db`` dB of the loudest frame: wav (N,) @ 16 kHz.

    A generator that fills the pauses with buzz or hiss keeps nearly every frame near the peak (0.95-0.99 for the
    iSTFT generators before adversarial training); real GRID speech, with its quiet room, 0.44-0.82."""
    q = quiet_frames(wav, below_db=within_db)
    return float(1.0 - q.mean()) if q.size else float("nan")


def comb_db(wav: np.ndarray, *, pause: np.ndarray | None = None, sample_rate: int = audio.SAMPLE_RATE) -> float:
    """Pause buzz: how far the pause spectrum's 100 Hz multiples stand above the bins halfway between them, dB.

    The iSTFT generators emit one frame every 10 ms, so an artefact repeated each frame is a 100 Hz comb, audible
    as a buzz where there should be room tone. Measure (lower is better; ~0 dB for noise or a real room's tone,
    tens of dB for a comb):

    1. ``pause`` (F,) bool over the 100 Hz frames (F = N // HOP_LENGTH at 16 kHz; e.g. from
       :func:`naturall2s.data.align_pauses`), or, when None, :func:`quiet_frames` (more than 30 dB below the
       loudest frame). A frame counts only when the whole 80 ms window around it lies in the pause (the mask is
       eroded by COMB_N_FFT // 2 samples on each side), so no speech leaks in; frames beyond the clip's ends
       (zero padding) count as pause.
    2. Power spectra (Hann, COMB_N_FFT = 1280 -> 12.5 Hz bins) of those frames, averaged over the frames.
    3. For h = 1..40 (100 Hz .. 4 kHz: the band where the buzz is heard and speech-band room tone is well above
       the quantisation floor): 10 log10 of the power at h * 100 Hz minus the mean of 10 log10 of the powers at
       h * 100 +- 50 Hz; the result is the mean over h.

    nan when fewer than COMB_MIN_FRAMES (10) frames are usable. wav (N,) float at ``sample_rate`` (resampled to
    16 kHz; the mask refers to 16 kHz frames).
    """
    x = audio.resample(np.asarray(wav, np.float32).reshape(-1), sample_rate, COMB_RATE).astype(np.float64)
    n = x.shape[0] // audio.HOP_LENGTH
    mask = quiet_frames(x) if pause is None else np.asarray(pause, bool).reshape(-1)
    if mask.shape[0] != n:
        raise ValueError(f"comb_db: pause mask has {mask.shape[0]} frames, the audio {n} (hop {audio.HOP_LENGTH})")
    half = COMB_N_FFT // 2 // audio.HOP_LENGTH  # frames on each side covered by the window
    padded_mask = np.pad(mask, half, constant_values=True)
    usable = np.ones(n, dtype=bool)
    for shift in range(2 * half + 1):
        usable &= padded_mask[shift: shift + n]
    frames = np.flatnonzero(usable)
    if frames.size < COMB_MIN_FRAMES:
        return float("nan")
    xp = np.pad(x, COMB_N_FFT // 2)
    segments = np.stack([xp[k * audio.HOP_LENGTH: k * audio.HOP_LENGTH + COMB_N_FFT] for k in frames])
    segments = segments * np.hanning(COMB_N_FFT + 1)[:-1]  # periodic Hann
    power = np.mean(np.abs(np.fft.rfft(segments, axis=1)) ** 2, axis=0) + 1e-20
    step = int(round(COMB_PITCH_HZ * COMB_N_FFT / COMB_RATE))  # bins per 100 Hz (8)
    comb = step * np.arange(1, COMB_HARMONICS + 1)
    level = 10.0 * np.log10(power)
    return float(np.mean(level[comb] - 0.5 * (level[comb - step // 2] + level[comb + step // 2])))


# ----------------------------------------------------------------------------------------- speed
def rtf(compute_seconds: float, n_samples: int, sample_rate: int = audio.SAMPLE_RATE) -> float:
    """Real-time factor: seconds of compute per second of audio produced (< 1 is faster than real time)."""
    duration = n_samples / float(sample_rate)
    return float(compute_seconds) / duration if duration > 0 else float("nan")


# ------------------------------------------------------------------------------------- summaries
def mean_ci(values, *, level: float = 0.95) -> dict:
    """Mean and Student-t confidence half-width of the finite values: {"mean", "ci95", "n"} (nan when undefined)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
    n = int(x.size)
    mean = float(x.mean()) if n else float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"mean": mean, "ci95": half, "n": n}
