"""Scores of one studio output against the reference, in this process or in a pool of worker processes.

:func:`score_output` is the whole job for one column: ASR transcript (WER/CER against the reference text),
STOI/ESTOI and PESQ-NB/WB against the reference audio, the predicted MOS (naturalness, no reference needed), the output's tracked F0 and its RMSE to the reference
F0 track, and the output's speaker embedding (the similarity is taken by the caller, which has every embedding).
It is a pure function of its inputs and a :class:`Scorers` bundle (the recognisers and the speaker encoder).

Most of these are C extensions that hold the GIL (pocketsphinx, PESQ, pyworld), so threads do not run them side by
side: :class:`ProcessScorer` keeps worker processes (each builds its own :class:`Scorers` once) that score the
columns of every request in parallel; :class:`LocalScorer` runs the same function in one background thread (tests,
and machines where the workers cannot start). Both have ``submit(...) -> Future[Scores]`` and ``close()``.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 2  # one per core of the reference machine
WORKER_START_TIMEOUT_S = 300.0
WORKER_NICENESS = 5  # scoring workers run below the server's priority
PARENT_POLL_S = 1.0  # how often a worker checks that its server still lives


@dataclass(frozen=True)
class ScoringReference:
    """What every column of one request is scored against (picklable: it travels to the workers)."""

    wav: np.ndarray | None = None  # (N,) float32 @ 16 kHz
    text: str | None = None
    grid: bool = False  # the text is a GRID sentence: use the GRID-grammar recogniser
    f0: np.ndarray | None = None  # (N // HOP,) Hz, 0 where unvoiced: the reference's tracked F0


@dataclass
class Scores:
    transcript: str | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    embedding: np.ndarray | None = None  # speaker embedding of the output (None: no encoder or no reference)
    f0: np.ndarray | None = None  # (F,) Hz tracked on the output waveform
    mos_by: str | None = None  # the MOS predictor's name when metrics["mos"] was predicted


@dataclass
class Scorers:
    """The models scoring needs; any may be None (its columns stay empty)."""

    asr: object | None = None  # .transcribe(wav, sr) -> str, open vocabulary
    grid_asr: object | None = None  # the same constrained by the GRID grammar
    speaker_encoder: object | None = None  # .embed(wav, sr) -> (D,)
    mos_predictor: object | None = None  # .score(wavs, sr) -> (B,) predicted MOS


def build_scorers(*, asr: str | None = "auto", speaker_encoder: str | None = "auto",
                  mos: str | None = "auto") -> Scorers:
    """Every scorer that can be built on this machine (names as in :func:`naturall2s.asr.get_asr`,
    :func:`naturall2s.speaker.get_speaker_encoder` and :func:`naturall2s.naturalness.get_mos_predictor`; None:
    leave it out)."""
    s = Scorers()
    if asr:
        from naturall2s.asr import get_asr

        s.asr = _optional("ASR", get_asr, asr, grammar=None)
        s.grid_asr = _optional("GRID-grammar ASR", get_asr, asr, grammar="grid")
    if speaker_encoder:
        from naturall2s.speaker import get_speaker_encoder

        s.speaker_encoder = _optional("speaker encoder", get_speaker_encoder, speaker_encoder)
    if mos:
        from naturall2s.naturalness import get_mos_predictor

        s.mos_predictor = _optional("MOS predictor", get_mos_predictor, mos)
    return s


def score_output(wav: np.ndarray, sample_rate: int, reference: ScoringReference, *, scorers: Scorers,
                 is_reference: bool = False) -> Scores:
    """Scores of one output (N,) float32 against ``reference``; a metric that fails is logged and left None.

    The reference audio itself (``is_reference``) gets its transcript, WER/CER and embedding only.
    """
    from naturall2s import metrics as M
    from naturall2s.audio import f0_voicing

    out = Scores()
    m = out.metrics
    asr = scorers.grid_asr if reference.grid and scorers.grid_asr is not None else scorers.asr
    if asr is not None:
        out.transcript = safe("asr", asr.transcribe, wav, sample_rate)
    if reference.text is not None and out.transcript is not None:
        m["wer"] = safe("wer", M.wer, reference.text, out.transcript)
        m["cer"] = safe("cer", M.cer, reference.text, out.transcript)
    if scorers.mos_predictor is not None:
        mos = safe("mos", scorers.mos_predictor.score, [wav], sample_rate)
        if mos is not None:
            m["mos"], out.mos_by = float(mos[0]), scorers.mos_predictor.name
    if reference.wav is not None and scorers.speaker_encoder is not None:
        out.embedding = safe("speaker embedding", scorers.speaker_encoder.embed, wav, sample_rate)
    if is_reference:
        return out
    out.f0 = safe("f0 track", lambda: f0_voicing(_at_16k(wav, sample_rate))[0])
    if reference.wav is not None:
        ref = reference.wav
        for key in ("stoi", "estoi", "pesq_nb", "pesq_wb"):
            m[key] = safe(key, getattr(M, key), ref, wav, sample_rate=sample_rate)
        if reference.f0 is not None and out.f0 is not None:  # both tracked alike: every system measured the same way
            m["f0_rmse_cents"] = safe("f0_rmse_cents", M.f0_rmse_cents_from_tracks, reference.f0, out.f0)
    return out


def _at_16k(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    from naturall2s.audio import SAMPLE_RATE, resample

    return wav if sample_rate == SAMPLE_RATE else resample(np.asarray(wav, np.float32), sample_rate, SAMPLE_RATE)


def safe(name: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, or None (logged) when it fails on this signal (PESQ on silence raises, say)."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # one metric must not sink the request
        log.warning("metric %s failed: %s: %s", name, type(e).__name__, e)
        return None


def _optional(what: str, factory, *args, **kwargs):
    """``factory(...)``, or None with a warning when it cannot be built on this machine."""
    try:
        return factory(*args, **kwargs)
    except Exception as e:  # missing weights / libraries: the studio still runs without this column
        log.warning("%s unavailable, its columns stay empty: %s: %s", what, type(e).__name__, e)
        return None


class LocalScorer:
    """``score_output`` in one background thread of this process (the scorers are not thread-safe)."""

    def __init__(self, scorers: Scorers):
        self.scorers = scorers
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="studio-score")

    def submit(self, wav, sample_rate: int, reference: ScoringReference, *, is_reference: bool = False) -> Future:
        return self._pool.submit(score_output, wav, sample_rate, reference, scorers=self.scorers,
                                 is_reference=is_reference)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


_WORKER_SCORERS: Scorers | None = None  # set once in each worker process by _init_worker


def _exit_with_parent(parent: int) -> None:
    """End this worker when the server that spawned it is gone (killed, say: it cannot shut its pool down)."""
    import threading
    import time

    def watch():
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _init_worker(asr: str | None, speaker_encoder: str | None, mos: str | None, ready, parent: int) -> None:
    global _WORKER_SCORERS
    import torch

    _exit_with_parent(parent)
    torch.set_num_threads(1)  # one process per core: no intra-op threads on top
    os.nice(WORKER_NICENESS)  # the models' threads in the server come first: audio before scores
    _WORKER_SCORERS = build_scorers(asr=asr, speaker_encoder=speaker_encoder, mos=mos)
    warm_up(_WORKER_SCORERS)
    ready.put(True)


def warm_up(scorers: Scorers) -> None:
    """Score one second of a synthetic vowel against itself, so that lazy first-call costs (decoder search
    structures, the MOS and speaker networks' first pass) are paid at start-up, not by the first user."""
    from naturall2s.audio import SAMPLE_RATE, f0_voicing

    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    wav = (0.3 * np.sin(2 * np.pi * 120 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    ref = ScoringReference(wav=wav, text="bin blue at f two now", grid=True, f0=f0_voicing(wav)[0])
    score_output(wav, SAMPLE_RATE, ref, scorers=scorers)


def _score_in_worker(wav, sample_rate, reference, is_reference) -> Scores:
    return score_output(wav, sample_rate, reference, scorers=_WORKER_SCORERS, is_reference=is_reference)


class ProcessScorer:
    """``score_output`` in ``workers`` processes (spawned: no forked torch state), each with its own scorers.

    The constructor waits until every worker has built its scorers (a few seconds), so the first request is not
    slowed by start-up. ``scorers`` describes what the workers have (built here too, for the card and tests).
    """

    def __init__(self, *, workers: int = DEFAULT_WORKERS, asr: str | None = "auto",
                 speaker_encoder: str | None = "auto", mos: str | None = "auto"):
        ctx = multiprocessing.get_context("spawn")
        ready = ctx.Queue()  # each worker reports once its scorers are built
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                         initargs=(asr, speaker_encoder, mos, ready, os.getpid()))
        for _ in range(workers):  # a spawn pool starts a process per submit until it has `workers`
            self._pool.submit(_noop)
        for _ in range(workers):
            ready.get(timeout=WORKER_START_TIMEOUT_S)

    def submit(self, wav, sample_rate: int, reference: ScoringReference, *, is_reference: bool = False) -> Future:
        return self._pool.submit(_score_in_worker, np.asarray(wav, np.float32), int(sample_rate), reference,
                                 is_reference)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _noop() -> None:
    return None
