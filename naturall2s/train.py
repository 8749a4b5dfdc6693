"""The one training script: ``python -m naturall2s train --variant NAME --stage STAGE [--key value ...]``.

Stages (each a run folder of its own, resumable):
- ``lipreader``: the visual front end + CTC lip-reading head (+ the MelHead of ``mel-gl``, whose mel regression is
  trained jointly): the pre-training every variant starts from. The result *is* the ``mel-gl`` model.
- ``vocoder``: the ``mel-vocoder`` cascade's neural vocoder, trained on *real* mels (the train/test mismatch NaturalL2S
  removes); the rest of the model comes from ``--init`` (the lip reader). For ``--variant units`` the multi-input
  vocoder, on real mels (``--degrade-mel``: blurred and noised, as predicted ones are) and the real speech's units.
- ``units`` (``--variant units``, after Choi, Kim & Ro, Interspeech 2023): its ``vocoder`` stage as above and its
  ``lipreader`` stage (front end + CTC + word head + mel head + unit head, the vocoder fixed). The units are k-means
  clusters of MFCCs (+ deltas) of the training split's speech (:mod:`naturall2s.units`): the first stage of a run
  without a codebook fits it (cached in ``<run-dir>/units.pt``) and stores it in the checkpoint; a stage started
  ``--init`` from a checkpoint with one inherits it, so ``vocoder`` then ``lipreader --init <vocoder run>`` share it.
- ``synth``: ``naturall2s`` / ``naturall2s-noddsp``: F0 predictor (+ DDSP controls and synthesizer) and waveform
  generator trained end to end from the front end (frozen with ``--freeze-frontend``, which caches its features once:
  the CPU recipe; or fine-tuned jointly, the GPU recipe). With ``--judge`` (a judge run's checkpoint) and a
  ``content/ce`` weight, the frozen content judge's word cross-entropy on the generated speech is a loss too.
  For ``--variant ltbs`` (after Kim et al., AAAI 2024): its variance adaptor, mel decoder and flow post-net
  (:mod:`naturall2s.ltbs_training`: the real pitch and energy drive the decoder; ``decoder/l1``, ``pitch/*``,
  ``energy/l1``, ``flow/nll``); its vocoder is the cascade's (``--stage vocoder``, or composed with ``--steps 0``).
- ``judge``: the content judge (:mod:`naturall2s.content`), a word recognizer trained on the *real* log-mels of the
  training split (single process; ``--variant`` is ignored).
- ``flow`` (``--variant lipvoicer``, after Yemini et al., ICLR 2024): the flow-matching denoiser over the log-mel
  (:mod:`naturall2s.flow`; loss ``flow/mse``) on the frozen lip reader's cached features (front end + embedded
  word posteriors, upsampled to 100 Hz: ``--init checkpoints/mel-gl.safetensors``, all of it fixed, and the cascade's
  vocoder: ``checkpoints/mel-vocoder.safetensors``); ``--judge`` puts a judge run's
  recognizer inside the model (its sampling guidance; the checkpoint then carries it). The first flow run fits the
  per-bin statistics that normalise the mel and stores them in the model. Validation samples the speech as
  ``synthesize`` does (the config's steps and guidance; fixed noise). Its vocoder is the cascade's, composed in with
  ``--steps 0 --init <flow run>,checkpoints/mel-vocoder.safetensors`` (the cascade's front end is the same lip
  reader's; a later ``--init`` whose front end differs from the one the denoiser was trained on is refused).
- ``live``: the live student of a finished model (``--init``): a copy of its front end's transformer and final norm
  trained to give, on windows whose future is cut short (as :mod:`naturall2s.stream` runs it), the features the
  offline model gives from the whole clip; its per-frame layers stay the model's (single process). The export is the
  whole model with the student's transformer, read by :func:`naturall2s.stream.load_student` from
  ``<checkpoint folder>/live/<name>.safetensors``.

Runs on CPU, one CUDA GPU, or several processes under ``torchrun`` (DistributedDataParallel, gloo on CPU, nccl on GPU).
Everything the run needs to continue lives in ``<run-dir>/state.pt``; the best model by validation score is exported
as fp16 safetensors to ``<run-dir>/best.safetensors`` (and to ``--export`` if given).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import json
import math
import os
import random
import time
import zlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from naturall2s import audio, losses
from naturall2s.checkpoints import load_model, load_state, save_model, save_state
from naturall2s.augment import augment_clips, degrade_mels
from naturall2s.data import UNKNOWN_WORD, CachedGrid, collate
from naturall2s.grid import tokens_to_text
from naturall2s import ltbs_training
from naturall2s.ltbs import LOSS_KEYS as LTBS_LOSS_KEYS
from naturall2s.discriminators import MultiPeriodDiscriminator, MultiResolutionDiscriminator
from naturall2s.errors import CheckpointError, DataError, NaturalL2SError
from naturall2s.model import (DEFAULT_SEED, MEL_VARIANTS, SAMPLING_VARIANTS, VOCODER_VARIANTS, LipToSpeech,
                              ModelConfig, ctc_greedy_batch)

STAGES = ("lipreader", "vocoder", "synth", "judge", "live", "flow")
# the validation number that picks best.safetensors: log-mel L1 (lower), ESTOI (higher), or "guarded": the pause buzz
# (comb dB, lower) among checkpoints whose ESTOI and speech WER (the ASR on the generated speech) have not regressed
# beyond --guard-estoi / --guard-wer from the run's start (for adversarial fine-tuning of a finished model), or
# "intelligible": the highest ESTOI among checkpoints whose pause buzz and speech WER have not risen beyond --guard-comb
# / --guard-wer from the run's start (for fine-tuning a natural model towards intelligibility)
SELECT = ("mel", "estoi", "guarded", "intelligible")
BASELINE_SELECTS = ("guarded", "intelligible")  # selections that validate the run's start as their baseline
GUARDED = ("estoi", "speech/wer", "comb")  # what the guarded selection reads (the start's values are its baseline)
DISCRIMINATORS = ("mpd", "mrd")  # --disc: any of these joined by "+" (benchmarks/bench_layers.py gives their cost)


@dataclass
class TrainConfig:
    """One training run; every field is a ``--flag`` of ``python -m naturall2s train`` (its help: :data:`HELP`)."""

    variant: str = "naturall2s"
    stage: str = "synth"
    cache: str = "cache/grid"
    run_dir: str = "runs/naturall2s"
    init: str = ""
    freeze_frontend: bool = False
    steps: int = 3000
    batch_size: int = 16
    segment_frames: int = 0
    lr: float = 3e-4
    lr_disc: float = 2e-4
    weight_decay: float = 0.01
    warmup: int = 200
    grad_clip: float = 1.0
    ema: float = 0.0
    adv_start: int = -1
    adv_segment: int = 16000
    disc: str = "mpd+mrd"
    init_disc: str = ""
    feature_noise: float = 0.0
    augment: bool = False
    degrade_mel: bool = False
    teacher_f0: bool = False
    judge: str = ""
    judge_flow: str = ""
    judge_robust: float = 0.0
    select: str = "mel"
    guard_estoi: float = 0.01
    guard_wer: float = 0.03
    guard_comb: float = 1.0
    lambdas: dict = field(default_factory=dict)
    arch: dict = field(default_factory=dict)
    eval_every: int = 250
    eval_train: int = 0
    log_every: int = 25
    seed: int = 1337
    device: str = "auto"
    threads: int = 0
    max_minutes: float = 0.0
    stop_at: int = 0
    save_minutes: float = 0.0
    export: str = ""
    live_window: int = 50
    live_min_window: int = 12
    live_tail: int = 16


# the --help of every TrainConfig field (argparse adds each default)
HELP = {
    "variant": "which system to train: mel-gl, mel-vocoder, naturall2s-noddsp, naturall2s, units, ltbs or "
               "lipvoicer",
    "stage": "what to train: lipreader (front end + CTC + mel head = mel-gl; for units + the unit head), vocoder "
             "(the cascade's vocoder on real mels; for units on real mels and units), synth (the naturall2s "
             "variants' speech heads and generator; for ltbs its variance adaptor, mel decoder and flow post-net), "
             "judge (the content judge), live (the live student of the --init model: its transformer for "
             "streaming, see --live-window), flow (lipvoicer's flow-matching denoiser over the log-mel, on the frozen "
             "front end's cached features)",
    "cache": "the prepared data: the output folder of `python -m naturall2s prepare`",
    "run_dir": "this run's folder: state.pt (to resume), log.csv, config.json, best.safetensors",
    "init": "checkpoints (names or .safetensors paths, comma-separated, later ones win) whose tensors of matching "
            "name and shape start the model; with --steps 0 the model is only composed from them and exported; "
            "--stage live: the one model whose student is trained (its architecture comes from the checkpoint)",
    "freeze_frontend": "synth/vocoder: keep the visual front end and its lip-reading heads fixed; their features are "
                       "computed once and cached (the CPU recipe)",
    "steps": "training steps in all (a resumed run continues to this many; 0: compose from --init and export)",
    "batch_size": "clips per step (per process under torchrun)",
    "segment_frames": "train on random crops of this many video frames (25 = 1 s); 0: whole clips",
    "lr": "peak learning rate of the model (linear warm-up, then cosine decay to 10%)",
    "lr_disc": "learning rate of the discriminators (adversarial training)",
    "weight_decay": "AdamW weight decay",
    "warmup": "steps of linear learning-rate warm-up",
    "grad_clip": "clip the model's gradient norm to this (0: no clipping)",
    "ema": "validate, select and export an exponential moving average of the trained weights with this decay per "
           "step (e.g. 0.98: about the last 50 steps); 0: the weights themselves",
    "adv_start": "step from which the adversarial and feature-matching losses are on (-1: never; 0: from the start, "
                 "for adversarial fine-tuning of a trained model)",
    "adv_segment": "samples of each clip the discriminators see (a random window; 16000 = 1 s)",
    "disc": f"the discriminators of the adversarial losses: {', '.join(DISCRIMINATORS)} or several joined by '+' "
            "(benchmarks/bench_layers.py gives their cost per step)",
    "init_disc": "a discriminators file (checkpoints/discriminators/<model>.safetensors, written by "
                 "scripts/export_discriminator.py) whose weights start the discriminators, e.g. to continue a shipped "
                 "model's adversarial training; its kind must be --disc's (empty: freshly initialised)",
    "feature_noise": "std of Gaussian noise added to cached front-end features while training (regularises a "
                     "frozen front end)",
    "augment": "random crop shift, contrast and a masked time span per clip (when the front end runs, not on "
               "cached features)",
    "degrade_mel": "vocoder: blur (time and frequency) and noise the real mels the vocoder reads, a random amount "
                   "per clip, as predicted mels are blurred (the units variant's vocoder then leans on the units)",
    "teacher_f0": "synth: drive the DDSP synthesizer with the real F0 of voiced frames while training",
    "judge": "synth: a content judge checkpoint (--stage judge) for the content/ce loss and the content/acc probe; "
             "lipvoicer: the judge that guides its sampling, stored inside the model",
    "judge_flow": "judge: a lipvoicer checkpoint whose judge is fine-tuned on the clean estimates of its own denoiser "
                  "(x̂_1 at a random t: what its guidance shows the judge) instead of trained on real log-mels; "
                  "validated on the estimates of val clips",
    "judge_robust": "judge: adversarial training, so that the judge's gradient (the guidance) changes sounds rather "
                    "than fooling it: each input first moves one gradient step (this RMS, in natural-log mel units) "
                    "toward a higher word loss (robust classifier guidance, after Kawar et al. 2022; 0: off)",
    "select": f"which validation number picks best.safetensors: {', '.join(SELECT)} (mel: log-mel L1; estoi: "
              "differentiable ESTOI; guarded: least pause buzz among checkpoints without ESTOI or speech-WER "
              "regressions from the run's start; intelligible: highest ESTOI among checkpoints without pause-buzz or "
              "speech-WER regressions from the run's start)",
    "guard_estoi": "--select guarded: refuse checkpoints whose val ESTOI fell more than this below the start's",
    "guard_comb": "--select intelligible: refuse checkpoints whose val pause buzz (comb dB) rose more than this "
                  "above the start's",
    "guard_wer": "--select guarded or intelligible: refuse checkpoints whose val speech WER (the ASR on the generated "
                 "speech) rose more than this above the start's",
    "lambdas": "loss weights overriding losses.DEFAULT_LAMBDAS, a JSON object, e.g. '{\"stoi/neg\": 10, "
               "\"f0/l1\": 0}'",
    "arch": "ModelConfig overrides (the architecture, stored in the checkpoint), a JSON object, e.g. "
            "'{\"word_head\": true}'",
    "eval_every": "validate (and save state.pt) every this many steps",
    "eval_train": "also score this many training clips (whole clips, evenly spaced over the split, the same ones "
                  "every time) at every validation, logged as train/<key>: the fit half of a learning curve",
    "log_every": "write a training row to log.csv every this many steps",
    "seed": "seed of the weights' initialisation, the data order and the augmentation",
    "device": "auto (a CUDA GPU when present), cpu or cuda",
    "threads": "torch CPU threads (0: all cores divided by the number of processes)",
    "max_minutes": "stop after this much wall time in this invocation, resumable with the same command (0: no limit)",
    "stop_at": "stop after this step, keeping the learning-rate schedule of --steps (0: at --steps); a later run in "
               "the same --run-dir continues from there, e.g. with other --lambdas (a recipe that changes mid-run)",
    "save_minutes": "also save the resumable state this often between evaluations (0: at evaluations only)",
    "export": "also write the best model here (e.g. checkpoints/naturall2s.safetensors; --stage live: "
              "checkpoints/live/naturall2s.safetensors, where streaming finds a model's student)",
    "live_window": "--stage live: the longest window of frames the student sees (live synthesis's window, 50 = 2 s); "
                   "each batch draws one length from --live-min-window..this, ending at a random frame",
    "live_min_window": "--stage live: the shortest window of frames (a take's start)",
    "live_tail": "--stage live: the loss (MSE against the offline features of the whole clip) covers this many "
                 "frames at each window's end, whose future is short",
}


# loss keys each stage optimises (their weights come from the lambdas table)
STAGE_KEYS = {
    "lipreader": ("ctc", "word/ce", "melhead/l1", "unit/ce"),
    "vocoder": ("stft/sc", "stft/mag", "mel/l1", "stoi/neg"),  # stoi/neg: weight 0 by default (not computed)
    "synth": ("stft/sc", "stft/mag", "mel/l1", "stoi/neg", "f0/l1", "f0/ce", "vuv/bce", "loud/l1", "prior/sc",
              "prior/mag", "content/ce", *LTBS_LOSS_KEYS),
    "judge": ("word/ce",),
    "flow": ("flow/mse",),
}
ADV_KEYS = ("adv/gen", "adv/feat")


# ------------------------------------------------------------------------------------------------
# setup
# ------------------------------------------------------------------------------------------------
def setup_distributed(cfg: TrainConfig):
    """→ (rank, world_size, device). Under torchrun, joins the process group (nccl on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    device = torch.device(f"cuda:{local}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if not use_cuda:
        torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // world))
    return rank, world, device


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(cfg: TrainConfig) -> LipToSpeech:
    """A fresh model of ``cfg.variant``; ``cfg.init`` (comma-separated checkpoints, later ones win) fills every
    tensor whose name and shape match, e.g. the lip reader's front end, or a vocoder run plus the lip reader."""
    from naturall2s.checkpoints import load_tensors, read_metadata, resolve

    arch = dict(cfg.arch)
    inits = [p.strip() for p in cfg.init.split(",") if p.strip()]
    if cfg.variant in SAMPLING_VARIANTS and "judge" not in arch:  # the judge's architecture: --judge's, else --init's
        if cfg.judge:
            arch["judge"] = judge_config(cfg.judge)
        else:
            stored = [c["judge"] for c in (read_metadata(resolve(p))["config"] for p in inits)
                      if c.get("variant") == cfg.variant and c.get("judge")]
            if stored:
                arch["judge"] = stored[-1]
    try:
        model = LipToSpeech(ModelConfig(variant=cfg.variant, **arch))
    except (TypeError, ValueError) as e:
        raise NaturalL2SError(f"--variant {cfg.variant} --arch {json.dumps(cfg.arch)}: {e}") from None

    own = model.state_dict()
    codebook_from = None  # the units' codebook: every --init that carries one must carry the same
    model.judge_source = None  # the lipvoicer variant: where its content judge's weights came from
    denoised_on = None  # the lipvoicer variant: (checkpoint, the conditioning its denoiser was trained on)
    for path in inits:
        tensors = load_tensors(path)
        matched = {k: v.float() for k, v in tensors.items() if k in own and own[k].shape == v.shape}
        book = matched.get("unit_centroids")
        if book is not None and bool(book.abs().sum() > 0):
            if codebook_from is not None and not torch.equal(book, codebook_from[1]):
                raise NaturalL2SError(
                    f"--init {codebook_from[0]} and {path} hold different speech-unit codebooks: their unit head and "
                    "vocoder would not mean the same units. Train the later stage --init the earlier one's "
                    "checkpoint (it inherits the codebook)")
            codebook_from = (path, book)
        model.load_state_dict(matched, strict=False)
        if any(k.startswith("judge.") for k in matched):
            model.judge_source = path
        if any(k.startswith("denoiser.") for k in matched):
            denoised_on = (path, {k: v for k, v in matched.items() if k.startswith(CONDITIONING)})
        print(f"init: {len(matched)}/{len(own)} tensors from {path}")
    if denoised_on is not None:
        state = model.state_dict()
        changed = [k for k, v in denoised_on[1].items() if not torch.equal(state[k], v)]
        if changed:
            raise NaturalL2SError(f"a later --init replaced the front end whose features the denoiser of "
                                  f"{denoised_on[0]} was trained on ({changed[0]}, ...): compose it with checkpoints "
                                  "of the same front end (the cascade's is the shipped lip reader's) or put it last")
    if cfg.judge and hasattr(model, "judge"):
        from naturall2s.content import load_judge

        model.judge.load_state_dict(load_judge(cfg.judge).state_dict())
        model.judge_source = cfg.judge
        print(f"judge: the content judge of {cfg.judge} guides the sampling")
    return model


# what the lipvoicer denoiser reads: the front end's features + the word head's posteriors, embedded and upsampled
CONDITIONING = ("frontend.", "word_head.", "word_embed.", "upsample.")


def judge_config(path: str) -> dict:
    """The architecture (JudgeConfig as a dict) of a content judge checkpoint; NaturalL2SError if it is not one."""
    from naturall2s.checkpoints import read_metadata, resolve
    from naturall2s.content import JUDGE_KIND

    config = read_metadata(resolve(path))["config"]
    if config.get("kind") != JUDGE_KIND:
        raise NaturalL2SError(f"--judge {path} is not a content judge (a `train --stage judge` run's checkpoint) but a "
                              f"{config.get('variant', 'different')} model")
    return config


def require_sampling_parts(model: LipToSpeech) -> None:
    """A lipvoicer model to train or compose must have its content judge and its mel statistics from somewhere."""
    if not model.config.samples_mel:
        return
    if model.judge_source is None:
        raise NaturalL2SError("the lipvoicer variant carries its content judge (it guides the sampling): give --judge "
                              "PATH (a `train --stage judge` run's checkpoint) or --init a lipvoicer checkpoint that "
                              "has one")


def mel_statistics(train_set: CachedGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-bin mean and std (n_mels,) of the training clips' real log-mels: the lipvoicer flow's normalisation."""
    mels = torch.cat([torch.from_numpy(r["mel"].astype(np.float32)) for r in train_set.records], dim=1)
    return mels.mean(dim=1), mels.std(dim=1)


def trainable_parameters(model: LipToSpeech, cfg: TrainConfig):
    """Which parameters a stage trains: the vocoder stage only the vocoder, the units variant's lipreader stage all
    but its vocoder; a frozen front end stays fixed."""
    if model.config.variant == "ltbs" and cfg.stage == "synth":
        return ltbs_training.trainable_parameters(model, cfg)
    if cfg.stage == "vocoder":
        return list(model.vocoder.parameters())
    if cfg.stage == "flow":  # the denoiser; the features it reads (the lip reader's 100 Hz features, as every speech
        # head of it gets them: CONDITIONING), the judge and the vocoder stay fixed, so the cascade composes with it
        return list(model.denoiser.parameters())
    frozen = set()
    if cfg.stage == "lipreader" and hasattr(model, "vocoder"):
        frozen = {id(p) for p in model.vocoder.parameters()}
    if cfg.freeze_frontend:
        lip_reading = [model.frontend, model.ctc] + ([model.word_head] if model.config.word_head else [])
        frozen |= {id(p) for m in lip_reading for p in m.parameters()}
    return [p for p in model.parameters() if id(p) not in frozen]


def loss_weights(cfg: TrainConfig) -> dict[str, float]:
    """The lambdas table of this run: losses.DEFAULT_LAMBDAS with ``cfg.lambdas`` overriding."""
    return {**losses.DEFAULT_LAMBDAS, **cfg.lambdas}


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up then cosine decay to 10%."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def build_discriminators(kind: str, init: str = "") -> torch.nn.ModuleDict:
    """The discriminators named by ``kind`` (``"mpd"``, ``"mrd"`` or ``"mpd+mrd"``), as one ModuleDict; ``init``: a
    discriminators file (:func:`naturall2s.checkpoints.save_discriminator`) of the same kind whose weights they
    start from."""
    names = [k for k in kind.split("+") if k]
    if not names or any(k not in DISCRIMINATORS for k in names):
        raise NaturalL2SError(f"unknown --disc {kind!r}; use {', '.join(DISCRIMINATORS)} or several joined by '+'")
    build = {"mpd": MultiPeriodDiscriminator, "mrd": MultiResolutionDiscriminator}
    disc = torch.nn.ModuleDict({k: build[k]() for k in names})
    if init:
        from naturall2s.checkpoints import load_discriminator

        stored, state, info = load_discriminator(init)
        if set(stored.split("+")) != set(names):
            raise NaturalL2SError(f"--init-disc {init} holds {stored!r} discriminators, not --disc {kind!r}: "
                                  f"train with --disc {stored} or another --init-disc")
        try:
            disc.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{init} does not fit this code's {kind} discriminators: "
                                  f"{str(e).splitlines()[0]}") from None
        print(f"init-disc: {kind} discriminators from {init}" + (f" ({info['source']})" if "source" in info else ""))
    return disc


def epoch_batches(n_items: int, batch_size: int, *, seed: int, epoch: int, rank: int = 0,
                  world: int = 1) -> list[list[int]]:
    """This process's batches of one epoch: a permutation of ``n_items`` drawn from (seed, epoch) alone, cut into
    ``world`` interleaved shards of full batches (the last partial batch dropped). The same on every resume, so a
    run resumed at step k continues with batch ``k % len(...)`` of its epoch."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n_items, generator=g).tolist()[rank::world]
    n_batches = (n_items // world) // batch_size
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(n_batches)]


def rng_state() -> dict:
    """Python's, numpy's and torch's RNG states as plain types and tensors (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": repr(random.getstate()), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos,
                                                          has_gauss, gauss], "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    """Undo :func:`rng_state`: the run continues with the random numbers it would have drawn."""
    import ast

    random.setstate(_tuples(ast.literal_eval(state["python"])))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def select_value(val: dict, cfg: TrainConfig, baseline: dict | None = None) -> float:
    """The number (lower is better) that picks best.safetensors, per ``cfg.select``; for ``guarded``, +inf when the
    checkpoint's ESTOI or speech WER regressed beyond the guards from ``baseline`` (the run's start); for
    ``intelligible``, -ESTOI, or +inf when its pause buzz or speech WER regressed."""
    if cfg.select == "estoi" and "estoi" in val:
        return -val["estoi"]
    if cfg.select == "guarded":
        if baseline and (val["estoi"] < baseline["estoi"] - cfg.guard_estoi
                         or val["speech/wer"] > baseline["speech/wer"] + cfg.guard_wer):
            return float("inf")
        return val["comb"] if math.isfinite(val["comb"]) else val["score"]  # clips without pauses: log-mel L1
    if cfg.select == "intelligible":
        if baseline and (val["comb"] > baseline["comb"] + cfg.guard_comb
                         or val["speech/wer"] > baseline["speech/wer"] + cfg.guard_wer):
            return float("inf")
        return -val["estoi"]
    return val["score"]


def format_val(val: dict, keys) -> str:
    """The validation numbers worth a line on the console."""
    shown = (*keys, "score", "estoi", "lipread/wer", "word/acc", "unit/acc", "content/acc", *GUARDED, "judge/mos",
             "select")
    return ", ".join(f"{k} {v:.4f}" for k, v in sorted(val.items()) if k in shown)


# ------------------------------------------------------------------------------------------------
# one batch → losses
# ------------------------------------------------------------------------------------------------
def masked_mel_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 between log-mels (B,n_mels,F) over valid frames ``mask`` (B,F)."""
    m = mask[:, None, :].float()
    return ((pred - target).abs() * m).sum() / (m.sum() * pred.shape[1]).clamp(min=1)


def audio_mask(batch: dict, n_frames: int) -> torch.Tensor:
    """(B,4T) valid audio frames from the video lengths ``batch['frames']``."""
    steps = torch.arange(n_frames, device=batch["frames"].device)
    return steps[None, :] < (batch["frames"] * (n_frames // batch["roi"].shape[1]))[:, None]


def real_f0(f0_hz: torch.Tensor, voiced: torch.Tensor) -> torch.Tensor:
    """The cached (pyworld) F0 as the DDSP synthesizer's drive (teacher forcing): (B, F) Hz, unvoiced frames at the
    lowest F0 (their harmonics are gated off by the voicing anyway)."""
    return torch.where(voiced, f0_hz, torch.full_like(f0_hz, audio.F0_MIN))


def compute_losses(model, batch: dict, cfg: TrainConfig, feats: torch.Tensor | None = None,
                   judge=None) -> tuple[dict, dict]:
    """→ (losses dict with namespaced keys, model outputs). ``feats``: cached front-end features, if any; ``judge``:
    the frozen content judge, if any; ``batch["retrieved"]`` (B,n_mels,4T), if present: a retrieval-prior model's
    retrieved real log-mel."""
    mask_v = torch.arange(batch["roi"].shape[1], device=batch["roi"].device)[None] < batch["frames"][:, None]
    out_losses: dict[str, torch.Tensor] = {}
    core = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    if core.config.variant == "ltbs" and cfg.stage == "synth":
        return ltbs_training.compute_losses(model, batch, cfg, feats)
    units = core.units_of(batch["mel"]) if core.config.variant == "units" else None  # the real speech's units
    if cfg.stage == "vocoder":
        mel = degrade_mels(batch["mel"]) if cfg.degrade_mel and model.training else batch["mel"]
        out = model(mel=mel, units=units)
    elif cfg.stage == "flow":
        if cfg.feature_noise > 0 and model.training:
            feats = feats + cfg.feature_noise * torch.randn_like(feats)
        # validation: a fixed draw (the same noise and times at every validation) and the speech synthesize makes
        g = None if model.training else torch.Generator(device=feats.device).manual_seed(DEFAULT_SEED)
        out = model(feats=feats, flow_mel=batch["mel"], generator=g)
        mask_f = audio_mask(batch, batch["mel"].shape[-1])
        out_losses["flow/mse"] = flow_mse(out["velocity"], out["velocity_target"], mask_f)
        out_losses.update(losses.word_ce_loss(out["word_logits"], batch["words"], ignore_index=UNKNOWN_WORD))
        if not model.training:
            out = model(feats=feats, generator=g)
    else:
        if feats is not None and cfg.feature_noise > 0 and model.training:
            feats = feats + cfg.feature_noise * torch.randn_like(feats)
        f0_hz = None
        if cfg.teacher_f0 and model.training:
            f0_hz = real_f0(batch["f0"], batch["voiced"])
        roi, lips = batch["roi"], batch["lips"]
        if cfg.augment and model.training and feats is None:
            roi, lips = augment_clips(roi, lips, batch["frames"])
        out = model(roi, lips, mask_v, feats=feats, f0_hz=f0_hz, retrieved=batch.get("retrieved"),
                    vocode=not (cfg.stage == "lipreader" and model.training))  # that stage does not train a vocoder
        if not cfg.freeze_frontend:
            out_losses.update(
                losses.ctc_loss(out["ctc_log_probs"], batch["tokens"], batch["frames"], batch["token_lengths"])
            )
        if "word_logits" in out:
            out_losses.update(losses.word_ce_loss(out["word_logits"], batch["words"], ignore_index=UNKNOWN_WORD))
    mask_a = audio_mask(batch, batch["mel"].shape[-1])
    if "mel" in out and cfg.stage == "lipreader":
        out_losses["melhead/l1"] = masked_mel_l1(out["mel"], batch["mel"], mask_a)
    if "unit_logits" in out:
        out_losses.update(losses.unit_ce_loss(out["unit_logits"], units, mask=mask_a))
    if "wav" in out:
        target = batch["audio"]
        out_losses.update(losses.multi_resolution_stft_loss(out["wav"], target, mask=mask_a))
        out_losses.update(losses.mel_loss(out["wav"], target, mask=mask_a))
        if loss_weights(cfg)["stoi/neg"]:  # weight 0: not computed (it costs a resample and two STFTs)
            out_losses.update(losses.intelligibility_loss(out["wav"], target, mask=mask_a))
        if judge is not None:
            out_losses.update(losses.content_loss(judge, out["wav"], batch["words"], ignore_index=UNKNOWN_WORD))
    if "log_f0" in out:
        head = core.f0_head
        out_losses.update(losses.f0_losses(out["log_f0"], out["voicing_logit"], batch["f0"], batch["voiced"],
                                           mask=mask_a, f0_logits=out.get("f0_logits"), bin_centres=head.bin_centres))
        out_losses.update(losses.loudness_loss(out["loudness"], batch["loudness"], mask=mask_a))
    if "coarse" in out:
        prior = losses.multi_resolution_stft_loss(out["coarse"], batch["audio"], mask=mask_a)
        out_losses.update({k.replace("stft/", "prior/"): v for k, v in prior.items()})
    return out_losses, out


def flow_mse(velocity: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``flow/mse``: the flow-matching loss, mean squared velocity error over valid frames (B,n_mels,F)."""
    from naturall2s.flow import masked_mse

    return masked_mse(velocity, target, mask)


def random_crops(real: torch.Tensor, fake: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random ``n``-sample window of each item of real and fake (B,N) waveforms."""
    if real.shape[-1] <= n:
        return real, fake
    starts = torch.randint(0, real.shape[-1] - n + 1, (real.shape[0],)).tolist()
    idx = torch.stack([torch.arange(s, s + n) for s in starts]).to(real.device)
    return real.gather(1, idx), fake.gather(1, idx)


def adversarial_losses(disc: torch.nn.ModuleDict, disc_opt, real: torch.Tensor, fake: torch.Tensor,
                       cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """One discriminator update on a random ``cfg.adv_segment``-sample window of real and generated (B,N) waveforms,
    then the generator's terms on the same window -> {"adv/gen", "adv/feat" (with gradients into ``fake``),
    "adv/disc" (detached, for the log)}. LSGAN + HiFi-GAN feature matching, summed over every discriminator."""
    real, fake = random_crops(real, fake, cfg.adv_segment)
    d_real = [d(real) for d in disc.values()]
    d_fake = [d(fake.detach()) for d in disc.values()]
    d_loss = sum(losses.discriminator_loss(r[0], f[0])["adv/disc"] for r, f in zip(d_real, d_fake))
    disc_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    disc_opt.step()
    g_fake = [d(fake) for d in disc.values()]
    return {
        "adv/gen": sum(losses.generator_adv_loss(f[0])["adv/gen"] for f in g_fake),
        "adv/feat": sum(losses.feature_matching_loss(_flat(r[1]), _flat(f[1]))["adv/feat"]
                        for r, f in zip(d_real, g_fake)),
        "adv/disc": d_loss.detach(),
    }


# ------------------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: LipToSpeech, loader, cfg: TrainConfig, feats_of=None, judge=None, asr=None,
             mos=None, retrieved_of=None) -> dict[str, float]:
    """Validation: mean losses, ``score`` (log-mel L1 of what the variant outputs), the differentiable ESTOI
    ``estoi`` of waveform outputs, the greedy lip-reading word error rate ``lipread/wer``, the word accuracy
    ``content/acc`` of the content judge on the generated speech (given a judge), the units variant's frame unit
    accuracy ``unit/acc``, given an ``asr`` the word error
    rate of its transcripts of the generated speech ``speech/wer`` and the pause buzz ``comb`` (dB,
    :func:`naturall2s.metrics.comb_db` in the clips' silent frames), given a MOS predictor its mean predicted
    naturalness ``judge/mos`` (logged for the learning curve only: never a loss, never read by the selection), and
    ``select``: the number (lower is better) that picks the best model, per ``cfg.select`` (see
    :func:`select_value`)."""
    from naturall2s.metrics import wer

    model.eval()
    sums: dict[str, float] = {}
    n = 0
    refs, hyps = [], []
    speech = {"speech/wer": [], "comb": [], "judge/mos": []}
    accuracy = {"word/acc": [0, 0], "content/acc": [0, 0], "unit/acc": [0, 0]}  # frame hits, labelled frames
    for batch in loader:
        batch = to_device(batch, model.device)
        feats = feats_of(batch) if feats_of else None
        if retrieved_of is not None:
            batch["retrieved"] = retrieved_of(batch)
        ls, out = compute_losses(model, batch, cfg, feats, judge)
        mask_a = audio_mask(batch, batch["mel"].shape[-1])
        pred_mel = out["mel"] if "mel" in out and "wav" not in out else audio.log_mel(out["wav"])
        ls["score"] = masked_mel_l1(pred_mel[..., : batch["mel"].shape[-1]], batch["mel"], mask_a)
        if "wav" in out:  # the intelligibility the evaluation reports, whether or not it is a training loss
            stoi = ls["stoi/neg"] if "stoi/neg" in ls else losses.intelligibility_loss(
                out["wav"], batch["audio"], mask=mask_a)["stoi/neg"]
            ls["estoi"] = -stoi
        for k, v in ls.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(batch["frames"])
        n += len(batch["frames"])
        readers = {"word/acc": out.get("word_logits"),
                   "content/acc": judge(audio.log_mel(out["wav"])) if judge is not None and "wav" in out else None}
        for key, logits in readers.items():
            if logits is not None:
                accuracy[key] = [a + b for a, b in zip(accuracy[key], frame_word_hits(logits, batch["words"]))]
        if "unit_logits" in out:  # the unit head's frame accuracy against the real speech's units
            hit = (out["unit_logits"].argmax(-1) == model.units_of(batch["mel"]))[mask_a]
            accuracy["unit/acc"] = [accuracy["unit/acc"][0] + int(hit.sum()), accuracy["unit/acc"][1] + hit.numel()]
        if asr is not None and "wav" in out:
            for key, values in speech_scores(out["wav"], batch, asr, mos).items():
                speech[key] += values
        if "ctc_log_probs" in out:
            for toks, ref in zip(ctc_greedy_batch(out["ctc_log_probs"], batch["frames"]), batch["text"]):
                hyps.append(tokens_to_text(toks))
                refs.append(ref)
    model.train()
    result = {k: v / max(1, n) for k, v in sums.items()}
    if refs:
        result["lipread/wer"] = float(np.mean([wer(r, h) for r, h in zip(refs, hyps)]))
    result |= {key: hits / total for key, (hits, total) in accuracy.items() if total}
    result |= {key: float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")  # all undefined: nan
               for key, values in speech.items() if values}
    result["select"] = select_value(result, cfg)
    return result


def speech_scores(wav: torch.Tensor, batch: dict, asr, mos=None) -> dict[str, list[float]]:
    """Per clip of a batch: the WER of ``asr``'s transcript of the generated waveform ``wav`` (B,N) against the
    clip's text, its pause buzz (:func:`naturall2s.metrics.comb_db`) in the frames labelled silence (word 0), and
    given a MOS predictor its predicted naturalness (``judge/mos``)."""
    from naturall2s.metrics import comb_db, wer

    scores = {"speech/wer": [], "comb": []}
    clips = [wav[i, : n * audio.SAMPLES_PER_VIDEO_FRAME].detach().float().cpu().numpy()
             for i, n in enumerate(batch["frames"].tolist())]
    for i, w in enumerate(clips):
        pause = (batch["words"][i, : len(w) // audio.SAMPLES_PER_VIDEO_FRAME] == 0).cpu().numpy()
        scores["speech/wer"].append(wer(batch["text"][i], asr.transcribe(w, audio.SAMPLE_RATE)))
        scores["comb"].append(comb_db(w, pause=pause.repeat(audio.SAMPLES_PER_VIDEO_FRAME // audio.HOP_LENGTH)))
    if mos is not None:
        scores["judge/mos"] = [float(x) for x in mos.score(clips, audio.SAMPLE_RATE)]
    return scores


def frame_word_hits(logits: torch.Tensor, words: torch.Tensor) -> tuple[int, int]:
    """Frame word logits (B, T', V) against labels (B, T) over the frames both cover -> (frames whose argmax is the
    label, labelled frames); ``UNKNOWN_WORD`` frames do not count."""
    n = min(logits.shape[1], words.shape[1])
    words = words[:, :n]
    labelled = words != UNKNOWN_WORD
    return int((logits[:, :n].argmax(-1) == words)[labelled].sum()), int(labelled.sum())


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


# ------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------
def check_config(cfg: TrainConfig) -> None:
    """NaturalL2SError, naming the fix, for a stage, variant and option that do not go together."""
    if cfg.variant == "ltbs":
        ltbs_training.check(cfg)
    if cfg.stage not in STAGES:
        raise NaturalL2SError(f"unknown stage {cfg.stage!r}; choose one of {', '.join(STAGES)}")
    if cfg.variant in SAMPLING_VARIANTS and cfg.stage in ("synth", "lipreader"):
        raise NaturalL2SError(f"variant {cfg.variant} has no {cfg.stage} stage: train its denoiser with --stage flow "
                              "(on the shipped lip reader's front end: --init checkpoints/mel-gl.safetensors) and its "
                              "vocoder with --stage vocoder (or compose the cascade's with --steps 0)")
    if cfg.stage == "flow" and cfg.variant not in SAMPLING_VARIANTS:
        raise NaturalL2SError(f"the flow stage trains the denoiser of --variant {' or '.join(SAMPLING_VARIANTS)}, "
                              f"not {cfg.variant}")
    if cfg.stage == "synth" and cfg.variant in MEL_VARIANTS:
        raise NaturalL2SError(f"variant {cfg.variant} has no synth stage: train it with --stage lipreader / vocoder")
    if cfg.stage == "vocoder" and cfg.variant not in VOCODER_VARIANTS:
        raise NaturalL2SError(f"the vocoder stage belongs to --variant {' or '.join(VOCODER_VARIANTS)}")
    if cfg.stage == "lipreader" and cfg.variant not in ("mel-gl", "units"):
        raise NaturalL2SError("the lipreader stage trains --variant mel-gl (front end + CTC + mel head) or units "
                              "(+ the unit head)")
    if cfg.stage == "flow" and cfg.adv_start >= 0:
        raise NaturalL2SError("the flow stage trains the denoiser on mels, not a waveform: no adversarial losses "
                              "(--adv-start -1)")
    if cfg.degrade_mel and cfg.stage != "vocoder":
        raise NaturalL2SError("--degrade-mel degrades the real mels a vocoder trains on: it belongs to the vocoder "
                              "stage")
    if cfg.select not in SELECT:
        raise NaturalL2SError(f"unknown --select {cfg.select!r}; choose one of {', '.join(SELECT)}")
    if not 0.0 <= cfg.ema < 1.0:
        raise NaturalL2SError(f"--ema is a decay per step in [0, 1) (0: off), got {cfg.ema}")
    if cfg.ema and cfg.stage in ("judge", "live"):
        raise NaturalL2SError(f"--ema averages the weights of the model stages; the {cfg.stage} stage has none")
    if cfg.judge and cfg.stage != "synth" and cfg.variant not in SAMPLING_VARIANTS:
        raise NaturalL2SError("--judge supervises generated speech: it belongs to the synth stage (or guides the "
                              "lipvoicer variant's sampling)")
    if cfg.judge_flow and cfg.stage != "judge":
        raise NaturalL2SError("--judge-flow fine-tunes a lipvoicer model's judge on its flow estimates: it belongs to "
                              "--stage judge")
    if loss_weights(cfg)["content/ce"] and not cfg.judge:
        raise NaturalL2SError("the content/ce loss needs a content judge: --judge PATH (a judge run's checkpoint)")
    if cfg.init_disc and cfg.steps and not (cfg.adv_start >= 0 and cfg.stage != "lipreader"):
        raise NaturalL2SError("--init-disc starts the discriminators of the adversarial losses: set --adv-start 0 "
                              "(or later) on the synth or vocoder stage, or drop --init-disc")


def compose(cfg: TrainConfig) -> dict:
    """``--steps 0``: the model composed from ``--init`` (e.g. a vocoder run and a lip-reader run), saved to the run
    folder and ``--export``; no training."""
    model = build_model(cfg)
    require_sampling_parts(model)
    if model.config.samples_mel and not model.has_mel_stats:
        raise NaturalL2SError("this lipvoicer model has no mel statistics yet: --init its flow run's checkpoint")
    info = {"step": 0, "stage": "compose", "init": cfg.init, "train_config": asdict(cfg)}
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    save_model(model, Path(cfg.run_dir) / "best.safetensors", info=info)
    if cfg.export:
        save_model(model, cfg.export, info=info)
    return {"step": 0, "best": float("nan"), "run_dir": cfg.run_dir}


class WeightEMA:
    """An exponential moving average of a model's trained parameters (``--ema DECAY``): after each step
    ``avg ← decay·avg + (1 - decay)·weights``; :meth:`applied` puts the average in the model for a validation or an
    export. It starts at the start's weights, so a short fine-tune's average stays near its start. Its state goes into
    ``state.pt``, so a resumed run goes on exactly."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.average = {n: p.detach().clone() for n, p in self.params.items()}

    @torch.no_grad()
    def update(self) -> None:
        for n, p in self.params.items():
            self.average[n].lerp_(p.detach(), 1.0 - self.decay)

    @contextlib.contextmanager
    def applied(self):
        """Within the block the model's trained parameters are the average; afterwards the weights again."""
        weights = {n: p.detach().clone() for n, p in self.params.items()}
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(self.average[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(weights[n])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "average": self.average}

    def load_state_dict(self, state: dict) -> None:
        for n, t in state["average"].items():
            self.average[n].copy_(t)


@dataclass
class Optimisation:
    """What a training step changes, saved and resumed as one: the model's trained parameters and their optimiser,
    the discriminators and theirs (adversarial training), the moving average of the weights (``--ema``)."""

    model: LipToSpeech
    params: list
    opt: torch.optim.Optimizer
    disc: torch.nn.ModuleDict | None = None
    disc_opt: torch.optim.Optimizer | None = None
    ema: WeightEMA | None = None

    @classmethod
    def build(cls, model: LipToSpeech, cfg: TrainConfig, device) -> "Optimisation":
        params = trainable_parameters(model, cfg)
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.8, 0.99), weight_decay=cfg.weight_decay)
        disc = disc_opt = None
        if cfg.adv_start >= 0 and cfg.stage != "lipreader":
            disc = build_discriminators(cfg.disc, cfg.init_disc).to(device)  # a resumed run's are loaded later
            disc_opt = torch.optim.AdamW(disc.parameters(), lr=cfg.lr_disc, betas=(0.8, 0.99))
        return cls(model, params, opt, disc, disc_opt, WeightEMA(model, cfg.ema) if cfg.ema > 0 else None)

    def averaged(self):
        """A context in which the model holds what is validated and exported (the average with ``--ema``)."""
        return self.ema.applied() if self.ema is not None else contextlib.nullcontext()

    def state_dict(self) -> dict:
        st = {"model": self.model.state_dict(), "opt": self.opt.state_dict()}
        if self.disc is not None:
            st |= {"disc": self.disc.state_dict(), "disc_opt": self.disc_opt.state_dict()}
        if self.ema is not None:
            st["ema"] = self.ema.state_dict()
        return st

    def load_state_dict(self, st: dict) -> None:
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["opt"])
        if self.disc is not None and "disc" in st:
            self.disc.load_state_dict(st["disc"])
            self.disc_opt.load_state_dict(st["disc_opt"])
        if self.ema is not None and "ema" in st:
            self.ema.load_state_dict(st["ema"])

    def update(self, train_model, batch: dict, cfg: TrainConfig, *, step: int, feats, judge, keys,
               lambdas: dict) -> tuple[dict, torch.Tensor]:
        """One optimisation step (the model's, after the discriminators' when adversarial) -> (losses, total)."""
        for g in self.opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        ls, out = compute_losses(train_model, batch, cfg, feats, judge)
        adv_on = self.disc is not None and step >= cfg.adv_start
        if adv_on:
            ls |= adversarial_losses(self.disc, self.disc_opt, batch["audio"], out["wav"], cfg)
        active = {k: v for k, v in ls.items() if k in keys or (adv_on and k in ADV_KEYS)}
        total = losses.weighted_sum(active, lambdas)
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self.opt.step()
        if self.ema is not None:
            self.ema.update()
        return ls, total


def speech_scorers(cfg: TrainConfig, is_main: bool) -> tuple:
    """(asr, mos) that score the generated speech at every validation of a selection that needs them (the
    guarded and intelligible ones), else (None, None). The MOS is read, never optimised or selected on."""
    if cfg.select not in BASELINE_SELECTS or not is_main:
        return None, None
    from naturall2s.asr import get_asr
    from naturall2s.naturalness import MOSPredictorUnavailableError, get_mos_predictor

    asr = get_asr("auto", grammar="grid")
    try:
        return asr, get_mos_predictor("auto")
    except MOSPredictorUnavailableError as e:
        print(f"no MOS in the learning curve: {e}")
        return asr, None


@dataclass
class FrozenInputs:
    """What a frozen front end gives every step, computed once per clip: its features (``feats``: {clip name:
    (T, D)}, the flow stage and ``--freeze-frontend`` synth stages) and the retrieval prior's retrieved real mel
    (``retrieved``: {clip name: (n_mels, 4T)}, a training clip's own frames left out: it must not hear itself)."""

    feats: dict | None
    retrieved: dict | None
    device: torch.device

    @classmethod
    def prepare(cls, model, cfg: TrainConfig, train_set, val_set, run_dir: Path, device, is_main: bool):
        feats = retrieved = None
        if cfg.stage == "flow" or cfg.judge_flow or (cfg.freeze_frontend and cfg.stage == "synth"):
            whole_clips = copy.copy(train_set)  # the same records in RAM, items not cut into segments
            whole_clips.segment_frames = None
            feats = cache_features(model, [whole_clips, val_set], device, is_main,
                                   path=run_dir / "features.pt" if is_main else None)
        if model.config.retrieval_prior:
            if feats is None:
                raise NaturalL2SError("retrieval_prior trains on a frozen front end: add --freeze-frontend")
            retrieved = retrieve_all(model, feats, whole_clips, val_set, verbose=is_main)
        return cls(feats, retrieved, device)

    def feats_of(self, batch) -> torch.Tensor | None:
        """(B, T, D) features of the batch's crops, or None when the front end runs."""
        if self.feats is None:
            return None
        t = batch["roi"].shape[1]
        rows = [self.feats[name][int(s) : int(s) + t] for name, s in zip(batch["name"], batch["start"])]
        return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True).to(self.device)

    def retrieved_of(self, batch) -> torch.Tensor | None:
        """(B, n_mels, 4T) retrieved real mel of the batch's crops, or None without the retrieval prior."""
        if self.retrieved is None:
            return None
        a, t = audio.SAMPLES_PER_VIDEO_FRAME // audio.HOP_LENGTH, batch["roi"].shape[1]
        rows = [self.retrieved[name][:, int(s) * a : (int(s) + t) * a].T
                for name, s in zip(batch["name"], batch["start"])]
        return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True).transpose(1, 2).to(self.device)


def train(cfg: TrainConfig, *, on_step=None) -> dict:
    """Run one stage (see the module doc); ``on_step(step, val)`` (optional) is called after every training step
    with the validation dict at evaluation steps, else None (e.g. to drive a progress bar; rank 0 only)."""
    check_config(cfg)
    if cfg.stage == "judge":
        return train_judge(cfg)
    if cfg.stage == "live":
        return train_live(cfg)
    if cfg.steps == 0:
        return compose(cfg)

    require_cache(cfg)
    rank, world, device = setup_distributed(cfg)
    is_main = rank == 0
    seed_everything(cfg.seed + rank)
    run_dir = Path(cfg.run_dir)
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))

    # data: everything in RAM; each epoch's batch order is a function of (seed, epoch), sharded across processes,
    # so that a resumed run continues with exactly the batches it had not seen yet
    train_set = CachedGrid(cfg.cache, "train", segment_frames=cfg.segment_frames or None, train=True)
    val_set = CachedGrid(cfg.cache, "val")
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=cfg.batch_size, collate_fn=collate)
    batches_per_epoch = len(train_set) // (cfg.batch_size * world)
    if batches_per_epoch == 0:
        raise DataError(f"{len(train_set)} training clips make no batch of {cfg.batch_size} (x {world} processes)")

    model = build_model(cfg).to(device)
    if model.config.variant == "units" and not model.has_codebook:  # fitted once on the training split, kept
        model.set_codebook(unit_codebook(model.config.n_units, train_set, run_dir, rank=rank, world=world))
    require_sampling_parts(model)
    if model.config.samples_mel and not model.has_mel_stats:  # the flow's normalisation, from the training split
        model.set_mel_stats(*mel_statistics(train_set))
    optim = Optimisation.build(model, cfg, device)
    use_adv = optim.disc is not None
    judge = None
    if cfg.judge:
        from naturall2s.content import load_judge

        judge = load_judge(cfg.judge, device=device)
    asr, mos = speech_scorers(cfg, is_main)
    lambdas = loss_weights(cfg)
    keys = STAGE_KEYS[cfg.stage] + (("ctc", "word/ce") if cfg.stage == "synth" and not cfg.freeze_frontend else ())
    n_params = sum(p.numel() for p in optim.params)

    frozen = FrozenInputs.prepare(model, cfg, train_set, val_set, run_dir, device, is_main)
    feats_of, retrieved_of = frozen.feats_of, frozen.retrieved_of

    # resume
    step, best, baseline, start_time, cpu_before = 0, float("inf"), None, time.time(), -time.process_time()
    state_path = run_dir / "state.pt"
    resumed = load_state(state_path, map_location=device) if state_path.exists() else None
    if resumed is not None:
        optim.load_state_dict(resumed)
        step, best, baseline = resumed["step"], resumed["best"], resumed.get("baseline")
        cpu_before += resumed.get("cpu_seconds", 0.0)
        if is_main:
            print(f"resumed {state_path} at step {step} (best score {best:.4f})")

    def cpu_seconds() -> float:  # this run's CPU time over all its invocations (the budget of long CPU runs)
        return cpu_before + time.process_time()

    fit_loader = None
    if cfg.eval_train > 0:  # the same training clips every time, whole and unaugmented: how well the model fits
        fit_set = CachedGrid(cfg.cache, "train")
        pick = np.linspace(0, len(fit_set) - 1, min(cfg.eval_train, len(fit_set))).round().astype(int)
        fit_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(fit_set, pick.tolist()),
                                                 batch_size=cfg.batch_size, collate_fn=collate)

    # the lipvoicer variant's own judge (it guides the sampling) also reads the validation speech: content/acc
    probe = model.judge if judge is None and model.config.samples_mel else judge

    def validate() -> dict:
        fo = feats_of if frozen.feats is not None else None
        val = evaluate(model, val_loader, cfg, fo, probe, asr=asr, mos=mos, retrieved_of=retrieved_of)
        if fit_loader is not None:
            fit = evaluate(model, fit_loader, cfg, fo, probe, retrieved_of=retrieved_of)
            val |= {f"train/{k}": v for k, v in fit.items() if k != "select"}
        return val

    def save_training_state():
        save_state({**optim.state_dict(), "step": step, "best": best, "baseline": baseline, "rng": rng_state(),
                    "cpu_seconds": cpu_seconds()}, state_path)

    log_file = open(run_dir / "log.csv", "a", newline="") if is_main else None
    log = csv.writer(log_file) if log_file else None
    if log is not None:  # every (re)start records its configuration: a recipe changed on resume stays on record
        log.writerow([step, "config", json.dumps(asdict(cfg))])
    if cfg.select in BASELINE_SELECTS and baseline is None and is_main:
        # the start is the bar every later checkpoint must clear (and the best model until one does)
        val = validate()
        baseline = {k: val[k] for k in GUARDED if k in val}
        best = select_value(val, cfg, baseline)
        log.writerow([step, "val", json.dumps(val)])
        save_model(model, run_dir / "best.safetensors", info={"step": step, "val": val, "stage": cfg.stage,
                                                               "train_config": asdict(cfg)})
        tqdm.write(f"step {step}: val {format_val(val, keys)} (the guard's baseline)")
    if resumed is not None and "rng" in resumed:
        set_rng_state(resumed["rng"])

    train_model = DDP(model, find_unused_parameters=True) if world > 1 else model
    if is_main:
        print(
            f"{cfg.variant} / {cfg.stage}: {n_params / 1e6:.2f}M trainable parameters, {len(train_set)} train clips, "
            f"world {world}, device {device}, losses {keys + (ADV_KEYS if use_adv else ())}"
            + (f", discriminators {cfg.disc}" if use_adv else "")
        )

    bar = tqdm(total=cfg.steps, initial=step, disable=not is_main, desc=f"{cfg.variant}/{cfg.stage}", dynamic_ncols=True)
    model.train()
    stop = False
    clips_seen, t_last, t_saved = 0, time.time(), time.time()
    last_val = ""
    end = min(cfg.steps, cfg.stop_at) if cfg.stop_at > 0 else cfg.steps
    while step < end and not stop:
        epoch, offset = divmod(step, batches_per_epoch)
        order = epoch_batches(len(train_set), cfg.batch_size, seed=cfg.seed, epoch=epoch, rank=rank, world=world)
        loader = torch.utils.data.DataLoader(train_set, batch_sampler=order[offset:], collate_fn=collate,
                                             generator=torch.Generator())  # its own seed draw: not from torch's RNG
        for batch in loader:
            batch = to_device(batch, device)
            if frozen.retrieved is not None:
                batch["retrieved"] = retrieved_of(batch)
            ls, total = optim.update(train_model, batch, cfg, step=step, feats=feats_of(batch), judge=judge,
                                     keys=keys, lambdas=lambdas)
            step += 1
            clips_seen += len(batch["frames"]) * world
            bar.update(1)

            if is_main and (step % cfg.log_every == 0 or step == 1):
                rate = clips_seen / max(1e-9, time.time() - t_last)
                clips_seen, t_last = 0, time.time()
                row = {k: round(float(v.detach()), 4) for k, v in ls.items()}
                bar.set_postfix_str(f"loss {float(total.detach()):.3f}, {rate:.1f} clips/s{last_val}")
                log.writerow([step, "train", json.dumps({**row, "total": float(total.detach()), "clips_per_s": rate,
                                                         "cpu_hours": cpu_seconds() / 3600})])
                log_file.flush()
            timed_out = cfg.max_minutes > 0 and (time.time() - start_time) / 60 > cfg.max_minutes
            if step % cfg.eval_every == 0 or step >= end or timed_out:
                if is_main:
                    with optim.averaged():
                        val = validate()
                        val["select"] = select_value(val, cfg, baseline)
                        log.writerow([step, "val", json.dumps(val)])
                        log_file.flush()
                        tqdm.write(f"step {step}: val {format_val(val, keys)}")
                        last_val = f", val {cfg.select} {val['select']:.4f}"
                        if val["select"] < best:
                            best = val["select"]
                            info = {"step": step, "val": val, "stage": cfg.stage, "train_config": asdict(cfg)}
                            save_model(model, run_dir / "best.safetensors", info=info)
                            if cfg.export:
                                save_model(model, cfg.export, info=info)
                    save_training_state()
                    t_saved = time.time()
                if world > 1:
                    dist.barrier()
            elif is_main and cfg.save_minutes > 0 and time.time() - t_saved > 60 * cfg.save_minutes:
                save_training_state()  # between evaluations: a lost process loses at most save_minutes of work
                t_saved = time.time()
            if on_step is not None and is_main:
                on_step(step, val if step % cfg.eval_every == 0 or step >= end or timed_out else None)
            if step >= end or timed_out:
                stop = True
                break
    bar.close()
    if log_file:
        log_file.close()
    if world > 1:
        dist.destroy_process_group()
    return {"step": step, "best": best, "run_dir": str(run_dir)}


def train_judge(cfg: TrainConfig) -> dict:
    """Stage ``judge``: the content judge (:class:`~naturall2s.content.WordJudge`, ``--arch`` overrides its
    :class:`~naturall2s.content.JudgeConfig`) learns the frame word labels from the *real* log-mels of the training
    split (random ``--segment-frames`` crops, SpecAugment and gain), and is selected on its validation word accuracy
    (``best`` is that accuracy). With ``--judge-flow`` (a lipvoicer checkpoint) it is that model's judge, fine-tuned
    on what its guidance shows it: the denoiser's clean estimates (:class:`FlowEstimates`), on val too. One process;
    resumable like the other stages."""
    from naturall2s.content import JudgeConfig, WordJudge, spec_augment

    device, run_dir = one_process_stage(cfg)
    train_set = CachedGrid(cfg.cache, "train", segment_frames=cfg.segment_frames or None, train=True)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True,
                                               collate_fn=collate, drop_last=True)
    val_set = CachedGrid(cfg.cache, "val")
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=cfg.batch_size, collate_fn=collate)
    flow = FlowEstimates.prepare(cfg, train_set, val_set, run_dir, device) if cfg.judge_flow else None
    if flow is not None:
        judge = WordJudge(flow.model.judge.config).to(device)
        judge.load_state_dict(flow.model.judge.state_dict())
    else:
        judge = WordJudge(JudgeConfig(**cfg.arch)).to(device)
    inputs_of = flow.estimates if flow is not None else real_mel
    opt = torch.optim.AdamW(judge.parameters(), lr=cfg.lr, betas=(0.8, 0.99), weight_decay=cfg.weight_decay)
    step, best, cpu_before = 0, -1.0, -time.process_time()
    state_path = run_dir / "state.pt"
    if state_path.exists():
        st = load_state(state_path, map_location=device)
        judge.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, best = st["step"], st["best"]
        cpu_before += st.get("cpu_seconds", 0.0)
    print(f"judge: {sum(p.numel() for p in judge.parameters()) / 1e6:.2f}M parameters, {len(train_set)} train clips"
          + (f", on the flow estimates of {cfg.judge_flow}" if flow is not None else ""))
    start_acc = None
    if flow is not None and step == 0:  # where the model's own judge starts (logged; selection is among later steps)
        start_acc = judge_accuracy(judge, val_loader, device, inputs_of)
        print(f"step 0: val word/acc {start_acc:.4f} (the model's own judge)")
    bar = tqdm(total=cfg.steps, initial=step, desc="judge", dynamic_ncols=True)
    with open(run_dir / "log.csv", "a", newline="") as log_file:
        log = csv.writer(log_file)
        if start_acc is not None:
            log.writerow([0, "val", json.dumps({"word/acc": start_acc})])
        while step < cfg.steps:
            for batch in train_loader:
                batch = to_device(batch, device)
                for g in opt.param_groups:
                    g["lr"] = lr_at(step, cfg)
                mel = spec_augment(inputs_of(batch))
                if cfg.judge_robust > 0:
                    mel = adversarial_input(judge, mel, batch["words"], cfg.judge_robust)
                logits = judge(mel)
                ls = losses.word_ce_loss(logits, batch["words"], ignore_index=UNKNOWN_WORD)
                total = losses.weighted_sum(ls, loss_weights(cfg))
                opt.zero_grad(set_to_none=True)
                total.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(judge.parameters(), cfg.grad_clip)
                opt.step()
                step += 1
                bar.update(1)
                if step % cfg.log_every == 0:
                    bar.set_postfix(loss=f"{float(total.detach()):.3f}")
                    log.writerow([step, "train", json.dumps({"word/ce": float(total.detach()),
                                                             "cpu_hours": (cpu_before + time.process_time()) / 3600})])
                if step % cfg.eval_every == 0 or step >= cfg.steps:
                    acc = judge_accuracy(judge, val_loader, device, inputs_of)
                    log.writerow([step, "val", json.dumps({"word/acc": acc})])
                    log_file.flush()
                    tqdm.write(f"step {step}: val word/acc {acc:.4f}")
                    if acc > best:
                        best = acc
                        info = {"step": step, "val": {"word/acc": acc}, "stage": "judge", "train_config": asdict(cfg)}
                        for path in filter(None, (run_dir / "best.safetensors", cfg.export)):
                            save_model(judge, path, info=info)
                    save_state({"model": judge.state_dict(), "opt": opt.state_dict(), "step": step, "best": best,
                                "cpu_seconds": cpu_before + time.process_time()}, state_path)
                if step >= cfg.steps:
                    break
    bar.close()
    return {"step": step, "best": best, "run_dir": str(run_dir)}


def adversarial_input(judge, log_mel: torch.Tensor, words: torch.Tensor, rms: float) -> torch.Tensor:
    """``log_mel`` (B, n_mels, F) moved one step along the gradient that raises the judge's word loss on ``words``
    (B, T), normalised per clip to ``rms`` per element: the worst nearby input, for adversarial training."""
    x = log_mel.detach().clone().requires_grad_(True)
    loss = losses.word_ce_loss(judge(x), words, ignore_index=UNKNOWN_WORD)["word/ce"]
    (g,) = torch.autograd.grad(loss, x)
    norm = g.flatten(1).norm(dim=1).clamp(min=1e-12)[:, None, None] / math.sqrt(g[0].numel())
    return (log_mel + rms * g / norm).detach()


def real_mel(batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
    """The batch's real log-mels (B, n_mels, F): what a content judge reads unless ``--judge-flow`` says otherwise."""
    return batch["mel"]


@torch.no_grad()
def judge_accuracy(judge, loader, device, inputs_of=real_mel) -> float:
    """Frame word accuracy of a content judge on ``loader``'s clips (labelled frames): on ``inputs_of(batch,
    generator)``, their real log-mels or e.g. :meth:`FlowEstimates.estimates` (the same draws at every call)."""
    judge.eval()
    generator = torch.Generator(device=device).manual_seed(0)
    hits = total = 0
    for batch in loader:
        batch = to_device(batch, device)
        h, t = frame_word_hits(judge(inputs_of(batch, generator)), batch["words"])
        hits, total = hits + h, total + t
    judge.train()
    return hits / max(1, total)


@dataclass
class FlowEstimates:
    """A frozen lipvoicer model (``--judge-flow``) and its front end's cached features: the inputs on which its
    judge is fine-tuned, the clean estimates ``x̂_1 = x_t + (1 - t)·v̂`` of its denoiser at a random ``t`` (uniform,
    so every step of any sampling schedule), denormalised to log-mels, as its guidance hands them to the judge."""

    model: LipToSpeech
    frozen: FrozenInputs

    @classmethod
    def prepare(cls, cfg: TrainConfig, train_set, val_set, run_dir: Path, device) -> "FlowEstimates":
        model = load_model(cfg.judge_flow, device=device)
        if not model.config.samples_mel:
            raise NaturalL2SError(f"--judge-flow {cfg.judge_flow} is a {model.config.variant} model, not lipvoicer")
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
        return cls(model, FrozenInputs.prepare(model, cfg, train_set, val_set, run_dir, device, True))

    @torch.no_grad()
    def estimates(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """The batch's clean estimates (B, n_mels, 4T), one flow draw per clip (noise and ``t`` from
        ``generator``)."""
        out = self.model.decode(self.frozen.feats_of(batch), flow_mel=batch["mel"], generator=generator,
                                vocode=False)
        return out["mel_estimate"]


def unit_codebook(n_units: int, train_set: CachedGrid, run_dir: Path, *, rank: int = 0, world: int = 1):
    """The units variant's codebook (:func:`naturall2s.units.fit_codebook`) over the whole training clips' log-mels,
    with :data:`naturall2s.units.KMEANS_SEED` (so every stage and run on the same clips gets the same one), kept in
    ``<run-dir>/units.pt`` with the clip names and size it was fitted for (a resumed run reads it back). Under
    torchrun rank 0 fits it and the others read its file."""
    from naturall2s.units import KMEANS_SEED, Codebook, fit_codebook

    path = run_dir / "units.pt"
    key = {"n_units": n_units, "seed": KMEANS_SEED, "clips": zlib.crc32("\n".join(train_set.names).encode())}

    def kept():
        if path.is_file():
            st = load_state(path)
            if st.get("key") == key:
                return Codebook(mean=st["mean"], std=st["std"], centroids=st["centroids"])
        return None

    book = kept() if rank == 0 else None
    if rank == 0 and book is None:
        t0 = time.time()
        mels = [torch.from_numpy(r["mel"].astype(np.float32)) for r in train_set.records]
        try:
            book = fit_codebook(mels, n_units, seed=KMEANS_SEED)
        except ValueError as e:
            raise NaturalL2SError(f"the speech-unit codebook: {e}") from None
        run_dir.mkdir(parents=True, exist_ok=True)
        save_state({"key": key, "mean": book.mean, "std": book.std, "centroids": book.centroids}, path)
        print(f"units: k-means of {sum(m.shape[1] for m in mels)} training frames into {n_units} units "
              f"({time.time() - t0:.0f} s), kept in {path}")
    if world > 1:
        dist.barrier()
        if rank > 0:
            book = kept()
    return book


# ------------------------------------------------------------------------------------------------
# stage live: the live student
# ------------------------------------------------------------------------------------------------
LIVE_VAL_BATCHES, LIVE_VAL_WINDOWS = 8, 32  # validation: fixed batches of windows of the val clips


def train_live(cfg: TrainConfig) -> dict:
    """Stage ``live`` (see the module doc): the student (a copy of the ``--init`` model's front end whose transformer
    and final norm train) learns, on :func:`live_windows` of the cache's train clips, the offline features of the
    whole clips (:func:`live_loss`); best by the same loss on fixed val windows (``best``), exported by
    :func:`export_live`. The per-frame projections are computed once (kept in ``<run-dir>/projections.pt``); each
    step's windows are drawn from (seed, step) alone, so a run resumed from ``state.pt`` goes on exactly."""
    if not cfg.init or "," in cfg.init:
        raise NaturalL2SError("--stage live trains the live student of one model: --init NAME_OR_PATH")
    device, run_dir = one_process_stage(cfg)
    model = load_model(cfg.init, device=device)
    if model.config.variant != cfg.variant:
        raise NaturalL2SError(f"--init {cfg.init} is a {model.config.variant} model: add --variant "
                              f"{model.config.variant}")
    train_clips, val_batches = live_data(model, cfg, device, path=run_dir / "projections.pt")
    student = copy.deepcopy(model.frontend).train().requires_grad_(False)
    params = [*student.transformer.parameters(), *student.norm.parameters()]
    opt = torch.optim.AdamW([p.requires_grad_(True) for p in params], lr=cfg.lr, betas=(0.8, 0.99),
                            weight_decay=cfg.weight_decay)
    run = {"step": 0, "best": float("inf"), "offline": None, "cpu_seconds": 0.0}  # in state.pt beside the weights
    state_path = run_dir / "state.pt"
    if state_path.exists():
        st = load_state(state_path, map_location=device)
        student.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        set_rng_state(st["rng"])
        run = {k: st[k] for k in run}
    if run["offline"] is None:  # the model's own transformer on the val windows: the number to beat
        run["offline"] = live_val_loss(model.frontend, val_batches)
    cpu_start = time.process_time() - run["cpu_seconds"]
    print(f"{cfg.variant} / live: {sum(p.numel() for p in params) / 1e6:.2f}M trainable parameters, "
          f"{len(train_clips)} train clips; val loss of the offline transformer on live windows {run['offline']:.4f}")
    start = t_saved = time.time()
    end = min(cfg.steps, cfg.stop_at) if cfg.stop_at > 0 else cfg.steps
    bar = tqdm(total=end, initial=run["step"], desc=f"{cfg.variant}/live", dynamic_ncols=True)
    with open(run_dir / "log.csv", "a", newline="") as log_file:
        log = csv.writer(log_file)
        log.writerow([run["step"], "config", json.dumps(asdict(cfg))])
        while run["step"] < end:
            loss = live_update(student, opt, params, train_clips, cfg, step=run["step"])
            run["step"] = step = run["step"] + 1
            run["cpu_seconds"] = time.process_time() - cpu_start
            bar.update(1)
            if step % cfg.log_every == 0 or step == 1:
                bar.set_postfix(loss=f"{loss:.4f}")
                log.writerow([step, "train", json.dumps({"live/mse": loss, "cpu_hours": run["cpu_seconds"] / 3600})])
            timed_out = cfg.max_minutes > 0 and (time.time() - start) / 60 > cfg.max_minutes
            evaluate_now = step % cfg.eval_every == 0 or step >= end or timed_out
            if evaluate_now:
                val = live_val_loss(student, val_batches)
                log.writerow([step, "val", json.dumps({"live/mse": val, "live/mse_offline": run["offline"]})])
                tqdm.write(f"step {step}: val live/mse {val:.4f} (the offline transformer: {run['offline']:.4f})")
                if val < run["best"]:
                    run["best"] = val
                    export_live(model, student, cfg, facts={"steps": step, "val_mse": round(val, 5),
                                                            "val_mse_offline_transformer": round(run["offline"], 5),
                                                            "train_clips": len(train_clips)})
            if evaluate_now or (cfg.save_minutes > 0 and time.time() - t_saved > 60 * cfg.save_minutes):
                save_state({"model": student.state_dict(), "opt": opt.state_dict(), "rng": rng_state(), **run},
                           state_path)
                t_saved = time.time()
            log_file.flush()
            if timed_out:
                break
    bar.close()
    return {"step": run["step"], "best": run["best"], "run_dir": str(run_dir)}


def live_update(student, opt, params: list, clips: list, cfg: TrainConfig, *, step: int) -> float:
    """One training step of the student on the windows of ``step`` (drawn from (seed, step)) -> its loss."""
    x, y, m = live_windows(clips, np.random.default_rng([cfg.seed, step]), batch=cfg.batch_size, cfg=cfg)
    for g in opt.param_groups:
        g["lr"] = lr_at(step, cfg)
    loss = live_loss(student, x, y, m)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    opt.step()
    return float(loss.detach())


def live_data(model: LipToSpeech, cfg: TrainConfig, device, *, path: Path) -> tuple[list, list]:
    """-> (per train clip (per-frame projections (T, dim), the offline features of the whole clip (T, dim)), the
    fixed validation batches of :func:`live_windows` over the val clips). The projections are
    :func:`naturall2s.stream.frame_projections` of the cache's crops and lips (kept in ``path``, as
    :func:`cache_features` keeps features); the features are the model's transformer over all of a clip's."""
    from naturall2s.stream import contextualize

    sets = [CachedGrid(cfg.cache, split) for split in ("train", "val")]
    proj = cache_features(model, sets, device, True, path=path, per_frame=True)
    model.eval()
    with torch.no_grad():
        clips = {n: (p.to(device), contextualize(model.frontend, p[None].to(device))[0]) for n, p in proj.items()}
    rng = np.random.default_rng(cfg.seed + 1)
    val = [clips[n] for n in sets[1].names]
    val_batches = [live_windows(val, rng, batch=LIVE_VAL_WINDOWS, cfg=cfg) for _ in range(LIVE_VAL_BATCHES)]
    return [clips[n] for n in sets[0].names], val_batches


def live_windows(clips: list[tuple[torch.Tensor, torch.Tensor]], rng: np.random.Generator, *, batch: int,
                 cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``batch`` windows as live synthesis runs the transformer: one length W uniform in [cfg.live_min_window,
    cfg.live_window], then per window a random clip of ``clips`` ((projections, offline features)) and a random end
    frame. -> (projections (B, W, dim), targets (B, W, dim), weights (B, W): 1 on each window's last
    ``cfg.live_tail`` frames). A window longer than the clip up to its end (at a clip's start) is left-aligned and
    padded with zeros, weighted 0."""
    w = int(rng.integers(cfg.live_min_window, cfg.live_window + 1))
    xs, ys, ms = [], [], []
    for _ in range(batch):
        proj, feats = clips[int(rng.integers(len(clips)))]
        e = int(rng.integers(min(w, len(proj)), len(proj) + 1))
        s = max(0, e - w)
        m = torch.zeros(w, device=proj.device)
        m[max(0, e - s - cfg.live_tail):e - s] = 1.0
        xs.append(torch.nn.functional.pad(proj[s:e], (0, 0, 0, w - (e - s))))
        ys.append(torch.nn.functional.pad(feats[s:e], (0, 0, 0, w - (e - s))))
        ms.append(m)
    return torch.stack(xs), torch.stack(ys), torch.stack(ms)


def live_loss(fe, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Mean squared error, over the frames ``m`` weights, between the features a front end's transformer and norm
    (:func:`naturall2s.stream.contextualize`, positions from 0 at each window's start) give on the projections ``x``
    (B, W, dim) and the offline features ``y``."""
    from naturall2s.stream import contextualize

    err = ((contextualize(fe, x) - y) ** 2).mean(-1)
    return (err * m).sum() / m.sum()


@torch.no_grad()
def live_val_loss(fe, batches) -> float:
    """:func:`live_loss` of ``fe`` (eval mode) averaged over the validation batches."""
    was_training = fe.training
    fe.eval()
    value = float(np.mean([live_loss(fe, *b).item() for b in batches]))
    fe.train(was_training)
    return value


def export_live(model: LipToSpeech, student, cfg: TrainConfig, *, facts: dict) -> None:
    """The whole ``model`` with the student's transformer and norm, its info + ``live_student`` (``facts`` of the
    run's best step, the window settings, the date and this run's config), to ``<run-dir>/best.safetensors`` and
    ``cfg.export``: what :func:`naturall2s.stream.load_student` reads."""
    exported = copy.deepcopy(model)
    exported.frontend.transformer.load_state_dict(student.transformer.state_dict())
    exported.frontend.norm.load_state_dict(student.norm.state_dict())
    facts = {"base": cfg.init, **facts, "window": cfg.live_window, "min_window": cfg.live_min_window,
             "tail": cfg.live_tail, "date": time.strftime("%Y-%m-%d"), "train_config": asdict(cfg)}
    info = {**(getattr(model, "info", None) or {}), "live_student": facts}
    for path in filter(None, (Path(cfg.run_dir) / "best.safetensors", cfg.export)):
        save_model(exported, path, info=info)


def one_process_stage(cfg: TrainConfig) -> tuple[torch.device, Path]:
    """The start of a small stage that runs as one process (judge, live): refuses torchrun, checks the cache, seeds,
    and writes the run's config.json. -> (device, run folder)"""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise NaturalL2SError(f"the {cfg.stage} stage is small: run it as one process, without torchrun")
    require_cache(cfg)
    _, _, device = setup_distributed(cfg)
    seed_everything(cfg.seed)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    return device, run_dir


def require_cache(cfg: TrainConfig) -> None:
    if not (Path(cfg.cache) / "manifest.json").exists():
        raise DataError(f"no prepared cache at {cfg.cache}: run `python -m naturall2s prepare --out {cfg.cache}` first")


def _flat(feature_maps) -> list[torch.Tensor]:
    """Nested lists of feature maps (per sub-discriminator, per layer) → one flat list."""
    flat = []
    for f in feature_maps:
        flat.extend(_flat(f) if isinstance(f, (list, tuple)) else [f])
    return flat


@torch.no_grad()
def cache_features(model: LipToSpeech, datasets, device, verbose: bool,
                   path: Path | None = None, *, per_frame: bool = False) -> dict[str, torch.Tensor]:
    """Front-end features (T,dim) of every whole clip, computed once in eval mode (frozen front end); ``per_frame``:
    the front end's per-frame projections instead (:func:`naturall2s.stream.frame_projections`, before its
    transformer). With ``path`` they are kept there too, and read back by a resumed run whose front end and clips are
    the same (a fingerprint of the front end's weights and the clip names decides), which spares a long run minutes at
    every resume."""
    from naturall2s.stream import frame_projections

    names = [ds.names[i] for ds in datasets for i in range(len(ds))]
    fingerprint = torch.tensor([float(sum(v.double().sum() + v.double().abs().sum()
                                          for v in model.frontend.state_dict().values() if v.is_floating_point())),
                                float(zlib.crc32("\n".join(names).encode()))], dtype=torch.float64)
    if path is not None and path.is_file():
        kept = load_state(path)
        if torch.equal(kept["fingerprint"], fingerprint):
            return kept["features"]
    model.eval()
    cache = {}
    items = [(ds, i) for ds in datasets for i in range(len(ds))]
    for ds, i in tqdm(items, desc="caching front-end " + ("projections" if per_frame else "features"),
                      disable=not verbose):
        item = ds[i]
        if per_frame:
            cache[item["name"]] = frame_projections(model.frontend, item["roi"].numpy(), item["lips"].numpy()).cpu()
        else:
            cache[item["name"]] = model.encode(item["roi"][None].to(device), item["lips"][None].to(device))[0].cpu()
    model.train()
    if path is not None:
        save_state({"fingerprint": fingerprint, "features": cache}, path)
    return cache


@torch.no_grad()
def retrieve_all(model: LipToSpeech, feats_cache: dict[str, torch.Tensor], train_set: CachedGrid, *others: CachedGrid,
                 verbose: bool) -> dict[str, torch.Tensor]:
    """Index ``train_set``'s frames by their cached features (its real mels and word labels; attached to ``model``, so
    it is saved with it) and retrieve a real log-mel (n_mels, 4T) for every whole clip of every set; a training clip's
    own frames are left out of its retrieval."""
    from naturall2s.retrieval import FrameIndex

    train_names = list(train_set.names)
    index = FrameIndex.build([feats_cache[n] for n in train_names], [torch.from_numpy(r["words"].astype(np.int64))
                                                                     for r in train_set.records],
                             [torch.from_numpy(r["mel"].astype(np.float32)) for r in train_set.records])
    model.attach_index(index)
    was_training = model.training
    model.eval()
    own = {name: i for i, name in enumerate(train_names)}
    names = train_names + [n for ds in others for n in ds.names]
    out = {}
    for name in tqdm(names, desc="retrieving real mels", disable=not verbose):
        f = feats_cache[name].to(model.device)
        word_lp = torch.log_softmax(model.word_head(f[None])[0], dim=-1)
        out[name] = index.mel_of(index.select(f, word_lp, exclude_clip=own.get(name, -1))).cpu()
    model.train(was_training)
    return out


# ------------------------------------------------------------------------------------------------
# command line: every TrainConfig field is a --flag
# ------------------------------------------------------------------------------------------------
def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per :class:`TrainConfig` field, with its :data:`HELP` and its default."""
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = {} if f.type == "dict" else f.default
        shown = json.dumps(default) if f.type == "dict" else repr(default)
        help_text = f"{HELP[f.name]} (default: {shown})".replace("%", "%%")
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif f.type == "dict":
            parser.add_argument(flag, type=json.loads, default=default, help=help_text)
        else:
            parser.add_argument(flag, type={"int": int, "float": float, "str": str}[f.type], default=default,
                                help=help_text)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
