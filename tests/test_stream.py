"""Live synthesis (naturall2s.stream): the take's length and timing, equality with the offline path when the look-ahead
covers the take, silence without a face, smooth chunk joins, bad frames, the ``live`` command."""
from __future__ import annotations

import subprocess
from pathlib import Path
import sys

import numpy as np
import pytest
import torch

from naturall2s import roi as roi_mod
from naturall2s.errors import NaturalL2SError
from naturall2s.model import VARIANTS, build
from naturall2s.roi import MouthClip
from naturall2s.stream import SAMPLES_PER_FRAME, SILENCE_GAP, LiveSynth, _frame_gain, raised_cosine

TINY = dict(dim=32, n_layers=1, n_heads=2, head_hidden=32, gen_dim=32, gen_intermediate_dim=64, gen_layers=1,
            n_harmonics=16, dropout=0.0)
H, W = 288, 360


def synthetic_face(t: int) -> np.ndarray:
    """(68, 2) pixel landmarks of a frontal face that drifts and opens its mouth over time (frame ``t``)."""
    lm = np.zeros((68, 2), np.float32)
    scale, cx, cy = 110.0 + 3 * np.sin(t / 7), 180.0 + 6 * np.sin(t / 5), 100.0 + 4 * np.cos(t / 9)
    lm[roi_mod.STABLE_POINTS] = roi_mod.REFERENCE_FACE * scale + [cx, cy]
    angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    opening = 0.08 + 0.06 * np.sin(t / 3)
    mouth = np.stack([0.3 * np.cos(angles), 0.95 + opening * np.sin(angles)], axis=1)
    lm[roi_mod.LIP_POINTS] = mouth * scale + [cx, cy]
    return lm


class FakeTracker:
    """A :class:`naturall2s.stream.FrameTracker` stand-in: the landmarks of ``synthetic_face``, none in ``gaps``."""

    def __init__(self, gaps=()):
        self.gaps = set(gaps)
        self.t = 0

    def reset(self):
        self.t = 0

    def track(self, frame):
        t, self.t = self.t, self.t + 1
        if t in self.gaps:
            return np.full((68, 2), np.nan, np.float32), 0
        return synthetic_face(t), 1 if t % 10 == 0 else None


def frames(n: int, seed: int = 0) -> np.ndarray:
    g = np.random.default_rng(seed)
    base = g.integers(0, 256, (H, W, 3), dtype=np.uint8)
    return np.stack([np.roll(base, 2 * i, axis=1) for i in range(n)])


def tiny(variant: str):
    torch.manual_seed(0)
    return build(variant, **TINY).eval()


def push_all(live: LiveSynth, video: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    chunks = [live.push(f) for f in video]
    chunks.append(live.flush())
    return chunks, np.concatenate(chunks)


def test_take_length_and_output_timing():
    """After frame i is pushed the output reaches frame i + 1 - lookahead; flush completes 640 samples per frame."""
    video = frames(30)
    live = LiveSynth(tiny("naturall2s-noddsp"), lookahead=0.12, window=1.0, hop=1, tracker=FakeTracker())
    assert live.lookahead_frames == 3
    total = 0
    for i, f in enumerate(video):
        total += len(live.push(f))
        assert total == max(0, i + 1 - 3) * SAMPLES_PER_FRAME
    total += len(live.flush())
    assert total == len(video) * SAMPLES_PER_FRAME
    s = live.stats()
    assert s.frames == 30 and s.audio_seconds == pytest.approx(1.2) and s.latency_median >= 0


def test_hop_runs_the_model_every_k_frames():
    live = LiveSynth(tiny("naturall2s-noddsp"), lookahead=0.04, window=1.0, hop=3, tracker=FakeTracker())
    sizes = [len(live.push(f)) for f in frames(13)]
    assert set(sizes) == {0, 3 * SAMPLES_PER_FRAME}
    assert live.stats().runs == 4  # frames 0-2, 3-5, 6-8, 9-11


@pytest.mark.parametrize("variant", VARIANTS)
def test_full_lookahead_equals_the_offline_synthesis(variant):
    """With a look-ahead and window longer than the take, the one run at flush is the offline model on the same crops:
    checks the frame-by-frame crops against roi.crop_mouth and the streaming speech path (the DDSP one with its carried
    oscillator phase) against LipToSpeech.synthesize."""
    n = 24
    video = frames(n)
    model = tiny(variant)
    live = LiveSynth(model, lookahead=2.0, window=2.0, tracker=FakeTracker())
    _, streamed = push_all(live, video)
    landmarks = np.stack([synthetic_face(t) for t in range(n)])
    roi, lips, detected = roi_mod.crop_mouth(video, landmarks)
    offline = model.synthesize(MouthClip(roi=roi, lips=lips, audio=None, fps=25.0, detected=detected, source=""))
    assert streamed.shape == offline.wav.shape
    np.testing.assert_allclose(streamed, offline.wav, atol=2e-4)
    assert live.text == offline.text


def test_streamed_crops_match_the_offline_crops():
    """Each frame's final crop (CROP_PENDING frames later) is exactly roi.crop_mouth's."""
    n = 30
    video = frames(n)
    live = LiveSynth(tiny("naturall2s-noddsp"), lookahead=0.04, window=2.0, tracker=FakeTracker())
    roi, lips, _ = roi_mod.crop_mouth(video, np.stack([synthetic_face(t) for t in range(n)]))
    for f in video:
        live.push(f)
    for j in range(n):  # all 30 frames are still in the ring buffer
        np.testing.assert_array_equal(live._roi[j % live._keep], roi[j])
        np.testing.assert_allclose(live._lips[j % live._keep], lips[j], atol=1e-5)


def test_no_face_gives_silence_and_a_message():
    gap = range(10, 30)
    live = LiveSynth(tiny("naturall2s"), lookahead=0.08, window=1.0, tracker=FakeTracker(gaps=gap))
    video = frames(45)
    messages = []
    chunks = []
    for f in video:
        chunks.append(live.push(f))
        messages.append(live.message)
    chunks.append(live.flush())
    wav = np.concatenate(chunks)
    assert len(wav) == 45 * SAMPLES_PER_FRAME
    # the gap's frames, after the first SILENCE_GAP - lookahead (emitted before the gap was known to be long)
    first_silent = 10 + SILENCE_GAP - live.lookahead_frames
    silent = wav[first_silent * SAMPLES_PER_FRAME + 160:30 * SAMPLES_PER_FRAME - 160]
    assert np.all(silent == 0)
    assert np.abs(wav[:10 * SAMPLES_PER_FRAME]).max() > 0 and np.abs(wav[31 * SAMPLES_PER_FRAME:]).max() > 0
    assert "no face" in messages[20] and messages[5] == "" and messages[40] == ""


def test_frame_gain_ramps_into_and_out_of_silence():
    g = _frame_gain(np.array([False, True, True, False]), fade=100)
    assert g.shape == (4 * SAMPLES_PER_FRAME,)
    assert np.all(g[SAMPLES_PER_FRAME:3 * SAMPLES_PER_FRAME] == 0)
    assert g[0] == 1 and g[-1] == 1
    assert np.all(np.diff(g[SAMPLES_PER_FRAME - 100:SAMPLES_PER_FRAME]) <= 0)  # fades out before the silence
    assert np.all(np.diff(g[3 * SAMPLES_PER_FRAME:3 * SAMPLES_PER_FRAME + 100]) >= 0)  # fades in after it
    w = raised_cosine(160)
    np.testing.assert_allclose(w + w[::-1], 1.0, atol=1e-6)


@pytest.mark.parametrize("bad", [np.zeros((10, 10, 3), np.uint8), np.zeros((64, 64), np.uint8),
                                 np.zeros((64, 64, 3), np.float32), "frame.png"])
def test_bad_frames_are_refused_clearly(bad):
    live = LiveSynth(tiny("naturall2s-noddsp"), tracker=FakeTracker())
    with pytest.raises(NaturalL2SError, match="frame"):
        live.push(bad)
    assert len(live.push(frames(1)[0])) == 0  # still usable


def test_flush_starts_a_new_take():
    live = LiveSynth(tiny("naturall2s-noddsp"), lookahead=0.04, window=1.0, tracker=FakeTracker())
    _, first = push_all(live, frames(10))
    _, second = push_all(live, frames(10))
    assert len(first) == len(second) == 10 * SAMPLES_PER_FRAME
    np.testing.assert_allclose(first, second, atol=1e-6)  # the same frames give the same take again


# ------------------------------------------------------------------------------- the shipped model, a real clip
def join_roughness(wav: np.ndarray, joins: np.ndarray) -> float:
    """Mean |second difference| within 2 samples of the join sample indices, over the same elsewhere."""
    d2 = np.abs(np.diff(wav, 2))
    near = np.zeros(len(d2), bool)
    for j in joins:
        near[max(0, j - 3):j + 1] = True
    return float(d2[near].mean() / d2[~near].mean())


@pytest.fixture(scope="module")
def shipped():
    from naturall2s import load_model

    return load_model("naturall2s")


@pytest.fixture(scope="module")
def grid_frames(grid_clip):
    from naturall2s.roi import decode_clip

    return decode_clip(grid_clip)


def test_streamed_speech_of_a_real_clip_is_close_to_the_offline_one(shipped, grid_frames, grid_mouth):
    from naturall2s import metrics

    live = shipped.stream(lookahead=0.16)
    chunks, streamed = push_all(live, grid_frames.frames)
    offline = shipped.synthesize(grid_mouth)
    assert len(streamed) == len(offline.wav)
    ref = grid_mouth.audio[: len(streamed)]
    e_stream, e_off = metrics.estoi(ref, streamed), metrics.estoi(ref, offline.wav)
    assert e_stream > e_off - 0.08, (e_stream, e_off)
    assert metrics.estoi(offline.wav, streamed) > 0.5  # the streamed speech says what the offline speech says
    assert metrics.wer(offline.text, live.text) <= 0.2, (offline.text, live.text)  # the lip-read words, as offline
    # chunk joins are no rougher than the rest of the signal (the crossfade works); without it they are
    sizes = np.cumsum([len(c) for c in chunks])[:-1]
    joins = sizes[(sizes > 0) & (sizes < len(streamed))]
    assert join_roughness(streamed, joins) < 1.5


def test_joins_without_crossfade_are_rough(shipped, grid_frames):
    """The join measure above can fail: without the crossfade (and phase carry) the same take has rough joins."""
    live = shipped.stream(lookahead=0.16, crossfade=0.0)
    live.crossfade = 0
    chunks, streamed = push_all(live, grid_frames.frames)
    sizes = np.cumsum([len(c) for c in chunks])[:-1]
    joins = sizes[(sizes > 0) & (sizes < len(streamed))]
    assert join_roughness(streamed, joins) > 1.5


def test_live_command_on_a_file(grid_clip, tmp_path):
    import soundfile as sf

    out = tmp_path / "take.wav"
    proc = subprocess.run([sys.executable, "-m", "naturall2s", "live", str(grid_clip), "-o", str(out),
                           "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert any(line.startswith("chunk frames 0-") for line in lines)
    assert lines[-1].startswith("latency: median ") and "real-time factor" in lines[-1]
    wav, sr = sf.read(out)
    assert sr == 16000 and len(wav) == 75 * SAMPLES_PER_FRAME


def test_live_command_needs_one_source(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "naturall2s", "live", "-o", str(tmp_path / "x.wav")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "VIDEO or --camera" in proc.stderr


# ------------------------------------------------------------------------------- the studio's Live tab, no browser
def test_live_tab_session_makes_a_take(tmp_path, monkeypatch):
    """on_frame -> the worker pushes at 25 fps -> audio for the player; stop -> a wav and a dubbed mp4; a bad frame or an
    unknown model gives a message, not an exception."""
    import time as _time

    import soundfile as sf

    from naturall2s import stream
    from naturall2s.studio import live as live_tab
    from naturall2s.studio.pipeline import Studio

    monkeypatch.setattr(stream, "FrameTracker", FakeTracker)
    studio = Studio({"tiny": tiny("naturall2s-noddsp")}, cache_dir=tmp_path)
    tab = live_tab.LiveTab(studio)
    video = frames(1)
    roi, words, status, _ = tab.on_frame(video[0], "tiny")
    assert "Speaking with" in status
    session = tab.session(None)
    sent = []  # the audio chunks the frames' replies carry
    deadline = _time.time() + 120
    while session.pushed < 10 and _time.time() < deadline:  # the worker pushes at 25 fps (or as fast as it can)
        _time.sleep(0.1)
        sent.append(tab.on_frame(video[0], "tiny")[3])
    wav_path, mp4_path, status = tab.stop()
    sent.append(tab.take_audio(session))  # what Stop flushed
    assert "latency median" in status
    wav, sr = sf.read(wav_path)
    assert sr == 16000 and session.pushed >= 10 and len(wav) == session.pushed * SAMPLES_PER_FRAME
    assert Path(mp4_path).stat().st_size > 0
    played = {}  # what the page's player plays: each chunk once, however many replies repeat it
    for text in sent:
        if isinstance(text, str):
            take, chunks = live_tab.decode_chunks(text)
            assert take == session.take and chunks[-1][0] == max(played, default=-1) + 1  # one new chunk per reply
            for seq, x in chunks:
                np.testing.assert_array_equal(played.setdefault(seq, x), x)  # a repeated chunk is the same
    assert sorted(played) == list(range(len(played)))  # none missing
    heard = np.concatenate([played[k] for k in sorted(played)])
    np.testing.assert_allclose(heard, wav, atol=2 / 32767)  # every sample of the take, once (the wav: int16 too)
    assert tab.take_audio(session) is None  # nothing left to send
    assert "unknown system" in tab.on_frame(video[0], "nope")[2]
    assert "frame" in tab.on_frame(np.zeros((4, 4, 3), np.uint8), "tiny")[2]
    assert tab.stop()[0] == wav_path  # stopping again gives the same take
    fresh = live_tab.LiveTab(studio)
    assert "no take" in fresh.stop()[2]


def test_live_chunk_encoding_round_trip():
    from naturall2s.studio.live import decode_chunks, encode_chunks, pcm_base64

    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -3.0], np.float32)
    text = encode_chunks(3, [(6, pcm_base64(x[:2])), (7, pcm_base64(x))])
    assert len(text) < 120  # a small JSON text
    take, chunks = decode_chunks(text)
    assert take == 3 and [seq for seq, _ in chunks] == [6, 7]
    np.testing.assert_allclose(chunks[1][1], np.clip(x, -1, 1), atol=1 / 32767)  # clipped, int16 precision
    assert decode_chunks(encode_chunks(1, [(0, pcm_base64(np.zeros(0)))]))[1][0][1].size == 0


def test_live_replies_repeat_the_last_chunks(tmp_path, monkeypatch):
    """Each reply carries its new chunk and those of the last RESEND s before it (the page misses a reply now and
    then), never more."""
    from naturall2s.studio import live as live_tab

    tab, _ = _tab_with_worker(tmp_path, monkeypatch)
    session = live_tab.LiveSession(model_name="tiny", live=None, work=tmp_path, wav_writer=None, take=5)
    assert tab.take_audio(session) is None
    replies = []
    for i in range(20):
        session.pending.append(np.full(640 * (1 + i % 3), i / 40, np.float32))  # 40 to 120 ms of audio
        replies.append(live_tab.decode_chunks(tab.take_audio(session)))
    for i, (take, chunks) in enumerate(replies):
        seqs = [seq for seq, _ in chunks]
        assert take == 5 and seqs == list(range(seqs[0], i + 1))
        assert sum(len(x) for _, x in chunks[1:]) <= live_tab.RESEND * 16000 < sum(len(x) for _, x in chunks) or \
            seqs[0] == 0
        np.testing.assert_allclose(chunks[-1][1], i / 40, atol=1 / 32767)


def _tab_with_worker(tmp_path, monkeypatch):
    from naturall2s import stream
    from naturall2s.studio import live as live_tab
    from naturall2s.studio.pipeline import Studio

    monkeypatch.setattr(stream, "FrameTracker", FakeTracker)
    tab = live_tab.LiveTab(Studio({"tiny": tiny("naturall2s-noddsp")}, cache_dir=tmp_path))
    return tab, frames(1)[0]


def _encoder_once_running(tab, frame):
    """Start a take; -> (session, its ffmpeg encoder process) once the worker has pushed a few frames."""
    import time as _time

    tab.on_frame(frame, "tiny")
    session = tab.session(None)
    deadline = _time.time() + 60
    while session.pushed < 3 and _time.time() < deadline:
        _time.sleep(0.05)
    proc = session.video._proc
    assert proc.poll() is None
    return session, proc


def test_live_take_ends_when_the_camera_stops_sending(tmp_path, monkeypatch, caplog):
    """No picture for idle_timeout s (a page gone without unload): the worker and the video encoder stop, logged; the
    take's wav is complete and Stop still gives it; the camera's next picture starts a new take."""
    import logging
    import time as _time

    import soundfile as sf

    tab, frame = _tab_with_worker(tmp_path, monkeypatch)
    with caplog.at_level(logging.INFO, logger="naturall2s.studio.live"):
        session, proc = _encoder_once_running(tab, frame)
        tab.idle_timeout = 0.5
        deadline = _time.time() + 60
        while not session.done and _time.time() < deadline:
            _time.sleep(0.1)
        session.worker.join(timeout=10)
    assert session.done and not session.worker.is_alive() and proc.poll() is not None
    assert "no camera picture" in session.ended and "ended: no camera picture" in caplog.text
    wav, _ = sf.read(session.wav_path)
    assert len(wav) == session.pushed * 640
    assert tab.stop()[0] == str(session.wav_path)
    tab.on_frame(frame, "tiny")  # the camera again: a new take
    assert tab.session(None) is not session and tab.session(None).take == session.take + 1
    tab.on_unload(None)


def test_live_take_ends_when_the_page_unloads(tmp_path, monkeypatch, caplog):
    import logging

    tab, frame = _tab_with_worker(tmp_path, monkeypatch)
    session, proc = _encoder_once_running(tab, frame)
    with caplog.at_level(logging.INFO, logger="naturall2s.studio.live"):
        tab.on_unload(None)
    assert session.done and not session.worker.is_alive() and proc.poll() is not None
    assert tab.session(None) is None and "the page was closed" in caplog.text
    assert session.wav_path.stat().st_size > 44
    tab.on_unload(None)  # again: nothing to do


def test_two_faces_are_named_in_the_message():
    class TwoFaces(FakeTracker):
        def track(self, frame):
            landmarks, _ = super().track(frame)
            return landmarks, 2

    live = LiveSynth(tiny("naturall2s-noddsp"), tracker=TwoFaces())
    live.push(frames(1)[0])
    assert "2 faces" in live.message
