"""Known-answer tests of naturall2s.metrics on small synthetic signals (no real data)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from naturall2s import metrics
from naturall2s.audio import HOP_LENGTH, SAMPLE_RATE

SR = SAMPLE_RATE


def voice(f0: float, seconds: float = 2.0, *, syllables_hz: float = 3.0, seed: int = 0) -> np.ndarray:
    """A speech-like test signal (N,) float32: a harmonic tone at ``f0`` Hz with 1/k partials under a
    syllable-rate envelope between 0.2 and 1 (so STOI and PESQ see modulated, speech-like activity)."""
    t = np.arange(int(seconds * SR)) / SR
    tone = sum(np.sin(2 * np.pi * f0 * k * t + k) / k for k in range(1, int(3800 // f0)))
    envelope = 0.2 + 0.4 * (1 - np.cos(2 * np.pi * syllables_hz * t))
    rng = np.random.default_rng(seed)
    return (0.2 * tone * envelope + 1e-3 * rng.standard_normal(t.shape)).astype(np.float32)


def steady_tone(f0: float, seconds: float = 1.0) -> np.ndarray:
    """A steady harmonic tone (N,) float32 at ``f0`` Hz (voiced in every frame)."""
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))).astype(np.float32)


def white_noise(n: int, seed: int = 1) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


# ----------------------------------------------------------------------------------- alignment
def test_align_pair_trims_both_to_the_shorter():
    r, d = metrics.align_pair(np.arange(10), np.arange(7) + 100)
    assert r.shape == d.shape == (7,)
    assert r[-1] == 6 and d[0] == 100
    b1, b2 = metrics.align_pair(np.ones(5, bool), np.zeros(3, bool))
    assert b1.dtype == bool and b1.shape == (3,)


# --------------------------------------------------------------------------------- STOI / PESQ
def test_stoi_of_identical_signals_is_one_and_of_noise_is_low():
    x = voice(140)
    assert metrics.stoi(x, x) == pytest.approx(1.0, abs=1e-6)
    assert metrics.estoi(x, x) == pytest.approx(1.0, abs=1e-6)
    noise = white_noise(len(x))
    assert metrics.stoi(x, noise) < 0.3
    assert metrics.estoi(x, noise) < 0.2


def test_stoi_falls_as_noise_is_added():
    x = voice(140)
    noise = white_noise(len(x))
    mild, heavy = metrics.stoi(x, x + 0.1 * noise), metrics.stoi(x, x + 3 * noise)
    assert 1.0 > mild > heavy


def test_stoi_resamples_other_rates():
    x = voice(140)
    from naturall2s.audio import resample

    x22 = resample(x, SR, 22050)
    assert metrics.stoi(x22, x22, sample_rate=22050) == pytest.approx(1.0, abs=1e-6)


def test_pesq_is_high_for_identical_and_low_for_noise():
    x = voice(140)
    noise = white_noise(len(x))
    assert metrics.pesq_wb(x, x) > 4.5
    assert metrics.pesq_nb(x, x) > 4.4
    assert metrics.pesq_wb(x, noise) < 1.6
    assert metrics.pesq_nb(x, noise) < metrics.pesq_nb(x, x + 0.05 * noise) < metrics.pesq_nb(x, x)


def test_pesq_of_a_silent_reference_is_nan():
    silent = np.zeros(SR * 2, np.float32)
    assert math.isnan(metrics.pesq_wb(silent, voice(140)))


# ------------------------------------------------------------------------------------- MCD
def test_mcd_is_zero_for_identical_and_grows_with_distortion():
    x = voice(140)
    noise = white_noise(len(x))
    assert metrics.mcd(x, x) == pytest.approx(0.0, abs=1e-9)
    light, heavy = metrics.mcd(x, x + 0.01 * noise), metrics.mcd(x, x + 0.5 * noise)
    assert 0.0 < light < heavy


def test_mcd_ignores_overall_gain():
    """c0 (log energy) is excluded, so a pure gain change leaves MCD near zero."""
    x = voice(140)
    assert metrics.mcd(x, 0.5 * x) < 0.05


def test_mel_cepstrum_shape():
    x = voice(140, seconds=1.0)
    mc = metrics.mel_cepstrum(x)
    assert mc.shape == (len(x) // HOP_LENGTH, metrics.MCD_ORDER + 1)
    assert np.all(np.isfinite(mc))


def test_freqt_with_alpha_zero_is_truncation():
    w = metrics._freqt_matrix(10, 4, 0.0)
    np.testing.assert_allclose(w, np.eye(10)[:, :5], atol=1e-12)


def test_freqt_warps_the_log_spectrum_onto_the_all_pass_frequency_axis():
    """sum_n c_n cos(n w) == sum_m mc_m cos(m w~) with e^{-j w~} = (e^{-j w} - a) / (1 - a e^{-j w})."""
    alpha = metrics.MCD_ALPHA
    c = np.array([0.3, -0.5, 0.25, 0.1, -0.05])
    mc = c @ metrics._freqt_matrix(len(c), 60, alpha)
    w = np.linspace(0, np.pi, 200)
    z = np.exp(-1j * w)
    w_tilde = -np.angle((z - alpha) / (1 - alpha * z))
    lhs = np.cos(np.outer(w, np.arange(len(c)))) @ c
    rhs = np.cos(np.outer(w_tilde, np.arange(len(mc)))) @ mc
    np.testing.assert_allclose(lhs, rhs, atol=1e-6)


def test_mcd_from_cepstra_known_value():
    a = np.zeros((4, 3))
    b = np.zeros((4, 3))
    b[:, 0] = 5.0  # c0 differs: ignored
    b[:, 1] = 1.0  # one unit in c1 on every frame
    expected = 10 / np.log(10) * np.sqrt(2.0)
    assert metrics.mcd_from_cepstra(a, b) == pytest.approx(expected)


# ------------------------------------------------------------------------------------ F0
def test_f0_rmse_cents_of_tones_a_hundred_cents_apart():
    low, high = steady_tone(200.0), steady_tone(200.0 * 2 ** (100 / 1200))
    assert metrics.f0_rmse_cents(low, high) == pytest.approx(100.0, abs=5.0)
    assert metrics.f0_rmse_cents(low, low) == pytest.approx(0.0, abs=1e-6)


def test_f0_rmse_from_tracks_counts_only_frames_voiced_in_both():
    ref = np.array([100.0, 100.0, 0.0, 100.0])
    deg = np.array([200.0, 0.0, 150.0, 100.0])  # one octave off on frame 0, exact on frame 3
    assert metrics.f0_rmse_cents_from_tracks(ref, deg) == pytest.approx(1200 / np.sqrt(2))
    assert math.isnan(metrics.f0_rmse_cents_from_tracks(ref, np.zeros(4)))


def test_voicing_error():
    tone = steady_tone(150.0, seconds=1.0)
    half_silent = tone.copy()
    half_silent[len(tone) // 2:] = 0.0
    assert metrics.voicing_error(tone, tone) == 0.0
    assert metrics.voicing_error(tone, half_silent) == pytest.approx(0.5, abs=0.05)
    assert metrics.voicing_error_from_tracks([1, 1, 0, 0], [1, 0, 0, 1]) == pytest.approx(0.5)


# ---------------------------------------------------------------------------------- text
def test_wer_and_cer_of_known_strings():
    ref = "bin blue at f two now"
    assert metrics.wer(ref, "bin blue at s two now") == pytest.approx(1 / 6)
    assert metrics.wer(ref, "bin blue at f two") == pytest.approx(1 / 6)  # one deletion
    assert metrics.wer(ref, "") == pytest.approx(1.0)
    assert metrics.wer(ref, ref) == 0.0
    assert metrics.cer("abcd", "abxd") == pytest.approx(1 / 4)


def test_text_is_normalised_before_scoring():
    assert metrics.normalize_text("  Bin, BLUE at F-two  NOW! ") == "bin blue at f two now"
    assert metrics.wer("bin blue at f two now", "Bin Blue, at F two now.") == 0.0


def test_word_hits_follow_the_minimum_edit_alignment():
    ref = "bin blue at f two now"
    assert metrics.word_hits(ref, ref) == [True] * 6
    assert metrics.word_hits(ref, "bin blue by f two now") == [True, True, False, True, True, True]  # substitution
    assert metrics.word_hits(ref, "bin blue f two now") == [True, True, False, True, True, True]  # deletion
    assert metrics.word_hits(ref, "bin blue at at f two now") == [True] * 6  # an insertion misses no word
    assert metrics.word_hits(ref, "") == [False] * 6
    assert sum(not h for h in metrics.word_hits(ref, "lay blue in f")) / 6 <= metrics.wer(ref, "lay blue in f")


def test_wer_rejects_an_empty_reference():
    with pytest.raises(ValueError):
        metrics.wer("  ", "bin")


# -------------------------------------------------------------------------------- speaker, rtf
def test_speaker_similarity_is_the_cosine():
    a = np.array([1.0, 0.0, 0.0])
    assert metrics.speaker_similarity(a, 3 * a) == pytest.approx(1.0)
    assert metrics.speaker_similarity(a, [0.0, 2.0, 0.0]) == pytest.approx(0.0)
    assert metrics.speaker_similarity(a, -a) == pytest.approx(-1.0)
    assert metrics.speaker_similarity([1.0, 1.0], [1.0, 0.0]) == pytest.approx(1 / np.sqrt(2))
    with pytest.raises(ValueError):
        metrics.speaker_similarity(a, [1.0, 0.0])


def test_rtf():
    assert metrics.rtf(1.5, 3 * SR) == pytest.approx(0.5)
    assert metrics.rtf(1.0, 44100, 44100) == pytest.approx(1.0)
    assert math.isnan(metrics.rtf(1.0, 0))


# ------------------------------------------------------------------------------------ pause buzz
def comb_in_pauses(seconds: float = 3.0, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A speech-like signal with a 1 s pause in the middle holding a 100 Hz pulse train over faint noise
    (the iSTFT generators' buzz) -> (wav (N,), pause mask (N // HOP_LENGTH,))."""
    x = voice(140, seconds, seed=seed).astype(np.float64)
    n = x.shape[0] // HOP_LENGTH
    pause = np.zeros(n, bool)
    pause[n // 3: 2 * n // 3] = True
    span = slice(n // 3 * HOP_LENGTH, 2 * n // 3 * HOP_LENGTH)
    buzz = np.zeros(span.stop - span.start)
    buzz[::HOP_LENGTH] = 0.02
    x[span] = buzz + 1e-4 * np.random.default_rng(seed).standard_normal(buzz.shape[0])
    return x.astype(np.float32), pause


def test_comb_db_is_near_zero_for_noise_and_high_for_a_100_hz_comb():
    noise = white_noise(3 * SR)
    assert abs(metrics.comb_db(noise, pause=np.ones(3 * SR // HOP_LENGTH, bool))) < 0.5
    wav, pause = comb_in_pauses()
    assert metrics.comb_db(wav, pause=pause) > 30.0
    assert metrics.comb_db(wav) > 30.0  # the 30 dB rule finds the same pause by itself
    # the same pause holding noise instead of the comb: ~0 dB
    quiet = wav.copy()
    quiet[pause.repeat(HOP_LENGTH)[: len(wav)]] = 1e-3 * white_noise(int(pause.sum()) * HOP_LENGTH, seed=5)
    assert abs(metrics.comb_db(quiet, pause=pause)) < 1.0


def test_comb_db_counts_only_frames_whose_window_is_inside_the_pause():
    wav, pause = comb_in_pauses()
    short = np.zeros_like(pause)
    short[pause.nonzero()[0][:12]] = True  # 12 frames: fewer than COMB_MIN_FRAMES once the 80 ms window is eroded
    assert math.isnan(metrics.comb_db(wav, pause=short))
    assert math.isnan(metrics.comb_db(white_noise(SR)))  # no frame 30 dB below the loudest
    assert metrics.comb_db(np.zeros(SR, np.float32)) == pytest.approx(0.0)  # digital silence: no comb
    with pytest.raises(ValueError, match="pause mask"):
        metrics.comb_db(wav, pause=pause[:-1])


def test_loud_frames_counts_frames_near_the_peak():
    from naturall2s.metrics import loud_frames

    rng = np.random.default_rng(0)
    speech = rng.standard_normal(16000).astype(np.float32)
    quiet = speech * 10 ** (-40 / 20)  # 40 dB down: a pause
    assert loud_frames(np.concatenate([speech, quiet, quiet, quiet])) == pytest.approx(0.25)
    assert loud_frames(np.concatenate([speech, quiet * 100])) == pytest.approx(1.0)  # 0 dB-down "pause": all loud
