"""naturall2s.speaker: unit-norm embeddings, self-similarity, and the offline factory."""
from __future__ import annotations

import numpy as np
import pytest

from naturall2s import metrics, speaker

SR = 16000


def synthetic_voice(f0: float, seconds: float = 2.0, *, formants=(700.0, 1200.0)) -> np.ndarray:
    """A crude vowel-like voice (N,) float32: harmonics of ``f0`` shaped by two formant peaks, syllable envelope."""
    t = np.arange(int(seconds * SR)) / SR
    x = np.zeros_like(t)
    for k in range(1, int(5000 // f0)):
        f = k * f0
        gain = sum(1.0 / (1.0 + ((f - fc) / 150.0) ** 2) for fc in formants) + 0.05
        x += gain * np.sin(2 * np.pi * f * t + k)
    envelope = 0.2 + 0.4 * (1 - np.cos(2 * np.pi * 3.0 * t))
    return (0.1 * x * envelope / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def encoder():
    return speaker.get_speaker_encoder("resemblyzer")


def test_embedding_is_unit_norm(encoder):
    e = encoder.embed(synthetic_voice(120.0), SR)
    assert e.shape == (256,) and e.dtype == np.float32
    assert np.linalg.norm(e) == pytest.approx(1.0, abs=1e-5)


def test_self_similarity_is_one_and_a_different_voice_is_lower(encoder):
    low = encoder.embed(synthetic_voice(110.0), SR)
    again = encoder.embed(synthetic_voice(110.0), SR)
    high = encoder.embed(synthetic_voice(260.0, formants=(400.0, 2300.0)), SR)
    assert metrics.speaker_similarity(low, again) == pytest.approx(1.0, abs=1e-5)
    assert metrics.speaker_similarity(low, high) < 0.8


def test_other_sample_rates_are_resampled(encoder):
    from naturall2s.audio import resample

    x = synthetic_voice(120.0)
    e16 = encoder.embed(x, SR)
    e22 = encoder.embed(resample(x, SR, 22050), 22050)
    assert metrics.speaker_similarity(e16, e22) > 0.98


def test_silence_and_noise_still_embed(encoder):
    for x in (np.zeros(SR, np.float32), 0.1 * np.random.default_rng(0).standard_normal(SR).astype(np.float32)):
        e = encoder.embed(x, SR)
        assert np.all(np.isfinite(e)) and np.linalg.norm(e) == pytest.approx(1.0, abs=1e-5)


def test_model_is_loaded_once():
    assert speaker.get_speaker_encoder("resemblyzer")._encoder is speaker.get_speaker_encoder("resemblyzer")._encoder


def test_factory_is_offline():
    auto = speaker.get_speaker_encoder("auto")
    assert auto.name == ("ecapa-voxceleb" if speaker.find_ecapa() is not None else "resemblyzer-ge2e")
    with pytest.raises(ValueError):
        speaker.get_speaker_encoder("xvector")


def test_ecapa_without_files_refuses_instead_of_downloading(tmp_path):
    with pytest.raises(speaker.SpeakerEncoderUnavailableError):
        speaker.EcapaEncoder(tmp_path)  # an empty folder


def test_real_clip_is_more_like_itself_than_a_synthetic_voice(encoder, grid_clip):
    from naturall2s.video import read_audio_track

    wav = read_audio_track(grid_clip)
    e = encoder.embed(wav, SR)
    assert metrics.speaker_similarity(e, encoder.embed(wav, SR)) == pytest.approx(1.0, abs=1e-5)
    assert metrics.speaker_similarity(e, encoder.embed(synthetic_voice(200.0), SR)) < 0.7
