"""Naturalness on real GRID speech: the pause-buzz measure (metrics.comb_db) and the MOS predictor."""
from __future__ import annotations

import numpy as np
import pytest

from naturall2s import data, metrics, naturalness, video
from naturall2s.audio import HOP_LENGTH, SAMPLE_RATE, resample


@pytest.fixture(scope="module")
def real_speech(grid_root, grid_test_names) -> tuple[np.ndarray, np.ndarray]:
    """A real GRID test clip's audio (N,) at 16 kHz and its .align pause mask (N // HOP_LENGTH,)."""
    name = grid_test_names[0]
    wav = video.read_audio_track(grid_root / "s1" / f"{name}.mp4")
    words = data.read_align(grid_root / "align" / "s1" / f"{name}.align")
    return wav, data.align_pauses(words, len(wav) // HOP_LENGTH)


def test_comb_is_near_zero_in_real_pauses_and_high_once_a_comb_is_added(real_speech):
    wav, pause = real_speech
    assert abs(metrics.comb_db(wav, pause=pause)) < 2.0
    buzzed = wav.astype(np.float64).copy()
    buzzed[::HOP_LENGTH] += 0.1  # a 100 Hz pulse train (rms 0.008) against GRID s1 pauses of rms ~0.01-0.03
    assert metrics.comb_db(buzzed, pause=pause) > 15.0


# ------------------------------------------------------------------------------------ MOS predictor
@pytest.fixture(scope="module")
def predictor():
    return naturalness.get_mos_predictor("distillmos")


def test_real_speech_sounds_more_natural_than_noise_and_than_buzzed_speech(real_speech, predictor):
    wav = real_speech[0][: 3 * SAMPLE_RATE]
    t = np.arange(wav.shape[0]) / SAMPLE_RATE
    buzz = 0.1 * np.sign(np.sin(2 * np.pi * 100.0 * t))  # a strong 100 Hz square-wave buzz
    noise = 0.1 * np.random.default_rng(0).standard_normal(wav.shape[0])
    speech, white, buzzed = predictor.score([wav, noise, wav + buzz], SAMPLE_RATE)
    assert predictor.name == "distillmos"
    assert speech > 3.0  # the figure for real GRID s1 test audio is 3.53
    assert speech > white + 1.0 and speech > buzzed + 0.5
    # batching pads to the model's own window, so a batch scores what one-at-a-time does
    together = naturalness.DistillMOS(batch_size=2).score([wav, noise], SAMPLE_RATE)
    assert together == pytest.approx([speech, white], abs=1e-3)


def test_scores_other_rates_and_empty_input(real_speech, predictor):
    wav = real_speech[0][: 2 * SAMPLE_RATE]
    at_8k = predictor.score([resample(wav, SAMPLE_RATE, 8000), np.zeros(0, np.float32)], 8000)
    assert 1.0 <= at_8k[0] <= 5.0 and np.isnan(at_8k[1])


def test_the_predictor_is_loaded_once_and_unknown_names_are_refused(predictor):
    assert naturalness.get_mos_predictor("auto")._model is predictor._model or naturalness.find_utmos()
    with pytest.raises(ValueError, match="unknown MOS predictor"):
        naturalness.get_mos_predictor("pesq")


def test_utmos_is_used_only_when_its_weights_are_on_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(naturalness, "UTMOS_LOCAL_DIR", tmp_path)
    if naturalness.find_utmos() is None:  # nothing on disk here (e.g. CI): utmos is refused, never downloaded
        with pytest.raises(naturalness.MOSPredictorUnavailableError, match="nothing is downloaded"):
            naturalness.get_mos_predictor("utmos")
        assert naturalness.get_mos_predictor("auto").name == "distillmos"
    (tmp_path / naturalness.UTMOS_FILE).write_bytes(b"weights")
    assert naturalness.find_utmos() == tmp_path / naturalness.UTMOS_FILE
