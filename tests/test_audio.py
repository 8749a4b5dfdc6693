"""audio.py on small synthetic signals: length convention, F0, loudness, mel, I/O, Griffin-Lim."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from naturall2s import audio
from naturall2s.audio import HOP_LENGTH, N_MELS, SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME
from naturall2s.errors import NoAudioError


def tone(freq: float, seconds: float = 1.0, sr: int = SAMPLE_RATE, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(wav: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return float(np.argmax(spec) * sr / len(wav))


def test_constants_obey_length_convention():
    assert SAMPLES_PER_VIDEO_FRAME == 4 * HOP_LENGTH
    assert SAMPLE_RATE // 25 == SAMPLES_PER_VIDEO_FRAME


@pytest.mark.parametrize("n_video_frames", [1, 7, 75])
def test_features_have_4t_frames(n_video_frames):
    wav = np.random.default_rng(0).normal(0, 0.1, n_video_frames * SAMPLES_PER_VIDEO_FRAME).astype(np.float32)
    n = 4 * n_video_frames
    assert audio.log_mel(torch.from_numpy(wav)).shape == (N_MELS, n)
    f0, voiced = audio.f0_voicing(wav)
    assert f0.shape == voiced.shape == (n,) and voiced.dtype == bool
    assert audio.loudness(wav).shape == (n,)


def test_feature_frames_floor_for_ragged_lengths():
    wav = np.zeros(HOP_LENGTH * 10 + 77, np.float32)
    assert audio.log_mel(torch.from_numpy(wav)).shape[-1] == 10
    assert audio.f0_voicing(wav)[0].shape == (10,)
    assert audio.loudness(wav).shape == (10,)


def test_log_mel_batched_matches_single_and_clamps():
    rng = np.random.default_rng(1)
    batch = torch.from_numpy(rng.normal(0, 0.1, (3, 8000)).astype(np.float32))
    mel = audio.log_mel(batch)
    assert mel.shape == (3, N_MELS, 50)
    torch.testing.assert_close(mel[1], audio.log_mel(batch[1]))
    silent = audio.log_mel(torch.zeros(4000))
    torch.testing.assert_close(silent, torch.full_like(silent, float(np.log(audio.LOG_CLAMP))))


def test_log_mel_peaks_at_the_tone():
    low = audio.log_mel(torch.from_numpy(tone(300))).mean(-1).argmax()
    high = audio.log_mel(torch.from_numpy(tone(3000))).mean(-1).argmax()
    assert low < high


def test_log_mel_is_differentiable():
    wav = torch.from_numpy(tone(440, 0.2)).requires_grad_()
    audio.log_mel(wav).sum().backward()
    assert wav.grad is not None and torch.isfinite(wav.grad).all()


def test_f0_of_a_200hz_tone():
    f0, voiced = audio.f0_voicing(tone(200))
    assert voiced.mean() > 0.9
    assert np.all(f0[~voiced] == 0)
    assert np.median(np.abs(f0[voiced] - 200.0)) < 2.0


def test_f0_of_silence_is_unvoiced():
    f0, voiced = audio.f0_voicing(np.zeros(SAMPLE_RATE, np.float32))
    assert not voiced.any() and not f0.any()


def test_loudness_levels():
    full = audio.loudness(tone(1000, amp=1.0))
    assert np.allclose(full[5:-5], -3.0, atol=0.5)  # full-scale sine: mean square 1/2, A-weight 0 dB at 1 kHz
    quieter = audio.loudness(tone(1000, amp=0.1))
    assert np.allclose(full[5:-5] - quieter[5:-5], 20.0, atol=0.1)
    assert audio.loudness(tone(100, amp=1.0))[50] < full[50] - 15  # A-weighting cuts low frequencies
    assert np.all(audio.loudness(np.zeros(1600, np.float32)) == audio.LOUDNESS_FLOOR_DB)


def test_loudness_accepts_batched_tensors():
    x = torch.from_numpy(np.stack([tone(500), tone(500, amp=0.05)]))
    out = audio.loudness(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 100)
    assert (out[0] > out[1]).all()


def test_fit_length_numpy_and_tensor():
    x = np.arange(10, dtype=np.float32)
    assert audio.fit_length(x, 4).tolist() == [0, 1, 2, 3]
    padded = audio.fit_length(x, 12)
    assert padded.shape == (12,) and padded[-2:].tolist() == [0, 0] and padded[9] == 9
    t = torch.ones(2, 5)
    assert audio.fit_length(t, 8).shape == (2, 8) and audio.fit_length(t, 8)[:, 5:].abs().sum() == 0
    assert audio.fit_length(t, 3).shape == (2, 3)


def test_save_load_round_trip(tmp_path):
    wav = tone(440, 0.5)
    path = audio.save_audio(tmp_path / "sub" / "a.wav", wav, SAMPLE_RATE)
    back = audio.load_audio(path)
    assert back.dtype == np.float32 and back.shape == wav.shape
    assert np.max(np.abs(back - wav)) < 1e-3  # 16-bit PCM
    assert [p.name for p in path.parent.iterdir()] == ["a.wav"]  # no temp file left behind


def test_load_audio_resamples_and_downmixes(tmp_path):
    import soundfile as sf

    sr = 44100
    mono = tone(1000, 1.0, sr=sr)
    sf.write(tmp_path / "st.wav", np.stack([mono, mono], axis=1), sr)
    back = audio.load_audio(tmp_path / "st.wav")
    assert abs(len(back) - SAMPLE_RATE) <= 1
    assert abs(peak_hz(back, SAMPLE_RATE) - 1000) < 3


def test_load_audio_errors(tmp_path):
    with pytest.raises(NoAudioError):
        audio.load_audio(tmp_path / "missing.wav")
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    with pytest.raises(NoAudioError):
        audio.load_audio(tmp_path / "junk.wav")


def test_griffin_lim_length_and_pitch():
    wav = tone(250, 0.5)
    mel = audio.log_mel(torch.from_numpy(wav))
    out = audio.griffin_lim(mel, n_iter=16)
    assert out.dtype == np.float32 and out.shape == (mel.shape[-1] * HOP_LENGTH,)
    assert abs(peak_hz(out, SAMPLE_RATE) - 250) < 15
    with pytest.raises(ValueError):
        audio.griffin_lim(np.zeros((10, 5), np.float32))


def test_soft_limit_keeps_quiet_samples_and_never_reaches_full_scale(tmp_path):
    import soundfile as sf

    x = torch.linspace(-3.0, 3.0, 6001, dtype=torch.float64)
    y = audio.soft_limit(x)
    quiet = x.abs() <= audio.LIMIT_KNEE
    assert torch.equal(y[quiet], x[quiet])  # below the knee: untouched
    assert y.abs().max() <= audio.LIMIT_CEILING < 1.0 and torch.all(torch.diff(y) >= 0)  # monotonic, at most the ceiling
    assert torch.equal(torch.sign(y), torch.sign(x))
    step = float(x[1] - x[0])
    assert torch.diff(y).max() <= step * (1 + 1e-9)  # slope at most 1: no jump at the knee
    # written as 16-bit PCM, a limited full-scale square wave has no sample at +-32767 (a clamp would)
    square = torch.sign(torch.sin(torch.arange(16000) * 0.05)) * 1.5
    path = audio.save_audio(tmp_path / "loud.wav", audio.soft_limit(square))
    pcm, _ = sf.read(path, dtype="int16")
    assert np.abs(pcm.astype(np.int32)).max() < 32767
