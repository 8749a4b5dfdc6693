"""Adding a speaker from the studio: the sentences to read, checking a take, and the job's work function.

The work itself is :func:`naturall2s.adapt.adapt` (the ``adapt`` command); this module adapts it to the studio's
:class:`~naturall2s.studio.jobs.JobRunner` (``work(inputs, progress) -> (checkpoint, report)``) and keeps the
clips of a job in its own folder, so a queued job still has them after Gradio cleaned its upload cache or the
server restarted.
"""
from __future__ import annotations

import random
import shutil
from pathlib import Path

from naturall2s.errors import NaturalL2SError

REVIEW_HEADERS = ["Clip", "Transcript (correct it here)", "Confidence", "Use", "Check"]
N_SENTENCES = 20  # sentences offered for webcam takes (read one after another)
SENTENCE_SEED = 18
DEFAULT_BASE = "naturall2s"


def sentences_to_read(n: int = N_SENTENCES, *, seed: int = SENTENCE_SEED) -> list[str]:
    """``n`` GRID sentences (command colour preposition letter digit adverb), a fixed draw, every slot word varied."""
    from naturall2s.grid import SLOT_CODES

    rng = random.Random(seed)
    slots = [sorted(set(words.values())) for words in SLOT_CODES.values()]
    return [" ".join(rng.choice(words) for words in slots) for _ in range(n)]


def adaptation_available() -> str | None:
    """None when :mod:`naturall2s.adapt` is installed, else why the tab cannot add a speaker."""
    try:
        import naturall2s.adapt  # noqa: F401
    except ImportError as e:
        return f"speaker adaptation is not available in this installation ({e})"
    return None


def check_take(path: str | Path, *, sentence: str) -> tuple[bool, str]:
    """(usable, what was found) for one webcam take of ``sentence``: a face, speech, the sentence aligned to the
    audio. A usable take gets the sentence as its sidecar transcript (``<take>.txt``, which adapt reads)."""
    from naturall2s.adapt import check_clip

    c = check_clip(path, transcript=sentence)
    found = f"face in {c.face:.0%} of frames, speech in {c.speech:.0%} of the audio"
    if not c.ok:
        return False, f"not usable: {c.reason} ({found})"
    Path(path).with_suffix(".txt").write_text(sentence + "\n")
    return True, f"kept: {found}"


def review_row(path: str | Path) -> list:
    """One row of the transcript review (:data:`REVIEW_HEADERS`) for an uploaded clip: what the offline ASR heard
    in its own audio under the GRID grammar, with its confidence; "Use" ticked only when the transcript is
    usable as it is (:func:`naturall2s.adapt.transcript_problem`), else "Check" says why not. Never raises."""
    from naturall2s.adapt import recognise, transcript_problem
    from naturall2s.audio import SAMPLE_RATE
    from naturall2s.video import read_audio_track

    name = Path(path).name
    try:
        wav = read_audio_track(path, sample_rate=SAMPLE_RATE)
    except NaturalL2SError as e:
        return [name, "", None, False, f"refused: {e}"]
    if wav is None or not wav.size:
        return [name, "", None, False, "refused: it has no sound (the voice and the words come from it)"]
    text, confidence = recognise(wav, SAMPLE_RATE)
    problem = transcript_problem(text, confidence)
    return [name, text, round(float(confidence), 2), problem is None,
            "ok" if problem is None else f"refused: {problem}; correct the transcript and tick Use, or leave it out"]


def reviewed_clips(paths: list[str], rows: list[list]) -> dict[str, str]:
    """{clip path: transcript} of the review rows ticked "Use" (rows in the order of ``paths``); NaturalL2SError
    when a ticked transcript is not a GRID sentence."""
    from naturall2s.grid import is_grid_sentence

    if len(rows) != len(paths):
        raise NaturalL2SError("the transcript table does not match the uploaded clips: check them again")
    out = {}
    for path, row in zip(paths, rows):
        name, text, _, use = row[:4]
        if not _ticked(use):
            continue
        text = " ".join(str(text or "").lower().split())
        if not is_grid_sentence(text):
            raise NaturalL2SError(f"{name}: “{text}” is not a GRID sentence (command colour preposition letter "
                                  "digit adverb): correct it, or untick Use to leave the clip out")
        out[path] = text
    return out


def _ticked(value) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


def stash_clips(paths: list[str | Path], folder: Path, *, transcripts: dict | None = None) -> list[str]:
    """Copy the clips into ``folder`` (numbered, extensions kept; sidecar transcripts ``.txt`` alongside: the one in
    ``transcripts`` (path -> sentence, checked by a person), else the clip's own)."""
    folder.mkdir(parents=True, exist_ok=True)
    transcripts = transcripts or {}
    out = []
    for i, p in enumerate(paths):
        given = transcripts.get(str(p))
        p = Path(p)
        if not p.is_file():
            raise NaturalL2SError(f"clip not found: {p.name}")
        dest = folder / f"clip{i:03d}_{p.stem[:40]}{p.suffix.lower()}"
        shutil.copyfile(p, dest)
        if given:
            dest.with_suffix(".txt").write_text(given + "\n")
        elif (txt := p.with_suffix(".txt")).is_file():
            shutil.copyfile(txt, dest.with_suffix(".txt"))
        out.append(str(dest))
    return out


def adapt_work(inputs: dict, progress) -> tuple[str, dict]:
    """The job: ``adapt(inputs["clips"], name=..., base=..., minutes=...)``; the report holds the held-out
    before/after table (markdown) and the :func:`naturall2s.adapt.verdict` warnings (cut short, worse than its
    base, optimistic scores) read back from the written checkpoint."""
    from naturall2s.adapt import adapt, heldout_table, verdict
    from naturall2s.checkpoints import read_metadata

    path = adapt(inputs["clips"], name=inputs["name"], base=inputs.get("base") or DEFAULT_BASE,
                 minutes=inputs.get("minutes"), progress=progress, verbose=False)
    info = read_metadata(path)["info"]
    report = {"table": heldout_table(info), "warnings": verdict(info)} if "adapt" in info else {}
    return str(path), report


def serve_when_done(studio):
    """A JobRunner ``on_done`` callback: load the job's checkpoint and add it to ``studio`` under the job's name."""

    def on_done(job) -> None:
        import naturall2s

        studio.add_model(job.name, naturall2s.load_model(job.result))

    return on_done
