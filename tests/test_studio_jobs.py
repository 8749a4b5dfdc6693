"""The studio's enrollment job store: state in SQLite that survives a reload and a restart; one job at a time.

The adaptation itself is replaced by small functions here (``naturall2s.adapt`` has its own tests)."""
from __future__ import annotations

import threading

import pytest

from naturall2s.errors import NaturalL2SError
from naturall2s.studio.jobs import JobRunner, JobStore


def fake_adapt(inputs, progress):
    """Writes a 'checkpoint' after reporting progress, like naturall2s.adapt.adapt does."""
    for i in range(3):
        progress((i + 1) / 3, f"step {i + 1}/3: held-out log-mel L1 {1.0 - 0.1 * i:.2f}")
    out = inputs["out"] + "/" + inputs["name"] + ".safetensors"
    with open(out, "w") as f:
        f.write("weights")
    return out, {"table": "| metric | base | adapted |\n|---|---|---|\n| ESTOI | 0.10 | 0.30 |"}


def test_job_state_survives_a_restart(tmp_path):
    db = tmp_path / "jobs.sqlite"
    served = []
    runner = JobRunner(JobStore(db), fake_adapt, on_done=served.append)
    job = runner.submit(name="alice", inputs={"name": "alice", "out": str(tmp_path)})
    assert job.state == "queued" and job.active
    assert runner.wait_idle(30)
    runner.stop(5)
    assert [j.name for j in served] == ["alice"]

    again = JobStore(db)  # a new process: only the database is shared
    done = again.get(job.id)
    assert done.state == "done" and done.progress == 1.0 and done.result.endswith("alice.safetensors")
    assert "ESTOI" in done.report["table"] and any("step 3/3" in line for line in done.log)
    assert again.latest().id == job.id


def test_a_job_running_when_the_server_stopped_is_interrupted_and_queued_ones_resume(tmp_path):
    db = tmp_path / "jobs.sqlite"
    store = JobStore(db)
    crashed = store.create(kind="adapt", name="bob", inputs={"name": "bob", "out": str(tmp_path)})
    store.set_state(crashed.id, "running", progress=0.4, message="step 4/10")
    waiting = store.create(kind="adapt", name="carol", inputs={"name": "carol", "out": str(tmp_path)})

    runner = JobRunner(JobStore(db), fake_adapt)  # the restart
    assert runner.wait_idle(30)
    runner.stop(5)
    after = JobStore(db)
    bob, carol = after.get(crashed.id), after.get(waiting.id)
    assert bob.state == "interrupted" and "stopped" in bob.message and bob.progress == pytest.approx(0.4)
    assert carol.state == "done" and carol.result.endswith("carol.safetensors")


def test_one_job_at_a_time_and_failures_are_kept(tmp_path):
    release = threading.Event()

    def slow(inputs, progress):
        progress(0.5, "halfway")
        release.wait(10)
        raise NaturalL2SError("only 2 usable clips (at least 3 needed): c.mp4 has no face")

    runner = JobRunner(JobStore(tmp_path / "jobs.sqlite"), slow)
    first = runner.submit(name="dave", inputs={})
    with pytest.raises(NaturalL2SError, match="one job at a time"):
        runner.submit(name="erin", inputs={})
    release.set()
    assert runner.wait_idle(30)
    failed = runner.store.get(first.id)
    assert failed.state == "failed" and "no face" in failed.message
    second = runner.submit(name="erin", inputs={})  # the next one may start now
    assert runner.wait_idle(30)
    assert runner.store.get(second.id).state == "failed"
    runner.stop(5)


def test_the_tab_queues_a_job_and_shows_it(tmp_path, monkeypatch):
    """The "Add a speaker" callbacks: a user error is a warning with outputs untouched; a real start queues the
    job with the clips copied beside the database; the poll shows its state and the before/after table."""
    from tests.test_studio import FakeStudio, ToneModel

    from naturall2s.studio import ui
    from naturall2s.studio.ab_store import VoteStore

    clip = tmp_path / "take1.mp4"
    clip.write_bytes(b"video")
    seen = {}

    def work(inputs, progress):
        seen.update(inputs)
        return fake_adapt({**inputs, "out": str(tmp_path)}, progress)

    studio = FakeStudio({"low": ToneModel("low", 120.0)}, cache_dir=tmp_path / "cache", write_videos=False)
    runner = JobRunner(JobStore(tmp_path / "jobs" / "jobs.sqlite"), work,
                       on_done=lambda job: studio.add_model(job.name, ToneModel(job.name, 300.0)))
    app = ui.StudioApp(studio, examples=[], votes=VoteStore(tmp_path / "v.sqlite"), jobs=runner)
    app.build()
    with pytest.warns(UserWarning, match="give the new speaker a name"):
        assert app.start_job_ui("", "low", None, [str(clip)], []) == {"__type__": "update"}
    status, *_ = app.start_job_ui("alice", "low", None, [str(clip)], [])
    assert "alice" in status
    assert runner.wait_idle(30)
    runner.stop(5)
    assert seen["base"] == "low" and len(seen["clips"]) == 1 and seen["clips"][0].startswith(str(tmp_path / "jobs"))
    status, log, table, button = app.job_ui()
    assert "done" in status and "step 3/3" in log and "ESTOI" in table and button.interactive is True
    boxes, cards, known = app.refresh_systems(["low"], ["low"])
    assert known == ["low", "alice"] and boxes.value == ["low", "alice"] and "alice" in cards


def test_webcam_takes_are_checked_one_sentence_after_another(tmp_path, monkeypatch):
    from tests.test_studio import FakeStudio, ToneModel

    from naturall2s.studio import enroll, ui
    from naturall2s.studio.ab_store import VoteStore

    verdicts = iter([(False, "not usable: no speech heard (face in 100% of frames, speech in 0% of the audio)"),
                     (True, "kept: face in 100% of frames, speech in 80% of the audio")])
    asked = []
    monkeypatch.setattr(enroll, "check_take", lambda path, *, sentence: (asked.append(sentence), next(verdicts))[1])
    studio = FakeStudio({"low": ToneModel("low", 120.0)}, cache_dir=tmp_path / "cache", write_videos=False)
    runner = JobRunner(JobStore(tmp_path / "jobs.sqlite"), fake_adapt, start=False)
    app = ui.StudioApp(studio, examples=[], votes=VoteStore(tmp_path / "v.sqlite"), jobs=runner)
    take = tmp_path / "take.webm"
    take.write_bytes(b"video")
    with pytest.warns(UserWarning, match="no speech heard.*record it again"):
        assert app.check_take_ui(str(take), 0, []) == {"__type__": "update"}  # refused: nothing moves on
    takes, index, sentence, kept, cleared = app.check_take_ui(str(take), 0, [])
    assert takes == [str(take)] and index == 1 and app.sentences[1] in sentence and "1 take" in kept
    assert cleared is None and asked == [app.sentences[0]] * 2
    words = [s.split() for s in enroll.sentences_to_read()]
    assert len(words) == enroll.N_SENTENCES and all(len(w) == 6 for w in words)


def test_the_start_button_is_off_while_a_job_runs_and_warnings_are_not_called_done(tmp_path):
    from tests.test_studio import FakeStudio, ToneModel

    from naturall2s.studio import ui
    from naturall2s.studio.ab_store import VoteStore

    release = threading.Event()

    def work(inputs, progress):
        progress(0.5, "training step 21/200, 9.0 s/step, about 26:51 left")
        release.wait(30)
        return None, {"table": "t", "warnings": ["cut short by the time limit: trained 21 of 200 planned steps"]}

    studio = FakeStudio({"low": ToneModel("low", 120.0)}, cache_dir=tmp_path / "cache", write_videos=False)
    runner = JobRunner(JobStore(tmp_path / "jobs.sqlite"), work)
    app = ui.StudioApp(studio, examples=[], votes=VoteStore(tmp_path / "v.sqlite"), jobs=runner)
    clip = tmp_path / "take.mp4"
    clip.write_bytes(b"video")
    app.start_job_ui("alice", "low", 5, [str(clip)], [])
    for _ in range(200):
        status, _, _, button = app.job_ui()
        if "21/200" in status:
            break
        threading.Event().wait(0.05)
    assert button.interactive is False and "about 26:51 left" in status
    release.set()
    assert runner.wait_idle(30)
    runner.stop(5)
    status, _, _, button = app.job_ui()
    assert button.interactive is True
    assert "finished with warnings" in status and "cut short by the time limit" in status
    assert ": done" not in status


def test_reviewed_transcripts_become_sidecars_and_unticked_clips_stay_out(tmp_path):
    from tests.test_studio import FakeStudio, ToneModel

    from naturall2s.studio import enroll, ui
    from naturall2s.studio.ab_store import VoteStore

    clips = []
    for n in ("a", "b", "c"):
        clips.append(tmp_path / f"{n}.mp4")
        clips[-1].write_bytes(b"video")
    seen = {}
    runner = JobRunner(JobStore(tmp_path / "jobs" / "jobs.sqlite"), lambda inputs, p: (seen.update(inputs), (None, {}))[1])
    studio = FakeStudio({"low": ToneModel("low", 120.0)}, cache_dir=tmp_path / "cache", write_videos=False)
    app = ui.StudioApp(studio, examples=[], votes=VoteStore(tmp_path / "v.sqlite"), jobs=runner)
    paths = [str(p) for p in clips]
    rows = [["a.mp4", "bin blue at g two now", 0.73, True, "ok"],  # corrected by the person (ASR heard "j")
            ["b.mp4", "bin white with y two now", 0.26, False, "refused: ..."],  # left out
            ["c.mp4", "hello there", 0.0, False, "refused: ..."]]
    with pytest.warns(UserWarning, match="not a GRID sentence.*untick Use"):
        app.start_job_ui("alice", "low", 5, paths, [], [*rows[:2], [*rows[2][:3], True, ""]], paths)
    app.start_job_ui("alice", "low", 5, paths, [], {"headers": enroll.REVIEW_HEADERS, "data": rows}, paths)
    assert runner.wait_idle(30)
    runner.stop(5)
    stashed = [p for p in seen["clips"]]
    assert len(stashed) == 1 and stashed[0].endswith("_a.mp4")
    assert open(stashed[0][:-4] + ".txt").read() == "bin blue at g two now\n"
    with pytest.raises(NaturalL2SError, match="does not match"):
        enroll.reviewed_clips(paths[:2], rows)


def test_the_transcript_review_accepts_grid_speech_and_refuses_other_speech(wild_clips):
    """Real clips through the page's transcript check: a shipped GRID example is heard right and ticked; ordinary
    speech (the in-the-wild clips, to which the grammar still fits some GRID sentence) is refused with the reason."""
    from pathlib import Path

    from naturall2s.grid import name_transcript
    from naturall2s.studio import enroll

    example = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.mp4"))[0]
    name, text, confidence, use, check = enroll.review_row(example)
    assert (name, text, use, check) == (example.name, name_transcript(example.stem), True, "ok") and confidence >= 0.5
    for clip in wild_clips:
        name, text, confidence, use, check = enroll.review_row(clip)
        assert use is False and confidence < 0.5 and check.startswith("refused: the recogniser is unsure"), check
