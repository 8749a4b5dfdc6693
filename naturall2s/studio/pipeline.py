"""One studio request, without any Gradio: mouth crop once, every selected model, metrics, files.

:class:`Studio` holds what is built once at start-up (models, landmark detector, ASR, speaker encoder) and
runs requests with :meth:`Studio.run`, reporting progress through a plain ``progress(fraction, message)``
callback. Each request writes into its own folder under ``cache_dir``; folders older than ``max_age_s``
are removed when a new request starts. Shared objects that are not thread-safe (the detector, the ASR
decoder, the speaker encoder) are used under a lock; models run concurrently (inference only).
"""
from __future__ import annotations

import inspect
import logging
import math
import shutil
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np

from naturall2s.audio import SAMPLE_RATE, f0_voicing, load_audio, log_mel, save_audio
from naturall2s.errors import NaturalL2SError

log = logging.getLogger(__name__)

REFERENCE = "Reference"  # the name of the reference-audio column
DEFAULT_MAX_AGE_S = 3600.0  # request folders older than this are deleted
REQUEST_PREFIX = "req-"
GRID_SOURCE = "GRID file name"
# metric key → column header of the table, in table order
METRIC_COLUMNS = {
    "wer": "WER",
    "cer": "CER",
    "stoi": "STOI",
    "estoi": "ESTOI",
    "pesq_nb": "PESQ-NB",
    "pesq_wb": "PESQ-WB",
    "mos": "MOS",  # predicted naturalness (1..5) of the output alone; the notes name the predictor
    "speaker_similarity": "Speaker sim",
    "f0_rmse_cents": "F0 RMSE (cents)",
    "seconds": "Model time (s)",
    "rtf": "RTF",
}
METRIC_DIGITS = {"f0_rmse_cents": 1, "seconds": 2}  # decimals in the table (others: 3)
MODEL_THREADS = 2  # systems of one request synthesized side by side (torch releases the GIL)
TABLE_HEADERS = ["System", "Lip-read text", "ASR transcript", *METRIC_COLUMNS.values()]

Progress = Callable[[float, str], None]


class SpeechModel(Protocol):
    name: str

    def synthesize(self, clip): ...


@dataclass
class Reference:
    """What the outputs are compared to; any part may be missing."""

    wav: np.ndarray | None = None  # (N,) float32 @ SAMPLE_RATE
    audio_source: str = ""  # "uploaded reference audio" | "the clip's own audio track" | ""
    text: str | None = None
    text_source: str = ""  # "typed transcript" | "GRID file name" | ""
    f0: np.ndarray | None = None  # (N // HOP,) Hz, 0 where unvoiced
    embedding: np.ndarray | None = None  # (D,) speaker embedding of the reference audio


@dataclass
class SystemResult:
    """One column of the studio: a model's output (or the reference audio) and its scores."""

    name: str
    wav: np.ndarray  # (N,) float32
    sample_rate: int
    mel: np.ndarray  # (n_mels, F) natural-log mel
    f0: np.ndarray | None  # (F,) Hz, 0 where unvoiced
    f0_source: str  # "predicted" (the model's F0 output) or "tracked" (pyworld on the waveform)
    text: str  # lip-read words ("" for the reference)
    seconds: float | None  # model compute time
    wav_path: Path
    transcript: str | None = None  # ASR of the output
    metrics: dict[str, float | None] = field(default_factory=dict)
    synthesis: object | None = None  # the model's Synthesis (None for the reference)

    @property
    def duration(self) -> float:
        return len(self.wav) / self.sample_rate


@dataclass
class StudioResult:
    """Everything one request produced. ``systems`` keeps the order of the request; the reference is separate."""

    video_path: Path
    work_dir: Path
    clip: object  # naturall2s.roi.MouthClip
    reference: Reference
    systems: list[SystemResult]
    reference_result: SystemResult | None
    roi_video: Path | None
    notes: list[str]  # things the user should know (reference taken from the clip, metrics skipped, ...)
    scored: bool = False  # transcripts and metrics are filled in
    domain: object | None = None  # naturall2s.domain.ClipAssessment of the clip, when that module is installed

    def columns(self) -> list[SystemResult]:
        """Systems, then the reference when there is one."""
        return self.systems + ([self.reference_result] if self.reference_result else [])

    def table(self) -> tuple[list[str], list[list]]:
        """Metrics table: ``TABLE_HEADERS`` and one row per column (floats rounded, None where not measured)."""
        rows = []
        for r in self.columns():
            values = [round_or_none(r.metrics.get(k), METRIC_DIGITS.get(k, 3)) for k in METRIC_COLUMNS]
            rows.append([r.name, r.text or "", r.transcript or "", *values])
        return TABLE_HEADERS, rows

    def system(self, name: str) -> SystemResult:
        """The column called ``name`` (a system or ``REFERENCE``); KeyError when it was not run."""
        for r in self.columns():
            if r.name == name:
                return r
        raise KeyError(name)


def round_or_none(x: float | None, digits: int = 3) -> float | None:
    """``x`` rounded for a table; None for a missing or NaN value."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return round(float(x), digits)


def default_cache_dir() -> Path:
    """``<system temp>/naturall2s-studio``: request folders live here (outside the package)."""
    return Path(tempfile.gettempdir()) / "naturall2s-studio"


def grid_transcript(path: str | Path) -> str | None:
    """The GRID sentence spelled by a clip's file name (``bbaf2n.mp4``), or None for other names."""
    from naturall2s.grid import name_transcript

    try:
        return name_transcript(Path(path).stem)
    except NaturalL2SError:
        return None


def cleanup_cache(cache_dir: Path, *, max_age_s: float, now: float | None = None) -> int:
    """Delete request folders in ``cache_dir`` last modified more than ``max_age_s`` ago; returns how many."""
    now = time.time() if now is None else now
    removed = 0
    if not cache_dir.is_dir():
        return 0
    for d in cache_dir.glob(f"{REQUEST_PREFIX}*"):
        try:
            if d.is_dir() and now - d.stat().st_mtime > max_age_s:
                shutil.rmtree(d, ignore_errors=True)
                removed += 1
        except FileNotFoundError:  # another request removed it first
            pass
    return removed


def _no_progress(fraction: float, message: str) -> None:
    pass


class Studio:
    """Start-up state and the request runner.

    ``models``: name → object with ``.synthesize(MouthClip) -> Synthesis``, in display order (more can be added
    while serving: :meth:`add_model`). ``detector``: a landmarks Detector (None: extract_mouth's default).
    ``scorer``: a :mod:`naturall2s.studio.scoring` scorer (worker processes in the app); without one, ``asr``
    (open vocabulary), ``grid_asr`` (the GRID grammar, used when the reference is a GRID sentence) and
    ``speaker_encoder`` (``.embed(wav, sr)``) and ``mos_predictor`` (``.score(wavs, sr)``) score in a background
    thread of this process; any of them None leaves its columns empty.
    ``seed``: passed to each model's ``synthesize`` when it takes one (the same clip gives the same audio).
    """

    def __init__(
        self,
        models: dict[str, SpeechModel],
        *,
        detector=None,
        asr=None,
        grid_asr=None,
        speaker_encoder=None,
        mos_predictor=None,
        scorer=None,
        cache_dir: str | Path | None = None,
        max_seconds: float | None = None,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        write_videos: bool = True,
        seed: int | None = None,
    ):
        from naturall2s.studio.scoring import LocalScorer, Scorers

        self.models = dict(models)
        self.detector = detector
        self.scorer = scorer or LocalScorer(Scorers(asr=asr, grid_asr=grid_asr, speaker_encoder=speaker_encoder,
                                                          mos_predictor=mos_predictor))
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.max_seconds = max_seconds
        self.max_age_s = max_age_s
        self.write_videos = write_videos
        self.seed = seed
        self._detector_lock = threading.Lock()
        self._models_lock = threading.Lock()
        self._memo_lock = threading.Lock()
        self._wav_memo: dict[tuple[str, float, str], Path] = {}  # (video, mtime, system) → wav of an earlier run

    @property
    def system_names(self) -> list[str]:
        with self._models_lock:
            return list(self.models)

    def add_model(self, name: str, model: SpeechModel) -> None:
        """Serve one more system (an adapted speaker, say) from the next request on; replaces one of that name."""
        with self._models_lock:
            self.models[name] = model

    def close(self) -> None:
        """Stop the scoring workers."""
        self.scorer.close()

    # ------------------------------------------------------------------------------------ request
    def new_work_dir(self) -> Path:
        """A fresh request folder (and age-based cleanup of old ones)."""
        cleanup_cache(self.cache_dir, max_age_s=self.max_age_s)
        d = self.cache_dir / f"{REQUEST_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        d.mkdir(parents=True)
        return d

    def decode(self, video_path: str | Path):
        """The decoded video (frames and audio track, :class:`naturall2s.video.VideoData`); NaturalL2SError
        subclasses for bad input (not a video, too long)."""
        from naturall2s.roi import decode_clip

        kwargs = {} if self.max_seconds is None else {"max_seconds": self.max_seconds}
        return decode_clip(video_path, **kwargs)

    def extract(self, video):
        """The mouth clip of a video path or of a :meth:`decode`-d video (landmarks + crop); NaturalL2SError
        subclasses for bad input."""
        from naturall2s.roi import extract_mouth

        data = self.decode(video) if isinstance(video, (str, Path)) else video
        with self._detector_lock:  # detectors keep tracking state between frames: one clip at a time
            return extract_mouth(data, detector=self.detector)

    def run(self, video_path: str | Path, **kwargs) -> StudioResult:
        """The finished result of :meth:`stream` (same arguments)."""
        result = None
        for result in self.stream(video_path, **kwargs):
            pass
        return result

    def stream(
        self,
        video_path: str | Path,
        *,
        systems: list[str] | None = None,
        reference_audio: str | Path | None = None,
        reference_text: str | None = None,
        metrics: bool = True,
        roi_video: bool = True,
        progress: Progress = _no_progress,
    ) -> Iterator[StudioResult]:
        """Synthesize ``video_path`` with each of ``systems`` (default: all) and score the outputs.

        Yields the result twice: once every system's audio exists (``scored`` False: no transcripts or metrics
        yet; the out-of-domain report of the clip too), then scored (``scored`` True; the mouth-crop video too). Without
        ``metrics`` only the second; without ``roi_video`` no mouth-crop video is written (API callers do not
        see it). The clip's own audio track (or ``reference_audio``, which wins) is the
        reference; ``reference_text`` (or the GRID sentence of the file name) is the reference transcript.
        """
        if not video_path:
            raise NaturalL2SError("no video given: upload a clip, record one, or pick an example")
        video_path = Path(video_path)
        with self._models_lock:
            models = dict(self.models)
        systems = list(models) if systems is None else [s for s in models if s in systems]
        if not systems:
            raise NaturalL2SError("no system selected: tick at least one model")
        progress(0.0, "reading the video")
        data = self.decode(video_path)
        work = self.new_work_dir()
        notes: list[str] = []
        reference = self._reference(data.audio, video_path, reference_audio, reference_text, notes)
        ref_result = self._reference_result(reference, work) if reference.wav is not None else None
        # scoring starts as soon as a column exists (the reference now, before the mouth is even cropped; each
        # system when it is done), in the scorer's workers, while the landmarks and the models run here
        pending = []
        if metrics and ref_result is not None:
            pending.append(self._submit_score(ref_result, reference, is_reference=True))
        progress(0.1, "finding face landmarks and cropping the mouth")
        try:
            clip = self.extract(data)
        except BaseException:
            for _, future in pending:  # no face (say): the reference's scores are not wanted
                future.cancel()
            raise
        progress(0.3, f"synthesizing with {', '.join(systems)}")
        done = {}
        with ThreadPoolExecutor(max_workers=MODEL_THREADS, thread_name_prefix="studio-model") as pool:
            futures = [pool.submit(self._synthesize, name, models[name], clip, work) for name in systems]
            for future in as_completed(futures):
                r = future.result()
                done[r.name] = r
                self._remember(video_path, r.name, r.wav_path)
                if metrics:
                    pending.append(self._submit_score(r, reference))
        results = [done[name] for name in systems]
        result = StudioResult(video_path, work, clip, reference, results, ref_result, None, notes)
        progress(0.5, "checking the clip against what each system was trained on")
        result.domain = self._assess(clip, {name: models[name] for name in systems}, reference)
        if metrics:
            yield result
            progress(0.6, "scoring (ASR, intelligibility, quality, naturalness, speaker similarity)")
        result.roi_video = self._roi_video(clip, work) if roi_video else None
        if metrics:
            self._collect_scores(result, pending)
            if reference.wav is None:
                notes.append("no reference audio: STOI, ESTOI, PESQ, speaker similarity and F0 error need one")
            if reference.text is None:
                notes.append("no reference transcript: WER and CER need one (type it, or use a GRID file name)")
        for r in result.systems:
            if r.f0 is None:  # not predicted by the model, not tracked by the scorer (metrics off or failed)
                r.f0 = f0_voicing(r.wav)[0] if r.sample_rate == SAMPLE_RATE else None
        result.scored = metrics
        progress(1.0, "done")
        yield result

    def synthesize_wavs(self, video_path: str | Path, systems: list[str]) -> dict[str, Path]:
        """Just the wavs of ``systems`` for a video (the A/B tab): reuses earlier outputs for the same file,
        otherwise one mouth crop and the missing systems; no metrics, no plots."""
        with self._models_lock:
            models = dict(self.models)
        unknown = [s for s in systems if s not in models]
        if unknown:
            raise NaturalL2SError(f"unknown system {unknown[0]!r}; available: {', '.join(models)}")
        found = {s: p for s in systems if (p := self._recall(video_path, s)) is not None}
        missing = [s for s in systems if s not in found]
        if missing:
            clip = self.extract(video_path)
            work = self.new_work_dir()
            for s in missing:
                found[s] = self._synthesize(s, models[s], clip, work).wav_path
                self._remember(video_path, s, found[s])
        return {s: found[s] for s in systems}

    @staticmethod
    def _memo_key(video_path: str | Path, system: str) -> tuple[str, float, str]:
        p = Path(video_path).resolve()
        return str(p), p.stat().st_mtime, system

    def _recall(self, video_path, system: str) -> Path | None:
        with self._memo_lock:
            p = self._wav_memo.get(self._memo_key(video_path, system))
        return p if p is not None and p.exists() else None

    def _remember(self, video_path, system: str, wav_path: Path) -> None:
        with self._memo_lock:
            for k in [k for k, v in self._wav_memo.items() if not v.exists()]:  # cleaned-up requests
                del self._wav_memo[k]
            self._wav_memo[self._memo_key(video_path, system)] = wav_path

    def dub(self, result: StudioResult, system: str) -> Path:
        """The request's video with ``system``'s speech as its only sound track (mp4, in the request folder)."""
        from naturall2s.video import mux_audio

        r = result.system(system)
        out = result.work_dir / f"{result.video_path.stem}_{_safe_name(system)}.mp4"
        if not out.exists():
            mux_audio(result.video_path, r.wav, r.sample_rate, out)
        return out

    # ------------------------------------------------------------------------------------ steps
    def _reference(self, track: np.ndarray | None, video_path: Path, reference_audio, reference_text,
                   notes: list[str]) -> Reference:
        """What the outputs are compared to; ``track``: the clip's own (N,) audio at SAMPLE_RATE, or None."""
        ref = Reference()
        if reference_audio:
            ref.wav = load_audio(reference_audio, sample_rate=SAMPLE_RATE)
            ref.audio_source = "uploaded reference audio"
            if track is not None:
                notes.append("the clip's own audio track was removed before synthesis; the uploaded audio is the reference")
        elif track is not None and np.abs(track).max(initial=0.0) > 0:
            ref.wav = np.asarray(track, dtype=np.float32)
            ref.audio_source = "the clip's own audio track"
            notes.append("the clip's own audio track was removed before synthesis and kept as the reference")
        text = (reference_text or "").strip()
        if text:
            ref.text, ref.text_source = text, "typed transcript"
        else:
            grid = grid_transcript(video_path)
            if grid:
                ref.text, ref.text_source = grid, GRID_SOURCE
                notes.append(f"reference transcript from the GRID file name: “{grid}”")
        if ref.wav is not None:
            ref.f0, _ = f0_voicing(ref.wav)
        return ref

    def _roi_video(self, clip, work: Path) -> Path | None:
        if not self.write_videos:
            return None
        from naturall2s.video import write_gray_video

        path = work / "mouth_roi.mp4"
        write_gray_video(path, np.asarray(clip.roi), fps=clip.fps)
        return path

    def _synthesize(self, name: str, model: SpeechModel, clip, work: Path) -> SystemResult:
        out = model.synthesize(clip, **self._seed_kwargs(model))
        wav = np.asarray(out.wav, dtype=np.float32).reshape(-1)
        wav_path = save_audio(work / f"{_safe_name(name)}.wav", wav, out.sample_rate)
        mel = out.mel if out.mel is not None else log_mel(wav).numpy()
        predicted = out.f0 is not None
        return SystemResult(
            name=name,
            wav=wav,
            sample_rate=int(out.sample_rate),
            mel=np.asarray(mel, dtype=np.float32),
            f0=np.asarray(out.f0, dtype=np.float32) if predicted else None,
            f0_source="predicted" if predicted else "tracked",
            text=out.text or "",
            seconds=float(out.seconds),
            wav_path=wav_path,
            synthesis=out,
        )

    def _seed_kwargs(self, model) -> dict:
        """``{"seed": self.seed}`` when the model's ``synthesize`` takes a seed and one is set."""
        if self.seed is None:
            return {}
        try:
            takes_seed = "seed" in inspect.signature(model.synthesize).parameters
        except (TypeError, ValueError):
            takes_seed = False
        return {"seed": self.seed} if takes_seed else {}

    def _reference_result(self, reference: Reference, work: Path) -> SystemResult:
        wav = reference.wav
        return SystemResult(
            name=REFERENCE,
            wav=wav,
            sample_rate=SAMPLE_RATE,
            mel=log_mel(wav).numpy(),
            f0=reference.f0,
            f0_source="tracked",
            text="",
            seconds=None,
            wav_path=save_audio(work / "reference.wav", wav, SAMPLE_RATE),
        )

    def _submit_score(self, column: SystemResult, ref: Reference, *, is_reference: bool = False) -> tuple:
        """Queue one column's scoring on the scorer; returns (column, future)."""
        from naturall2s.studio.scoring import ScoringReference

        sref = ScoringReference(wav=ref.wav, text=ref.text, grid=ref.text_source == GRID_SOURCE, f0=ref.f0)
        return column, self.scorer.submit(column.wav, column.sample_rate, sref, is_reference=is_reference)

    def _collect_scores(self, result: StudioResult, pending: list) -> None:
        """Wait for the scores and fill each column's transcript, metrics and (tracked) F0."""
        from naturall2s import metrics as M
        from naturall2s.studio.scoring import safe

        scores = {id(r): future.result() for r, future in pending}
        mos_by = {s.mos_by for s in scores.values() if s.mos_by}
        if mos_by:
            result.notes.append(f"MOS: naturalness (1..5, higher is better) predicted by {', '.join(sorted(mos_by))} "
                                "from each output alone, the reference included")
        ref_scores = scores.get(id(result.reference_result)) if result.reference_result else None
        result.reference.embedding = ref_scores.embedding if ref_scores else None
        for r, _ in pending:
            s = scores[id(r)]
            r.transcript = s.transcript
            m: dict[str, float | None] = {}
            if r.seconds is not None:
                m["seconds"] = r.seconds
                m["rtf"] = safe("rtf", M.rtf, r.seconds, len(r.wav), r.sample_rate)
            m.update(s.metrics)
            if r is not result.reference_result:
                if result.reference.embedding is not None and s.embedding is not None:
                    m["speaker_similarity"] = safe("speaker_similarity", M.speaker_similarity,
                                                   result.reference.embedding, s.embedding)
                if r.f0 is None:
                    r.f0 = s.f0
            r.metrics = m

    def _assess(self, clip, models: dict, reference: Reference):
        """The out-of-domain report of :mod:`naturall2s.domain` (None when that module is not installed or it
        fails): each of ``models`` judges the clip against its own training data, the voice measured once."""
        try:
            from naturall2s.domain import assess_systems
        except ImportError:
            return None
        try:
            return assess_systems(clip, models=models, reference_wav=reference.wav)
        except Exception as e:  # the warning is advice: it must not sink the request
            log.warning("out-of-domain assessment failed: %s: %s", type(e).__name__, e)
            return None


def _safe_name(name: str) -> str:
    """A file-name-safe version of a system name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def load_studio(
    model_names: list[str] | None = None,
    *,
    detector: str = "auto",
    asr: str | None = "auto",
    speaker_encoder: str | None = "auto",
    mos: str | None = "auto",
    device: str = "cpu",
    scoring_workers: int = 0,
    **studio_kwargs,
) -> Studio:
    """Build everything once at start-up: each model (default: every available one), the landmark detector and
    the scorers (ASR with and without the GRID grammar, speaker encoder, MOS predictor): in ``scoring_workers``
    processes, or in this one when 0.

    ``asr`` / ``speaker_encoder`` / ``mos`` None (or unavailable here) leave those columns empty; a missing model raises
    CheckpointError.
    """
    import naturall2s
    from naturall2s.landmarks import get_detector
    from naturall2s.studio.scoring import LocalScorer, ProcessScorer, build_scorers

    names = list(model_names) if model_names else naturall2s.available_models()
    models = {name: naturall2s.load_model(name, device=device) for name in names}
    if scoring_workers > 0:
        scorer = ProcessScorer(workers=scoring_workers, asr=asr, speaker_encoder=speaker_encoder, mos=mos)
    else:
        scorer = LocalScorer(build_scorers(asr=asr, speaker_encoder=speaker_encoder, mos=mos))
    return Studio(models, detector=get_detector(detector), scorer=scorer, **studio_kwargs)
