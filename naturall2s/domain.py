"""Out-of-domain warning: is this clip like what the model was trained on?

A model trained on one GRID speaker's face and voice reads other faces badly and always speaks with its training
speaker's voice. :func:`assess` measures a clip against the model's training data and says so in plain words;
:func:`assess_systems` does so for several systems at once, each against its own training data (an adapted model
against the speaker it was adapted to), and words the result for the clip.

Signals (each a number with a threshold, all in :class:`DomainReport.evidence`):

video (always):
- ``face_distance``: how far the clip's mean front-end feature lies from the training clips' per-clip means
  (:func:`subspace_distance`: Mahalanobis in their 16 leading principal directions plus the residual, ~1 for a
  training clip): another face, lighting or crop moves it;
- ``lip_shape_distance``: the same on the mean of the 20 lip points (8 directions; the crop is scaled by the
  eye-corner distance, so the mean lip shape carries the person's mouth width, lip thickness and jaw);
- ``word_confidence``: the word head's top posterior, mean over frames (models with a word head);
- ``lipread_confidence``: the CTC head's top-1 minus top-2 posterior, mean over frames;
- ``grammar_fit``: how much of the greedy lip-read text parses as the GRID sentence (:func:`grammar_fit`).

audio (when the clip has its own sound, or a reference voice is given):
- ``speaker_similarity``: cosine of the clip's speaker embedding (Resemblyzer GE2E) with the unit mean embedding of
  the training clips;
- ``pitch_distance``: semitones between the clip's median F0 (pyworld) and the training clips' median.

The clip is out of domain when any signal crosses its threshold. The statistics are aggregates of the training
split (means, a few principal directions and variances, a mean embedding, a median F0; never anything cut from a
clip), and the thresholds sit :data:`SPREAD_RULE` robust standard deviations beyond the median of the held-out
val clips of the training speaker (:func:`spread_thresholds`). Both are read from the checkpoint's metadata
(``info["domain"]``, written by :func:`reference_statistics`) or, for the shipped models, from
``resources/domain_reference.json`` (``scripts/calibrate_domain.py --write``, which also prints the calibration
table on s1 test, other speakers and in-the-wild clips). A model without statistics is checked on its lip
reading alone (:data:`THRESHOLDS` defaults).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from naturall2s.grid import SLOT_CODES

RESOURCES = Path(__file__).resolve().parent / "resources"
REFERENCE_FILE = RESOURCES / "domain_reference.json"
SPEAKER_ENCODER = "resemblyzer"  # ships in its wheel: the stored mean embeddings are of this encoder
MIN_VOICED_FRAMES = 20  # fewer voiced frames (0.2 s) than this: no pitch signal
FEATURE_COMPONENTS = 16  # principal directions of the per-clip mean front-end feature kept in the statistics
LIP_COMPONENTS = 8  # the same for the mean lip shape (40 values)
SPREAD_RULE = 5.0  # a threshold sits this many robust standard deviations (1.4826 MAD) beyond the val median
# fewer training clips than this: no face and lip-shape statistics (their subspaces, fitted on the 20 training clips
# of an adaptation to GRID s4, put s4's own 5 held-out clips at face distance 3.3-6.5, beyond any threshold; the
# speaker embedding and median F0 of those 20 clips do hold: held-out s4 similarity 0.87-0.93, s1 0.56-0.61)
MIN_SUBSPACE_CLIPS = 100

# signal -> (kind, "max" (fires above) | "min" (fires below), default threshold). A model's stored statistics carry
# its own thresholds (SPREAD_RULE on s1 val, scripts/calibrate_domain.py); these defaults (the shipped naturall2s
# model's, rounded) serve statistics without them. Two are fixed by judgement: grammar_fit (at most two words off
# the GRID sentence; val clips all parse, so their spread says nothing) and pitch_distance (5 semitones: s1's
# per-clip median F0 wanders up to 4.6 semitones from its median over train+val, so the spread rule's 2.1 fired
# on 2% of them; pitch only backs up the speaker similarity: another man's voice can sit at s1's pitch).
THRESHOLDS: dict[str, tuple[str, str, float]] = {
    "face_distance": ("video", "max", 1.75),
    "lip_shape_distance": ("video", "max", 1.05),
    "word_confidence": ("video", "min", 0.80),
    "lipread_confidence": ("video", "min", 0.96),
    "grammar_fit": ("video", "min", 0.6),
    "speaker_similarity": ("audio", "min", 0.75),
    "pitch_distance": ("audio", "max", 5.0),
}
FIXED_THRESHOLDS = ("grammar_fit", "pitch_distance")
# the words of the message for each kind of signal that fired
_WHAT = {"face": "face", "lips": "lip reading", "voice": "voice"}
_SIGNAL_WHAT = {"face_distance": "face", "lip_shape_distance": "face", "word_confidence": "lips",
                "lipread_confidence": "lips", "grammar_fit": "lips", "speaker_similarity": "voice",
                "pitch_distance": "voice"}
_WORD_SLOT = {w: i for i, slot in enumerate(SLOT_CODES.values()) for w in slot.values()}


@dataclass
class ClipSummary:
    """What the signals need from one clip: aggregates only (no frames, no samples)."""

    features: np.ndarray  # (D,) mean front-end feature over frames
    lips: np.ndarray  # (40,) mean lip points
    lipread_confidence: float  # CTC top-1 minus top-2 posterior, mean over frames
    grammar_fit: float
    text: str  # greedy lip-read text
    word_confidence: float | None = None  # word head's top posterior, mean over frames (models with a word head)
    embedding: np.ndarray | None = None  # (256,) speaker embedding of the clip's audio
    f0_median: float | None = None  # Hz, over voiced frames


@dataclass
class DomainReport:
    """``in_domain``: no signal crossed its threshold. ``message``: plain words for the user ("" when in domain
    and the model has training statistics). ``evidence``: each signal's value and, under ``<signal>/threshold``,
    its threshold (same units), plus ``audio_used`` (1.0 when the audio signals were measured). ``fired``: the
    signals that crossed."""

    in_domain: bool
    message: str
    evidence: dict[str, float] = field(default_factory=dict)
    fired: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ signals
def grammar_fit(text: str) -> float:
    """Share of a word string that parses as the GRID sentence: the longest subsequence of its words whose slots
    run in order without repeats (command colour preposition letter digit adverb), over max(6, words). 1.0 for a
    GRID sentence, 0 for "" or non-GRID words."""
    words = text.lower().split()
    slots = [_WORD_SLOT[w] for w in words if w in _WORD_SLOT]
    best = [0] * len(SLOT_CODES)  # best[s]: longest strictly increasing run of slots ending at slot s
    for s in slots:
        best[s] = max(best[s], 1 + max(best[:s], default=0))
    return max(best) / max(len(SLOT_CODES), len(words)) if words else 0.0


def ctc_margin(log_probs: torch.Tensor) -> float:
    """(T,V) CTC log-posteriors -> mean over frames of (top-1 minus top-2 posterior), in [0, 1]."""
    top = torch.topk(log_probs.float().exp(), 2, dim=-1).values
    return float((top[:, 0] - top[:, 1]).mean())


def subspace_fit(x: np.ndarray, *, components: int) -> dict:
    """Statistics of rows x (N, D) for :func:`subspace_distance`: the mean, the ``components`` leading principal
    directions with their variances, and the mean variance left in the other directions (JSON-able lists)."""
    x = np.asarray(x, np.float64)
    mean = x.mean(0)
    cov = np.cov(x - mean, rowvar=False)
    var, vec = np.linalg.eigh(cov)
    var, vec = var[::-1], vec[:, ::-1]
    k = min(components, x.shape[1] - 1)
    rest = max(float(var[k:].sum()) / (x.shape[1] - k), 1e-12)
    return {"mean": _r(mean), "components": [_r(v) for v in vec[:, :k].T], "variances": _r(var[:k]),
            "residual_variance": float(f"{rest:.5g}")}


def subspace_distance(x: np.ndarray, stats: dict) -> float:
    """How far x (D,) lies from rows summarised by :func:`subspace_fit`: the Mahalanobis distance in the principal
    subspace plus the residual's length in units of the residual spread, over √D (about 1 for a typical row):
    ``sqrt((Σ_i p_i² / λ_i + |r|² / σ²) / D)``, p = components·(x − mean), r the part of x − mean outside them."""
    z = np.asarray(x, np.float64) - np.asarray(stats["mean"])
    v = np.asarray(stats["components"], np.float64)  # (k, D)
    p = v @ z
    r = z - v.T @ p
    d2 = float(np.sum(p ** 2 / np.asarray(stats["variances"]))) + float(r @ r) / stats["residual_variance"]
    return float(np.sqrt(d2 / z.size))


@torch.inference_mode()
def summarize(model, roi: np.ndarray, lips: np.ndarray, audio: np.ndarray | None = None, *, encoder=None,
              voice: tuple | None = None) -> ClipSummary:
    """One clip -> :class:`ClipSummary`: the model's front end and lip reader on roi (T,H,W) uint8 and lips (T,40),
    and, with ``audio`` (N,) @16 kHz, its speaker embedding and median F0 (``voice``: those two already measured,
    :func:`voice_summary`, for several models at once)."""
    from naturall2s.grid import tokens_to_text
    from naturall2s.model import _ctc_greedy

    device = model.device
    r = torch.as_tensor(np.asarray(roi), device=device)[None]
    lp = torch.as_tensor(np.asarray(lips, np.float32), device=device)[None]
    feats = model.encode(r, lp)[0]
    log_probs = model.ctc(feats[None])[0]
    text = tokens_to_text(_ctc_greedy(log_probs))
    summary = ClipSummary(features=feats.float().mean(0).cpu().numpy(), lips=np.asarray(lips, np.float64).mean(0),
                          lipread_confidence=ctc_margin(log_probs), grammar_fit=grammar_fit(text), text=text)
    if getattr(model.config, "word_head", False):
        summary.word_confidence = float(torch.softmax(model.word_head(feats), -1).max(-1).values.mean())
    if voice is not None:
        summary.embedding, summary.f0_median = voice
    elif audio is not None and np.size(audio) and float(np.abs(audio).max()) > 0:
        summary.embedding, summary.f0_median = voice_summary(np.asarray(audio, np.float32), encoder)
    return summary


def voice_summary(wav: np.ndarray, encoder=None) -> tuple[np.ndarray, float | None]:
    """(speaker embedding, median F0 in Hz or None) of (N,) audio @16 kHz: the audio half of a summary."""
    from naturall2s.audio import SAMPLE_RATE, f0_voicing

    if encoder is None or encoder.name != _encoder().name:  # the stored mean embeddings are Resemblyzer's
        encoder = _encoder()
    f0, voiced = f0_voicing(wav)
    median = float(np.median(f0[voiced])) if voiced.sum() >= MIN_VOICED_FRAMES else None
    return encoder.embed(wav, SAMPLE_RATE), median


@functools.lru_cache(maxsize=1)
def _encoder():
    from naturall2s.speaker import get_speaker_encoder

    return get_speaker_encoder(SPEAKER_ENCODER)


def reference_statistics(train: list[ClipSummary], *, description: str, val: list[ClipSummary] | None = None) -> dict:
    """A model's training statistics from the summaries of its training clips (JSON-able, aggregates only): the
    principal subspaces of the per-clip mean features and lip shapes, the unit mean speaker embedding, the median
    of the clips' median F0; with ``val`` (held-out clips of the same speaker), the thresholds by SPREAD_RULE.
    The subspaces only from :data:`MIN_SUBSPACE_CLIPS` clips on (fewer: the voice statistics alone).
    Store it as ``info["domain"]`` of a checkpoint (or in ``resources/domain_reference.json``)."""
    ref = {"description": description, "clips": len(train)}
    if len(train) >= MIN_SUBSPACE_CLIPS:
        ref["features"] = subspace_fit(np.stack([s.features for s in train]), components=FEATURE_COMPONENTS)
        ref["lips"] = subspace_fit(np.stack([s.lips for s in train]), components=LIP_COMPONENTS)
    embs = [s.embedding for s in train if s.embedding is not None]
    if embs:
        mean = np.mean(embs, 0)
        ref["speaker"] = {"encoder": _encoder().name, "mean": _r(mean / np.linalg.norm(mean))}
    f0s = [s.f0_median for s in train if s.f0_median is not None]
    if f0s:
        ref["f0"] = {"median_hz": round(float(np.median(f0s)), 2)}
    if val:
        ref["thresholds"] = spread_thresholds([signals(s, ref) for s in val])
    return ref


def spread_thresholds(values: list[dict[str, float]], *, k: float = SPREAD_RULE) -> dict[str, float]:
    """Thresholds k robust standard deviations (1.4826 · MAD) beyond the median of held-out in-domain clips, on the
    firing side of each signal (FIXED_THRESHOLDS keep their defaults)."""
    out = {}
    for name, (_, direction, default) in THRESHOLDS.items():
        v = np.array([x[name] for x in values if name in x and np.isfinite(x[name])])
        if name in FIXED_THRESHOLDS or v.size < 10:
            out[name] = default
            continue
        med = float(np.median(v))
        spread = 1.4826 * float(np.median(np.abs(v - med)))
        out[name] = float(f"{med + k * spread if direction == 'max' else med - k * spread:.4g}")
    return out


def _r(x: np.ndarray) -> list[float]:
    return [float(f"{v:.5g}") for v in np.asarray(x, np.float64)]


def signals(summary: ClipSummary, reference: dict | None) -> dict[str, float]:
    """The signal values of one clip against a model's training statistics (those it has data for)."""
    out = {"lipread_confidence": summary.lipread_confidence, "grammar_fit": summary.grammar_fit}
    if summary.word_confidence is not None:
        out["word_confidence"] = summary.word_confidence
    if reference:
        if "features" in reference:
            out["face_distance"] = subspace_distance(summary.features, reference["features"])
            out["lip_shape_distance"] = subspace_distance(summary.lips, reference["lips"])
        if summary.embedding is not None and "speaker" in reference:
            out["speaker_similarity"] = float(np.dot(summary.embedding, reference["speaker"]["mean"]))
        if summary.f0_median is not None and "f0" in reference:
            out["pitch_distance"] = float(abs(12 * np.log2(summary.f0_median / reference["f0"]["median_hz"])))
    return out


def thresholds_of(reference: dict | None) -> dict[str, tuple[str, str, float]]:
    """THRESHOLDS with a model's own values (``reference["thresholds"]``) where it has them."""
    own = (reference or {}).get("thresholds", {})
    return {name: (kind, d, float(own.get(name, t))) for name, (kind, d, t) in THRESHOLDS.items()}


def fired(values: dict[str, float], thresholds: dict = THRESHOLDS) -> list[str]:
    """The signals of ``values`` beyond their thresholds."""
    out = []
    for name, v in values.items():
        if name in thresholds and np.isfinite(v):
            _, direction, t = thresholds[name]
            if (v > t) if direction == "max" else (v < t):
                out.append(name)
    return out


# --------------------------------------------------------------------------------------------- API
def model_reference(model) -> dict | None:
    """A model's training statistics: ``info["domain"]`` of its checkpoint, else the stored ones of a shipped
    name (``resources/domain_reference.json``), else None."""
    from naturall2s.card import is_shipped

    info = getattr(model, "info", None) or {}
    if info.get("domain"):
        return info["domain"]
    if is_shipped(model):
        stored = _stored_references()
        ref = stored.get(model.name)
        while ref is not None and "same_as" in ref:  # models sharing a front end share statistics
            ref = stored.get(ref["same_as"])
        return ref
    return None


@functools.lru_cache(maxsize=1)
def _stored_references() -> dict:
    if not REFERENCE_FILE.is_file():
        return {}
    return json.loads(REFERENCE_FILE.read_text()).get("models", {})


def assess(clip, *, model, synthesis=None, reference_wav=None, encoder=None, voice: tuple | None = None) -> DomainReport:
    """Is ``clip`` (a :class:`~naturall2s.roi.MouthClip`) like what ``model`` was trained on?

    ``reference_wav`` (N,) @16 kHz: the speaker's real voice when known (else the clip's own audio track, if any);
    with no audio at all only the video signals are used. ``synthesis`` (the model's output for this clip) is
    accepted for the callers' convenience; the signals come from the front end, which is cheap to rerun.
    ``encoder``: a Resemblyzer speaker encoder to reuse (e.g. the studio's, under its lock); any other encoder is
    replaced by this module's own Resemblyzer (the stored embeddings are Resemblyzer's). ``voice``: the
    :func:`voice_summary` of that audio, when already measured.
    """
    wav = reference_wav if reference_wav is not None else clip.audio
    summary = summarize(model, clip.roi, clip.lips, wav, encoder=encoder, voice=voice)
    reference = model_reference(model)
    values = signals(summary, reference)
    thresholds = thresholds_of(reference)
    hits = fired(values, thresholds)
    evidence = dict(values)
    for name in values:
        evidence[f"{name}/threshold"] = thresholds[name][2]
    evidence["audio_used"] = float(summary.embedding is not None)
    return DomainReport(in_domain=not hits, message=_message(model, hits, reference is not None), evidence=evidence,
                        fired=hits)


def _message(model, hits: list[str], has_reference: bool) -> str:
    """Plain words: what is unlike the training data, and what to expect from the output."""
    from naturall2s.card import model_card

    card = model_card(model)
    trained = f"model {card.name} was trained on ({card.summary()})"
    if not hits:
        return "" if has_reference else (f"No training statistics for model {card.name}: only its lip reading "
                                         "was checked.")
    kinds = list(dict.fromkeys(_SIGNAL_WHAT[h] for h in hits))
    face_voice = [k for k in kinds if k in ("face", "voice")]
    if face_voice:
        what = " and ".join(_WHAT[k] for k in face_voice)
        subject = f"This {what} {'are' if len(face_voice) > 1 else 'is'} unlike anything {trained}"
    else:
        subject = f"The lip reader is unsure of this clip, unlike the clips {trained}"
    if kinds == ["voice"]:
        return f"{subject}: expect the training speaker's voice, not this one."
    return f"{subject}: expect wrong words and the training speaker's voice."


# ------------------------------------------------------------------------------------- several systems
@dataclass
class ClipAssessment:
    """One clip judged by several systems, each against its own training data. ``reports``: system name ->
    :class:`DomainReport`; ``message``: plain words for the clip ("" when every system has it in its domain);
    ``groups``: the systems that agree, as (names, what they were trained on, fired signals) in order."""

    reports: dict[str, DomainReport]
    message: str
    groups: list[tuple[list[str], str, list[str]]] = field(default_factory=list)

    @property
    def in_domain(self) -> bool:
        return all(r.in_domain for r in self.reports.values())


def assess_systems(clip, *, models: dict, reference_wav=None, encoder=None) -> ClipAssessment:
    """:func:`assess` of ``clip`` for every model of ``models`` (name -> model), each against its own training
    statistics, the voice measured once; the message speaks of the clip and names the systems it is unlike."""
    from naturall2s.card import model_card

    wav = reference_wav if reference_wav is not None else clip.audio
    voice = None
    if wav is not None and np.size(wav) and float(np.abs(wav).max()) > 0:
        voice = voice_summary(np.asarray(wav, np.float32), encoder)
    reports, groups = {}, {}
    for name, model in models.items():
        reports[name] = report = assess(clip, model=model, reference_wav=wav, encoder=encoder, voice=voice)
        kinds = tuple(dict.fromkeys(_SIGNAL_WHAT[h] for h in report.fired))
        try:
            trained = model_card(model).summary()
        except Exception:  # a card is documentation: a model without one is still judged
            trained = "unknown training data"
        groups.setdefault((kinds, trained), []).append(name)
    ordered = [(names, trained, list(kinds)) for (kinds, trained), names in groups.items()]
    return ClipAssessment(reports=reports, message=_clip_message(ordered, len(models)), groups=ordered)


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _clip_message(groups: list[tuple[list[str], str, list[str]]], n_systems: int) -> str:
    """Plain words about one clip: for each group of systems it is unlike, what is unlike and what to expect;
    then the systems whose training data it matches."""
    out, fitting = [], []
    for names, trained, kinds in groups:
        if not kinds:
            fitting += names
            continue
        face_voice = [k for k in kinds if k in ("face", "voice")]
        whose = f"{_names(names)} ({trained})"
        if face_voice:
            what = " and ".join(_WHAT[k] for k in face_voice)
            sentence = f"Its {what} {'are' if len(face_voice) > 1 else 'is'} unlike the training data of {whose}"
        else:
            sentence = f"The lip reader{'s' if len(names) > 1 else ''} of {whose} {'are' if len(names) > 1 else 'is'} unsure of it"
        expect = ("expect the training speaker's voice, not this one" if kinds == ["voice"] else
                  "expect wrong words and the training speaker's voice")
        out.append(f"{sentence}: {expect}.")
    if not out:
        return ""
    unlike = n_systems - len(fitting)
    head = f"This clip is outside what {'the system' if n_systems == 1 else f'{unlike} of the {n_systems} systems'} " \
           f"{'was' if n_systems == 1 else 'were'} trained on."
    tail = [f"It fits what {_names(fitting)} {'was' if len(fitting) == 1 else 'were'} trained on."] if fitting else []
    return " ".join([head, *out, *tail])
