"""Score lip-to-speech systems on a GRID split against the real recordings.

For every clip of the split the real audio is the reference and the ``.align`` transcript the text. Each system
(a shipped model, or any object with ``name`` and ``synthesize(MouthClip) -> Synthesis``) speaks the clip from its
mouth crops; ``reference=True`` adds the ground-truth audio itself as the system ``"reference"`` — the evaluator's
own floor (ASR error on real speech; STOI 1, MCD 0 by construction).

Metrics per clip (see :mod:`naturall2s.metrics` for units): STOI, ESTOI, PESQ-nb, PESQ-wb, predicted naturalness
(MOS, 1..5, from :func:`naturall2s.naturalness.get_mos_predictor`; the field is named after the predictor, e.g.
``mos_distillmos``, scored on the whole output without the reference), the pause buzz (``comb_db``,
:func:`naturall2s.metrics.comb_db`, in the clip's ``.align`` pauses, else in the output's frames 30 dB below its
loudest), MCD, F0 RMSE (cents), voicing error, WER and CER of the ASR transcript against the true sentence,
speaker similarity to the real audio of the same clip, and real-time factor. F0/voicing are measured on the output audio (pyworld) for every system
alike, not taken from a model's own F0 prediction. Every synthesis uses the same seed (:data:`SEED`), so a rerun
with the same number of CPU threads reproduces every number. Griffin-Lim (mel-gl) is the exception across thread
counts: its momentum iterations amplify the float rounding of the predicted mel (on a random log-mel, a 1e-6
change moved the waveform by 0.2% RMS), so its per-clip scores move a little with the thread count (the iSTFT
systems' did not, beyond 1e-5).

Summary: per system and metric the mean over clips with a defined value, and a 95% Student-t confidence interval
(mean ± t_{0.975, n-1} · s / √n, s the sample standard deviation over clips). With GRID's fixed six-word
sentences the mean per-clip WER equals the corpus WER.

Paired differences: systems are scored on the same clips, so ``focus`` (default: the last model named) is also
compared with each other model clip by clip: the mean of the per-clip differences (focus minus other) with its 95%
t-interval, which is much tighter than comparing two independent intervals.

Word errors by GRID slot (:func:`slot_errors`): where in the sentence (command colour preposition letter digit
adverb) the ASR misses words of each system's speech, beside where the system's own lip reading misses them; a
word the lip reader got right but the ASR did not was lost in the synthesis.

Outputs in ``out_dir``: ``results.md`` (the table, then the paired differences), ``summary.csv`` (one row per
system: mean, ci95, n per metric), ``clips.csv`` (one row per clip and system, with transcripts) and ``results.json`` (all of it plus the settings).
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch

from naturall2s import audio, metrics
from naturall2s.errors import DataError, NaturalL2SError, NoAudioError
from naturall2s.metrics import mean_ci
from naturall2s.model import DEFAULT_SEED
from naturall2s.naturalness import get_mos_predictor, mos_key

REFERENCE = "reference"  # name of the ground-truth "system"
# the synthesis seed: shipped models draw their noise excitation from a generator of their own seeded with it (the
# default of LipToSpeech.synthesize, as in the CLI and the studio); any other system runs with torch's RNG reseeded
# with it (inside torch.random.fork_rng, so the caller's RNG state is left alone): reruns agree
SEED = DEFAULT_SEED
CI_LEVEL = 0.95
# metric key -> (column label, better direction); the order is the order of every table
METRICS = {
    "stoi": ("STOI", "↑"),
    "estoi": ("ESTOI", "↑"),
    "pesq_nb": ("PESQ-nb", "↑"),
    "pesq_wb": ("PESQ-wb", "↑"),
    # (the MOS column of the run's predictor goes here: metric_columns)
    "comb_db": ("comb dB", "↓"),  # the 100 Hz pause buzz of iSTFT generators
    "loud_frames": ("Loud frames", "↓"),  # share of frames within 30 dB of the peak (a filled-in pause keeps it ~1)
    "mcd": ("MCD dB", "↓"),
    "f0_rmse_cents": ("F0 RMSE ¢", "↓"),
    "voicing_error": ("V/UV err", "↓"),
    "wer": ("WER", "↓"),
    "cer": ("CER", "↓"),
    # the system's own lip-read text (its CTC head) against the transcript: the front end's share of the word errors
    "lipread_wer": ("Lip-read WER", "↓"),
    "speaker_similarity": ("Spk sim", "↑"),
    "rtf": ("RTF", "↓"),
}
TEXT_COLUMNS = ("clip", "speaker", "system", "text", "asr_text", "lipread_text")


def metric_columns(mos: str | None) -> dict[str, tuple[str, str]]:
    """The run's metrics in table order: METRICS with the MOS column of predictor ``mos`` (None: no MOS) after
    PESQ-wb, keyed ``mos_<predictor>`` and labelled ``MOS (<predictor>)``."""
    columns = {}
    for key, column in METRICS.items():
        if key == "comb_db" and mos is not None:
            columns[mos_key(mos)] = (f"MOS ({mos})", "↑")
        columns[key] = column
    return columns


def _columns(results: dict) -> dict[str, tuple[str, str]]:
    """The metric columns of a results dict (its settings name the MOS predictor, if any)."""
    return metric_columns(results["settings"].get("mos_predictor"))


class SpeechSystem(Protocol):
    """What the evaluator needs from a model: a name and ``synthesize(MouthClip) -> Synthesis``."""

    name: str

    def synthesize(self, clip): ...


@dataclass
class GridClip:
    """One clip of a split: its speaker folder and name, and where its video and alignment live."""

    speaker: str
    name: str
    video: Path
    align: Path


@dataclass
class Reference:
    """The real side of one clip, computed once and shared by every system: audio @16 kHz and its features."""

    wav: np.ndarray  # (N,) float32
    text: str  # the true sentence
    f0: np.ndarray  # (N // HOP_LENGTH,) Hz, 0 where unvoiced
    voiced: np.ndarray  # (N // HOP_LENGTH,) bool
    mcep: np.ndarray  # (N // HOP_LENGTH, MCD_ORDER + 1) mel-cepstrum
    embedding: np.ndarray  # (D,) unit-norm speaker embedding
    words: list[tuple[float, float, str]] | None = None  # the .align timings (s), where the pauses are; None: unknown


# --------------------------------------------------------------------------------------------- clips
def split_clips(data_root: str | Path, split: str, *, limit: int | None = None) -> list[GridClip]:
    """The clips of ``split`` listed in ``data_root/splits.json`` (every speaker in it), in file order.

    GRID layout: ``<root>/<speaker>/<name>.mp4`` and ``<root>/align/<speaker>/<name>.align``. Raises DataError
    for a missing splits.json or an unknown split.
    """
    from naturall2s.data import split_entries

    root = Path(data_root)
    entries = split_entries(root)
    if split not in {s for s, _, _ in entries}:
        raise DataError(f"split {split!r} not in {root / 'splits.json'} (has {sorted({s for s, _, _ in entries})})")
    clips = [GridClip(speaker, name, root / speaker / f"{name}.mp4", root / "align" / speaker / f"{name}.align")
             for s, speaker, name in entries if s == split and name is not None]
    return clips[:limit] if limit is not None else clips


def clip_text(clip: GridClip, cached: dict | None = None) -> str:
    """The true sentence: the ``.align`` file, else the prepared cache's text, else spelled from the clip name."""
    from naturall2s.data import align_transcript
    from naturall2s.grid import name_transcript

    if clip.align.is_file():
        return align_transcript(clip.align)
    if cached is not None and cached.get("text"):
        return str(cached["text"])
    return name_transcript(clip.name)


def _cached_record(cache: Path | None, clip: GridClip) -> dict | None:
    """The prepared cache's record of a clip (``<cache>/clips/<name>.npz``), or None without a cache."""
    if cache is None:
        return None
    from naturall2s.data import load_cached

    path = cache / "clips" / f"{clip.name}.npz"
    if not path.is_file():
        raise DataError(f"{clip.name} is not in the cache {cache} (run `python -m naturall2s prepare` first)")
    return load_cached(path)


def _mouth_clip(clip: GridClip, cached: dict | None, detector):
    """The MouthClip a model speaks from: rebuilt from the cache record, else extracted from the video."""
    from naturall2s.roi import MouthClip, extract_mouth

    if cached is not None:
        return MouthClip(roi=cached["roi"], lips=np.asarray(cached["lips"], np.float32), audio=cached["audio"],
                         fps=25.0, detected=np.asarray(cached["detected"], bool), source=clip.name)
    return extract_mouth(clip.video, detector=detector)


def _reference_audio(clip: GridClip, cached: dict | None, mouth) -> np.ndarray:
    """The real audio of a clip at 16 kHz: from the cache, the MouthClip, or the video's track. NoAudioError if none."""
    if cached is not None:
        wav = cached["audio"]
    elif mouth is not None:
        wav = mouth.audio
    else:
        from naturall2s.video import read_audio_track

        wav = read_audio_track(clip.video, sample_rate=audio.SAMPLE_RATE)
    if wav is None or len(wav) == 0:
        raise NoAudioError(f"{clip.video} has no audio track to compare against")
    return np.asarray(wav, np.float32)


# ------------------------------------------------------------------------------------------- scoring
def reference_features(wav: np.ndarray, text: str, *, encoder,
                       words: list[tuple[float, float, str]] | None = None) -> Reference:
    """Everything of the real side that the per-system scores reuse. wav (N,) float32 @ SAMPLE_RATE; ``words``:
    the clip's :func:`naturall2s.data.read_align` timings (for the pause-buzz mask), None without an alignment."""
    f0, voiced = audio.f0_voicing(wav)
    return Reference(wav=wav, text=text, f0=f0, voiced=voiced, mcep=metrics.mel_cepstrum(wav, f0=f0),
                     embedding=encoder.embed(wav, audio.SAMPLE_RATE), words=words)


def clip_words(clip: GridClip) -> list[tuple[float, float, str]] | None:
    """The clip's ``.align`` word timings, or None when it has no alignment."""
    from naturall2s.data import read_align

    return read_align(clip.align) if clip.align.is_file() else None


def pause_buzz(ref: Reference, wav: np.ndarray) -> float:
    """:func:`naturall2s.metrics.comb_db` of an output (N,) @ SAMPLE_RATE in the clip's ``.align`` pauses (the
    output shares the clip's timeline), else in the output's own frames 30 dB below its loudest."""
    from naturall2s.data import align_pauses

    pause = align_pauses(ref.words, len(wav) // audio.HOP_LENGTH) if ref.words is not None else None
    return metrics.comb_db(wav, pause=pause)


def score(ref: Reference, wav: np.ndarray, *, asr, encoder, seconds: float | None) -> dict:
    """All metrics but MOS (scored in batches by the caller) of one output (N,) float32 @ SAMPLE_RATE against its
    clip's reference.

    ``seconds``: the system's compute time (None: not applicable, RTF nan). Returns {metric: float, "asr_text": str}.
    """
    r, d = metrics.align_pair(ref.wav, wav)
    f0, voiced = audio.f0_voicing(d)
    hyp = asr.transcribe(d, audio.SAMPLE_RATE)
    return {
        "stoi": metrics.stoi(r, d),
        "estoi": metrics.estoi(r, d),
        "pesq_nb": metrics.pesq_nb(r, d),
        "pesq_wb": metrics.pesq_wb(r, d),
        "comb_db": pause_buzz(ref, wav),
        "loud_frames": metrics.loud_frames(wav),
        "mcd": metrics.mcd_from_cepstra(ref.mcep, metrics.mel_cepstrum(d, f0=f0)),
        "f0_rmse_cents": metrics.f0_rmse_cents_from_tracks(ref.f0, f0),
        "voicing_error": metrics.voicing_error_from_tracks(ref.voiced, voiced),
        "wer": metrics.wer(ref.text, hyp),
        "cer": metrics.cer(ref.text, hyp),
        "speaker_similarity": metrics.speaker_similarity(ref.embedding, encoder.embed(d, audio.SAMPLE_RATE)),
        "rtf": metrics.rtf(seconds, len(wav)) if seconds is not None else float("nan"),
        "asr_text": hyp,
    }


def summarize(rows: list[dict], systems: Sequence[str], columns: Sequence[str] = tuple(METRICS)) -> dict:
    """{system: {metric: mean_ci(per-clip values)}} over the per-clip rows, for the metrics in ``columns``."""
    return {s: {m: mean_ci([r[m] for r in rows if r["system"] == s]) for m in columns} for s in systems}


PAIRED_METRICS = tuple(m for m in METRICS if m != "rtf")
TEXT_SOURCES = {"asr": "asr_text", "lipread": "lipread_text"}  # whose words slot_errors counts -> the row's column


def slot_errors(rows: list[dict], systems: Sequence[str]) -> dict | None:
    """Word errors by position in the GRID sentence (command colour preposition letter digit adverb), per system,
    for the ASR transcript of its speech and for its own lip reading: {system: {"asr" | "lipread": {slot:
    {"errors", "n", "rate"}}}}. Counts every clip whose reference has six words; a reference word is an error
    unless the minimum-edit alignment matches it (:func:`naturall2s.metrics.word_hits`). A system without lip
    reading (the reference) has no "lipread" entry. None when no clip has a six-word reference."""
    from naturall2s.grid import GRID_SLOTS

    counts: dict[str, dict[str, list[list[int]]]] = {}
    for r in rows:
        if r["system"] not in systems or len(metrics.normalize_text(r["text"]).split()) != len(GRID_SLOTS):
            continue
        for source, column in TEXT_SOURCES.items():
            if source == "lipread" and not math.isfinite(r.get("lipread_wer", float("nan"))):
                continue
            hits = metrics.word_hits(r["text"], r.get(column, ""))
            per_slot = counts.setdefault(r["system"], {}).setdefault(source, [[0, 0] for _ in GRID_SLOTS])
            for k, hit in enumerate(hits):
                per_slot[k][0] += not hit
                per_slot[k][1] += 1
    if not counts:
        return None
    return {system: {source: {slot: {"errors": e, "n": n, "rate": e / n} for slot, (e, n) in zip(GRID_SLOTS, c)}
                     for source, c in by_source.items()}
            for system, by_source in counts.items()}


def paired_differences(rows: list[dict], focus: str, others: Sequence[str],
                       columns: Sequence[str] = PAIRED_METRICS) -> dict:
    """{other: {metric: mean_ci(focus - other over clips where both are defined)}} from the per-clip rows, for the
    metrics in ``columns``."""
    by_system: dict[str, dict[tuple[str, str], dict]] = {}
    for r in rows:
        by_system.setdefault(r["system"], {})[(r["speaker"], r["clip"])] = r
    mine = by_system.get(focus, {})
    out = {}
    for other in others:
        theirs = by_system.get(other, {})
        common = [k for k in mine if k in theirs]
        out[other] = {m: mean_ci([mine[k][m] - theirs[k][m] for k in common]) for m in columns}
    return out


# ---------------------------------------------------------------------------------------------- loop
def _load_systems(models) -> list[SpeechSystem]:
    """Model names/paths -> loaded models (``naturall2s.load_model``); objects with ``synthesize`` pass as is."""
    import naturall2s

    out = []
    for m in models:
        if isinstance(m, (str, Path)):
            model = naturall2s.load_model(str(m))
            if Path(str(m)).suffix == ".safetensors":
                model.name = Path(str(m)).stem  # a file's stem names the column, not just its variant
            out.append(model)
        else:
            out.append(m)
    names = [s.name for s in out]
    dupes = sorted({n for n in names if names.count(n) > 1} | ({REFERENCE} & set(names)))
    if dupes:
        raise NaturalL2SError(f"system names must be unique and not {REFERENCE!r}: {', '.join(dupes)}")
    return out



def add_scoring_arguments(ap, *, out: str) -> None:
    """The options of a script that scores settings of one model with :func:`evaluate` (the ablation scripts):
    ``--cache``, ``--data-root``, ``--limit``, ``--out`` (default ``out``), ``--asr``, ``--mos`` (default none)."""
    ap.add_argument("--cache", default="../naturall2s-work/cache/grid", help="prepared cache (default: %(default)s)")
    ap.add_argument("--data-root", default="../shared/data/grid", help="GRID root (default: %(default)s)")
    ap.add_argument("--limit", type=int, default=None, help="score only the first N clips of the split")
    ap.add_argument("--out", default=out, help="result files (default: %(default)s)")
    ap.add_argument("--asr", default="auto", help="recogniser for the WER (default: %(default)s)")
    ap.add_argument("--mos", default="none", help="MOS predictor, or none (default: %(default)s)")


def evaluate_settings(systems: Sequence[SpeechSystem], args) -> dict:
    """:func:`evaluate` of an ablation script's ``systems`` on ``args.split`` with the options of
    :func:`add_scoring_arguments` (``--mos none``: no MOS)."""
    return evaluate(systems, data_root=args.data_root, split=args.split, cache=args.cache, limit=args.limit,
                    out_dir=args.out, asr=args.asr, mos=None if args.mos == "none" else args.mos)


def evaluate(models: Sequence[str | SpeechSystem], *, data_root: str | Path, split: str = "test",
             cache: str | Path | None = None, reference: bool = False, out_dir: str | Path | None = None,
             limit: int | None = None, asr: str = "auto", grammar: str | None = "grid", speaker: str = "auto",
             detector=None, progress: bool = True, focus: str | None = None, mos: str | None = "auto") -> dict:
    """Score ``models`` (names, paths or SpeechSystem objects) and optionally the reference on a split.

    ``cache``: a prepared cache (``python -m naturall2s prepare``) to take mouth crops and audio from; else they
    are extracted from the videos (``detector``: reused across clips, default ``get_detector("auto")``).
    ``asr``/``grammar``/``speaker`` choose the recogniser (:func:`naturall2s.asr.get_asr`) and speaker encoder
    (:func:`naturall2s.speaker.get_speaker_encoder`); ``mos`` the MOS predictor
    (:func:`naturall2s.naturalness.get_mos_predictor`; None: no MOS column). Writes the result files when
    ``out_dir`` is given.

    Returns a dict: ``settings``, ``summary`` ({system: {metric: {mean, ci95, n}}}), ``paired`` ({"focus": name,
    "vs": {other: {metric: {mean, ci95, n}}}} of ``focus`` minus each other model, when two or more models ran;
    ``focus`` defaults to the last model), ``slots`` (:func:`slot_errors`), ``clips`` (per-clip rows), ``skipped`` (clips that could not be scored, with the reason), ``seconds`` (wall time).
    """
    from tqdm import tqdm

    from naturall2s.asr import get_asr
    from naturall2s.speaker import get_speaker_encoder

    if not models and not reference:
        raise NaturalL2SError("nothing to evaluate: name at least one model or ask for --reference")
    start = time.perf_counter()
    cache = Path(cache) if cache is not None else None
    data_root = Path(data_root)
    listing = data_root if (data_root / "splits.json").is_file() or cache is None else cache
    clips = split_clips(listing, split, limit=limit)
    systems = _load_systems(models)
    model_names = [s.name for s in systems]
    if focus is not None and focus not in model_names:
        raise NaturalL2SError(f"--focus {focus!r} is not one of the evaluated models ({', '.join(model_names)})")
    recogniser, encoder = get_asr(asr, grammar=grammar), get_speaker_encoder(speaker)
    predictor = get_mos_predictor(mos) if mos is not None else None
    columns = metric_columns(predictor.name if predictor is not None else None)
    if systems and cache is None and detector is None:
        from naturall2s.landmarks import get_detector

        detector = get_detector("auto")

    rows, skipped = [], []
    for clip in tqdm(clips, desc=f"evaluate {split}", unit="clip", disable=not progress):
        try:
            cached = _cached_record(cache, clip)
            mouth = _mouth_clip(clip, cached, detector) if systems else None
            ref = reference_features(_reference_audio(clip, cached, mouth), clip_text(clip, cached), encoder=encoder,
                                     words=clip_words(clip))
        except NaturalL2SError as e:  # no face, no audio, not cached: the clip is left out for every system
            skipped.append({"clip": clip.name, "speaker": clip.speaker, "reason": str(e)})
            continue
        base = {"clip": clip.name, "speaker": clip.speaker, "text": ref.text}
        first, outputs = len(rows), []  # this clip's rows and output audio, for one MOS batch
        if reference:
            rows.append({**base, "system": REFERENCE, "lipread_text": "", "lipread_wer": float("nan"),
                         **score(ref, ref.wav, asr=recogniser, encoder=encoder, seconds=None)})
            outputs.append(ref.wav)
        for system in systems:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(SEED)
                out = system.synthesize(mouth)
            wav = audio.resample(np.asarray(out.wav, np.float32).reshape(-1), int(out.sample_rate), audio.SAMPLE_RATE)
            scores = score(ref, wav, asr=recogniser, encoder=encoder, seconds=float(out.seconds))
            lipread_wer = metrics.wer(ref.text, out.text) if out.text is not None else float("nan")
            rows.append({**base, "system": system.name, "lipread_text": out.text or "", "lipread_wer": lipread_wer,
                         **scores})
            outputs.append(wav)
        if predictor is not None:
            for row, mos_score in zip(rows[first:], predictor.score(outputs, audio.SAMPLE_RATE)):
                row[mos_key(predictor.name)] = float(mos_score)

    names = ([REFERENCE] if reference else []) + model_names
    paired = None
    if len(model_names) >= 2:
        focus = focus or model_names[-1]
        others = [n for n in model_names if n != focus]
        paired = {"focus": focus, "vs": paired_differences(rows, focus, others, [m for m in columns if m != "rtf"])}
    results = {
        "settings": {
            "split": split, "data_root": str(data_root), "cache": str(cache) if cache else None,
            "n_clips": len(clips), "asr": recogniser.name, "speaker_encoder": encoder.name,
            "mos_predictor": predictor.name if predictor is not None else None,
            "ci": f"{CI_LEVEL:.0%} Student-t interval over clips: mean ± t(0.975, n-1)·s/√n",
        },
        "summary": summarize(rows, names, columns),
        "slots": slot_errors(rows, names),
        "paired": paired,
        "clips": rows,
        "skipped": skipped,
        "seconds": time.perf_counter() - start,
    }
    if out_dir is not None:
        write_results(results, out_dir)
    return results


# -------------------------------------------------------------------------------------------- output
def _fmt(x: float, digits: int) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


_DIGITS = {"f0_rmse_cents": 1, "mcd": 2, "pesq_nb": 2, "pesq_wb": 2}


def _cell(v: dict, digits: int, *, signed: bool = False) -> str:
    """``mean ± ci95`` of a mean_ci dict (``–`` when undefined); ``signed``: a difference, ``*`` when the interval
    excludes 0."""
    if not math.isfinite(v["mean"]):
        return "–"
    cell = f"{v['mean']:+.{digits}f}" if signed else _fmt(v["mean"], digits)
    if math.isfinite(v["ci95"]):
        cell += f" ± {_fmt(v['ci95'], digits)}" + ("*" if signed and abs(v["mean"]) > v["ci95"] else "")
    return cell


def _table(first: str, header: list[str], rows: dict[str, dict], metrics: Sequence[str], *, signed=False) -> list[str]:
    """Markdown rows: one per key of ``rows`` ({name: {metric: mean_ci}}), its largest n, then a cell per metric."""
    lines = ["| " + " | ".join([first, "n", *header]) + " |", "|" + "---|" * (len(header) + 2)]
    for name, per_metric in rows.items():
        n = max((v["n"] for v in per_metric.values()), default=0)
        cells = [_cell(per_metric[m], _DIGITS.get(m, 3), signed=signed) for m in metrics]
        lines.append("| " + " | ".join([name, str(n), *cells]) + " |")
    return lines


def markdown_table(results: dict) -> str:
    """The summary as a markdown table (rows: systems; cells: mean ± 95% CI) with footnotes naming ASR and encoder,
    then the paired differences when there are any."""
    s, columns = results["settings"], _columns(results)
    lines = _table("system", [f"{label} {arrow}" for label, arrow in columns.values()], results["summary"], columns)
    notes = [
        "",
        f"Split `{s['split']}` of {s['data_root']}: {s['n_clips']} clips"
        + (f" ({len(results['skipped'])} skipped)" if results["skipped"] else "")
        + f"; {results['seconds']:.0f} s.",
        f"WER/CER: ASR `{s['asr']}` against the .align transcript. Spk sim: cosine of `{s['speaker_encoder']}` "
        "embeddings with the real audio of the same clip. F0 RMSE over frames voiced in both (pyworld).",
        f"± : {s['ci']}. RTF: compute seconds per second of audio (– for the reference).",
        "comb dB: the pause buzz, how far the 100 Hz multiples stand above the bins between them in the spectrum of "
        "the .align pauses (~0 for room tone; metrics.comb_db). Loud frames: the share of 10 ms frames within 30 dB "
        "of the loudest (metrics.loud_frames)."
        + (f" MOS: predicted naturalness (1..5) by `{s['mos_predictor']}`, from the output alone."
           if s.get("mos_predictor") else ""),
    ]
    slots = results.get("slots")
    if slots:
        from naturall2s.grid import GRID_SLOTS

        notes += ["", "Word error rate by position in the GRID sentence: the ASR on each system's speech, and in "
                  "brackets the system's own lip reading (its CTC transcript):", "",
                  "| system | " + " | ".join(GRID_SLOTS) + " |", "|---" * (len(GRID_SLOTS) + 1) + "|"]
        for system, by_source in slots.items():
            cells = []
            for slot in GRID_SLOTS:
                cell = f"{by_source['asr'][slot]['rate']:.2f}"
                if "lipread" in by_source:
                    cell += f" ({by_source['lipread'][slot]['rate']:.2f})"
                cells.append(cell)
            notes.append("| " + " | ".join([system, *cells]) + " |")
    paired = results.get("paired")
    if paired:
        notes += ["", f"Paired differences, `{paired['focus']}` minus each system on the same clips (mean ± 95% "
                  "t-interval of the per-clip differences; * where the interval excludes 0):", ""]
        paired_columns = [m for m in columns if m != "rtf"]
        notes += _table("vs", [f"Δ {columns[m][0]}" for m in paired_columns], paired["vs"], paired_columns,
                        signed=True)
    return "\n".join(lines + notes) + "\n"


def write_results(results: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write results.md, summary.csv, clips.csv and results.json into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f for k, f in (("markdown", "results.md"), ("summary", "summary.csv"),
                                      ("clips", "clips.csv"), ("json", "results.json"))}
    columns = _columns(results)
    paths["markdown"].write_text(markdown_table(results))
    with paths["summary"].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["system"] + [f"{m}_{k}" for m in columns for k in ("mean", "ci95", "n")])
        for system, per_metric in results["summary"].items():
            w.writerow([system] + [per_metric[m][k] for m in columns for k in ("mean", "ci95", "n")])
    with paths["clips"].open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(TEXT_COLUMNS) + list(columns))
        w.writeheader()
        for row in results["clips"]:
            w.writerow({k: row.get(k, "") for k in w.fieldnames})
    paths["json"].write_text(json.dumps(_json_safe(results), indent=2, ensure_ascii=False) + "\n")
    return paths


def _json_safe(x):
    """nan/inf -> None (strict JSON), recursively; numpy scalars -> Python numbers."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x
