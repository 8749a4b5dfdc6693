"""The Gradio comparison studio: layout and callbacks (the work itself is in :mod:`naturall2s.studio.pipeline`).

Tabs: "Synthesize & compare" (one column per system, fixed at start-up, plus the reference), "A/B listening
test" (blind pairwise votes stored by :mod:`naturall2s.studio.ab_store`) and "About". Named API endpoint:
``/synthesize`` (video file [, reference transcript] → each system's audio, then the metrics table).
"""
from __future__ import annotations

import html
import json
import logging
import math
import os
import random
import shutil
from contextlib import contextmanager
from pathlib import Path

import gradio as gr
import numpy as np

from naturall2s.errors import NaturalL2SError
from naturall2s.studio import plots
from naturall2s.studio.ab_store import VoteStore
from naturall2s.studio.pipeline import METRIC_COLUMNS, REFERENCE, TABLE_HEADERS, Studio, StudioResult, round_or_none

log = logging.getLogger(__name__)

DEFAULT_MAX_SECONDS = 30.0  # the studio refuses longer clips (CPU servers); the library default is 60 s
CONCURRENCY_LIMIT = 2  # requests that run at once (each uses every core in turn)
QUEUE_MAX_SIZE = 32  # waiting requests beyond this are refused with "queue full"
MAX_FILE_SIZE = "200mb"
GRADIO_CACHE_CLEANUP = (3600, 3600)  # every hour, delete Gradio's cached files older than an hour
MAX_EXAMPLES = 6
VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".avi", ".mkv", ".m4v")
LAST_UPLOAD = "last upload (from the Synthesize tab)"
PREFERENCE_CHOICES = {"A": "A", "B": "B", "No preference": "none"}
SCORE_CHOICES = [1, 2, 3, 4, 5]
PAIR_HEADERS = ["System 1", "System 2", "Wins 1", "Wins 2", "Ties", "Win rate 1", "95% CI low", "95% CI high"]
MOS_HEADERS = ["System", "MOS", "95% CI low", "95% CI high", "Ratings"]
TABLE_WIDTHS = ["10%", "14%", "14%"] + ["6.2%"] * len(METRIC_COLUMNS)  # system, two texts, then the numbers
CSS = """
.system-col {min-width: 200px; flex: 1 1 0 !important}
.metric-note {font-size: 0.85em}
"""

INTRO = """# NaturalL2S Studio
Speech from a **silent** talking-face video. Upload a clip (or record one), pick systems, and compare them side
by side: audio, waveform, mel spectrogram, F0 contour, transcripts and objective scores. If your clip has its own
sound, it is removed before synthesis and used as the reference."""

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
name is a GRID clip name (e.g. `bbaf2n.mp4` = "bin blue at f two now").

Clips longer than the configured maximum are refused. Models: each column is a shipped checkpoint (see the
README for the variants: `mel-gl`, `mel-vocoder`, `naturall2s-noddsp`, `naturall2s`).

The A/B test plays two systems on one clip in random order with their names hidden until you vote. Win rates
leave ties out and carry a 95 % Wilson interval; MOS carries a 95 % Student-t interval.
"""


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


@contextmanager
def user_errors():
    """Turn exceptions into gr.Error: NaturalL2SError messages as they are, anything else as an internal error
    (logged with its traceback). The server keeps serving either way."""
    try:
        yield
    except gr.Error:
        raise
    except NaturalL2SError as e:
        raise gr.Error(html.escape(str(e)), title="Cannot process this input", print_exception=False) from e
    except Exception as e:
        log.exception("studio request failed")
        raise gr.Error(html.escape(f"internal error ({type(e).__name__}): {e}"), title="Internal error") from e


def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _column_info(r) -> str:
    """Markdown under a column's audio: lip-read text, ASR transcript and the headline scores."""
    m = r.metrics
    lines = []
    if r.name != REFERENCE:
        lines.append(f"**Lip-read:** {html.escape(r.text) or '–'}")
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


# ------------------------------------------------------------------------------------------ the app
class StudioApp:
    """Builds the Blocks for one :class:`Studio` (its systems fixed at start-up) and holds its callbacks."""

    def __init__(self, studio: Studio, *, examples: list[Path], votes: VoteStore,
                 preload: StudioResult | None = None):
        self.studio = studio
        self.preload = preload  # a result shown when the page opens (screenshots, demos)
        self.examples = [Path(p) for p in examples]
        self.votes = votes
        self.columns = [*studio.system_names, REFERENCE]
        self.rng = random.Random()

    # ---- Synthesize & compare
    def synthesize_ui(self, video, ref_audio, ref_text, systems, progress=gr.Progress()):
        """The UI's Synthesize button: every output of the comparison view."""
        with user_errors():
            result = self.studio.run(video, systems=systems or [], reference_audio=ref_audio,
                                     reference_text=ref_text, progress=lambda f, d: progress(f, desc=d))
            return self._render(result)

    def _render(self, result: StudioResult) -> list:
        present = {r.name: r for r in result.columns()}
        duration = max(r.duration for r in present.values())
        scale = plots.shared_scale(duration, [r.mel for r in present.values()], [r.f0 for r in present.values()])
        ref_f0 = result.reference.f0
        out = []
        for name in self.columns:
            r = present.get(name)
            if r is None:
                out += [gr.Column(visible=False), None, "", None, None, None]
                continue
            out += [
                gr.Column(visible=True),
                str(r.wav_path),
                _column_info(r),
                plots.waveform_figure(r.wav, r.sample_rate, scale=scale, title=f"{name}: waveform"),
                plots.mel_figure(r.mel, scale=scale, title=f"{name}: log-mel"),
                plots.f0_figure(r.f0, scale=scale, reference_f0=None if name == REFERENCE else ref_f0,
                                title=f"{name}: F0 ({r.f0_source})", label=r.f0_source),
            ]
        dub_choices = [r.name for r in result.systems]
        out += [
            gr.Row(visible=True),
            str(result.roi_video) if result.roi_video else None,
            plots.roi_strip_figure(result.clip.roi, fps=result.clip.fps),
            _notes_markdown(result),
            table_value(result),
            [str(r.wav_path) for r in result.columns()],
            gr.Dropdown(choices=dub_choices, value=dub_choices[-1]),
            result,
            str(result.video_path),
        ]
        return out

    def dub_ui(self, result: StudioResult | None, system: str):
        """Mux one system's speech under the original picture."""
        with user_errors():
            if result is None:
                raise NaturalL2SError("synthesize a clip first")
            if not system:
                raise NaturalL2SError("pick a system to dub with")
            path = self.studio.dub(result, system)
            return str(path), str(path)

    # ---- API
    def synthesize_api(self, video, ref_text, progress=gr.Progress()):
        """``/synthesize``: each system's audio (in start-up order), then the metrics table."""
        with user_errors():
            result = self.studio.run(video, reference_text=ref_text,
                                     progress=lambda f, d: progress(f, desc=d))
            return [*(str(r.wav_path) for r in result.systems), table_value(result)]

    # ---- A/B
    def _clip_choices(self) -> list[str]:
        return [p.name for p in self.examples] + [LAST_UPLOAD]

    def _resolve_clip(self, choice: str, last_video: str | None) -> Path:
        if choice == LAST_UPLOAD:
            if not last_video:
                raise NaturalL2SError("no upload yet: synthesize a clip in the first tab, or pick an example")
            return Path(last_video)
        for p in self.examples:
            if p.name == choice:
                return p
        raise NaturalL2SError("pick a clip for the A/B test")

    def ab_new_trial(self, clip_choice, system_1, system_2, last_video, progress=gr.Progress()):
        """Synthesize two systems on a clip and present them in random order, names hidden."""
        with user_errors():
            if not system_1 or not system_2 or system_1 == system_2:
                raise NaturalL2SError("pick two different systems")
            clip = self._resolve_clip(clip_choice, last_video)
            progress(0.1, desc="synthesizing both samples")
            wavs = self.studio.synthesize_wavs(clip, [system_1, system_2])
            a, b = self.rng.sample([system_1, system_2], 2)
            # neutral file names: the served file must not give the system away
            work = self.studio.new_work_dir()
            sample_a, sample_b = work / "sample_A.wav", work / "sample_B.wav"
            shutil.copyfile(wavs[a], sample_a)
            shutil.copyfile(wavs[b], sample_b)
            trial = {"clip": clip.name, "a": a, "b": b, "voted": False}
            status = "Listen to both, then vote. The system names are revealed after your vote."
            return str(sample_a), str(sample_b), trial, status, None, None, None

    def ab_vote(self, trial, preference, score_a, score_b, request: gr.Request | None = None):
        """Store the vote and reveal which system was which."""
        with user_errors():
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

    def ab_results(self) -> tuple[dict, dict]:
        """Win-rate and MOS tables."""
        pairs = [[p.first, p.second, p.wins_first, p.wins_second, p.ties, round_or_none(p.win_rate), round_or_none(p.ci_low),
                  round_or_none(p.ci_high)] for p in self.votes.pair_results()]
        mos = [[m.system, round_or_none(m.mean), round_or_none(m.ci_low), round_or_none(m.ci_high), m.count] for m in self.votes.mos_results()]
        return {"headers": PAIR_HEADERS, "data": pairs}, {"headers": MOS_HEADERS, "data": mos}

    def ab_export(self):
        """All votes as a CSV download."""
        with user_errors():
            path = self.studio.new_work_dir() / "ab_votes.csv"
            return str(self.votes.export_csv(path))

    # ---- layout
    def build(self) -> gr.Blocks:
        names = self.studio.system_names
        with gr.Blocks(title="NaturalL2S Studio", delete_cache=GRADIO_CACHE_CLEANUP) as demo:
            result_state = gr.State(None)
            last_video = gr.State(None)
            gr.Markdown(INTRO)
            with gr.Tabs():
                with gr.Tab("Synthesize & compare"):
                    self._synthesize_tab(demo, names, result_state, last_video)
                with gr.Tab("A/B listening test"):
                    self._ab_tab(names, last_video)
                with gr.Tab("About"):
                    gr.Markdown(ABOUT)
            self._api()
        return demo

    def _synthesize_tab(self, demo, names, result_state, last_video):
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
                run = gr.Button("Synthesize", variant="primary")
            with gr.Column(scale=1):
                roi_video = gr.Video(label="What the model sees: the mouth crop", interactive=False, height=220)
                roi_strip = gr.Plot(label="Mouth-crop frames", show_label=False)
                notes = gr.Markdown()
        col_outputs = []
        with gr.Row(visible=False, equal_height=False) as results_row:
            for name in self.columns:
                with gr.Column(visible=False, elem_classes="system-col", min_width=200) as col:
                    gr.Markdown(f"### {name}")
                    audio = gr.Audio(label=name, type="filepath", interactive=False, show_label=False)
                    wave = gr.Plot(show_label=False)  # plots first: they line up across columns
                    mel = gr.Plot(show_label=False)
                    f0 = gr.Plot(show_label=False)
                    info = gr.Markdown()
                col_outputs += [col, audio, info, wave, mel, f0]
        table = gr.Dataframe(headers=TABLE_HEADERS, label="Metrics", interactive=False, wrap=True,
                             column_widths=TABLE_WIDTHS)
        with gr.Row():
            downloads = gr.File(label="Downloads (wav)", file_count="multiple", interactive=False, scale=2)
            with gr.Column(scale=1):
                dub_system = gr.Dropdown(choices=names, value=names[-1] if names else None,
                                         label="Dub the clip with", interactive=True)
                dub = gr.Button("Make dubbed video")
                dubbed_file = gr.File(label="Dubbed mp4", interactive=False)
            dubbed = gr.Video(label="Dubbed video", interactive=False, scale=1)
        outputs = [*col_outputs, results_row, roi_video, roi_strip, notes, table, downloads, dub_system,
                   result_state, last_video]
        run.click(self.synthesize_ui, inputs=[video, ref_audio, ref_text, systems], outputs=outputs,
                  api_visibility="private")
        if self.preload is not None:
            demo.load(lambda: self._render(self.preload), outputs=outputs, api_visibility="private")
        dub.click(self.dub_ui, inputs=[result_state, dub_system], outputs=[dubbed, dubbed_file],
                  api_visibility="private")

    def _ab_tab(self, names, last_video):
        gr.Markdown("Blind pairwise comparison: two systems on one clip, in random order. "
                    "Pick the more natural sample; optionally rate each from 1 (bad) to 5 (excellent).")
        trial = gr.State(None)
        choices = self._clip_choices()
        with gr.Row():
            clip = gr.Dropdown(choices=choices, value=choices[0], label="Clip")
            sys1 = gr.Dropdown(choices=names, value=names[0] if names else None, label="System 1")
            sys2 = gr.Dropdown(choices=names, value=names[-1] if names else None, label="System 2")
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
        new.click(self.ab_new_trial, inputs=[clip, sys1, sys2, last_video],
                  outputs=[audio_a, audio_b, trial, status, preference, score_a, score_b], api_name="ab_new_pair")
        vote.click(self.ab_vote, inputs=[trial, preference, score_a, score_b],
                   outputs=[trial, reveal, pair_table, mos_table], api_name="ab_vote")
        refresh.click(self.ab_results, outputs=[pair_table, mos_table], api_name="ab_results")
        export.click(self.ab_export, outputs=[csv_file], api_name="ab_export")

    def _api(self):
        """The ``/synthesize`` endpoint on hidden components: video (+ optional transcript) → audio per system, table."""
        with gr.Column(visible=False):
            video = gr.File(label="video", file_count="single")
            ref_text = gr.Textbox(label="reference_transcript", value="")
            audios = [gr.Audio(label=name, type="filepath") for name in self.studio.system_names]
            table = gr.Dataframe(headers=TABLE_HEADERS, label="metrics")
            trigger = gr.Button()
        trigger.click(self.synthesize_api, inputs=[video, ref_text], outputs=[*audios, table],
                      api_name="synthesize",
                      api_description="Speech for a silent talking-face video: one wav per system "
                                      f"({', '.join(self.studio.system_names)}), then the metrics table.")


def _score(x) -> int | None:
    return None if x in (None, "") else int(x)


def build_app(studio: Studio, *, examples: list[Path] | None = None, votes: VoteStore,
              preload: StudioResult | None = None) -> gr.Blocks:
    """The studio's Blocks (not launched); ``preload``: a result to show when the page opens."""
    return StudioApp(studio, examples=examples or [], votes=votes, preload=preload).build()


def serve(
    studio: Studio,
    *,
    votes: VoteStore,
    examples: list[Path] | None = None,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    share: bool = False,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
    preload: StudioResult | None = None,
) -> tuple[gr.Blocks, str]:
    """Build, queue (``CONCURRENCY_LIMIT`` at once, ``QUEUE_MAX_SIZE`` waiting) and launch; returns (blocks, local url).

    Gradio may serve files from the studio's request folders and the example folders only.
    """
    examples = [Path(p) for p in examples or []]
    demo = build_app(studio, examples=examples, votes=votes, preload=preload)
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_MAX_SIZE)
    allowed = [studio.cache_dir, *dict.fromkeys(p.resolve().parent for p in examples)]
    _, url, _ = demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        allowed_paths=[os.fspath(p) for p in allowed],
        prevent_thread_lock=prevent_thread_lock,
        max_file_size=MAX_FILE_SIZE,
        quiet=quiet,
        css=CSS,
        footer_links=["api", "gradio"],
    )
    return demo, url
