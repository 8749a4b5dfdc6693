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


def stash_clips(paths: list[str | Path], folder: Path) -> list[str]:
    """Copy the clips into ``folder`` (numbered, extensions kept; sidecar transcripts ``.txt`` alongside)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, p in enumerate(paths):
        p = Path(p)
        if not p.is_file():
            raise NaturalL2SError(f"clip not found: {p.name}")
        dest = folder / f"clip{i:03d}_{p.stem[:40]}{p.suffix.lower()}"
        shutil.copyfile(p, dest)
        if (txt := p.with_suffix(".txt")).is_file():
            shutil.copyfile(txt, dest.with_suffix(".txt"))
        out.append(str(dest))
    return out


def adapt_work(inputs: dict, progress) -> tuple[str, dict]:
    """The job: ``adapt(inputs["clips"], name=..., base=..., minutes=...)``; the report holds the held-out
    before/after table (markdown) read back from the written checkpoint."""
    from naturall2s.adapt import adapt, heldout_table
    from naturall2s.checkpoints import read_metadata

    path = adapt(inputs["clips"], name=inputs["name"], base=inputs.get("base") or DEFAULT_BASE,
                 minutes=inputs.get("minutes"), progress=progress, verbose=False)
    info = read_metadata(path)["info"]
    report = {"table": heldout_table(info)} if "adapt" in info else {}
    return str(path), report


def serve_when_done(studio):
    """A JobRunner ``on_done`` callback: load the job's checkpoint and add it to ``studio`` under the job's name."""

    def on_done(job) -> None:
        import naturall2s

        studio.add_model(job.name, naturall2s.load_model(job.result))

    return on_done
