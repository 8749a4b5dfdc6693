"""The Gradio comparison studio: layout and callbacks (the work itself is in :mod:`naturall2s.studio.pipeline`).

Tabs: "Synthesize & compare" (a column per system plus the reference, a full-width focus view of one system, the
metrics table, the out-of-domain warning and what each model was trained on), "A/B listening test" (blind pairwise
votes stored by :mod:`naturall2s.studio.ab_store`, pairs and clips in a balanced rotation), "Add a speaker" (a
background adaptation job, :mod:`naturall2s.studio.jobs`) and "About". Named API endpoints: ``/synthesize``
(video file [, reference transcript] → each start-up system's audio, then the metrics table),
``/synthesize_system`` (video file, system name [, transcript] → that system's audio, then its metrics table: any
system, an adapted one added while serving included), ``/systems`` (the names served now), ``/ab_new_pair``,
``/ab_vote``, ``/ab_results``, ``/ab_export``.

A user's mistake (no video, no preference, a clip without a face) shows one warning and leaves every output as it
was; in the UI callbacks nothing raises. The API endpoints raise ``gr.Error`` with the same message.
"""
from __future__ import annotations

import html
import json
import logging
import math
import os
import shutil
from pathlib import Path

import gradio as gr
import numpy as np

from naturall2s.adapt import DEFAULT_MINUTES
from naturall2s.errors import NaturalL2SError
from naturall2s.studio import enroll, plots
from naturall2s.studio.ab_store import PairRotation, VoteStore
from naturall2s.studio.jobs import Job, JobRunner
from naturall2s.studio.live import add_live_tab
from naturall2s.studio.pipeline import METRIC_COLUMNS, REFERENCE, TABLE_HEADERS, Studio, StudioResult, round_or_none

log = logging.getLogger(__name__)

DEFAULT_MAX_SECONDS = 30.0  # the studio refuses longer clips (CPU servers); the library default is 60 s
CONCURRENCY_LIMIT = 4  # requests that run at once: their scoring queues in the scoring workers, so more requests
# can crop and synthesize (audio first) while earlier ones are scored
QUEUE_MAX_SIZE = 32  # waiting requests beyond this are refused with "queue full"
MAX_FILE_SIZE = "200mb"
GRADIO_CACHE_CLEANUP = (3600, 3600)  # every hour, delete Gradio's cached files older than an hour
MAX_EXAMPLES = 6
EXTRA_SLOTS = 3  # result columns kept for systems added while serving (adapted speakers)
JOB_POLL_S = 2.0  # the Add-a-speaker tab refreshes the job's state this often
VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".avi", ".mkv", ".m4v")
ROTATE = "rotate through the examples"
LAST_UPLOAD = "last upload (from the Synthesize tab)"
PREFERENCE_CHOICES = {"A": "A", "B": "B", "No preference": "none"}
SCORE_CHOICES = [1, 2, 3, 4, 5]
PAIR_HEADERS = ["System 1", "System 2", "Wins 1", "Wins 2", "Ties", "Win rate 1", "95% CI low", "95% CI high"]
MOS_HEADERS = ["System", "MOS", "95% CI low", "95% CI high", "Ratings"]
TABLE_WIDTHS = ["10%", "14%", "14%"] + ["6.2%"] * len(METRIC_COLUMNS)  # system, two texts, then the numbers
CSS = """
.system-row {display: grid !important; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); gap: 12px}
.system-col {min-width: 0 !important}
.metric-note {font-size: 0.85em}
.domain-warning {border-left: 6px solid #d97706; background: #fffbeb; padding: 0.4em 1em; color: #111}
"""

INTRO = """# NaturalL2S Studio
Speech from a **silent** talking-face video. Upload a clip (or record one), pick systems, and compare them side
by side: audio, mel spectrogram, F0 contour, transcripts and objective scores. If your clip has its own sound, it
is removed before synthesis and used as the reference. **The shipped models know one speaker (GRID s1) and the 51
words of GRID sentences**: other faces and other words come out wrong, and the page says so when it sees it."""

ABOUT = """## Reading the results
| metric | meaning | better |
|---|---|---|
| WER / CER | word / character error rate of an ASR transcript of the output, against the reference transcript | lower |
| STOI / ESTOI | short-time objective intelligibility against the reference audio (0-1) | higher |
| PESQ-NB / PESQ-WB | perceptual quality against the reference audio (1-4.5) | higher |
| Speaker sim | cosine similarity of speaker embeddings of output and reference (-1..1) | higher |
| F0 RMSE (cents) | pitch error on frames both voiced (100 cents = a semitone) | lower |
| RTF | model compute time / audio duration (below 1: faster than real time) | lower |

The **Reference** column is the real audio (from the clip or uploaded), scored by the same ASR: its WER is
the floor the systems can reach. The reference transcript is what you type, or the GRID sentence when the file
name is a GRID clip name (e.g. `bbaf2n.mp4` = "bin blue at f two now"). The audio of every system appears first;
transcripts, scores and plots follow when the scoring is done.

Clips longer than the configured maximum are refused. Each system's model card (in the first tab) says what it was
trained on; an adapted speaker ("Add a speaker") appears as a new system when its job is done.

The A/B test plays two systems on one clip in random order with their names hidden until you vote; "New pair"
takes the pair of systems heard least so far, on the clip that pair was heard on least. Win rates leave ties out
and carry a 95 % Wilson interval; MOS carries a 95 % Student-t interval.
"""

ENROLL_INTRO = """## Add a speaker
Adapt a model to a new person from a few clips of them talking (each with its own sound: the words are taken from
it). The job runs in the background, one at a time; this page shows its progress and, at the end, the scores of
the base model and the adapted one on clips held out from training. The new system then appears in the other tabs.
Clips must show one person's face and hold speech; GRID-like sentences work best (the models know 51 words)."""


# ------------------------------------------------------------------------------------------ helpers
def find_examples(folder: str | Path | None, *, limit: int = MAX_EXAMPLES) -> list[Path]:
    """Example clips: the GRID test split when ``folder`` is a GRID root (has ``splits.json``), else the
    first ``limit`` video files of ``folder`` by name. Missing folder → no examples."""
    if not folder:
        return []
    folder = Path(folder)
    splits = folder / "splits.json"
    if splits.is_file():
        try:
            split = json.loads(splits.read_text())
            names = [(spk, n) for spk, s in split.items() for n in s.get("test", [])]
        except (ValueError, AttributeError):
            names = []
        found = [folder / spk / f"{n}.mp4" for spk, n in names]
        return [p for p in found if p.is_file()][:limit]
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)[:limit]


def find_examples_in(folders, *, limit: int = MAX_EXAMPLES) -> list[Path]:
    """:func:`find_examples` of each folder in turn, a file name only once (the first folder's wins), at most
    ``limit`` in all."""
    out, names = [], set()
    for folder in folders or []:
        for p in find_examples(folder, limit=limit):
            if p.name not in names:
                names.add(p.name)
                out.append(p)
    return out[:limit]


def _message(e: Exception) -> tuple[str, str]:
    """(title, message) for an exception: a NaturalL2SError's own words, anything else as an internal error."""
    if isinstance(e, NaturalL2SError):
        return "Cannot process this input", str(e)
    log.error("studio request failed", exc_info=e)
    return "Internal error", f"internal error ({type(e).__name__}): {e}"


def warn(e: Exception):
    """Show the problem once (a warning toast) and leave every output as it was: ``gr.skip()``."""
    title, message = _message(e)
    gr.Warning(html.escape(message), title=title)
    return gr.skip()


def api_error(e: Exception) -> gr.Error:
    """The same message as a ``gr.Error`` for API callers (they need an exception)."""
    if isinstance(e, gr.Error):
        return e
    title, message = _message(e)
    return gr.Error(html.escape(message), title=title, print_exception=False)


def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _column_info(r, *, scored: bool) -> str:
    """Markdown under a column's audio: lip-read text, ASR transcript and the headline scores."""
    m = r.metrics
    lines = []
    if r.name != REFERENCE:
        lines.append(f"**Lip-read:** {html.escape(r.text) or '–'}")
    if not scored:
        lines.append("*scoring …*")
        return "  \n".join(lines)
    if r.transcript is not None:
        lines.append(f"**ASR heard:** {html.escape(r.transcript) or '(nothing)'}")
    scores = [f"{METRIC_COLUMNS[k]} {_fmt(m.get(k))}" for k in ("mos", "wer", "cer", "stoi", "estoi", "pesq_nb",
                                                                 "pesq_wb", "speaker_similarity") if m.get(k) is not None]
    if m.get("f0_rmse_cents") is not None:
        scores.append(f"F0 RMSE {_fmt(m['f0_rmse_cents'], 0)} cents")
    if r.seconds is not None:
        scores.append(f"{r.seconds:.2f} s compute (RTF {_fmt(m.get('rtf'), 3)})")
    if scores:
        lines.append('<span class="metric-note">' + " · ".join(scores) + "</span>")
    return "  \n".join(lines)


def table_value(result: StudioResult) -> dict:
    """The metrics table as a Dataframe value."""
    headers, rows = result.table()
    return {"headers": headers, "data": rows}


def _notes_markdown(result: StudioResult) -> str:
    clip = result.clip
    detected = float(np.mean(clip.detected))
    lines = [f"**Clip:** {html.escape(result.video_path.name)} · {len(clip.roi)} frames "
             f"({len(clip.roi) / clip.fps:.2f} s) · face found in {detected:.0%} of frames"]
    lines += [f"- {html.escape(n)}" for n in result.notes]
    return "\n".join(lines)


def domain_markdown(assessment) -> str:
    """The out-of-domain warning of a clip (:class:`naturall2s.domain.ClipAssessment`: its message, then the
    evidence of each group of systems it is unlike) for the top of the results; "" when in domain or unknown."""
    if assessment is None or getattr(assessment, "in_domain", True):
        return ""
    lines = ['<div class="domain-warning">', "", f"⚠️ {html.escape(str(assessment.message))}", ""]
    for names, _, fired in getattr(assessment, "groups", []):
        if not fired:
            continue
        report = assessment.reports[names[0]]  # the group's systems crossed the same kinds of signal
        evidence = getattr(report, "evidence", {}) or {}
        parts = []
        for key, value in evidence.items():
            if "/" in key or key == "audio_used":  # thresholds are shown beside their signal
                continue
            text = f"{html.escape(key)} {_fmt(value, 3)}"
            if (threshold := evidence.get(f"{key}/threshold")) is not None:
                text += f" (threshold {_fmt(threshold, 3)})"
            parts.append(f"**{text}**" if key in (report.fired or []) else text)
        if parts:
            lines.append(f"Evidence, measured with {html.escape(names[0])} (crossed in bold): " + " · ".join(parts))
            lines.append("")
    lines += ["</div>"]
    return "\n".join(lines)


def model_card_markdown(name: str, model) -> str:
    """What ``model`` was trained on: :func:`naturall2s.card.model_card` when installed, else its stored facts."""
    try:
        from naturall2s.card import model_card
    except ImportError:
        info = getattr(model, "info", {}) or {}
        variant = getattr(getattr(model, "config", None), "variant", "?")
        return f"**{html.escape(name)}** ({variant}): trained {info.get('step', '?')} steps"
    try:
        return model_card(model).markdown()
    except Exception as e:  # a card is documentation: a damaged one must not break the page
        log.warning("model card of %s failed: %s: %s", name, type(e).__name__, e)
        return f"**{html.escape(name)}**: no model card ({type(e).__name__})"


def job_markdown(job: Job | None) -> str:
    """The state of the enrollment job in plain words: a finished job with warnings (cut short by its time limit,
    worse than its base on the held-out clips, optimistic scores) is not called done."""
    if job is None:
        return "No speaker has been added yet."
    warnings = (job.report or {}).get("warnings") or []
    state = "finished with warnings ⚠️" if job.state == "done" and warnings else job.state
    done = "█" * round(job.progress * 20) + "░" * (20 - round(job.progress * 20))
    lines = [f"**{html.escape(job.name)}**: {state} `{done}` {job.progress:.0%}"]
    if job.state == "done" and warnings:  # the warnings instead of the bare "done"
        lines += [f"**Warning:** {html.escape(w)}." for w in warnings]
    else:
        lines.append(html.escape(job.message))
    if job.state == "done" and job.result:
        lines.append(f"Written to `{html.escape(job.result)}`; it is now a system in every tab"
                     + (" (to listen and compare: check the warnings above before relying on it)." if warnings
                        else "."))
    return "  \n".join(lines)


def _rows(table) -> list[list]:
    """The rows of a Dataframe value (a list of rows, a ``{"data": ...}`` dict, or a pandas DataFrame); blank rows
    left out."""
    if table is None:
        return []
    if hasattr(table, "values") and hasattr(table, "columns"):  # pandas
        table = table.values.tolist()
    elif isinstance(table, dict):
        table = table.get("data") or []
    return [list(r) for r in table if any(str(v).strip() for v in r if v is not None)]


def _score(x) -> int | None:
    return None if x in (None, "") else int(x)


# ------------------------------------------------------------------------------------------ the app
class StudioApp:
    """Builds the Blocks for one :class:`Studio` and holds its callbacks.

    The result area has a fixed number of column slots (the start-up systems, ``EXTRA_SLOTS`` for systems added
    while serving, and the reference); each request fills the first ones and hides the rest. ``jobs``: the runner
    of the "Add a speaker" tab (None: the tab explains that it is off).
    """

    def __init__(self, studio: Studio, *, examples: list[Path], votes: VoteStore,
                 preload: StudioResult | None = None, jobs: JobRunner | None = None, seed: int | None = None):
        self.studio = studio
        self.preload = preload  # a result shown when the page opens (screenshots, demos)
        self.examples = [Path(p) for p in examples]
        self.votes = votes
        self.jobs = jobs
        self.n_slots = len(studio.system_names) + EXTRA_SLOTS + 1
        self.rotation = PairRotation(votes.votes(), seed=seed)
        self.sentences = enroll.sentences_to_read()

    # ---- Synthesize & compare
    def synthesize_ui(self, video, ref_audio, ref_text, systems, progress=gr.Progress()):
        """The Synthesize button: the audio of every system first, then the figures (drawn while the scorer works),
        then scores, table and the warning."""
        try:
            for result in self.studio.stream(video, systems=systems or [], reference_audio=ref_audio,
                                             reference_text=ref_text, progress=lambda f, d: progress(f, desc=d)):
                if result.scored:
                    yield self._render(result, figures=False)
                else:  # the scorer is already at work in its processes: draw meanwhile
                    yield self._render_audio(result)
                    yield self._render_figures(result)
        except Exception as e:
            yield warn(e)

    def _slots(self, result: StudioResult) -> list:
        return result.columns()[: self.n_slots]

    def _render_audio(self, result: StudioResult) -> list:
        """Outputs when only the audio exists: columns with audio and lip-read text; the rest untouched."""
        cols = self._slots(result)
        out = []
        for i in range(self.n_slots):
            r = cols[i] if i < len(cols) else None
            if r is None:
                out += [gr.Column(visible=False), gr.skip(), None, "", None]
            else:
                out += [gr.Column(visible=True), f"### {r.name}", str(r.wav_path), _column_info(r, scored=False),
                        None]
        skip = gr.skip()
        empty_table = {"headers": TABLE_HEADERS, "data": []}
        return out + [gr.Row(visible=True), domain_markdown(result.domain), skip, skip, "*scoring …*", empty_table,
                      [str(r.wav_path) for r in result.columns()], skip, gr.Button(interactive=False), skip, None,
                      result, str(result.video_path)]

    def _render_figures(self, result: StudioResult) -> list:
        """Outputs drawn from the audio alone (mel thumbnails, mouth-crop strip, focus view), while the scorer works;
        the rest untouched."""
        cols = self._slots(result)
        scale = self._scale(result)
        skip = gr.skip()
        out = []
        for i in range(self.n_slots):
            r = cols[i] if i < len(cols) else None
            out += [skip] * 4 + [plots.mel_figure(r.mel, scale=scale, title=f"{r.name}: log-mel") if r else skip]
        names = [r.name for r in result.systems]
        return out + [skip, skip, skip, self._strip(result), *[skip] * 5,
                      gr.Dropdown(choices=names, value=names[-1], visible=True),
                      gr.Plot(value=self._focus(result, names[-1], scale), visible=True), skip, skip]

    def _render(self, result: StudioResult, *, figures: bool = True) -> list:
        """Every output of a scored result; ``figures`` False: keep the figures :meth:`_render_figures` drew, except
        a focus view whose F0 contour only the scorer tracked."""
        cols = self._slots(result)
        scale = self._scale(result)
        skip = gr.skip()
        out = []
        for i in range(self.n_slots):
            r = cols[i] if i < len(cols) else None
            if r is None:
                out += [gr.Column(visible=False), skip, None, "", None]
                continue
            mel = plots.mel_figure(r.mel, scale=scale, title=f"{r.name}: log-mel") if figures else skip
            out += [gr.Column(visible=True), f"### {r.name}", str(r.wav_path), _column_info(r, scored=result.scored),
                    mel]
        names = [r.name for r in result.systems]
        focus = names[-1]
        redraw_focus = figures or result.system(focus).f0_source == "tracked"
        out += [
            gr.Row(visible=True),
            domain_markdown(result.domain),
            gr.Video(value=str(result.roi_video), visible=True) if result.roi_video else gr.Video(visible=False),
            self._strip(result) if figures else skip,
            _notes_markdown(result),
            table_value(result),
            [str(r.wav_path) for r in result.columns()],
            gr.Dropdown(choices=names, value=focus),
            gr.Button(interactive=True),
            gr.Dropdown(choices=names, value=focus, visible=True),
            gr.Plot(value=self._focus(result, focus, scale), visible=True) if redraw_focus else skip,
            result,
            str(result.video_path),
        ]
        return out

    @staticmethod
    def _strip(result: StudioResult):
        return gr.Plot(value=plots.roi_strip_figure(result.clip.roi, fps=result.clip.fps), visible=True)

    @staticmethod
    def _scale(result: StudioResult) -> plots.PlotScale:
        present = result.columns()
        return plots.shared_scale(max(r.duration for r in present), [r.mel for r in present],
                                  [r.f0 for r in present])

    @staticmethod
    def _focus(result: StudioResult, name: str, scale: plots.PlotScale):
        r = result.system(name)
        ref = result.reference_result
        return plots.focus_figure(name, r.wav, r.sample_rate, r.mel, r.f0, scale=scale,
                                  reference_wav=ref.wav if ref else None, reference_mel=ref.mel if ref else None,
                                  reference_f0=result.reference.f0, f0_label=r.f0_source)

    def focus_ui(self, result: StudioResult | None, name: str):
        """The focus view of one system (at page width)."""
        try:
            if result is None or not name:
                return gr.skip()
            return self._focus(result, name, self._scale(result))
        except Exception as e:
            return warn(e)

    def dub_ui(self, result: StudioResult | None, system: str):
        """Mux one system's speech under the original picture."""
        try:
            if result is None:
                raise NaturalL2SError("synthesize a clip first")
            if not system:
                raise NaturalL2SError("pick a system to dub with")
            return str(self.studio.dub(result, system))
        except Exception as e:
            return warn(e)

    def cards_markdown(self) -> str:
        """Every system's model card."""
        return "\n\n---\n\n".join(model_card_markdown(n, m) for n, m in dict(self.studio.models).items())

    def refresh_systems(self, selected: list[str] | None, known: list[str] | None):
        """Offer systems added since this page last looked (an adapted speaker): checkbox choices, the cards."""
        names = self.studio.system_names
        if known == names:
            return gr.skip(), gr.skip(), gr.skip()
        new = [n for n in names if n not in (known or [])]
        value = [n for n in (selected or []) if n in names] + (new if known else [])
        return gr.CheckboxGroup(choices=names, value=value or names), self.cards_markdown(), names

    # ---- API
    def synthesize_api(self, video, ref_text, progress=gr.Progress()):
        """``/synthesize``: each start-up system's audio, then (a second message) the metrics table."""
        try:
            names = self.api_systems
            for result in self.studio.stream(video, systems=names, reference_text=ref_text, roi_video=False,
                                             progress=lambda f, d: progress(f, desc=d)):
                audio = {r.name: str(r.wav_path) for r in result.systems}
                yield [*(audio.get(n) for n in names), table_value(result) if result.scored else None]
        except Exception as e:
            raise api_error(e) from e

    def synthesize_system_api(self, video, system, ref_text, progress=gr.Progress()):
        """``/synthesize_system``: one system's audio (any served now, adapted ones included), then (a second
        message) the same with the metrics table of that system and the reference."""
        try:
            if system not in self.studio.system_names:
                raise NaturalL2SError(f"unknown system {system!r}; served now: {', '.join(self.studio.system_names)}")
            for result in self.studio.stream(video, systems=[system], reference_text=ref_text, roi_video=False,
                                             progress=lambda f, d: progress(f, desc=d)):
                yield [str(result.systems[0].wav_path), table_value(result) if result.scored else None]
        except Exception as e:
            raise api_error(e) from e

    # ---- A/B
    def _clip_choices(self) -> list[str]:
        return [ROTATE, *(p.name for p in self.examples), LAST_UPLOAD]

    def _resolve_clip(self, choice: str, last_video: str | None) -> Path | None:
        """The chosen clip; None: let the rotation choose among the examples."""
        if choice in (None, "", ROTATE):
            if not self.examples:
                raise NaturalL2SError("no example clips to rotate through: pick the last upload")
            return None
        if choice == LAST_UPLOAD:
            if not last_video:
                raise NaturalL2SError("no upload yet: synthesize a clip in the first tab, or pick an example")
            return Path(last_video)
        for p in self.examples:
            if p.name == choice:
                return p
        raise NaturalL2SError("pick a clip for the A/B test")

    def next_trial(self, clip: Path | None) -> tuple[Path, str, str]:
        """(clip, system A, system B) from the balanced rotation; ``clip`` fixed, or None to rotate the examples."""
        systems = self.studio.system_names
        if len(systems) < 2:
            raise NaturalL2SError("the A/B test needs two systems")
        by_name = {p.name: p for p in self.examples} if clip is None else {clip.name: clip}
        name, a, b = self.rotation.next(systems, list(by_name))
        return by_name[name], a, b

    def ab_new_trial(self, clip_choice, last_video, progress=gr.Progress()):
        """Synthesize the next pair of the rotation on a clip and present it blind."""
        try:
            clip, a, b = self.next_trial(self._resolve_clip(clip_choice, last_video))
            progress(0.1, desc="synthesizing both samples")
            wavs = self.studio.synthesize_wavs(clip, [a, b])
            # neutral file names: the served file must not give the system away
            work = self.studio.new_work_dir()
            sample_a, sample_b = work / "sample_A.wav", work / "sample_B.wav"
            shutil.copyfile(wavs[a], sample_a)
            shutil.copyfile(wavs[b], sample_b)
            trial = {"clip": clip.name, "a": a, "b": b, "voted": False}
            status = f"Clip **{html.escape(clip.name)}**. Listen to both, then vote. The names are revealed after your vote."
            return str(sample_a), str(sample_b), trial, status, None, None, None
        except Exception as e:
            return warn(e)

    def ab_vote(self, trial, preference, score_a, score_b, request: gr.Request | None = None):
        """Store the vote and reveal which system was which."""
        try:
            if not trial:
                raise NaturalL2SError("start a trial first (New pair)")
            if trial.get("voted"):
                raise NaturalL2SError("this pair already has your vote: start a new pair")
            if preference not in PREFERENCE_CHOICES:
                raise NaturalL2SError("choose A, B or No preference")
            session = (getattr(request, "session_hash", None) or "") if request is not None else ""
            vote_id = self.votes.add_vote(clip=trial["clip"], system_a=trial["a"], system_b=trial["b"],
                                          preference=PREFERENCE_CHOICES[preference],
                                          score_a=_score(score_a), score_b=_score(score_b), session=session)
            trial = {**trial, "voted": True}
            reveal = (f"Vote #{vote_id} saved. **A** was **{html.escape(trial['a'])}**, "
                      f"**B** was **{html.escape(trial['b'])}**.")
            return (trial, reveal, *self.ab_results())
        except Exception as e:
            return warn(e)

    def ab_results(self) -> tuple[dict, dict]:
        """Win-rate and MOS tables."""
        pairs = [[p.first, p.second, p.wins_first, p.wins_second, p.ties, round_or_none(p.win_rate),
                  round_or_none(p.ci_low), round_or_none(p.ci_high)] for p in self.votes.pair_results()]
        mos = [[m.system, round_or_none(m.mean), round_or_none(m.ci_low), round_or_none(m.ci_high), m.count]
               for m in self.votes.mos_results()]
        return {"headers": PAIR_HEADERS, "data": pairs}, {"headers": MOS_HEADERS, "data": mos}

    def ab_export(self):
        """All votes as a CSV download."""
        try:
            path = self.studio.new_work_dir() / "ab_votes.csv"
            return str(self.votes.export_csv(path))
        except Exception as e:
            return warn(e)

    # ---- Add a speaker
    def check_take_ui(self, take, index: int, takes: list[str] | None):
        """Check the webcam take of sentence ``index``: kept (next sentence) or refused with the reason."""
        try:
            if not take:
                raise NaturalL2SError("record a take first (the webcam box above)")
            if self.jobs is None:
                raise NaturalL2SError(enroll.adaptation_available() or "adding a speaker is off on this server")
            sentence = self.sentences[index % len(self.sentences)]
            ok, found = enroll.check_take(take, sentence=sentence)
            if not ok:
                raise NaturalL2SError(f"take of “{sentence}” {found}: record it again")
            takes = [*(takes or []), str(take)]
            gr.Info(html.escape(found), title=f"Take {len(takes)} kept")
            nxt = (index + 1) % len(self.sentences)
            return takes, nxt, self._sentence_markdown(nxt), self._takes_markdown(takes), None
        except Exception as e:
            return warn(e)

    def _sentence_markdown(self, index: int) -> str:
        return f"Read aloud, facing the camera:\n\n## “{self.sentences[index % len(self.sentences)]}”"

    @staticmethod
    def _takes_markdown(takes: list[str]) -> str:
        return f"{len(takes)} take(s) kept." if takes else "No takes kept yet."

    def review_ui(self, files, progress=gr.Progress()):
        """Transcribe each uploaded clip for review: (rows of the transcript table, the clip paths in row order)."""
        try:
            if self.jobs is None:
                raise NaturalL2SError(enroll.adaptation_available() or "adding a speaker is off on this server")
            paths = [str(getattr(f, "name", f)) for f in (files or [])]
            if not paths:
                raise NaturalL2SError("upload clips of the person first")
            rows = []
            for i, p in enumerate(paths):
                progress(i / len(paths), desc=f"transcribing {Path(p).name} ({i + 1}/{len(paths)})")
                rows.append(enroll.review_row(p))
            return {"headers": enroll.REVIEW_HEADERS, "data": rows}, paths
        except Exception as e:
            return warn(e)

    def start_job_ui(self, name, base, minutes, files, takes, review=None, reviewed=None):
        """Queue the adaptation of ``base`` to the uploaded clips and the kept webcam takes. ``review`` (the
        transcript table of :meth:`review_ui`) and ``reviewed`` (its clips): the ticked clips go with the checked
        transcripts as their sidecars, the unticked ones stay out; clips uploaded since go unchecked."""
        try:
            if self.jobs is None:
                raise NaturalL2SError(enroll.adaptation_available() or "adding a speaker is off on this server")
            name = (name or "").strip()
            if not name:
                raise NaturalL2SError("give the new speaker a name (letters, digits, - and _)")
            if name in self.studio.system_names:
                raise NaturalL2SError(f"there is already a system called {name!r}: choose another name")
            uploads = [str(getattr(f, "name", f)) for f in (files or [])]
            transcripts, left_out = {}, set()
            rows = _rows(review)
            if rows and reviewed:
                transcripts = enroll.reviewed_clips(list(reviewed), rows)
                left_out = set(reviewed) - set(transcripts)
            clips = [p for p in uploads if p not in left_out] + list(takes or [])
            if not clips:
                raise NaturalL2SError("upload clips of the person (and tick Use in the transcript table), or record "
                                      "takes with the webcam")
            folder = self.jobs.store.path.parent / "enroll" / f"{name}-{os.getpid()}-{len(self.jobs.store.jobs())}"
            stashed = enroll.stash_clips(clips, folder, transcripts=transcripts)
            job = self.jobs.submit(name=name, inputs={"name": name, "base": base, "clips": stashed,
                                                      "minutes": float(minutes) if minutes else None})
            return job_markdown(job), "", ""
        except Exception as e:
            return warn(e)

    def job_ui(self):
        """The latest job: state, its log (last lines), the held-out before/after table when done, and the start
        button (disabled while a job is queued or running)."""
        job = self.jobs.store.latest() if self.jobs is not None else None
        idle = gr.Button(interactive=self.jobs is not None and (job is None or not job.active))
        if job is None:
            return job_markdown(None), "", "", idle
        return job_markdown(job), "\n".join(job.log[-12:]), job.report.get("table", ""), idle

    # ---- layout
    def build(self) -> gr.Blocks:
        with gr.Blocks(title="NaturalL2S Studio", delete_cache=GRADIO_CACHE_CLEANUP) as demo:
            result_state = gr.State(None)
            last_video = gr.State(None)
            gr.Markdown(INTRO)
            with gr.Tabs():
                with gr.Tab("Synthesize & compare"):
                    systems, cards = self._synthesize_tab(demo, result_state, last_video)
                with gr.Tab("Live"):
                    add_live_tab(self, demo)  # naturall2s/studio/live.py
                with gr.Tab("A/B listening test"):
                    self._ab_tab(demo, last_video)
                with gr.Tab("Add a speaker"):
                    self._enroll_tab(demo, systems, cards)
                with gr.Tab("About"):
                    gr.Markdown(ABOUT)
            self._api()
        return demo

    def _synthesize_tab(self, demo, result_state, last_video):
        names = self.studio.system_names
        with gr.Row():
            with gr.Column(scale=1):
                video = gr.Video(label="Talking-face video (any sound it has becomes the reference)",
                                 sources=["upload", "webcam"], include_audio=True, height=300)
                if self.examples:
                    gr.Examples(examples=[[str(p)] for p in self.examples], inputs=[video],
                                label="Examples", example_labels=[p.name for p in self.examples])
                with gr.Accordion("Reference (optional)", open=False):
                    ref_audio = gr.Audio(label="Reference audio (overrides the clip's own sound)",
                                         type="filepath", sources=["upload"])
                    ref_text = gr.Textbox(label="Reference transcript",
                                          placeholder="filled from the file name for GRID clips")
                systems = gr.CheckboxGroup(choices=names, value=names, label="Systems")
                with gr.Accordion("What each system was trained on (model cards)", open=False):
                    cards = gr.Markdown(self.cards_markdown())
                run = gr.Button("Synthesize", variant="primary")
                status = gr.Markdown(elem_id="synth-status")
            with gr.Column(scale=1):
                roi_video = gr.Video(label="What the model sees: the mouth crop", interactive=False, height=220,
                                     visible=False, elem_id="roi-video")
                roi_strip = gr.Plot(label="Mouth-crop frames", show_label=False, visible=False, elem_id="roi-strip")
                notes = gr.Markdown()
        domain = gr.Markdown(elem_classes="domain-result")
        slot_outputs = []
        # a grid of columns at least 210 px wide: 6-8 columns wrap into rows instead of squeezing the players
        with gr.Row(visible=False, equal_height=False, elem_classes="system-row") as results_row:
            for _ in range(self.n_slots):
                with gr.Column(visible=False, elem_classes="system-col", min_width=150) as col:
                    header = gr.Markdown()
                    audio = gr.Audio(type="filepath", interactive=False, show_label=False)
                    info = gr.Markdown()
                    mel = gr.Plot(show_label=False)
                slot_outputs += [col, header, audio, info, mel]
        with gr.Row():
            focus_system = gr.Dropdown(choices=[], label="Look closely at", visible=False, scale=1)
        focus_plot = gr.Plot(show_label=False, visible=False)
        table = gr.Dataframe(headers=TABLE_HEADERS, label="Metrics", interactive=False, wrap=True,
                             column_widths=TABLE_WIDTHS)
        with gr.Row():
            downloads = gr.File(label="Downloads (wav)", file_count="multiple", interactive=False, scale=2)
            with gr.Column(scale=1):
                dub_system = gr.Dropdown(choices=names, value=names[-1] if names else None,
                                         label="Dub the clip with", interactive=True)
                dub = gr.Button("Make dubbed video", interactive=False)
            dubbed = gr.Video(label="Dubbed video (download from its menu)", interactive=False, scale=1)
        outputs = [*slot_outputs, results_row, domain, roi_video, roi_strip, notes, table, downloads, dub_system, dub,
                   focus_system, focus_plot, result_state, last_video]
        (run.click(lambda: gr.Button(interactive=False), outputs=[run], api_visibility="private", queue=False)
            .then(self.synthesize_ui, inputs=[video, ref_audio, ref_text, systems], outputs=outputs,
                  api_visibility="private", show_progress_on=[status])
            .then(lambda: gr.Button(interactive=True), outputs=[run], api_visibility="private", queue=False))
        focus_system.input(self.focus_ui, inputs=[result_state, focus_system], outputs=[focus_plot],
                            api_visibility="private", show_progress="minimal")
        if self.preload is not None:
            demo.load(lambda: self._render(self.preload), outputs=outputs, api_visibility="private")
        dub.click(self.dub_ui, inputs=[result_state, dub_system], outputs=[dubbed], api_visibility="private")
        return systems, cards

    def _ab_tab(self, demo, last_video):
        gr.Markdown("Blind pairwise comparison: two systems on one clip, in random order. "
                    "Pick the more natural sample; optionally rate each from 1 (bad) to 5 (excellent). "
                    "**New pair** takes the pair of systems heard least so far.")
        trial = gr.State(None)
        choices = self._clip_choices()
        with gr.Row():
            clip = gr.Dropdown(choices=choices, value=choices[0] if self.examples else LAST_UPLOAD, label="Clip")
            new = gr.Button("New pair", variant="primary")
        status = gr.Markdown()
        with gr.Row():
            with gr.Column():
                audio_a = gr.Audio(label="Sample A", type="filepath", interactive=False)
                score_a = gr.Radio(SCORE_CHOICES, label="Naturalness of A (optional)")
            with gr.Column():
                audio_b = gr.Audio(label="Sample B", type="filepath", interactive=False)
                score_b = gr.Radio(SCORE_CHOICES, label="Naturalness of B (optional)")
        preference = gr.Radio(list(PREFERENCE_CHOICES), label="Which sounds more natural?")
        vote = gr.Button("Submit vote")
        reveal = gr.Markdown()
        gr.Markdown("### Results so far")
        pair_table = gr.Dataframe(headers=PAIR_HEADERS, label="Win rate per pair (ties excluded)", interactive=False)
        mos_table = gr.Dataframe(headers=MOS_HEADERS, label="Mean opinion score", interactive=False)
        with gr.Row():
            refresh = gr.Button("Refresh results")
            export = gr.Button("Export votes (CSV)")
            csv_file = gr.File(label="Votes CSV", interactive=False)
        new.click(self.ab_new_trial, inputs=[clip, last_video],
                  outputs=[audio_a, audio_b, trial, status, preference, score_a, score_b], api_name="ab_new_pair",
                  show_progress_on=[status])
        vote.click(self.ab_vote, inputs=[trial, preference, score_a, score_b],
                   outputs=[trial, reveal, pair_table, mos_table], api_name="ab_vote")
        refresh.click(self.ab_results, outputs=[pair_table, mos_table], api_name="ab_results")
        demo.load(self.ab_results, outputs=[pair_table, mos_table], api_visibility="private")
        export.click(self.ab_export, outputs=[csv_file], api_name="ab_export")

    def _enroll_tab(self, demo, systems, cards):
        gr.Markdown(ENROLL_INTRO)
        unavailable = enroll.adaptation_available() if self.jobs is None else None
        if self.jobs is None:
            gr.Markdown(f"**Off on this server:** {html.escape(unavailable or 'no job store configured')}.")
        names = self.studio.system_names
        takes = gr.State([])
        index = gr.State(0)
        known = gr.State(names)
        with gr.Row():
            name = gr.Textbox(label="Name of the new system", placeholder="e.g. alice", scale=2)
            base = gr.Dropdown(choices=names, value=enroll.DEFAULT_BASE if enroll.DEFAULT_BASE in names else
                               (names[0] if names else None), label="Start from", scale=1)
            minutes = gr.Slider(0, 120, value=DEFAULT_MINUTES, step=1, scale=1,
                                label="Time limit in minutes (0: none; a run cut short says so)")
        with gr.Tabs():
            with gr.Tab("Upload clips"):
                files = gr.File(label="Several clips of one person, each with its own sound", file_count="multiple",
                                file_types=["video"])
                check = gr.Button("Check the transcripts")
                review = gr.Dataframe(headers=enroll.REVIEW_HEADERS, datatype=["str", "str", "number", "bool", "str"],
                                      interactive=True, static_columns=[0, 2, 4], wrap=True, type="array",
                                      column_widths=["14%", "26%", "9%", "6%", "45%"],
                                      label="What the recogniser heard in each clip: correct a transcript, untick "
                                            "Use to leave a clip out (without a check, unsure ones are refused)")
                reviewed = gr.State([])
            with gr.Tab("Record with the webcam"):
                sentence = gr.Markdown(self._sentence_markdown(0))
                take = gr.Video(label="Take", sources=["webcam"], include_audio=True, height=260)
                keep = gr.Button("Check and keep this take")
                kept = gr.Markdown(self._takes_markdown([]))
        start = gr.Button("Add this speaker", variant="primary", interactive=self.jobs is not None)
        job_status = gr.Markdown(job_markdown(None))
        with gr.Row():
            job_log = gr.Textbox(label="Progress log", lines=8, interactive=False, scale=1)
            job_table = gr.Markdown(label="Held-out clips: base vs adapted")
        keep.click(self.check_take_ui, inputs=[take, index, takes], outputs=[takes, index, sentence, kept, take],
                   api_visibility="private")
        check.click(self.review_ui, inputs=[files], outputs=[review, reviewed], api_visibility="private",
                    show_progress_on=[review])
        (start.click(lambda: gr.Button(interactive=False), outputs=[start], api_visibility="private", queue=False)
            .then(self.start_job_ui, inputs=[name, base, minutes, files, takes, review, reviewed],
                  outputs=[job_status, job_log, job_table], api_visibility="private")
            .then(self.job_ui, outputs=[job_status, job_log, job_table, start], api_visibility="private",
                  queue=False))
        timer = gr.Timer(JOB_POLL_S, active=self.jobs is not None)
        for event in (timer.tick, demo.load):
            # quick reads of SQLite and a list: outside the queue, so polling never waits behind syntheses
            event(self.job_ui, outputs=[job_status, job_log, job_table, start], api_visibility="private",
                  show_progress="hidden", queue=False)
            event(self.refresh_systems, inputs=[systems, known], outputs=[systems, cards, known],
                  api_visibility="private", show_progress="hidden", queue=False)

    def _api(self):
        """The ``/synthesize`` endpoint on hidden components: video (+ optional transcript) → audio per start-up
        system, then the metrics table."""
        self.api_systems = self.studio.system_names
        with gr.Column(visible=False):
            video = gr.File(label="video", file_count="single")
            ref_text = gr.Textbox(label="reference_transcript", value="")
            audios = [gr.Audio(label=name, type="filepath") for name in self.api_systems]
            table = gr.Dataframe(headers=TABLE_HEADERS, label="metrics")
            trigger = gr.Button()
        trigger.click(self.synthesize_api, inputs=[video, ref_text], outputs=[*audios, table],
                      api_name="synthesize",
                      api_description="Speech for a silent talking-face video: one wav per system "
                                      f"({', '.join(self.api_systems)}) as soon as they exist, then the same with "
                                      "the metrics table.")
        with gr.Column(visible=False):
            system = gr.Textbox(label="system", value=self.api_systems[0] if self.api_systems else "")
            one_audio = gr.Audio(label="audio", type="filepath")
            one_table = gr.Dataframe(headers=TABLE_HEADERS, label="metrics")
            one_trigger, list_trigger = gr.Button(), gr.Button()
            served = gr.JSON(label="systems")
        one_trigger.click(self.synthesize_system_api, inputs=[video, system, ref_text], outputs=[one_audio, one_table],
                          api_name="synthesize_system",
                          api_description="Speech for a silent talking-face video from one system, any of those "
                                          "served now (see /systems), then the same with its metrics table.")
        list_trigger.click(lambda: self.studio.system_names, outputs=[served], api_name="systems",
                           api_description="The names of the systems served now (adapted ones included).")


def build_app(studio: Studio, *, examples: list[Path] | None = None, votes: VoteStore,
              preload: StudioResult | None = None, jobs: JobRunner | None = None) -> gr.Blocks:
    """The studio's Blocks (not launched); ``preload``: a result to show when the page opens."""
    return StudioApp(studio, examples=examples or [], votes=votes, preload=preload, jobs=jobs).build()


def serve(
    studio: Studio,
    *,
    votes: VoteStore,
    examples: list[Path] | None = None,
    jobs: JobRunner | None = None,
    host: str | None = None,
    port: int | None = None,
    share: bool = False,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
    preload: StudioResult | None = None,
) -> tuple[gr.Blocks, str]:
    """Build, queue (``CONCURRENCY_LIMIT`` at once, ``QUEUE_MAX_SIZE`` waiting) and launch; returns (blocks, local url).

    ``host``/``port`` None: Gradio's own defaults, ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` when set
    (127.0.0.1:7860 otherwise). Gradio may serve files from the studio's request folders, the example folders and
    the enrollment folder only.
    """
    examples = [Path(p) for p in examples or []]
    demo = build_app(studio, examples=examples, votes=votes, preload=preload, jobs=jobs)
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_MAX_SIZE)
    allowed = [studio.cache_dir, *dict.fromkeys(p.resolve().parent for p in examples)]
    if jobs is not None:
        allowed.append(jobs.store.path.parent / "enroll")
    _, url, _ = demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        allowed_paths=[os.fspath(p) for p in allowed],
        prevent_thread_lock=True,  # print the address first (flushed: a log file sees it at once), then block
        max_file_size=MAX_FILE_SIZE,
        quiet=True,  # Gradio's own start-up text suggests share=True in launch(); ours names the --share flag
        css=CSS,
        footer_links=["api", "gradio"],
    )
    if not quiet:
        print(f"* Running on local URL:  {url}" + ("" if share else "\n* To create a public link, add --share"),
              flush=True)
        if demo.share_url:
            print(f"* Running on public URL: {demo.share_url}", flush=True)
    if not prevent_thread_lock:
        demo.block_thread()
    return demo, url
