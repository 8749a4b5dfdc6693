"""naturall2s.video: decoding any container at 25 fps (CFR and VFR), audio at 16 kHz, typed errors, writers.

All inputs are small synthetic clips made with ffmpeg in a temporary folder: the picture is a flat gray
whose brightness rises linearly with time (16 + 100*t on the luma scale), so the value of each decoded frame
tells at which source time it was sampled; the sound is a 440 Hz sine.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from naturall2s.audio import SAMPLE_RATE
from naturall2s.errors import ClipTooLongError, NotAVideoError, NoVideoStreamError
from naturall2s.video import (
    FPS,
    VideoData,
    ffmpeg_exe,
    mux_audio,
    read_audio_track,
    read_video,
    write_gray_video,
)

W, H, SECONDS, SRC_FPS = 96, 64, 2.0, 30
RAMP = f"color=c=black:s={W}x{H}:r={SRC_FPS}:d={SECONDS:g},geq=lum='16+T*100':cb=128:cr=128"
SINE = f"sine=frequency=440:sample_rate=44100:duration={SECONDS:g}"

# container suffix -> (video codec args, audio codec args)
CONTAINERS = {
    "mp4": (["-c:v", "libx264", "-qp", "0"], ["-c:a", "aac"]),
    "mov": (["-c:v", "libx264", "-qp", "0"], ["-c:a", "aac"]),
    "mkv": (["-c:v", "libx264", "-qp", "0"], ["-c:a", "libvorbis"]),
    "avi": (["-c:v", "mpeg4", "-q:v", "1"], ["-c:a", "libmp3lame"]),
    "webm": (["-c:v", "libvpx", "-crf", "4", "-b:v", "1M"], ["-c:a", "libopus"]),
    "mpg": (["-c:v", "mpeg2video", "-q:v", "1"], ["-c:a", "libmp3lame"]),
}


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args], check=True)


def _expected_level(t: np.ndarray) -> np.ndarray:
    """Mean RGB value of the ramp at time t (s): luma 16+100t mapped from TV range to 0..255."""
    return np.clip(100.0 * t * 255.0 / 219.0, 0, 255)


def _dominant_hz(wav: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return float(np.argmax(spec) * sr / len(wav))


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """Synthetic files: one clip per container, a VFR clip, a silent clip, and broken/odd inputs."""
    d = tmp_path_factory.mktemp("media")
    files = {}
    for ext, (vargs, aargs) in CONTAINERS.items():
        files[ext] = d / f"clip.{ext}"
        _ffmpeg("-f", "lavfi", "-i", RAMP, "-f", "lavfi", "-i", SINE, "-ac", "2", *vargs, "-pix_fmt", "yuv420p",
                *aargs, str(files[ext]))
    # variable frame rate: 30 fps for the first second, then every third frame (10 fps)
    files["vfr"] = d / "vfr.mkv"
    _ffmpeg("-f", "lavfi", "-i", RAMP + ",select='lt(t\\,1)+not(mod(n\\,3))'", "-fps_mode", "vfr",
            "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv420p", str(files["vfr"]))
    files["silent"] = d / "silent.mp4"
    _ffmpeg("-f", "lavfi", "-i", RAMP, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(files["silent"]))
    files["audio_only"] = d / "speech.m4a"
    _ffmpeg("-f", "lavfi", "-i", SINE, "-c:a", "aac", str(files["audio_only"]))
    files["wav"] = d / "speech.wav"
    _ffmpeg("-f", "lavfi", "-i", SINE, str(files["wav"]))
    files["image"] = d / "still.png"
    _ffmpeg("-f", "lavfi", "-i", f"color=c=red:s={W}x{H}:d=0.1", "-frames:v", "1", str(files["image"]))
    files["text"] = d / "notes.mp4"
    files["text"].write_text("this is not a video\n" * 20)
    files["empty"] = d / "empty.mp4"
    files["empty"].write_bytes(b"")
    files["truncated"] = d / "truncated.mp4"  # moov atom (the index) is at the end of an mp4: cut it off
    data = files["mp4"].read_bytes()
    files["truncated"].write_bytes(data[: len(data) // 2])
    faststart = d / "faststart.mp4"  # index first (as for streaming): the cut-off picture part is detected
    _ffmpeg("-f", "lavfi", "-i", RAMP, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-movflags", "+faststart",
            str(faststart))
    files["truncated_faststart"] = d / "truncated_faststart.mp4"
    files["truncated_faststart"].write_bytes(faststart.read_bytes()[: faststart.stat().st_size * 6 // 10])
    return files


@pytest.mark.parametrize("ext", sorted(CONTAINERS))
def test_containers_decode_at_25_fps_with_16k_audio(media, ext):
    v = read_video(media[ext])
    assert isinstance(v, VideoData)
    assert v.frames.dtype == np.uint8 and v.frames.shape[1:] == (H, W, 3)
    assert abs(len(v.frames) - SECONDS * FPS) <= 1  # avi/mp3 muxing may add a frame
    assert v.source_fps == pytest.approx(SRC_FPS, rel=0.01)
    assert v.duration == pytest.approx(SECONDS, abs=0.1)
    # frame i shows the source at time i/25 (the 30 fps source has 1/30 s steps; lossy codecs add a little)
    levels = v.frames.reshape(len(v.frames), -1).mean(axis=1)
    expected = _expected_level(np.arange(len(levels)) / FPS)
    assert np.abs(levels - expected).max() < 8
    assert v.audio is not None and v.audio.dtype == np.float32 and v.audio.ndim == 1
    assert abs(len(v.audio) - SECONDS * SAMPLE_RATE) < 0.05 * SAMPLE_RATE
    assert _dominant_hz(v.audio, SAMPLE_RATE) == pytest.approx(440, abs=5)


def test_variable_frame_rate_follows_timestamps(media):
    v = read_video(media["vfr"])
    # 40 source frames over ~1.93 s: a frame-counting reader would give 40 frames and drift by up to 0.6 s
    assert abs(len(v.frames) - v.duration * FPS) <= 1 and len(v.frames) >= 47
    levels = v.frames.reshape(len(v.frames), -1).mean(axis=1)
    expected = _expected_level(np.arange(len(levels)) / FPS)
    assert np.abs(levels - expected).max() < 12  # the 10 fps half holds each picture for 0.1 s


def test_max_side_downscales_keeping_aspect(media):
    v = read_video(media["mp4"], max_side=48)
    assert v.frames.shape == (50, 32, 48, 3)
    assert read_video(media["mp4"], max_side=1000).frames.shape[1:3] == (H, W)


def test_without_audio(media):
    assert read_video(media["silent"]).audio is None
    assert read_video(media["mp4"], with_audio=False).audio is None
    assert read_audio_track(media["silent"]) is None


def test_read_audio_track(media):
    for key in ("mp4", "audio_only", "wav"):
        wav = read_audio_track(media[key])
        assert wav is not None and wav.dtype == np.float32
        assert abs(len(wav) - SECONDS * SAMPLE_RATE) < 0.05 * SAMPLE_RATE
        assert _dominant_hz(wav, SAMPLE_RATE) == pytest.approx(440, abs=5)
    wav8k = read_audio_track(media["wav"], sample_rate=8000)
    assert abs(len(wav8k) - SECONDS * 8000) < 0.05 * 8000


@pytest.mark.parametrize("key,error,words", [
    ("text", NotAVideoError, "not a readable video"),
    ("empty", NotAVideoError, "empty"),
    ("truncated", NotAVideoError, "not a readable video"),
    ("truncated_faststart", NotAVideoError, "truncated"),
    ("image", NotAVideoError, "image"),
    ("audio_only", NoVideoStreamError, "no video stream"),
    ("wav", NoVideoStreamError, "no video stream"),
])
def test_bad_inputs_raise_typed_errors(media, key, error, words):
    with pytest.raises(error, match=words):
        read_video(media[key])


def test_missing_file(tmp_path):
    with pytest.raises(NotAVideoError, match="not found"):
        read_video(tmp_path / "nope.mp4")
    with pytest.raises(NotAVideoError):
        read_video(tmp_path)  # a folder


def test_too_long_is_refused_before_decoding(media):
    with pytest.raises(ClipTooLongError, match="2.0 s"):
        read_video(media["mp4"], max_seconds=1.0)
    assert len(read_video(media["mp4"], max_seconds=2.5).frames) == 50


def test_write_gray_video_round_trip(tmp_path):
    t, h, w = 12, 48, 72
    frames = np.zeros((t, h, w), np.uint8)
    for i in range(t):
        frames[i, :, : w // 2] = 40 + 10 * i  # left half brightens over time, right half stays white
        frames[i, :, w // 2:] = 220
    out = tmp_path / "sub" / "roi.mp4"
    write_gray_video(out, frames, scale=4)
    assert sorted(p.name for p in out.parent.iterdir()) == ["roi.mp4"]  # no temporary leftovers
    back = read_video(out)
    assert back.frames.shape == (t, h * 4, w * 4, 3)
    gray = back.frames.mean(axis=3)
    left = gray[:, 8:-8, 8: w * 2 - 8].mean(axis=(1, 2))
    right = gray[:, 8:-8, w * 2 + 8: -8].mean(axis=(1, 2))
    assert np.abs(left - (40 + 10 * np.arange(t))).max() < 4
    assert np.abs(right - 220).max() < 4


def test_write_gray_video_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        write_gray_video(tmp_path / "roi.nosuchformat", np.zeros((3, 48, 72), np.uint8))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):
        write_gray_video(tmp_path / "roi.mp4", np.zeros((48, 72), np.uint8))


def test_mux_audio_replaces_the_sound(media, tmp_path):
    sr = 16000
    t = np.arange(int(3.0 * sr)) / sr  # longer than the 2 s picture: cut to it
    wav = (0.3 * np.sin(2 * np.pi * 660 * t)).astype(np.float32)
    out = tmp_path / "dubbed.mp4"
    mux_audio(media["mp4"], wav, sr, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dubbed.mp4"]
    v = read_video(out)
    assert len(v.frames) == 50
    levels = v.frames.reshape(len(v.frames), -1).mean(axis=1)
    assert np.abs(levels - _expected_level(np.arange(50) / FPS)).max() < 8  # the original picture
    assert v.audio is not None and abs(len(v.audio) - 2.0 * SAMPLE_RATE) < 0.1 * SAMPLE_RATE
    assert _dominant_hz(v.audio, SAMPLE_RATE) == pytest.approx(660, abs=5)  # the new sound, not the 440 Hz one


def test_mux_audio_bad_video_leaves_nothing(media, tmp_path):
    out = tmp_path / "dubbed.mp4"
    with pytest.raises(NotAVideoError):
        mux_audio(media["text"], np.zeros(16000, np.float32), 16000, out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_rotated_phone_video_is_upright(tmp_path):
    """A 96x64 picture, left half black, stored with a 90-degree display rotation, decodes as 64x96 rotated."""
    plain = tmp_path / "plain.mp4"
    _ffmpeg("-f", "lavfi", "-i", f"color=c=white:s={W}x{H}:r=25:d=0.4,drawbox=x=0:y=0:w={W // 2}:h={H}:color=black:t=fill",
            "-c:v", "libx264", "-pix_fmt", "yuv420p", str(plain))
    rotated = tmp_path / "rotated.mp4"
    _ffmpeg("-display_rotation", "90", "-i", str(plain), "-c", "copy", str(rotated))
    v = read_video(rotated)
    assert v.frames.shape == (10, W, H, 3)
    gray = v.frames[0].mean(axis=2)
    assert abs(gray[: W // 2].mean() - gray[W // 2:].mean()) > 150  # the black half is now on top or bottom
    assert abs(gray[:, : H // 2].mean() - gray[:, H // 2:].mean()) < 30
    assert read_video(rotated, max_side=48).frames.shape == (10, 48, 32, 3)
