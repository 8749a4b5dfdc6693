"""How :mod:`naturall2s.train` trains the ``ltbs`` variant (:mod:`naturall2s.ltbs`): the hooks it calls for
``--variant ltbs``.

- ``--stage synth``: the variance adaptor, mel decoder and flow post-net (``LipToSpeech.acoustic``). With
  ``--freeze-frontend`` (the CPU recipe) only they train, on the cached features of the shipped lip reader, whose
  shared conditioning (front end, word head, word embedding, upsampler) stays as it is, so the cascade's vocoder
  composes with it; without, everything but the vocoder trains (adaptation), its CTC and word losses on. Losses
  (:data:`naturall2s.ltbs.LOSS_KEYS`, weights in ``losses.DEFAULT_LAMBDAS``): ``decoder/l1`` (the decoder's
  log-mel, driven by the real pitch and energy), ``pitch/l1`` and ``pitch/vuv`` (the pitch predictor against the
  cached log-F0 and voicing), ``energy/l1`` (the energy predictor against the cached loudness, dB), ``flow/nll``
  (the post-net's negative log-likelihood of the real mel's residual, nats per value). The steps make no waveform;
  validation does what ``synthesize`` does (predicted pitch and energy, the post-net at the config's temperature,
  fixed noise) and vocodes it with the model's vocoder (``--init ...,checkpoints/mel-vocoder.safetensors`` brings the
  cascade's), so its ``score`` and ``estoi`` are those of the speech.
- ``--stage vocoder``: the vocoder on real mels, as the cascade's (train's own code path).
- ``--steps 0``: composition; :func:`check_composition` refuses an ``--init`` that would replace the shared
  conditioning the acoustic model was trained on.
"""
from __future__ import annotations

import torch

from naturall2s import losses
from naturall2s.augment import augment_clips
from naturall2s.data import UNKNOWN_WORD
from naturall2s.errors import NaturalL2SError
from naturall2s.ltbs import postnet_nll

# the model's parts an ltbs acoustic model reads, shared with the lip reader and the cascade (front end, lip-reading
# heads, word embedding, upsampler): a composition must keep them as the acoustic model's own run had them
CONDITIONING = ("frontend.", "ctc.", "word_head.", "word_embed.", "upsample.")


def check(cfg) -> None:
    """Refuse (NaturalL2SError) what the ltbs variant cannot train, before anything is loaded."""
    if cfg.stage in ("lipreader", "flow"):
        raise NaturalL2SError(f"the ltbs variant has no {cfg.stage} stage: train its speech path with --stage synth "
                              "(on the shipped lip reader: --init checkpoints/mel-gl.safetensors,"
                              "checkpoints/mel-vocoder.safetensors --freeze-frontend) and its vocoder with --stage "
                              "vocoder, or compose the cascade's with --steps 0")
    if cfg.steps == 0:
        check_composition(cfg.init)
        return
    if cfg.stage != "synth":
        return
    weights = {**losses.DEFAULT_LAMBDAS, **cfg.lambdas}
    problems = {
        "--adv-start": cfg.adv_start >= 0,
        "--teacher-f0": cfg.teacher_f0,
        "--judge": bool(cfg.judge),
        "a stoi/neg weight": bool(weights.get("stoi/neg")),
    }
    bad = [k for k, on in problems.items() if on]
    if bad:
        raise NaturalL2SError(
            f"the ltbs synth stage's steps make no waveform (its vocoder is fixed; validation vocodes what it "
            f"predicts), so {', '.join(bad)} cannot train it: its decoder already learns from the real pitch and "
            "energy (teacher forcing). Drop them (--adv-start -1), or train the vocoder with --stage vocoder")


def check_composition(init: str) -> None:
    """``train --steps 0 --init a,b,...`` of an ltbs model (later ones win): one of them must hold an acoustic model
    (``acoustic.*``), and no later one may replace the shared conditioning (:data:`CONDITIONING`) that model was
    trained with (e.g. an ltbs run whose front end was fine-tuned, composed before the cascade). NaturalL2SError."""
    from naturall2s.checkpoints import load_tensors

    paths = [p.strip() for p in init.split(",") if p.strip()]
    tensors = [load_tensors(p) for p in paths]
    own = [i for i, t in enumerate(tensors) if any(k.startswith("acoustic.") for k in t)]
    if not own:
        raise NaturalL2SError("none of the --init checkpoints holds an ltbs acoustic model (variance adaptor, mel "
                              "decoder, post-net): compose from an ltbs synth run's checkpoint")
    first = own[-1]  # the acoustic model that wins
    trained_on = {k: v for k, v in tensors[first].items() if k.startswith(CONDITIONING)}
    for later, path in zip(tensors[first + 1 :], paths[first + 1 :]):
        changed = [k for k, v in trained_on.items() if k in later and not _same(later[k], v)]
        if changed:
            raise NaturalL2SError(
                f"--init {path} replaces the shared conditioning the ltbs acoustic model of {paths[first]} was trained "
                f"on ({changed[0]}, ...): compose it with checkpoints of the same front end (the cascade's is the "
                "shipped lip reader's) or list it after them")


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal as checkpoints store them (floating point tensors compared in fp16: a run's checkpoint is fp16)."""
    if a.is_floating_point() and b.is_floating_point():
        return torch.equal(a.half(), b.half())
    return torch.equal(a, b)


def trainable_parameters(model, cfg) -> list:
    """The ltbs synth stage's parameters: the acoustic model alone on a frozen front end; else all but the vocoder."""
    if cfg.freeze_frontend:
        return list(model.acoustic.parameters())
    vocoder = {id(p) for p in model.vocoder.parameters()}
    return [p for p in model.parameters() if id(p) not in vocoder]


def compute_losses(model, batch: dict, cfg, feats: torch.Tensor | None = None) -> tuple[dict, dict]:
    """The ltbs synth stage's (losses with namespaced keys, outputs) for one batch (train.compute_losses' contract).
    In training mode the outputs are the teacher-forced ones; in eval mode (validation) those of ``synthesize``."""
    from naturall2s.model import DEFAULT_SEED
    from naturall2s.train import audio_mask, masked_mel_l1

    roi, lips = batch["roi"], batch["lips"]
    mask_v = torch.arange(roi.shape[1], device=roi.device)[None] < batch["frames"][:, None]
    if feats is not None and cfg.feature_noise > 0 and model.training:
        feats = feats + cfg.feature_noise * torch.randn_like(feats)
    if cfg.augment and model.training and feats is None:
        roi, lips = augment_clips(roi, lips, batch["frames"])
    mask_a = audio_mask(batch, batch["mel"].shape[-1])
    teacher = {"f0": batch["f0"], "voiced": batch["voiced"], "loudness": batch["loudness"], "mel": batch["mel"],
               "mask": mask_a}
    out = model(roi, lips, mask_v, feats=feats, teacher=teacher, vocode=False)
    ls: dict[str, torch.Tensor] = {}
    if not cfg.freeze_frontend:
        ls.update(losses.ctc_loss(out["ctc_log_probs"], batch["tokens"], batch["frames"], batch["token_lengths"]))
    if "word_logits" in out:
        ls.update(losses.word_ce_loss(out["word_logits"], batch["words"], ignore_index=UNKNOWN_WORD))
    ls["decoder/l1"] = masked_mel_l1(out["decoder_mel"], batch["mel"], mask_a)
    pitch = losses.f0_losses(out["log_f0"], out["voicing_logit"], batch["f0"], batch["voiced"], mask=mask_a)
    ls["pitch/l1"], ls["pitch/vuv"] = pitch["f0/l1"], pitch["vuv/bce"]
    ls["energy/l1"] = losses.loudness_loss(out["loudness"], batch["loudness"], mask=mask_a)["loud/l1"]
    ls["flow/nll"] = postnet_nll(out["postnet_z"], out["postnet_logdet"], mask_a)
    if not model.training:  # what synthesize makes of the clip: predicted pitch and energy, fixed post-net noise
        g = torch.Generator(device=roi.device).manual_seed(DEFAULT_SEED)
        out = model(roi, lips, mask_v, feats=feats, generator=g)
    return ls, out
