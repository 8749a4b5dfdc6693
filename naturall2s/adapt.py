"""A new speaker from a few of their clips: ``python -m naturall2s adapt CLIP_OR_DIR... --name NAME``.

The pipeline (:func:`adapt`), resumable at every step (its work folder is ``<out>/.adapt/<name>/``):

1. **Examine** every clip (:func:`check_clip`): mouth crops (a face must be found), its own audio (speech must be
   heard), the duration, and a transcript: a sidecar ``<clip>.txt`` if there is one, the GRID clip name when asked
   (``names_as_transcripts``), else the offline ASR under the GRID grammar (:mod:`naturall2s.asr`). The transcript
   is force-aligned to the audio (:func:`naturall2s.asr.align_words`): the word spoken at each video frame is the
   target of the word head. Each clip becomes a record of a prepared cache (:func:`naturall2s.data.clip_features`).
   Clips of evidently different people (leave-one-out speaker similarity below :data:`SPEAKER_WARN_SIMILARITY`)
   get a warning; unusable clips are named with their reason; fewer than :data:`MIN_CLIPS` usable is an error.
2. **Hold out** a few clips (:func:`heldout_sizes`, a fixed seeded draw, so a rerun holds out the same ones): a
   validation part that selects the checkpoint and, from :data:`TEST_MIN_CLIPS` usable clips on, a separate test
   part that only scores the result (with fewer clips the validation clips are scored, and the report says that
   those scores are optimistic: the same clips chose the checkpoint).
3. **Train** with the one training script (:func:`naturall2s.train.train`) from the base model, the stages of
   its variant (:data:`ADAPT_STAGES`: ``synth`` for the naturall2s variants; ``lipreader`` for ``mel-gl``; the
   cascade ``mel-vocoder`` its ``lipreader`` and then its ``vocoder`` on the new speaker's real mels, the two runs
   composed into one checkpoint by ``train --steps 0``; ``units`` its multi-input ``vocoder`` on the new speaker's
   real mels and units (the base's codebook, kept), then its ``lipreader`` stage from that run (:data:`CHAINED`):
   the last run is the model; ``ltbs`` likewise its ``vocoder``, then its ``synth`` stage from that run: the
   front end, variance adaptor, mel decoder and post-net on the new speaker's real pitch, energy and mels;
   ``lipvoicer`` likewise its ``vocoder`` on the real mels, then its ``flow`` stage (the denoiser on the new
   speaker's mels, the base's lip reader, mel statistics and content judge kept: the judge that guides the sampling
   was trained on the base speaker's speech)): the recipe :data:`RECIPE` with the base model's own
   architecture, feature noise and loss weights (its stored training config), the synth stage with the adversarial
   losses against the base model's own discriminators when it ships them (:func:`with_discriminator`), each run
   selected on the validation clips. ``keep_base``: a prepared cache of the base speaker whose training clips are
   mixed into the training set (linked, not copied), so one model speaks for both.
4. **Score** the base model and the adapted one on the test clips (else the validation ones)
   (:func:`naturall2s.evaluate.evaluate`) and write the checkpoint, with its provenance (base model, clips, steps
   planned and done, wall time, held-out scores, the measures on which it scored below its base) in its
   metadata, and the voice statistics of its training clips for the out-of-domain warning (``info["domain"]``,
   :func:`_domain_statistics`), into the user models folder (:func:`naturall2s.checkpoints.user_models_dir`) or
   ``out``; it appears only once complete (an atomic write).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from naturall2s.errors import DataError, NaturalL2SError

MIN_CLIPS = 3  # usable clips needed (at least one is held out)
MIN_SECONDS = 1.0  # shorter clips are refused
MIN_SPEECH = 0.1  # fraction of voiced audio frames below which no speech is heard
MIN_FACE = 0.5  # fraction of frames with a detected face (roi.MIN_FACE_FRACTION is the hard floor)
MIN_TRANSCRIPT_CONFIDENCE = 0.5  # an ASR transcript less sure than this is refused (naturall2s.asr.transcribe_scored)
SPEAKER_WARN_SIMILARITY = 0.70  # a clip's speaker similarity to the others' mean below this: a warning
# (Resemblyzer, GRID: 12 clips of s4 scored 0.81-0.90 against the other 11; clips of s1 0.48-0.62 against s4's)
MAX_HOLDOUT = 5
# from this many usable clips on, a test part (scored only) apart from the validation part (selects the checkpoint):
# on GRID s4, the 5 clips that both selected and scored an adaptation said WER 0.20 / ESTOI 0.445 where 26 unseen
# clips said 0.43 / 0.33 (issue #26)
TEST_MIN_CLIPS = 15
MIN_VALIDATION = 2
# the headline measures on which an adapted model must not score below its base on the held-out clips
VERDICT_METRICS = ("wer", "estoi", "speaker_similarity")  # + the MOS column of the run
BASE_PREFIX = "base-"  # names of the base speaker's clips in an adaptation cache (--keep-base)
# --keep-base mixes in this many base-speaker clips per training clip of the new speaker (GRID s1 + s4, docs/results.md:
# on s1 val, 3 held s1's ESTOI within 0.023 of the shipped model where 1 lost 0.050; s4 then adapts more slowly)
BASE_CLIPS_PER_CLIP = 3
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg")
WORK_FOLDER = ".adapt"  # inside the output folder: the cache and training run of each adaptation (resumable)
HOLDOUT_SEED = 0
# what adapting each variant trains: stages of naturall2s.train, in order (several: composed into one checkpoint)
ADAPT_STAGES = {"naturall2s": ("synth",), "naturall2s-noddsp": ("synth",), "mel-gl": ("lipreader",),
                "mel-vocoder": ("lipreader", "vocoder"), "units": ("vocoder", "lipreader"),
                "ltbs": ("vocoder", "synth"), "lipvoicer": ("vocoder", "flow")}
# the variant a stage of a base variant trains as, when not the base's own: the cascade's lip reader is a mel-gl one
STAGE_VARIANT = {"mel-vocoder": {"lipreader": "mel-gl"}}
# variants whose stages chain: each stage's run starts from the previous one's best checkpoint, so the last run is
# the whole model (the units lip reader stage carries the adapted vocoder and the base's unit codebook)
# ltbs: its synth run (the front end + acoustic model) carries the adapted vocoder; lipvoicer: its flow run carries
# the adapted vocoder, the base's judge and mel statistics
CHAINED = ("units", "ltbs", "lipvoicer")
# the adaptation recipe (what trains, how long, how): everything, whole clips, augmentation, the base model's loss
# weights, 100 steps (issue #17's trial: 300 steps at 2e-4). An entry named after a stage overrides the common entries
# for that stage's run: the end-to-end variants' synth stage at 5e-4 for 200 steps, with the adversarial losses from
# step 0 against the base model's own discriminators when it ships them (:func:`with_discriminator`; without, none)
# (the recipe searches of docs/results.md on GRID speaker s4: 5e-4 beat 3e-4 and 8e-4; with the adversarial losses,
# 200 steps beat 100 on speaker similarity, pitch and predicted naturalness; about 14 minutes on one CPU thread, which
# the command line's default --minutes caps); the synth stage's checkpoint selected by the validation clips' ESTOI,
# not their log-mel L1, which the adversarial losses do not lower (on s4 from v6, 2026-12-07: the same run's step 180
# instead of step 100, speaker similarity 0.748 against 0.696 and MOS 2.95 against 2.81 on the 5 test clips, WER and
# ESTOI level); the cascade's vocoder on the real mels, which augmentation does not touch, at a gentler rate
RECIPE = {"steps": 100, "batch_size": 8, "lr": 3e-4, "warmup": 10, "augment": True, "segment_frames": 0,
          "freeze_frontend": False, "eval_every": 20, "select": "mel", "save_minutes": 0.5,
          "synth": {"lr": 5e-4, "adv_start": 0, "steps": 200, "select": "estoi"},
          "vocoder": {"lr": 2e-4, "augment": False}}
# training-config keys of the base model's own run that the adaptation keeps (architecture knobs and loss weights,
# the adversarial ones included)
INHERITED = ("feature_noise", "lambdas")
DEFAULT_MINUTES = 15.0  # the command line's wall-time cap: the recipe's 200 synth steps on 25 GRID clips, 1 CPU thread
EVAL_RESERVE_MINUTES = 1.0  # of a --minutes budget, kept for scoring the held-out clips at the end

Progress = Callable[[float, str], None]


class AdaptError(NaturalL2SError):
    """The clips given cannot make an adapted model (too few usable, a bad name or base model)."""


@dataclass
class ClipCheck:
    """What :func:`check_clip` found in one clip. ``ok`` False: ``reason`` says why it cannot be used."""

    path: str
    ok: bool
    reason: str = ""
    seconds: float = 0.0
    face: float = 0.0  # fraction of frames with a detected face
    speech: float = 0.0  # fraction of audio frames that are voiced
    transcript: str = ""
    transcript_source: str = ""  # "asr" | "sidecar" | "given" | "name"
    confidence: float | None = None  # the recogniser's confidence in an "asr" transcript (0..1)
    words: list = field(default_factory=list)  # forced alignment: [(start_s, end_s, word), ...]
    warnings: list = field(default_factory=list)


# ------------------------------------------------------------------------------------ one clip
def check_clip(path: str | Path, *, transcript: str | None = None, names_as_transcripts: bool = False,
               detector=None) -> ClipCheck:
    """Vet one clip for adaptation: a face, its own audio with speech, at least :data:`MIN_SECONDS`, a GRID
    transcript (``transcript`` if given, else a sidecar ``.txt``, the clip name with ``names_as_transcripts``, else
    the ASR) that aligns to the audio. Never raises for a bad clip: ``ok`` is False and ``reason`` says why."""
    return _examine(Path(path), transcript=transcript, names_as_transcripts=names_as_transcripts,
                    detector=detector)[0]


def _examine(path: Path, *, transcript: str | None, names_as_transcripts: bool, detector):
    """-> (ClipCheck, cache record or None). The record (:func:`naturall2s.data.clip_features`) only when ok."""
    from naturall2s.audio import SAMPLE_RATE, f0_voicing

    check = ClipCheck(path=str(path), ok=False)
    try:
        from naturall2s.roi import extract_mouth

        clip = extract_mouth(path, detector=detector)
    except NaturalL2SError as e:
        check.reason = str(e)
        return check, None
    check.face = clip.detection_rate
    check.seconds = len(clip.roi) / clip.fps
    if clip.audio is None or len(clip.audio) == 0:
        check.reason = "it has no audio track (adaptation learns the voice from the clip's own sound)"
        return check, None
    if check.seconds < MIN_SECONDS:
        check.reason = f"it is too short ({check.seconds:.2f} s; at least {MIN_SECONDS:.0f} s needed)"
        return check, None
    if check.face < MIN_FACE:
        check.reason = f"a face was found in only {check.face:.0%} of its frames"
        return check, None
    wav = np.asarray(clip.audio, np.float32)
    check.speech = float(np.mean(f0_voicing(wav)[1]))
    if check.speech < MIN_SPEECH:
        check.reason = f"no speech heard in its audio ({check.speech:.0%} of it voiced)"
        return check, None
    try:
        check.transcript, check.transcript_source, check.confidence = _transcript(path, wav, SAMPLE_RATE, transcript,
                                                                                  names_as_transcripts)
        from naturall2s.asr import align_words

        check.words = [tuple(w) for w in align_words(wav, SAMPLE_RATE, check.transcript)]
    except NaturalL2SError as e:
        check.reason = str(e)
        return check, None
    from naturall2s.data import clip_features, word_frames

    labels = word_frames(check.words, len(clip.roi), fps=clip.fps)
    record = clip_features(clip.roi, clip.lips, clip.detected, wav, check.transcript, labels)
    check.ok = True
    return check, record


def _transcript(path: Path, wav, sample_rate: int, given: str | None,
                names_as_transcripts: bool) -> tuple[str, str, float | None]:
    """(GRID sentence, its source, the recogniser's confidence or None). A sidecar ``.txt`` wins over the ASR.
    Raises DataError when it is not a GRID sentence, or the recogniser is unsure of it."""
    from naturall2s.grid import is_grid_sentence, name_transcript

    sidecar = path.with_suffix(".txt")
    if given is not None:
        text, source = given, "given"
    elif sidecar.is_file():
        text, source = sidecar.read_text(errors="replace"), "sidecar"
    elif names_as_transcripts:
        return name_transcript(path.name), "name", None
    else:
        text, confidence = recognise(wav, sample_rate)
        if (problem := transcript_problem(text, confidence)) is not None:
            raise DataError(f"its transcript was refused: {problem}; check it and give the sentence (command colour "
                            "preposition letter digit adverb) in a sidecar .txt, or in the studio's transcript table "
                            "(Check the transcripts)")
        return text, "asr", confidence
    text = " ".join(text.lower().split())
    if not is_grid_sentence(text):
        raise DataError(f"its {source} transcript {text!r} is not a GRID sentence (command colour preposition "
                        "letter digit adverb): the models speak the GRID vocabulary only")
    return text, source, None


def recognise(wav, sample_rate: int) -> tuple[str, float]:
    """(words, confidence 0..1) of a take's speech by the offline ASR under the GRID grammar
    (:meth:`naturall2s.asr.PocketSphinxASR.transcribe_scored`); judge them with :func:`transcript_problem`."""
    from naturall2s.asr import get_asr

    return get_asr("pocketsphinx", grammar="grid").transcribe_scored(wav, sample_rate)


def transcript_problem(text: str, confidence: float) -> str | None:
    """Why a recognised transcript cannot be used unchecked (not a GRID sentence; a confidence below
    :data:`MIN_TRANSCRIPT_CONFIDENCE`: other speech, or unclear), else None."""
    from naturall2s.grid import is_grid_sentence

    if not is_grid_sentence(text):
        return f"the recogniser heard {text!r}, not a GRID sentence"
    if confidence < MIN_TRANSCRIPT_CONFIDENCE:
        return (f"the recogniser is unsure of “{text}” (confidence {confidence:.2f}, below "
                f"{MIN_TRANSCRIPT_CONFIDENCE:.2f}): other speech than a GRID sentence, or unclear")
    return None


# ------------------------------------------------------------------------------------ clip sets
def expand_clips(clips) -> list[Path]:
    """Files and folders (their video files, sorted) -> video paths, in order, without repeats."""
    out: list[Path] = []
    for c in clips:
        p = Path(c).expanduser()
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in VIDEO_SUFFIXES and q.is_file())
            if not found:
                raise AdaptError(f"{p}: no video files ({', '.join(VIDEO_SUFFIXES)}) in this folder")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise AdaptError(f"{p}: no such file or folder")
    seen, unique = set(), []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def holdout_size(n_usable: int) -> int:
    """How many of ``n_usable`` clips one held-out part takes: a fifth, 1 to 5."""
    return max(1, min(MAX_HOLDOUT, round(n_usable / 5)))


def heldout_sizes(n_usable: int) -> tuple[int, int]:
    """(validation, test) sizes for ``n_usable`` clips: below :data:`TEST_MIN_CLIPS`, :func:`holdout_size` clips
    validate and none are kept for the test; from there on the test part takes :func:`holdout_size` and the
    validation part two fewer (at least :data:`MIN_VALIDATION`): 25 clips train 17, validate 3, test 5."""
    if n_usable < TEST_MIN_CLIPS:
        return holdout_size(n_usable), 0
    return max(MIN_VALIDATION, holdout_size(n_usable) - 2), holdout_size(n_usable)


def split_parts(keys: list[str], n_val: int, n_test: int = 0) -> tuple[list[str], list[str], list[str]]:
    """(train, validation, test) keys, each in the given order: a fixed seeded draw over the sorted keys (a rerun
    holds out the same clips), the test part first, then the validation part."""
    order = sorted(keys)
    random.Random(HOLDOUT_SEED).shuffle(order)
    test, val = set(order[:n_test]), set(order[n_test:n_test + n_val])
    return ([k for k in keys if k not in test | val], [k for k in keys if k in val], [k for k in keys if k in test])


def split_holdout(keys: list[str], n_heldout: int) -> tuple[list[str], list[str]]:
    """(train, held-out) keys: :func:`split_parts` without a test part."""
    train, held, _ = split_parts(keys, n_heldout)
    return train, held


def speaker_outliers(embeddings: dict[str, np.ndarray], threshold: float = SPEAKER_WARN_SIMILARITY) -> dict[str, float]:
    """{key: similarity} of clips whose unit speaker embedding is far from the mean of the others (leave one out)."""
    keys = list(embeddings)
    if len(keys) < 3:
        return {}
    E = np.stack([embeddings[k] for k in keys])
    out = {}
    for i, k in enumerate(keys):
        rest = np.delete(E, i, axis=0).mean(axis=0)
        sim = float(E[i] @ rest / max(1e-9, np.linalg.norm(rest)))
        if sim < threshold:
            out[k] = sim
    return out


# ------------------------------------------------------------------------------------ the pipeline
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _check_name(name: str) -> None:
    from naturall2s.checkpoints import CHECKPOINT_DIR

    if not _NAME.match(name or ""):
        raise AdaptError(f"bad model name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    if (CHECKPOINT_DIR / f"{name}.safetensors").is_file():
        raise AdaptError(f"{name!r} is a shipped model's name; choose another --name")


def _fingerprint(paths: list[Path], settings: dict) -> str:
    """What makes a work folder reusable: the clips (path, size, mtime) and the settings."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _keys(paths: list[Path]) -> list[str]:
    """Unique cache names of the clips: the file stem, ``-2``, ``-3``... on repeats."""
    keys, used = [], set()
    for p in paths:
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", p.stem) or "clip"
        key, i = stem, 1
        while key in used:
            i += 1
            key = f"{stem}-{i}"
        used.add(key)
        keys.append(key)
    return keys


def adapt(clips: list[str | Path], *, name: str, base: str = "naturall2s", minutes: float | None = None,
          out: str | Path | None = None, keep_base: str | None = None, progress: Progress | None = None,
          names_as_transcripts: bool = False, steps: int | None = None, recipe: dict | None = None,
          holdout: int | None = None, test: int | None = None, base_clips: int | None = None, device: str = "auto", threads: int = 0,
          detector: str = "auto", seed: int = 1337, verbose: bool = True) -> Path:
    """Adapt ``base`` (a model name or path) to the person in ``clips`` (video files or folders of them, one person,
    with their own audio) and write ``<out>/<name>.safetensors`` (``out``: the user models folder by default).

    ``minutes`` caps the wall time (resumable: the same call continues where a stopped one left off);
    ``keep_base``: a prepared cache of the base speaker (``python -m naturall2s prepare``) whose training clips
    (``base_clips`` of them, default :data:`BASE_CLIPS_PER_CLIP` per training clip of the new speaker) are mixed in,
    so the result speaks for both; ``progress(fraction, message)`` is called as the work advances;
    ``steps``/``recipe`` override :data:`RECIPE`; ``holdout`` (validation) and ``test`` override
    :func:`heldout_sizes`. Raises
    :class:`AdaptError` (fewer than :data:`MIN_CLIPS` usable clips, each named with its reason; a bad name or base),
    CheckpointError, DataError.
    Returns the checkpoint's path.
    """
    from naturall2s.checkpoints import read_metadata, resolve, user_models_dir

    t0 = time.time()
    report = progress or (lambda fraction, message: None)
    say = _printer(verbose, report)
    _check_name(name)
    base_path = resolve(base)
    base_meta = read_metadata(base_path)
    variant = base_meta["config"]["variant"]
    if variant not in ADAPT_STAGES:
        raise AdaptError(f"{base}: cannot adapt a {variant} model (adaptable: {', '.join(ADAPT_STAGES)})")
    if keep_base is not None and not (Path(keep_base) / "manifest.json").is_file():
        raise AdaptError(f"--keep-base {keep_base}: not a prepared cache (no manifest.json); run "
                         "`python -m naturall2s prepare` for the base speaker first")
    paths = expand_clips(clips)
    if len(paths) < MIN_CLIPS:
        raise AdaptError(f"{len(paths)} clip(s) given; adaptation needs at least {MIN_CLIPS} clips of the person")
    out_dir = Path(out).expanduser() if out is not None else user_models_dir()
    target = out_dir / f"{name}.safetensors"
    overrides = {**(recipe or {}), **({"steps": steps} if steps is not None else {})}
    recipes = {stage: with_discriminator(stage_recipe(stage, overrides), base_path) for stage in ADAPT_STAGES[variant]}
    settings = {"base": str(base_path.resolve()), "recipe": recipes, "keep_base": str(keep_base), "holdout": holdout,
                "test": test, "base_clips": base_clips, "seed": seed}
    work = out_dir / WORK_FOLDER / name
    state = _open_work(work, _fingerprint(paths, {"names": names_as_transcripts}), _fingerprint([], settings), say)

    # 1. examine the clips (skips the ones already in the work cache)
    keys = _keys(paths)
    checks = _examine_all(paths, keys, work, state, names_as_transcripts, detector, say, report)
    usable = [k for k in keys if checks[k].ok]
    bad = [(checks[k].path, checks[k].reason) for k in keys if not checks[k].ok]
    for path, reason in bad:
        say(None, f"skipped {path}: {reason}")
    if len(usable) < MIN_CLIPS:
        detail = "; ".join(f"{Path(p).name}: {r}" for p, r in bad)
        raise AdaptError(f"only {len(usable)} usable clip(s) of {len(paths)}; adaptation needs at least {MIN_CLIPS}"
                         + (f" ({detail})" if detail else ""))
    for key, sim in _speaker_warnings(work, usable).items():
        say(None, f"warning: {checks[key].path} sounds like a different person (speaker similarity {sim:.2f} to "
                  f"the other clips; the same person scores above {SPEAKER_WARN_SIMILARITY:.2f})")

    # 2. hold out (validation, test), lay out the training cache (+ the base speaker's clips)
    n_val, n_test = heldout_sizes(len(usable))
    n_val = n_val if holdout is None else max(1, holdout)
    n_test = n_test if test is None else max(0, test)
    train_keys, held, tested = split_parts(usable, n_val, n_test)
    if not train_keys:
        raise AdaptError(f"all {len(usable)} usable clips would be held out: give more clips or smaller held-out "
                         "parts (--holdout, --test)")
    mixed = _layout_cache(work / "cache", train_keys, held, keep_base, base_clips, seed, test=tested)
    say(0.15, f"{len(train_keys)} training clips" + (f" (+ {mixed} of the base speaker)" if mixed else "")
        + f", {len(held)} to select the checkpoint: {', '.join(held)}"
        + (f"; {len(tested)} to test it: {', '.join(tested)}" if tested else
           f"; no test part (fewer than {TEST_MIN_CLIPS} usable clips): the scores will be optimistic"))

    # 3. train from the base model: each stage of its variant, then one checkpoint of them
    cfgs = [_train_config(base_path, base_meta, work, stage, recipes[stage], n_train=len(train_keys) + mixed,
                          device=device, threads=threads, seed=seed) for stage in recipes]
    if variant in CHAINED:  # each stage starts from the one before it (written before the next one trains)
        for before, cfg in zip(cfgs, cfgs[1:]):
            cfg.init = str(Path(before.run_dir) / "best.safetensors")
    for c in cfgs:
        if c.adv_start >= 0:
            say(None, f"{c.stage}: adversarial and feature-matching losses from step {c.adv_start}, "
                      f"{c.disc} discriminators from {c.init_disc or 'scratch'}")
    deadline = None if minutes is None else t0 + 60 * (minutes - EVAL_RESERVE_MINUTES)
    results = _train_stages(cfgs, deadline, say, report)
    final = _compose(cfgs, base_path, base_meta, work)

    # 4. score before/after on the held-out clips, then write the checkpoint (atomically)
    scored = tested or held
    say(0.9, f"scoring {base_path.stem} and {name} on the {len(scored)} " + ("test clips" if tested else
                                                                           "validation clips"))
    scores = _heldout_scores(base_path, final, work, name, split="test" if tested else "val")
    state["wall_s"] = state.get("wall_s", 0.0) + time.time() - t0
    _save_state(work, state)
    info = _provenance(final, base_path, base_meta, checks, train_keys, held, tested, mixed, keep_base, cfgs,
                       results, scores, state["wall_s"])
    from naturall2s.checkpoints import load_model, save_model

    model = load_model(final)
    if not mixed:  # two speakers' voices make no one mean voice or pitch: a --keep-base model stores none
        say(0.95, f"the training statistics of the out-of-domain warning ({len(train_keys)} clips)")
        info["domain"] = _domain_statistics(model, work / "cache", train_keys)
    save_model(model, target, info=info)
    say(1.0, f"{target}: {name}, adapted from {base_path.stem} in {state['wall_s'] / 60:.1f} min"
        + "".join(f"; {w}" for w in verdict(info)))
    return target


def _printer(verbose: bool, report: Progress):
    """say(fraction | None, message): report progress (when a fraction is given) and print the message."""
    def say(fraction, message):
        if fraction is not None:
            report(fraction, message)
        if verbose:
            from tqdm import tqdm

            tqdm.write(message)
    return say


def _open_work(work: Path, examined_for: str, trained_for: str, say) -> dict:
    """The work folder's state. The clip examinations are kept while the clips are the same (``examined_for``); the
    training run is kept while the settings are too (``trained_for``), else it starts over."""
    state_file = work / "adapt.json"
    state = {}
    if state_file.is_file():
        try:
            state = json.loads(state_file.read_text())
        except (OSError, json.JSONDecodeError):
            state = {}
    if state.get("examined_for") != examined_for:
        if work.exists():
            say(None, f"{work} holds an adaptation of other clips: starting over")
            shutil.rmtree(work)
        state = {"examined_for": examined_for, "checks": {}}
    if state.get("trained_for") != trained_for:
        if (work / "run").exists():
            say(None, f"{work}: other settings than the last run's: training starts over")
        for sub in ("run", "heldout"):
            shutil.rmtree(work / sub, ignore_errors=True)
        for link in (work / "cache" / "clips").glob(BASE_PREFIX + "*.npz"):
            link.unlink()
        state |= {"trained_for": trained_for, "wall_s": 0.0}
    elif any((work / "run").glob("*/state.pt")):
        say(None, f"resuming the adaptation in {work}")
    work.mkdir(parents=True, exist_ok=True)
    _save_state(work, state)
    return state


def _save_state(work: Path, state: dict) -> None:
    from naturall2s.files import atomic_path

    with atomic_path(work / "adapt.json") as tmp:
        tmp.write_text(json.dumps(state, indent=1))


def _examine_all(paths, keys, work: Path, state: dict, names_as_transcripts: bool, detector: str, say,
                 report) -> dict[str, ClipCheck]:
    """Examine every clip not examined before (its ClipCheck in the state, its record in the work cache)."""
    from tqdm import tqdm

    from naturall2s.data import save_npz_atomic

    clips_dir = work / "cache" / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    checks, det = {}, None
    todo = [(p, k) for p, k in zip(paths, keys)
            if not (k in state["checks"] and (not state["checks"][k]["ok"] or (clips_dir / f"{k}.npz").is_file()))]
    for p, k in zip(paths, keys):
        if (p, k) not in todo:
            checks[k] = ClipCheck(**state["checks"][k])
    for i, (p, k) in enumerate(tqdm(todo, desc="examine clips", unit="clip", disable=not todo)):
        if det is None:
            from naturall2s.landmarks import get_detector

            det = get_detector(detector)
        check, record = _examine(p, transcript=None, names_as_transcripts=names_as_transcripts, detector=det)
        if record is not None:
            save_npz_atomic(clips_dir / f"{k}.npz", record)
            _speaker_embedding(work, k, record)
        checks[k] = check
        state["checks"][k] = asdict(check)
        _save_state(work, state)
        report(0.12 * (i + 1) / len(todo), f"examined clip {i + 1}/{len(todo)}, {p.name}: "
               + (f"“{check.transcript}”" + (f" (confidence {check.confidence:.2f})" if check.confidence is not None
                                              else "") if check.ok else check.reason))
    return checks


def _speaker_embedding(work: Path, key: str, record: dict) -> None:
    """Store the speaker embedding of a clip's real audio (for the different-person warning)."""
    from naturall2s.audio import SAMPLE_RATE, PCM16_SCALE
    from naturall2s.speaker import get_speaker_encoder

    emb = get_speaker_encoder("auto").embed(record["audio"].astype(np.float32) / PCM16_SCALE, SAMPLE_RATE)
    (work / "speaker").mkdir(exist_ok=True)
    np.save(work / "speaker" / f"{key}.npy", emb)


def _speaker_warnings(work: Path, usable: list[str]) -> dict[str, float]:
    embeddings = {k: np.load(work / "speaker" / f"{k}.npy") for k in usable if (work / "speaker" / f"{k}.npy").is_file()}
    return speaker_outliers(embeddings)




def _layout_cache(cache: Path, train_keys: list[str], held: list[str], keep_base: str | None,
                  base_clips: int | None, seed: int, *, test: list[str] | None = None) -> int:
    """splits.json and manifest.json of the work cache (``val``: the validation clips ``held``; ``test``: the test
    clips, else the validation ones); with ``keep_base``, links to a seeded draw of the base speaker's training
    clips, named ``base-<name>``. Returns how many base clips were mixed in."""
    from naturall2s.data import load_splits

    mixed: list[str] = []
    if keep_base is not None:
        base_cache = Path(keep_base).resolve()
        names = [n for n in load_splits(base_cache).get("train", []) if (base_cache / "clips" / f"{n}.npz").is_file()]
        if not names:
            raise AdaptError(f"--keep-base {keep_base}: no prepared training clips in it")
        k = min(len(names), base_clips if base_clips is not None else BASE_CLIPS_PER_CLIP * len(train_keys))
        for n in random.Random(seed).sample(names, k):
            link = cache / "clips" / f"{BASE_PREFIX}{n}.npz"
            if not link.exists():
                os.symlink(base_cache / "clips" / f"{n}.npz", link)
            mixed.append(BASE_PREFIX + n)
    splits = {"new": {"train": train_keys, "val": held, "test": test or held}}
    if mixed:
        splits["base"] = {"train": mixed}
    (cache / "splits.json").write_text(json.dumps(splits, indent=1))
    (cache / "manifest.json").write_text(json.dumps({"adaptation": True, "splits": splits}, indent=1))
    return len(mixed)


def stage_recipe(stage: str, overrides: dict | None = None) -> dict:
    """The recipe of one stage's run: :data:`RECIPE`'s common entries, its entry for ``stage``, then ``overrides``
    (common entries, and ``{stage: {...}}`` for that stage only)."""
    overrides = overrides or {}
    return {**_common(RECIPE), **RECIPE.get(stage, {}), **_common(overrides), **overrides.get(stage, {})}


def with_discriminator(recipe: dict, base_path: Path) -> dict:
    """A stage recipe whose adversarial losses are on (``adv_start`` >= 0) trains against the base model's own
    discriminators (:func:`naturall2s.checkpoints.discriminator_path`: warm, they know its speech), of their kind;
    a base without them trains without the adversarial losses (a fresh discriminator would judge at random for the
    few steps of an adaptation). A recipe with its own ``init_disc``, or without adversarial losses, is kept."""
    if recipe.get("adv_start", -1) < 0 or recipe.get("init_disc"):
        return recipe
    from naturall2s.checkpoints import discriminator_path, load_discriminator

    path = discriminator_path(base_path)
    if path is None:
        return {**recipe, "adv_start": -1}
    return {**recipe, "init_disc": str(path), "disc": load_discriminator(path)[0]}


def _common(table: dict) -> dict:
    """A recipe's entries for every stage (the others are ``{stage: {...}}``; a dict under another key, such as
    ``lambdas``, is a common entry)."""
    stages = {s for variant_stages in ADAPT_STAGES.values() for s in variant_stages}
    return {k: v for k, v in table.items() if k not in stages}


def _train_config(base_path: Path, base_meta: dict, work: Path, stage: str, recipe: dict, *, n_train: int,
                  device: str, threads: int, seed: int):
    """The TrainConfig of one stage of the adaptation (its run in ``work/run/<stage>``): the recipe, the base
    model's architecture and its own training run's feature noise and loss weights (the recipe's ``lambdas``
    override single weights of those)."""
    from naturall2s.train import TrainConfig

    arch = {k: v for k, v in base_meta["config"].items() if k != "variant"}
    stored = base_meta["info"].get("train_config", {})
    inherited = {k: stored[k] for k in INHERITED if k in stored}
    r = dict(recipe)
    if "lambdas" in r:  # the recipe's loss weights override single weights of the base model's
        r["lambdas"] = {**inherited.get("lambdas", {}), **r["lambdas"]}
    r["batch_size"] = min(int(r["batch_size"]), n_train)  # the loader drops incomplete batches
    variant = STAGE_VARIANT.get(base_meta["config"]["variant"], {}).get(stage, base_meta["config"]["variant"])
    return TrainConfig(variant=variant, stage=stage, cache=str(work / "cache"), run_dir=str(work / "run" / stage),
                       init=str(base_path), arch=arch, device=device, threads=threads, seed=seed, log_every=5,
                       **{**inherited, **r})


def _train_stages(cfgs: list, deadline: float | None, say, report: Progress) -> dict[str, dict]:
    """Run each stage's training (resumable; a finished run returns at once). ``deadline`` (a time.time()) is
    shared out over the stages by their steps (each gets at least a few seconds: a step and its validation).
    -> {stage: train()'s result}."""
    from naturall2s.train import train

    total = sum(c.steps for c in cfgs)
    results, done = {}, 0
    for i, cfg in enumerate(cfgs):
        if deadline is not None:
            left = (deadline - time.time()) / 60 * cfg.steps / max(1, sum(c.steps for c in cfgs[i:]))
            cfg.max_minutes = max(0.1, left)
        label = f" ({cfg.stage})" if len(cfgs) > 1 else ""
        clock = {}  # the first step seen in this call and its time: the pace of the steps run here

        def on_step(step: int, val: dict | None, cfg=cfg, label=label, before=done, clock=clock) -> None:
            now = time.time()
            first = clock.setdefault("first", (step, now))
            pace = (now - first[1]) / (step - first[0]) if step > first[0] else None
            message = f"training step {before + step}/{total}{label}"
            if pace is not None:
                eta = pace * (total - before - step)
                if deadline is not None:
                    eta = min(eta, max(0.0, deadline - now))
                message += f", {pace:.1f} s/step, about {_clock(eta)} left" + (
                    " (the time limit stops it sooner)" if deadline is not None and now + pace * (
                        total - before - step) > deadline else "")
            if val is not None:
                quality = (f", ESTOI {val['estoi']:.3f}" if "estoi" in val else
                           f", lip-read WER {val['lipread/wer']:.3f}" if "lipread/wer" in val else "")
                message += f"; validation log-mel L1 {val['score']:.3f}{quality}"
            report(0.15 + 0.75 * (before + step) / total, message)

        results[cfg.stage] = train(cfg, on_step=on_step)
        if results[cfg.stage]["step"] < cfg.steps:
            say(None, f"{cfg.stage} stopped at step {results[cfg.stage]['step']} of {cfg.steps}: the time limit cut "
                      "it short; the best checkpoint so far is used")
        done += cfg.steps
    return results


def _clock(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour on)."""
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def _compose(cfgs: list, base_path: Path, base_meta: dict, work: Path) -> Path:
    """The adapted model's weights: the one stage's best run, the last one of chained stages (:data:`CHAINED`), or
    the base model overlaid with the stages' best runs
    (``train --steps 0``; later stages first, so the lip reader's own tensors win over the copies of the base front
    end a vocoder run carries)."""
    from naturall2s.train import TrainConfig, train

    bests = [Path(c.run_dir) / "best.safetensors" for c in cfgs]
    if len(cfgs) == 1 or base_meta["config"]["variant"] in CHAINED:
        return bests[-1]
    arch = {k: v for k, v in base_meta["config"].items() if k != "variant"}
    init = [str(base_path)] + [str(b) for b in reversed(bests) if b.is_file()]
    composed = work / "run" / "composed"
    train(TrainConfig(variant=base_meta["config"]["variant"], stage=cfgs[-1].stage, steps=0, init=",".join(init),
                      arch=arch, run_dir=str(composed), cache=cfgs[-1].cache))
    return composed / "best.safetensors"


def _heldout_scores(base_path: Path, final: Path, work: Path, name: str, *, split: str = "val") -> dict:
    """evaluate() of the base model and the adapted one (``final``) on a held-out part of the work cache
    (``split``: "test" or "val"; their transcripts as the text)."""
    from naturall2s.checkpoints import load_model
    from naturall2s.evaluate import evaluate

    before = load_model(base_path)
    before.name = base_path.stem if base_path.stem != name else f"{name}-base"
    after = load_model(final)
    after.name = name
    cache = work / "cache"
    return evaluate([before, after], data_root=cache, split=split, cache=cache, out_dir=work / "heldout",
                    progress=False, focus=name)


def _domain_statistics(model, cache: Path, train_keys: list[str]) -> dict:
    """The adapted model's training statistics for the out-of-domain warning (:func:`naturall2s.domain.
    reference_statistics` of its training clips; from a few clips, the voice's alone), stored as ``info["domain"]``:
    a clip is then measured against the speaker the model was adapted to, not the base model's."""
    from naturall2s.data import load_cached
    from naturall2s.domain import reference_statistics, summarize

    summaries = []
    for k in train_keys:
        rec = load_cached(cache / "clips" / f"{k}.npz")
        summaries.append(summarize(model, rec["roi"], rec["lips"], rec["audio"]))
    return reference_statistics(summaries, description=f"the {len(train_keys)} clips of the speaker it was adapted "
                                                       "to (adapt)")


SCORED = ("wer", "lipread_wer", "estoi", "stoi", "speaker_similarity", "f0_rmse_cents", "mcd", "pesq_nb")


def _provenance(final, base_path, base_meta, checks, train_keys, held, tested, mixed, keep_base, cfgs, results,
                scores, wall_s) -> dict:
    """The info stored in the adapted checkpoint: the best step's training facts (of a composed model: the
    composition's) plus ``adapt`` (with each stage's steps and best step under ``stages``)."""
    from naturall2s.checkpoints import read_metadata

    best = read_metadata(final)["info"]
    stages = {}
    for c in cfgs:
        run_best = Path(c.run_dir) / "best.safetensors"
        stages[c.stage] = {"steps": results.get(c.stage, {}).get("step", 0), "planned": c.steps,
                           "best_step": read_metadata(run_best)["info"].get("step") if run_best.is_file() else None}
    summary = scores["summary"]
    before_name, after_name = list(summary)

    keys = list(SCORED) + [k for k in summary[after_name] if k.startswith("mos_")]  # + the MOS column, if any

    def means(system):
        return {m: summary[system][m]["mean"] for m in keys}

    paired = scores["paired"]["vs"][before_name] if scores.get("paired") else {}
    clips = [{"file": Path(c.path).name, "transcript": c.transcript, "source": c.transcript_source,
              **({"confidence": round(c.confidence, 3)} if c.confidence is not None else {}),
              "role": "train" if k in train_keys else "validation" if k in held else "test" if k in tested else
              "unused", **({"reason": c.reason} if not c.ok else {})} for k, c in checks.items()]
    best["adapt"] = {
        "base": base_path.stem, "base_variant": base_meta["config"]["variant"],
        "base_step": base_meta["info"].get("step"), "clips": clips, "keep_base": str(keep_base) if keep_base else None,
        "base_clips_mixed": mixed, "steps": sum(s["steps"] for s in stages.values()),
        "steps_planned": sum(s["planned"] for s in stages.values()), "stages": stages,
        "best_step": (stages[cfgs[0].stage]["best_step"] if len(stages) == 1 else
                      ", ".join(f"{k} {v['best_step']}" for k, v in stages.items())),
        "wall_s": round(wall_s, 1), "heldout": {"n": len(tested or held), "part": "test" if tested else "validation",
                                                 "n_validation": len(held), "before": means(before_name),
                                                 "after": means(after_name),
                                                 "paired": {m: paired[m] for m in keys if m in paired}},
    }
    return best


def worse_than_base(info: dict) -> dict[str, tuple[float, float]]:
    """{metric: (base, adapted)} of the :data:`VERDICT_METRICS` (and the MOS column) on which an adapted
    checkpoint's mean on its held-out clips is worse than its base model's."""
    from naturall2s.evaluate import METRICS

    h = info["adapt"]["heldout"]
    out = {}
    for m in [*VERDICT_METRICS, *(k for k in h["after"] if k.startswith("mos_"))]:
        before, after = h["before"].get(m), h["after"].get(m)
        if before is None or after is None or not (np.isfinite(before) and np.isfinite(after)):
            continue
        higher_is_better = METRICS.get(m, ("", "↑"))[1] == "↑"
        if (after < before) if higher_is_better else (after > before):
            out[m] = (float(before), float(after))
    return out


def verdict(info: dict) -> list[str]:
    """Warnings about an adapted checkpoint, in plain words (none: it trained its planned steps and beat its base
    on every headline measure of its held-out clips): the time limit cut it short; it scored below its base; its
    scores come from the clips that also selected it."""
    from naturall2s.evaluate import METRICS

    a = info["adapt"]
    h = a["heldout"]
    out = []
    planned = a.get("steps_planned")
    if planned is not None and a["steps"] < planned:
        out.append(f"cut short by the time limit: trained {a['steps']} of {planned} planned steps")
    worse = worse_than_base(info)
    if worse:
        parts = [f"{METRICS.get(m, (f'MOS ({m[4:]})',))[0]} {b:.3f} -> {x:.3f}" for m, (b, x) in worse.items()]
        out.append(f"worse than its base {a['base']} on the {h['n']} held-out clips in " + ", ".join(parts)
                   + ": not an improvement")
    if h.get("part", "validation") == "validation":
        out.append(f"optimistic scores: the {h['n']} clips scored also selected the checkpoint (from "
                   f"{TEST_MIN_CLIPS} usable clips on, a separate test part scores it)")
    return out


def heldout_table(info: dict) -> str:
    """The before/after table of an adapted checkpoint's held-out scores (markdown), then its :func:`verdict`."""
    from naturall2s.evaluate import METRICS

    a = info["adapt"]
    h = a["heldout"]
    part = ("test clips (they neither trained nor selected the model)" if h.get("part") == "test" else
            "validation clips (they also selected the checkpoint: optimistic)")
    lines = [f"held-out {part}: {h['n']} (transcripts as the text)", "",
             f"| metric | {a['base']} | adapted | paired difference |", "|---|---|---|---|"]
    for m in h["after"]:
        label, arrow = METRICS.get(m, (f"MOS ({m[4:]})", "↑"))  # mos_<predictor>: predicted naturalness
        d = h["paired"].get(m, {})
        diff = f"{d['mean']:+.3f} ± {d['ci95']:.3f}" if d and d.get("ci95") is not None and np.isfinite(
            d.get("ci95", np.nan)) else "–"
        lines.append(f"| {label} {arrow} | {h['before'][m]:.3f} | {h['after'][m]:.3f} | {diff} |")
    warnings = verdict(info)
    if warnings:
        lines += [""] + [f"**Warning:** {w}." for w in warnings]
    return "\n".join(lines)
