"""The comparison studio: the request pipeline with test doubles (fast), then end to end through Gradio with
the shipped models (real data; skipped when no checkpoint or no GRID data is present)."""
from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from naturall2s.errors import NaturalL2SError, NoFaceError
from naturall2s.studio import pipeline
from naturall2s.studio.ab_store import VoteStore
from naturall2s.studio.pipeline import REFERENCE, TABLE_HEADERS, Studio, cleanup_cache, grid_transcript

SR = 16000
T = 25  # video frames of the synthetic clip (1 s)


# ------------------------------------------------------------------------------------------ doubles
@dataclass
class FakeSynthesis:
    wav: np.ndarray
    sample_rate: int
    mel: np.ndarray | None
    text: str
    seconds: float
    f0: np.ndarray | None = None
    voicing: np.ndarray | None = None
    coarse: np.ndarray | None = None


class ToneModel:
    """A stand-in for a lip-to-speech model: a tone whose pitch names the system (tests the studio, not a model)."""

    def __init__(self, name: str, hz: float, *, amplitude: float = 0.3, with_f0: bool = True):
        self.name, self.hz, self.amplitude, self.with_f0 = name, hz, amplitude, with_f0
        self.calls = 0

    def synthesize(self, clip):
        self.calls += 1
        n = len(clip.roi) * 640
        t = np.arange(n) / SR
        wav = (self.amplitude * np.sin(2 * np.pi * self.hz * t)).astype(np.float32)
        f0 = np.full(n // 160, self.hz, np.float32) if self.with_f0 else None
        return FakeSynthesis(wav=wav, sample_rate=SR, mel=None, text=f"{self.name} words", seconds=0.01, f0=f0)


class FixedASR:
    name = "fixed"

    def __init__(self, text: str):
        self.text = text

    def transcribe(self, wav, sample_rate):
        assert sample_rate == SR and wav.ndim == 1
        return self.text


class SpectrumEncoder:
    """A stand-in speaker encoder: the normalised magnitude spectrum of the first 4096 samples."""

    name = "spectrum"

    def embed(self, wav, sample_rate):
        spec = np.abs(np.fft.rfft(np.asarray(wav[:4096], np.float64)))[:256]
        return spec / (np.linalg.norm(spec) + 1e-12)


class FakeStudio(Studio):
    """The pipeline with the mouth crop replaced by a synthetic clip (landmarks are tested in their own module)."""

    clip_audio: np.ndarray | None = None

    def decode(self, video_path):
        return SimpleNamespace(path=str(video_path), audio=self.clip_audio)

    def extract(self, video):
        video_path = video if isinstance(video, (str, Path)) else video.path
        if "noface" in Path(video_path).name:
            raise NoFaceError("no face found in the clip")
        rng = np.random.default_rng(0)
        return SimpleNamespace(
            roi=rng.integers(0, 255, (T, 48, 72), dtype=np.uint8),
            lips=np.zeros((T, 40), np.float32),
            audio=self.clip_audio,
            fps=25.0,
            detected=np.ones(T, bool),
            source=str(video_path),
        )


@pytest.fixture
def video_file(tmp_path) -> Path:
    p = tmp_path / "bbaf2n.mp4"  # a GRID name: the reference transcript comes from it
    p.write_bytes(b"not decoded by the fake studio")
    return p


@pytest.fixture
def studio(tmp_path):
    models = {"low": ToneModel("low", 120.0), "high": ToneModel("high", 220.0, with_f0=False)}
    s = FakeStudio(models, asr=FixedASR("bin blue at f two now"), speaker_encoder=SpectrumEncoder(),
                   cache_dir=tmp_path / "cache", write_videos=False)
    t = np.arange(T * 640) / SR
    s.clip_audio = (0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32)
    return s


# ------------------------------------------------------------------------------------------ pipeline
def test_grid_transcript():
    assert grid_transcript("/x/bbaf2n.mp4") == "bin blue at f two now"
    assert grid_transcript("sbbw9a.mp4") is None  # w is not a GRID letter
    assert grid_transcript("holiday.mp4") is None


def test_run_compares_every_system_with_the_clip_reference(studio, video_file):
    seen = []
    result = studio.run(video_file, progress=lambda f, msg: seen.append((f, msg)))
    assert [r.name for r in result.systems] == ["low", "high"]
    assert result.reference_result is not None and result.reference_result.name == REFERENCE
    assert result.reference.audio_source == "the clip's own audio track"
    assert result.reference.text == "bin blue at f two now"
    assert any("removed before synthesis" in n for n in result.notes)
    for r in result.columns():
        assert r.wav_path.is_file() and r.wav_path.parent == result.work_dir
        assert len(r.wav) == T * 640 and r.mel.shape == (80, T * 4)
        assert r.transcript == "bin blue at f two now"
    assert result.system("low").f0_source == "predicted" and result.system("high").f0_source == "tracked"
    high_f0 = result.system("high").f0  # tracked from the 220 Hz tone
    assert high_f0.shape == (T * 4,) and np.median(high_f0[high_f0 > 0]) == pytest.approx(220, rel=0.05)
    assert result.reference.f0 is not None and np.median(result.reference.f0[result.reference.f0 > 0]) == (
        pytest.approx(150, rel=0.05))
    # progress: increasing, every model named, ends at 1
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("low" in m for _, m in seen) and any("high" in m for _, m in seen)
    headers, rows = result.table()
    assert headers == TABLE_HEADERS and [r[0] for r in rows] == ["low", "high", REFERENCE]
    assert rows[0][1] == "low words" and rows[2][1] == ""


def test_every_variant_and_two_more_systems_fill_the_page(video_file, tmp_path):
    """Every variant (units, ltbs and lipvoicer included) and two more systems through the real pipeline and page:
    each column has its audio, mel and lip-read text, the table a row each, and the page has a column slot per
    system (they wrap in the CSS grid of 210 px columns)."""
    from naturall2s.model import VARIANTS, build
    from naturall2s.studio import ui

    tiny = dict(dim=32, n_layers=1, n_heads=2, head_hidden=32, gen_dim=32, gen_intermediate_dim=64, gen_layers=1,
                n_harmonics=16, dropout=0.0)
    own = {"units": {"n_units": 8}, "lipvoicer": {"flow_dim": 16, "flow_intermediate_dim": 32, "flow_layers": 1,
                                                  "sampling_steps": 2, "judge": {"dim": 16, "dilations": [1]}}}
    nets = {v: build(v, **tiny, **own.get(v, {})).eval() for v in VARIANTS}
    nets |= {"units-b": build("units", **tiny, n_units=16).eval(),
             "noddsp-b": build("naturall2s-noddsp", **tiny).eval()}
    assert len(nets) == len(VARIANTS) + 2
    from naturall2s.roi import MouthClip

    class ClipStudio(FakeStudio):  # real models take a MouthClip
        def extract(self, video):
            c = super().extract(video)
            return MouthClip(roi=c.roi, lips=c.lips, audio=c.audio, fps=c.fps, detected=c.detected, source=c.source)

    s = ClipStudio(nets, asr=FixedASR("bin blue at f two now"), speaker_encoder=SpectrumEncoder(),
                   cache_dir=tmp_path / "cache", write_videos=False)
    s.clip_audio = (0.3 * np.sin(2 * np.pi * 150 * np.arange(T * 640) / SR)).astype(np.float32)
    result = s.run(video_file)
    assert [r.name for r in result.systems] == list(nets)
    for r in result.systems:
        assert len(r.wav) == T * 640 and r.mel.shape == (80, T * 4) and np.isfinite(r.wav).all()
    votes = VoteStore(tmp_path / "v.sqlite")
    app = ui.StudioApp(s, examples=[video_file], votes=votes)
    assert app.n_slots == len(nets) + ui.EXTRA_SLOTS + 1 and app.build() is not None
    for _ in range(3):  # the A/B test draws among them all, and stores its votes
        _, _, trial, *_ = app.ab_new_trial(ui.ROTATE, None, progress=_no_progress)
        app.ab_vote(trial, "A", 3, 3)
    assert len(votes.votes()) == 3
    *_, full = list(app.synthesize_ui(str(video_file), None, "", list(nets), progress=_no_progress))
    n = 5 * app.n_slots
    assert [r[0] for r in full[n + 5]["data"]] == [*nets, REFERENCE]
    assert [full[5 * i + 1] for i in range(len(nets) + 1)] == [f"### {name}" for name in [*nets, REFERENCE]]
    assert "minmax(210px, 1fr)" in ui.CSS


def test_run_metrics(studio, video_file):
    pytest.importorskip("naturall2s.metrics")
    result = studio.run(video_file)
    low, ref = result.system("low"), result.system(REFERENCE)
    assert low.metrics["wer"] == 0.0 and low.metrics["cer"] == 0.0  # the ASR double repeats the reference
    assert low.metrics["rtf"] == pytest.approx(0.01 / 1.0, rel=1e-3)
    assert -0.5 <= low.metrics["stoi"] <= 1.0 and low.metrics["pesq_wb"] >= 1.0
    # tones at 120 / 220 Hz against a 150 Hz reference: the F0 error is known in cents
    assert low.metrics["f0_rmse_cents"] == pytest.approx(1200 * np.log2(150 / 120), rel=0.05)
    assert result.system("high").metrics["f0_rmse_cents"] == pytest.approx(1200 * np.log2(220 / 150), rel=0.05)
    assert "stoi" not in ref.metrics and "seconds" not in ref.metrics  # the reference is not scored against itself
    # different tones have nearly orthogonal spectra; the reference audio itself would score 1
    assert -1.0 <= low.metrics["speaker_similarity"] < 0.5
    assert SpectrumEncoder().embed(ref.wav, SR) @ result.reference.embedding == pytest.approx(1.0)


class LoudnessMOS:
    """A stand-in MOS predictor: the RMS level of each clip; records how it was called."""

    name = "rms"

    def __init__(self):
        self.calls = []

    def score(self, wavs, sample_rate):
        self.calls.append((len(wavs), sample_rate))
        return np.array([float(np.sqrt(np.mean(np.square(w)))) for w in wavs])


def test_mos_for_every_column(studio, video_file):
    from naturall2s.studio import ui

    predictor = LoudnessMOS()
    studio.scorer.scorers.mos_predictor = predictor
    result = studio.run(video_file)
    assert predictor.calls == [(1, SR)] * 3  # two systems and the reference, each scored by the scorer
    for r in result.columns():
        assert r.metrics["mos"] == pytest.approx(np.sqrt(np.mean(np.square(r.wav))))
    headers, rows = result.table()
    assert [row[headers.index("MOS")] for row in rows] == [
        round(r.metrics["mos"], 3) for r in result.columns()]
    assert any("predicted by rms" in n for n in result.notes)
    assert "MOS " in ui._column_info(result.system(REFERENCE), scored=True)


def test_run_without_reference(studio, video_file):
    studio.clip_audio = None
    result = studio.run(video_file, systems=["high"], reference_text="  hello world ", metrics=True)
    assert [r.name for r in result.columns()] == ["high"]
    assert result.reference.text == "hello world" and result.reference.text_source == "typed transcript"
    assert any("no reference audio" in n for n in result.notes)


def test_uploaded_reference_wins(studio, video_file, tmp_path):
    from naturall2s.audio import save_audio

    ref = save_audio(tmp_path / "ref.wav", np.zeros(8000, np.float32) + 0.1, SR)
    result = studio.run(video_file, reference_audio=ref, metrics=False)
    assert result.reference.audio_source == "uploaded reference audio"
    assert len(result.reference_result.wav) == 8000


def test_bad_requests_raise_user_errors(studio, video_file, tmp_path):
    with pytest.raises(NaturalL2SError, match="no system selected"):
        studio.run(video_file, systems=[])
    with pytest.raises(NaturalL2SError, match="no video"):
        studio.run(None)
    with pytest.raises(NoFaceError):
        studio.run(tmp_path / "noface.mp4")
    with pytest.raises(NaturalL2SError, match="unknown system"):
        studio.synthesize_wavs(video_file, ["nope"])


def test_a_failing_metric_leaves_a_gap(studio, video_file, monkeypatch):
    metrics = pytest.importorskip("naturall2s.metrics")

    def broken(*args, **kwargs):
        raise RuntimeError("no utterances detected")

    monkeypatch.setattr(metrics, "pesq_wb", broken)
    result = studio.run(video_file, systems=["low"])
    assert result.system("low").metrics["pesq_wb"] is None
    assert result.system("low").metrics["wer"] == 0.0


def test_synthesize_wavs_reuses_earlier_outputs(studio, video_file):
    first = studio.synthesize_wavs(video_file, ["low", "high"])
    calls = {n: m.calls for n, m in studio.models.items()}
    again = studio.synthesize_wavs(video_file, ["high", "low"])
    assert again == first and {n: m.calls for n, m in studio.models.items()} == calls
    for p in first.values():  # once its request folder is cleaned up, it is synthesized again
        p.unlink()
    studio.synthesize_wavs(video_file, ["low"])
    assert studio.models["low"].calls == calls["low"] + 1


def test_cleanup_cache(tmp_path):
    old, new = tmp_path / "req-old", tmp_path / "req-new"
    for d in (old, new):
        d.mkdir()
        (d / "a.wav").write_bytes(b"x")
    keep = tmp_path / "not-a-request"
    keep.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    os.utime(keep, (time.time() - 7200, time.time() - 7200))
    assert cleanup_cache(tmp_path, max_age_s=3600) == 1
    assert not old.exists() and new.exists() and keep.exists()


def test_dub_writes_an_mp4(studio, tmp_path, grid_clip):
    from naturall2s.video import probe

    studio.write_videos = True
    result = studio.run(grid_clip, systems=["low"], metrics=False)
    assert result.roi_video is not None and result.roi_video.stat().st_size > 0
    out = studio.dub(result, "low")
    info = probe(out)
    assert info.has_audio and out.stat().st_size > 0


# ------------------------------------------------------------------------------------------ ui logic
def _no_progress(*args, **kwargs):
    pass


SKIP = {"__type__": "update"}  # gr.skip(): leave every output as it was


def test_ui_render(studio, video_file, tmp_path):
    from naturall2s.studio import ui

    app = ui.StudioApp(studio, examples=[], votes=VoteStore(tmp_path / "v.sqlite"))
    assert app.build() is not None
    n = 5 * app.n_slots
    stages = list(app.synthesize_ui(str(video_file), None, "", ["low", "high"], progress=_no_progress))
    assert len(stages) == 3  # the audio first, then the figures, then the scores
    audio, figures, full = stages
    assert len(audio) == len(figures) == len(full) == n + 13
    assert audio[2].endswith("low.wav") and "scoring" in audio[3] and audio[n + 5]["data"] == []
    assert figures[4] is not None and figures[2] == SKIP and figures[n + 5] == SKIP  # a mel figure, nothing else
    assert full[2] == audio[2] and "ASR heard" in full[3] and full[4] == SKIP  # the figures stay
    assert full[n + 10] != SKIP  # "high" (the focus) has no predicted F0: its view is redrawn with the tracked one
    table = full[n + 5]
    assert table["headers"] == TABLE_HEADERS and [r[0] for r in table["data"]] == ["low", "high", REFERENCE]
    assert full[n + 8].interactive is True  # "Make dubbed video" becomes active with a result
    assert figures[n + 10].constructor_args["visible"] is True  # the focus view


def test_ui_user_errors_leave_outputs_as_they_were(studio, video_file, tmp_path, recwarn):
    """No video, no face, no preference, no second system: one warning each, every output skipped, no exception
    (an exception would put red "Error" badges on the outputs)."""
    from naturall2s.studio import ui

    votes = VoteStore(tmp_path / "v.sqlite")
    app = ui.StudioApp(studio, examples=[video_file], votes=votes)
    assert list(app.synthesize_ui(None, None, "", ["low"], progress=_no_progress)) == [SKIP]
    assert list(app.synthesize_ui(str(tmp_path / "noface.mp4"), None, "", ["low"], progress=_no_progress)) == [SKIP]
    assert list(app.synthesize_ui(str(video_file), None, "", [], progress=_no_progress)) == [SKIP]
    assert app.ab_new_trial(ui.LAST_UPLOAD, None, progress=_no_progress) == SKIP
    trial = app.ab_new_trial(video_file.name, None, progress=_no_progress)[2]
    assert app.ab_vote(trial, None, None, None) == SKIP  # no preference chosen
    assert votes.votes() == []
    assert app.dub_ui(None, "low") == SKIP
    messages = [str(w.message) for w in recwarn.list]
    for expected in ("no video", "no face", "no system selected", "no upload yet", "choose A, B", "synthesize a clip first"):
        assert sum(expected in m for m in messages) == 1, (expected, messages)


def test_ui_api_errors_raise(studio, tmp_path):
    import gradio as gr

    from naturall2s.studio import ui

    app = ui.StudioApp(studio, examples=[], votes=VoteStore(tmp_path / "v.sqlite"))
    app.build()
    with pytest.raises(gr.Error, match="no face"):
        list(app.synthesize_api(str(tmp_path / "noface.mp4"), "", progress=_no_progress))


def test_ui_api_serves_a_system_added_while_serving(studio, video_file, tmp_path):
    import gradio as gr

    from naturall2s.studio import ui

    app = ui.StudioApp(studio, examples=[], votes=VoteStore(tmp_path / "v.sqlite"))
    app.build()
    studio.add_model("added", ToneModel("added", 300.0))  # after the endpoints were built, as `adapt` does
    messages = list(app.synthesize_system_api(str(video_file), "added", "", progress=_no_progress))
    audio, table = messages[-1]
    assert messages[0][1] is None and Path(audio).is_file()  # the audio first, then its table
    assert {r[0] for r in table["data"]} == {"added", REFERENCE}
    with pytest.raises(gr.Error, match="unknown system"):
        list(app.synthesize_system_api(str(video_file), "nobody", "", progress=_no_progress))


def test_ui_ab_round_trip(studio, video_file, tmp_path):
    from naturall2s.studio import ui

    votes = VoteStore(tmp_path / "v.sqlite")
    app = ui.StudioApp(studio, examples=[video_file], votes=votes)
    a_path, b_path, trial, *_ = app.ab_new_trial(ui.ROTATE, None, progress=_no_progress)
    assert {trial["a"], trial["b"]} == {"low", "high"} and Path(a_path).is_file() and a_path != b_path
    assert "low" not in a_path + b_path and "high" not in a_path + b_path  # blind: neutral file names
    trial2, reveal, pairs, mos = app.ab_vote(trial, "A", 4, None)
    assert trial2["voted"] and trial["a"] in reveal
    (v,) = votes.votes()
    assert (v.system_a, v.preference, v.score_a, v.score_b) == (trial["a"], "A", 4, None)
    assert pairs["data"][0][:2] == ["high", "low"] and mos["data"][0][4] == 1
    assert app.ab_vote(trial2, "B", None, None) == SKIP  # already voted: a warning, nothing stored
    assert len(votes.votes()) == 1
    assert Path(app.ab_export()).read_text().count("\n") == 2


def test_ab_rotation_is_balanced():
    from collections import Counter
    from itertools import combinations

    from naturall2s.studio.ab_store import PairRotation, Vote

    systems, clips = ["a", "b", "c", "d"], ["x.mp4", "y.mp4", "z.mp4"]
    old = [Vote(i, 0.0, "x.mp4", "a", "b", "A", None, None, "") for i in range(2)]  # a-b was heard twice before
    rot = PairRotation(old, seed=1)
    trials = [rot.next(systems, clips) for _ in range(6 * 3 * 2 - 2)]
    pairs = Counter(tuple(sorted((a, b))) for _, a, b in trials)
    assert pairs[("a", "b")] == 4 and all(pairs[p] == 6 for p in combinations(systems, 2) if p != ("a", "b"))
    per_clip = Counter((tuple(sorted((a, b))), c) for c, a, b in trials)
    assert all(per_clip[(p, c)] == 2 for p in combinations(systems, 2) for c in clips if p != ("a", "b"))
    assert 0.3 < sum(a < b for _, a, b in trials) / len(trials) < 0.7  # A/B order random
    # a system added while serving is heard first until it has caught up
    assert all("e" in (a, b) for _, a, b in (rot.next([*systems, "e"], clips) for _ in range(4)))


def test_host_and_port_come_from_gradios_environment(monkeypatch):
    import app

    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    args = app.parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 7860)
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    args = app.parse_args([])
    assert (args.host, args.port) == ("0.0.0.0", 7999)
    args = app.parse_args(["--host", "127.0.0.1", "--port", "8001"])  # explicit flags win
    assert (args.host, args.port) == ("127.0.0.1", 8001)


def test_serve_binds_where_the_environment_says(studio, tmp_path, monkeypatch, capsys):
    import urllib.request

    from naturall2s.studio import ui

    port = _free_port()
    monkeypatch.setenv("GRADIO_SERVER_PORT", str(port))
    demo, url = ui.serve(studio, votes=VoteStore(tmp_path / "v.sqlite"), prevent_thread_lock=True)
    try:
        assert f":{port}" in url
        assert urllib.request.urlopen(url, timeout=30).status == 200
    finally:
        demo.close()
    out = capsys.readouterr().out
    assert "--share" in out and "share=True" not in out


SHIPPED_EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_a_fresh_clone_has_examples_to_try(tmp_path):
    """examples/ ships 2-3 short GRID clips with their own sound (under 1 MB in all, credited beside them); the
    app's default example folders find them with no ../shared data."""
    import app
    from naturall2s.studio.ui import find_examples_in
    from naturall2s.video import probe

    clips = sorted(SHIPPED_EXAMPLES.glob("*.mp4"))
    assert 2 <= len(clips) <= 3 and sum(p.stat().st_size for p in clips) < 1_000_000
    for p in clips:
        info = probe(p)
        assert info.has_audio and info.duration <= 5.0 and grid_transcript(p)  # the name spells the sentence
    credit = (SHIPPED_EXAMPLES / "README.md").read_text()
    assert "CC BY 4.0" in credit and "Cooke" in credit and all(p.name in credit for p in clips)
    assert app.DEFAULT_EXAMPLES[0] == SHIPPED_EXAMPLES
    found = find_examples_in([SHIPPED_EXAMPLES, tmp_path / "no-shared-data"])
    assert [p.name for p in found] == [p.name for p in sorted(clips, key=lambda p: p.name)]


def test_the_shipped_examples_are_unmodified_s1_test_clips(grid_root, grid_test_names):
    for p in SHIPPED_EXAMPLES.glob("*.mp4"):
        assert p.stem in grid_test_names, f"{p.name} is not in the s1 test split"
        assert p.read_bytes() == (grid_root / "s1" / p.name).read_bytes()


def test_the_ab_tab_works_at_once_on_the_shipped_examples(studio, tmp_path):
    from naturall2s.studio import ui

    examples = ui.find_examples_in([SHIPPED_EXAMPLES])
    app = ui.StudioApp(studio, examples=examples, votes=VoteStore(tmp_path / "v.sqlite"))
    app.build()
    a, b, trial, status, *_ = app.ab_new_trial(ui.ROTATE, None, progress=_no_progress)  # no upload first
    assert Path(a).is_file() and Path(b).is_file() and trial["clip"] in {p.name for p in examples}


def test_find_examples(tmp_path):
    from naturall2s.studio.ui import find_examples

    for n in ("b.mp4", "a.webm", "notes.txt"):
        (tmp_path / n).write_bytes(b"")
    assert [p.name for p in find_examples(tmp_path)] == ["a.webm", "b.mp4"]
    assert find_examples(tmp_path / "missing") == [] and find_examples(None) == []


# ------------------------------------------------------------------------------------------ end to end
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def real_studio(tmp_path_factory):
    import naturall2s

    names = naturall2s.available_models()
    if not names:
        pytest.skip("no shipped checkpoints in checkpoints/ yet (naturall2s.available_models() is empty)")
    return pipeline.load_studio(names, cache_dir=tmp_path_factory.mktemp("studio-cache"))


@pytest.fixture(scope="session")
def served(real_studio, tmp_path_factory):
    from naturall2s.studio import ui

    votes_path = tmp_path_factory.mktemp("votes") / "votes.sqlite"
    examples = ui.find_examples_in([SHIPPED_EXAMPLES])  # what a fresh clone has
    demo, url = ui.serve(real_studio, votes=VoteStore(votes_path), examples=examples, port=_free_port(),
                         prevent_thread_lock=True, quiet=True)
    yield SimpleNamespace(url=url, votes_path=votes_path, examples=examples, studio=real_studio)
    demo.close()


@pytest.fixture(scope="session")
def client(served):
    from gradio_client import Client

    return Client(served.url, verbose=False)


def test_e2e_synthesize_grid_clip(served, client, grid_clip):
    from gradio_client import handle_file

    *audios, table = client.predict(handle_file(str(grid_clip)), "", api_name="/synthesize")
    names = served.studio.system_names
    assert len(audios) == len(names)
    import soundfile as sf

    for path in audios:
        wav, sr = sf.read(path)
        assert sr == SR and abs(len(wav) - 3 * SR) <= 640 and np.abs(wav).max() > 0
    assert table["headers"] == TABLE_HEADERS
    rows = {r[0]: dict(zip(TABLE_HEADERS, r)) for r in table["data"]}
    assert set(rows) == {*names, REFERENCE}
    for name in names:
        assert rows[name]["RTF"] is not None and rows[name]["Model time (s)"] > 0
        assert 1.0 <= rows[name]["MOS"] < rows[REFERENCE]["MOS"]  # the real speech sounds the most natural
    assert rows[REFERENCE]["MOS"] > 3.0


def test_e2e_synthesize_one_system(served, client, grid_clip):
    from gradio_client import handle_file

    names = client.predict(api_name="/systems")
    assert names == served.studio.system_names
    audio, table = client.predict(handle_file(str(grid_clip)), names[-1], "", api_name="/synthesize_system")
    import soundfile as sf

    wav, sr = sf.read(audio)
    assert sr == SR and np.abs(wav).max() > 0
    assert {r[0] for r in table["data"]} == {names[-1], REFERENCE}


def test_e2e_no_face_is_an_error_and_the_server_keeps_serving(served, client, tmp_path, grid_clip):
    from gradio_client import handle_file

    from naturall2s.video import ffmpeg_exe

    noise = tmp_path / "noise.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "nullsrc=s=160x120:d=1:r=25",
                    "-vf", "geq=random(1)*255:128:128", "-pix_fmt", "yuv420p", str(noise)], check=True)
    with pytest.raises(Exception) as no_face:
        client.predict(handle_file(str(noise)), "", api_name="/synthesize")
    message = str(no_face.value).lower()
    assert "face" in message and "internal error" not in message  # the NoFaceError's own message
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video")
    with pytest.raises(Exception) as not_video:
        client.predict(handle_file(str(text)), "", api_name="/synthesize")
    assert "video" in str(not_video.value).lower() and "internal error" not in str(not_video.value).lower()
    assert client.predict(api_name="/ab_results") is not None  # still serving


def test_e2e_ab_vote_round_trip(served, client):
    names = served.studio.system_names
    if len(names) < 2 or not served.examples:
        pytest.skip("the A/B test needs two models and an example clip")
    a_path, b_path, status, *_ = client.predict(served.examples[0].name, api_name="/ab_new_pair")
    assert Path(a_path).is_file() and Path(b_path).is_file()
    assert not any(n in Path(a_path).name + Path(b_path).name for n in names)  # names stay hidden
    reveal, pairs, mos = client.predict("B", 3, 4, api_name="/ab_vote")
    assert "was" in reveal
    (v,) = VoteStore(served.votes_path).votes()
    assert v.preference == "B" and (v.score_a, v.score_b) == (3, 4) and {v.system_a, v.system_b} <= set(names)
    assert pairs["data"][0][4] == 0 and sum(pairs["data"][0][2:4]) == 1


def test_e2e_two_syntheses_of_one_clip_are_identical(real_studio, grid_clip):
    """The studio passes the models' fixed default seed: the same clip gives the same waveform every time (and the
    same as the Python API)."""
    import naturall2s

    first = real_studio.run(grid_clip, metrics=False)
    second = real_studio.run(grid_clip, metrics=False)
    for a, b in zip(first.systems, second.systems):
        assert np.array_equal(a.wav, b.wav), f"{a.name} differs between two runs"
    name = first.systems[-1].name
    api = naturall2s.load_model(name).synthesize(first.clip)
    assert np.array_equal(np.asarray(api.wav, np.float32).reshape(-1), first.system(name).wav)


def test_the_out_of_domain_warning_comes_with_the_first_audio_and_judges_each_system_by_its_own_data(
        studio, video_file, tmp_path, monkeypatch):
    """The studio shows naturall2s.domain's assessment of the clip with the audio (before the scores): each system
    judged against its own training data, the message worded for the clip, the evidence (crossed signals in bold)
    of the systems it is unlike; nothing when every system has the clip in its domain. (The signals themselves are
    tested in test_domain.)"""
    from naturall2s import domain
    from naturall2s.studio import ui

    calls = []

    def assess(clip, *, model, reference_wav=None, encoder=None, voice=None, synthesis=None):
        calls.append((model.name, voice))
        if model.name == "high":
            return domain.DomainReport(True, "", {"face_distance": 0.9, "face_distance/threshold": 1.75}, [])
        return domain.DomainReport(False, "", {"face_distance": 9.5, "face_distance/threshold": 1.75,
                                               "lipread_confidence": 0.99, "audio_used": 1.0}, ["face_distance"])

    voices = []
    monkeypatch.setattr(domain, "assess", assess)
    monkeypatch.setattr(domain, "voice_summary", lambda wav, encoder=None: voices.append(1) or ("emb", 150.0))
    app = ui.StudioApp(studio, examples=[], votes=VoteStore(tmp_path / "v.sqlite"))
    audio, figures, full = app.synthesize_ui(str(video_file), None, "", ["high", "low"], progress=_no_progress)
    warning = audio[5 * app.n_slots + 1]  # with the first audio
    assert "scoring" in audio[3] and warning == full[5 * app.n_slots + 1]
    assert "This clip is outside what 1 of the 2 systems were trained on" in warning
    assert "Its face is unlike the training data of low" in warning and "It fits what high was trained on" in warning
    assert "model " not in warning  # worded for the clip, not for one model
    assert "**face_distance 9.500 (threshold 1.750)**" in warning and "lipread_confidence 0.990" in warning
    assert "audio_used" not in warning and "face_distance 0.900" not in warning  # in-domain evidence not shown
    assert sorted(name for name, _ in calls) == ["high", "low"] and voices == [1]  # the voice measured once
    assert all(voice == ("emb", 150.0) for _, voice in calls)
    monkeypatch.setattr(domain, "assess", lambda clip, **kw: domain.DomainReport(True, "", {}, []))
    clip = SimpleNamespace(audio=None)
    assert ui.domain_markdown(domain.assess_systems(clip, models={"a": studio.models["low"]})) == ""
    assert ui.domain_markdown(None) == ""


def test_scoring_in_worker_processes_matches_scoring_here():
    """ProcessScorer (what the app uses) gives the same scores as LocalScorer: same function, other process."""
    from naturall2s.audio import f0_voicing
    from naturall2s.studio.scoring import LocalScorer, ProcessScorer, Scorers, ScoringReference

    t = np.arange(SR) / SR
    ref_wav = (0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32)
    out_wav = (0.3 * np.sin(2 * np.pi * 165 * t)).astype(np.float32)
    ref = ScoringReference(wav=ref_wav, text="bin blue", f0=f0_voicing(ref_wav)[0])
    local = LocalScorer(Scorers())
    workers = ProcessScorer(workers=1, asr=None, speaker_encoder=None, mos=None)
    try:
        here = local.submit(out_wav, SR, ref).result()
        there = workers.submit(out_wav, SR, ref).result(timeout=120)
    finally:
        local.close()
        workers.close()
    assert here.metrics.keys() == there.metrics.keys() >= {"stoi", "estoi", "pesq_nb", "pesq_wb", "f0_rmse_cents"}
    for k in here.metrics:
        assert there.metrics[k] == pytest.approx(here.metrics[k], nan_ok=True)
    assert there.metrics["f0_rmse_cents"] == pytest.approx(1200 * np.log2(165 / 150), rel=0.05)
    assert np.array_equal(here.f0, there.f0)


def test_scoring_workers_end_when_their_server_is_killed(tmp_path):
    """A killed server cannot shut its pool down: its scoring workers notice and exit instead of lingering."""
    import signal
    import sys

    script = tmp_path / "server.py"
    script.write_text(
        "import sys, time\n"
        "from naturall2s.studio.scoring import ProcessScorer\n"
        "if __name__ == '__main__':\n"
        "    s = ProcessScorer(workers=1, asr=None, speaker_encoder=None, mos=None)\n"
        "    print(*s._pool._processes, flush=True)\n"
        "    time.sleep(600)\n")
    repo = Path(__file__).resolve().parents[1]
    server = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=repo,
                              env={**os.environ, "PYTHONPATH": str(repo)})
    try:
        worker = int(server.stdout.readline().split()[0])
        os.kill(worker, 0)  # alive while the server is
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
    status = Path(f"/proc/{worker}/status")
    deadline = time.time() + 30
    while time.time() < deadline:
        try:  # gone, or a zombie waiting for whoever adopted it
            if "\tZ" in status.read_text().split("State:")[1].splitlines()[0]:
                return
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return
        time.sleep(0.2)
    os.kill(worker, signal.SIGKILL)
    pytest.fail(f"scoring worker {worker} outlived its killed server")
