"""Naturalness on real GRID speech: the pause-buzz measure (metrics.comb_db) and the MOS predictor."""
from __future__ import annotations

import numpy as np
import pytest

from naturall2s import data, metrics, video
from naturall2s.audio import HOP_LENGTH


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
