"""Speech recognisers for the intelligibility columns (WER/CER) of the evaluation.

:func:`get_asr` picks one; every recogniser has ``name`` and ``transcribe(wav, sample_rate) -> str`` (lower-case
words). Nothing is ever downloaded: Whisper is used only when its package is installed and its weights are
already on disk.

- :class:`PocketSphinxASR` (offline, the English model ships in the pocketsphinx wheel), optionally constrained
  by a JSGF grammar. ``grammar="grid"`` uses ``naturall2s/resources/grid.jsgf`` (the six-slot GRID sentence);
  on real GRID speech (speaker s1, 50 test clips) it scores about 10% WER. Without a grammar it decodes with
  the default open-vocabulary language model (about 87% WER on the same clips: GRID sentences are not English
  prose).
- :class:`WhisperASR` (openai-whisper, else faster-whisper), open vocabulary, when weights are on disk.
"""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Protocol

import numpy as np

from naturall2s import audio
from naturall2s.errors import NaturalL2SError

RESOURCES = Path(__file__).resolve().parent / "resources"
GRAMMARS = {"grid": RESOURCES / "grid.jsgf"}
ASR_NAMES = ("auto", "pocketsphinx", "whisper")
ASR_RATE = 16000  # Hz: pocketsphinx's en-us model and Whisper both take 16 kHz audio
WHISPER_MODELS = ("small.en", "base.en", "small", "base", "medium.en", "medium", "large-v3", "tiny.en", "tiny")
# grammar-only spellings mapped back to GRID words: "a." (letter name) -> "a"; "zed" (British z) -> "z"
_LETTER_NAME = re.compile(r"^([a-z])\.$")
_GRAMMAR_ALIASES = {"grid": {"zed": "z"}}


class ASR(Protocol):
    """A speech recogniser: ``transcribe`` returns lower-case words separated by single spaces."""

    name: str

    def transcribe(self, wav: np.ndarray, sample_rate: int) -> str: ...


class ASRUnavailableError(NaturalL2SError):
    """The requested recogniser is not installed or its weights are not on disk."""


def _to_pcm16(wav, sample_rate: int) -> bytes:
    """(N,) float in [-1, 1] at ``sample_rate`` -> 16 kHz mono 16-bit little-endian PCM bytes."""
    x = audio.resample(np.asarray(wav, np.float32).reshape(-1), int(sample_rate), ASR_RATE)
    return (np.clip(x, -1.0, 1.0) * audio.PCM16_SCALE).round().astype("<i2").tobytes()


def grammar_path(grammar: str) -> Path:
    """The JSGF file of a named grammar (``"grid"``); ValueError for an unknown name."""
    if grammar not in GRAMMARS:
        raise ValueError(f"unknown grammar {grammar!r}; choose one of {', '.join(GRAMMARS)} or None")
    return GRAMMARS[grammar]


def grammar_words(grammar: str) -> list[str]:
    """The terminal words of a named JSGF grammar (as spelled for the decoder, e.g. ``"a."``), sorted."""
    text = re.sub(r"/\*.*?\*/|//[^\n]*", " ", grammar_path(grammar).read_text(), flags=re.S)
    words = set()
    for rule in re.findall(r"=([^;]*);", text):
        rule = re.sub(r"<[^>]*>", " ", rule)
        words.update(w for w in re.split(r"[\s|()\[\]*+]+", rule) if w)
    return sorted(words)


class PocketSphinxASR:
    """CMU PocketSphinx 5 with its bundled US-English acoustic model and CMUdict; optional JSGF grammar.

    ``grammar``: a name in :data:`GRAMMARS` or None (the default open-vocabulary n-gram LM). The decoder is
    built once per (grammar) per process and reused; its feature front end is reset before every utterance, so a
    transcript depends on that audio alone (not on what was decoded before).
    """

    def __init__(self, grammar: str | None = None):
        self.name = f"pocketsphinx+{grammar}" if grammar else "pocketsphinx"
        self._decoder = _pocketsphinx_decoder(grammar)
        self._aliases = _GRAMMAR_ALIASES.get(grammar, {})

    def transcribe(self, wav: np.ndarray, sample_rate: int) -> str:
        """Words heard in (N,) float audio at ``sample_rate``; "" for silence or no hypothesis."""
        d = self._decoder
        d.reinit_feat()  # the feature front end's noise tracking would otherwise carry over from the last utterance
        d.start_utt()
        d.process_raw(_to_pcm16(wav, sample_rate), full_utt=True)
        d.end_utt()
        hyp = d.hyp()
        return self._clean(hyp.hypstr if hyp is not None else "")

    def transcribe_scored(self, wav: np.ndarray, sample_rate: int) -> tuple[str, float]:
        """(words, confidence in 0..1) of (N,) float audio: :func:`transcript_confidence` of the decoder's best path.
        ("", 0.0) when there is no hypothesis (with a grammar: no path through it fits the audio)."""
        d = self._decoder
        x = audio.resample(np.asarray(wav, np.float32).reshape(-1), int(sample_rate), ASR_RATE)
        d.reinit_feat()
        d.start_utt()
        d.process_raw(_to_pcm16(x, ASR_RATE), full_utt=True)
        d.end_utt()
        hyp = d.hyp()
        text = self._clean(hyp.hypstr if hyp is not None else "")
        if not text:
            return "", 0.0
        segments = [(s.word, s.start_frame, s.end_frame, s.prob) for s in d.seg() or ()]
        return text, transcript_confidence(segments, audio.f0_voicing(x)[1])

    def _clean(self, hypstr: str) -> str:
        """Decoder words -> transcript words: letter names ``"b."`` -> ``"b"``, grammar aliases, fillers dropped."""
        out = []
        for w in hypstr.lower().split():
            if w.startswith("<") or w.startswith("["):  # <sil>, <s>, [NOISE]
                continue
            w = re.sub(r"\(\d+\)$", "", w)  # alternate-pronunciation marks, should any appear
            w = _LETTER_NAME.sub(r"\1", w)
            out.append(self._aliases.get(w, w))
        return " ".join(out)


def transcript_confidence(segments, voiced: np.ndarray) -> float:
    """How far to trust a grammar-constrained transcript, 0..1: the share of the voiced audio its words cover
    (speech the sentence does not explain lands in the decoder's silences: GRID clips 0.98-1.00, a GRID sentence
    forced onto 5-7 s of other speech 0.3) times the geometric mean of the words' lattice posteriors (how sure the
    decoder is of each word against the grammar's alternatives; GRID s4's letters go down to 0.34).

    ``segments``: the decoder's path as (word, first frame, last frame inclusive, posterior) at 100 frames/s,
    fillers (``<sil>``, ``[NOISE]``...) included; ``voiced``: (F,) bool per 10 ms frame (:func:`naturall2s.audio.f0_voicing`)."""
    voiced = np.asarray(voiced, bool)
    words = [(w, a, b, p) for w, a, b, p in segments if not w.startswith(("<", "["))]
    if not words:
        return 0.0
    fill = sum(int(voiced[a:b + 1].sum()) for w, a, b, _ in segments if w.startswith(("<", "[")))
    coverage = 1.0 - fill / voiced.sum() if voiced.any() else 0.0
    posteriors = np.clip([p for *_, p in words], 1e-6, 1.0)
    return float(coverage * np.exp(np.mean(np.log(posteriors))))


@functools.lru_cache(maxsize=None)
def _pocketsphinx_decoder(grammar: str | None):
    """One pocketsphinx Decoder per grammar per process (loading the model takes about a second)."""
    from pocketsphinx import Decoder

    kwargs = {"jsgf": str(grammar_path(grammar))} if grammar else {}
    decoder = Decoder(samprate=ASR_RATE, loglevel="FATAL", **kwargs)
    if grammar:
        missing = [w for w in grammar_words(grammar) if decoder.lookup_word(w) is None]
        if missing:  # a JSGF word missing from the dictionary would silently never be recognised
            raise RuntimeError(f"grammar {grammar!r} uses words missing from the pocketsphinx dictionary: {missing}")
    return decoder


# -------------------------------------------------------------------------------- forced alignment
ALIGN_FRAME_RATE = 100.0  # pocketsphinx frames per second


class AlignmentError(NaturalL2SError):
    """A transcript could not be aligned to its audio (unknown words, or no path through the audio)."""


def align_words(wav: np.ndarray, sample_rate: int, text: str) -> list[tuple[float, float, str]]:
    """Forced alignment of a known transcript to (N,) float audio: [(start_s, end_s, word), ...], one entry per word
    of ``text`` in order (silences left out), by pocketsphinx's Viterbi alignment with its US-English model.

    Single letters are aligned as their letter names (``"f"`` as ``"f."``). On GRID s1 (30 clips, 180 words) the
    word boundaries land 0.78 video frames from the corpus's ``.align`` timings on average (median 0.5, 90th
    percentile 1.5). Raises :class:`AlignmentError` when a word is not in the dictionary or no alignment is found.
    """
    words = text.lower().split()
    if not words:
        raise AlignmentError("nothing to align: the transcript is empty")
    spelled = [w + "." if len(w) == 1 else w for w in words]
    d = _aligner()
    unknown = [w for w in spelled if d.lookup_word(w) is None]
    if unknown:
        raise AlignmentError(f"words not in the pronunciation dictionary: {', '.join(unknown)}")
    try:
        d.reinit_feat()
        d.set_align_text(" ".join(spelled))
        d.start_utt()
        d.process_raw(_to_pcm16(wav, sample_rate), full_utt=True)
        d.end_utt()
        segs = [s for s in d.seg() or () if not s.word.startswith(("<", "["))]
    except RuntimeError as e:
        raise AlignmentError(f"alignment failed ({e})") from None
    if len(segs) != len(words):
        raise AlignmentError(f"the audio could not be aligned to the {len(words)} words of {text!r}")
    return [(s.start_frame / ALIGN_FRAME_RATE, (s.end_frame + 1) / ALIGN_FRAME_RATE, w) for s, w in zip(segs, words)]


@functools.lru_cache(maxsize=None)
def _aligner():
    """A pocketsphinx Decoder kept for alignment only (alignment mode replaces a decoder's search)."""
    from pocketsphinx import Decoder

    return Decoder(samprate=ASR_RATE, loglevel="FATAL")


# ------------------------------------------------------------------------------------------ whisper
def _whisper_cache_dir() -> Path:
    """Where openai-whisper keeps its ``<model>.pt`` files ($XDG_CACHE_HOME/whisper, else ~/.cache/whisper)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "whisper"


def _find_whisper() -> tuple[str, str] | None:
    """(backend, model) for the first Whisper model whose package is installed and weights are on disk, else None."""
    import importlib.util

    if importlib.util.find_spec("whisper") is not None:
        for model in WHISPER_MODELS:
            if (_whisper_cache_dir() / f"{model}.pt").is_file():
                return "openai-whisper", model
    if importlib.util.find_spec("faster_whisper") is not None:
        from huggingface_hub import snapshot_download

        for model in WHISPER_MODELS:
            try:
                path = snapshot_download(f"Systran/faster-whisper-{model}", local_files_only=True)
            except Exception:  # not in the local Hugging Face cache (or the hub client refuses offline)
                continue
            if (Path(path) / "model.bin").is_file():
                return "faster-whisper", path
    return None


class WhisperASR:
    """OpenAI Whisper (or faster-whisper) on CPU, English, greedy decoding; weights must already be on disk."""

    def __init__(self, found: tuple[str, str] | None = None):
        found = found or _find_whisper()
        if found is None:
            raise ASRUnavailableError(
                "Whisper is not available: install openai-whisper or faster-whisper and put a model's weights in "
                f"{_whisper_cache_dir()} (or the Hugging Face cache); nothing is downloaded automatically"
            )
        self.backend, model = found
        self.name = f"whisper-{Path(model).name}"
        self._model = _whisper_model(self.backend, model)

    def transcribe(self, wav: np.ndarray, sample_rate: int) -> str:
        """Lower-case words of (N,) float audio at ``sample_rate`` (punctuation removed)."""
        from naturall2s.metrics import normalize_text

        x = audio.resample(np.asarray(wav, np.float32).reshape(-1), int(sample_rate), ASR_RATE)
        if self.backend == "openai-whisper":
            text = self._model.transcribe(x, language="en", fp16=False, temperature=0.0)["text"]
        else:
            segments, _ = self._model.transcribe(x, language="en", beam_size=1, temperature=0.0)
            text = " ".join(s.text for s in segments)
        return normalize_text(text)


@functools.lru_cache(maxsize=None)
def _whisper_model(backend: str, model: str):
    """One loaded Whisper model per (backend, model) per process."""
    if backend == "openai-whisper":
        import whisper

        return whisper.load_model(model, device="cpu", download_root=str(_whisper_cache_dir()))
    from faster_whisper import WhisperModel

    return WhisperModel(model, device="cpu", compute_type="int8", local_files_only=True)


# ------------------------------------------------------------------------------------------- factory
def get_asr(name: str = "auto", *, grammar: str | None = "grid") -> ASR:
    """A recogniser by name: ``"pocketsphinx"``, ``"whisper"`` or ``"auto"``.

    ``"auto"``: with a grammar, PocketSphinx constrained by it (Whisper cannot take a grammar, and a constrained
    decoder is the usual GRID protocol); without one, Whisper when installed with weights on disk, else
    open-vocabulary PocketSphinx. ``grammar`` applies to PocketSphinx only. Raises :class:`ASRUnavailableError`
    for ``"whisper"`` when it is not available, ValueError for unknown names.
    """
    if name not in ASR_NAMES:
        raise ValueError(f"unknown ASR {name!r}; choose one of {', '.join(ASR_NAMES)}")
    if grammar is not None:
        grammar_path(grammar)  # validate early
    found = _find_whisper() if name == "whisper" or (name == "auto" and grammar is None) else None
    if name == "whisper" or found is not None:
        return WhisperASR(found)
    return PocketSphinxASR(grammar)
