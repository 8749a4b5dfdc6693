"""Model cards: what a checkpoint was trained on and how well it did, read from the checkpoint itself.

:func:`model_card` reads ``model.info`` (the checkpoint's metadata, see :func:`naturall2s.checkpoints.load_model`):
``stage``, ``step``, ``val`` and ``train_config`` are written by every training run. Checkpoints that know their data
also carry the provenance keys of :data:`PROVENANCE_KEYS` (adapted models store their held-out scores there):

- ``info["speakers"]``: list of speaker ids trained on (``["s1"]``);
- ``info["vocabulary"]``: the words the lip reader knows (a list) or a description of them (a str);
- ``info["data"]``: one line on the training data (clips per split);
- ``info["scores"]``: ``{metric: value}`` measured on held-out clips (metric keys of :data:`naturall2s.evaluate.METRICS`);
- ``info["scores_on"]``: what those clips were (``"GRID s4 test, 10 clips"``).

Adapted models (``python -m naturall2s adapt``) keep their provenance under ``info["adapt"]`` (base model, clips,
held-out scores before and after): without the keys above the card reads it (:func:`_adapted_facts`).

The shipped checkpoints predate these keys and are not re-saved (each re-save would add its whole size to the git
history): for a shipped name the card takes the training facts from :data:`SHIPPED_TRAINING` (as stated in
``checkpoints/README.md``) and the test scores from ``results/grid_s1_test/results.json``, and says so.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from naturall2s.checkpoints import CHECKPOINT_DIR, REPO
from naturall2s.grid import GRID_VOCAB

PROVENANCE_KEYS = ("speakers", "vocabulary", "data", "scores", "scores_on")
SHIPPED_RESULTS = REPO / "results" / "grid_s1_test" / "results.json"  # test scores of the shipped names
# training facts of the shipped checkpoints, which predate the provenance keys (checkpoints/README.md, "Data and protocol")
SHIPPED_TRAINING = {
    "speakers": ["s1"],
    "vocabulary": list(GRID_VOCAB),
    "data": "GRID s1: 800 train / 50 val / 50 test clips (3 s each, 25 fps); selected on val",
}
# metrics shown on the card, in order (keys of naturall2s.evaluate.METRICS), with their labels and direction
CARD_METRICS = {
    "estoi": "ESTOI ↑", "stoi": "STOI ↑", "pesq_nb": "PESQ-nb ↑", "wer": "WER ↓ (ASR on the speech)",
    "cer": "CER ↓", "lipread_wer": "lip-read WER ↓", "speaker_similarity": "speaker similarity ↑",
    "f0_rmse_cents": "F0 RMSE ¢ ↓", "mos_distillmos": "MOS ↑ (predicted naturalness, DistillMOS)",
    "mos_utmos": "MOS ↑ (predicted naturalness, UTMOS)", "comb_db": "pause buzz, comb dB ↓",
}

# validation figures of the metadata shown on the card
VAL_LABELS = {"score": "validation score (log-mel L1)", "lipread/wer": "lip-read WER", "estoi": "ESTOI",
              "speech/wer": "speech WER", "comb": "comb dB", "unit/acc": "unit accuracy",
              "flow/mse": "flow-matching MSE", "content/acc": "content judge's word accuracy on the output"}

# variants that follow a published method: the paper, and what this implementation does differently
METHODS = {
    "ltbs": {
        "paper": "Kim, Hong, Park & Ro, \"Let There Be Sound: Reconstructing High Quality Speech from Silent Videos\", "
                 "AAAI 2024 (arXiv 2308.15256): linguistic features condition a FastSpeech2-style variance adaptor "
                 "(pitch, energy) and mel decoder, whose mel a flow-based post-net refines before a vocoder",
        "differs": [
            "data and scale: one GRID speaker (s1, 800 training clips, 51 words), trained in 1.6 CPU-hours on one "
            "thread (8000 x 16 one-second crops, selected at step 4000), not LRS2/LRS3 on GPUs",
            "linguistic conditioning: the shared lip reader's frame word head (its posteriors over the 51 GRID words, "
            "embedded and added to the visual features, trained on the corpus's word timings), not features derived "
            "from an ASR model",
            "front end: the project's lip reader (3D-conv stem, 2D trunk and transformer on 32x48 mouth crops and lip "
            "landmarks), trained first and kept frozen, not the paper's visual encoder trained with the rest",
            "variance adaptor, decoder and post-net at CPU size: pitch (log-F0 + voicing, pyworld) and energy "
            "(A-weighted loudness) predictors with bucketized embeddings, the real values fed while training, four "
            "ConvNeXt blocks at 100 Hz, a Glow-style post-net (act-norm, 1x1 convolution, affine coupling) over the "
            "mel bins of each frame conditioned on the decoder's output, trained by maximum likelihood; "
            "synthesize(postnet=False) skips it, its temperature (0, chosen on val) is stored in the checkpoint",
            "vocoder: the cascade's Vocos-style iSTFT generator trained on real mels (shared with mel-vocoder), not "
            "HiFi-GAN",
        ],
    },
    "units": {
        "paper": "Choi, Kim & Ro, \"Intelligible Lip-to-Speech Synthesis with Speech Units\", Interspeech 2023 "
                 "(arXiv 2305.19603): the lip reader predicts the mel and discrete speech units together, and a "
                 "multi-input vocoder reads both",
        "differs": [
            "data and scale: one GRID speaker (s1, 800 training clips, 51 words), trained in 2.2 CPU-hours on one "
            "thread (vocoder 2000 x 8 and lip reader 3000 x 8 steps), not LRS2/LRS3 on GPUs",
            "units: k-means over MFCCs + deltas of the training speech (HuBERT's first-iteration recipe, 200 units at "
            "100 Hz, the codebook stored in this checkpoint), not k-means over HuBERT features (none ships offline)",
            "vocoder: the project's Vocos-style iSTFT generator with a unit-embedding input, started from the cascade's "
            "vocoder and fine-tuned on real mels (blurred and noised) + real units with its MRD discriminator, not "
            "a HiFi-GAN trained from scratch",
            "front end: the project's lip reader (3D-conv stem, 2D trunk and transformer on 32x48 mouth crops and lip "
            "landmarks, with CTC and frame word heads), not the paper's visual encoder",
        ],
    },
    "lipvoicer": {
        "paper": "Yemini, Shamsian, Bracha, Gannot & Fetaya, \"LipVoicer: Generating Speech from Silent Videos "
                 "Guided by Lip Reading\", ICLR 2024 (arXiv 2306.03258): a diffusion model generates the "
                 "mel-spectrogram from the video, and at sampling time an ASR's gradient guides it toward the "
                 "text a lip reader read",
        "differs": [
            "data and scale: one GRID speaker (s1, 800 training clips, 51 words), trained in 1.9 CPU-hours on one "
            "thread (judge 2000 x 32, denoiser 12000 x 16 one-second crops, selected at step 10000, robust judge "
            "2000 x 16), not LRS2/LRS3 on GPUs; a denoiser of 2.6M parameters",
            "sampling defaults chosen on val: 2 Euler steps and guidance 0.15 (the rule: the lowest WER among scales "
            "whose ESTOI fell no more than 0.02 from none). On test, guidance 0.15 against none: WER -0.020 +/- "
            "0.049 (not significant), ESTOI -0.012 +/- 0.007, MOS +0.09 +/- 0.06",
            "the guiding judge is adversarially trained: without that, guidance raised the judge's own confidence "
            "but not an independent recogniser's (it fooled its judge), and it raised the WER",
            "generative model: rectified flow (flow matching, a few Euler steps) with a dilated ConvNeXt denoiser over "
            "time, not their DDPM with a DiffWave-style network and hundreds of steps; no classifier-free guidance on "
            "the video (their w1)",
            "conditioning: the shared lip reader's features plus its frame word posteriors, upsampled to 100 Hz as the "
            "other variants' speech heads get them (the front end frozen), not their lip and face-image encoders",
            "the ASR: the project's content judge, a frame-level word recognizer trained on the real log-mels of the "
            "GRID s1 training clips, then fine-tuned on the denoiser's own clean estimates against one-step "
            "adversarial perturbations (RMS 0.5 log-mel units), shipped inside this checkpoint and applied to the "
            "denoiser's clean estimate, not a CTC recogniser trained on noisy mels",
            "the text: the word head's frame-by-frame reading (the argmax word of each video frame) from the same "
            "video, not a separate lip-reading model's transcript; the gradient is normalised per clip to the norm "
            "of the flow's velocity (theirs: of the score)",
            "vocoder: the cascade's Vocos-style iSTFT generator trained on real mels (reused as it is), not HiFi-GAN",
        ],
    },
}


@dataclass
class ModelCard:
    """Facts about one model. ``steps``: the step of the saved weights in their last training ``stage``;
    ``scores``: held-out metric → mean (``scores_ci`` its 95% interval half-width when known), measured on
    ``scores_on``; ``sources`` says where each group of facts came from."""

    name: str
    variant: str
    speakers: list[str]
    vocabulary: list[str] | str
    data: str
    stage: str | None
    steps: int | None
    planned_steps: int | None
    val: dict[str, float]
    scores: dict[str, float]
    scores_on: str
    scores_ci: dict[str, float] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    adversarial: str | None = None  # the discriminators of an adversarial last stage ("mrd"), else None
    sampling: str | None = None  # a sampling variant's defaults (Euler steps, guidance), else None

    @property
    def vocabulary_size(self) -> int | None:
        return len(self.vocabulary) if isinstance(self.vocabulary, list) else None

    def summary(self) -> str:
        """One short phrase on the training data: ``"one GRID speaker (s1), 51 words"``."""
        n = len(self.speakers)
        who = f"one GRID speaker ({self.speakers[0]})" if n == 1 else f"{n} speakers ({', '.join(self.speakers)})"
        if not self.speakers:
            who = "unknown speakers"
        words = f"{self.vocabulary_size} words" if self.vocabulary_size else str(self.vocabulary)
        return f"{who}, {words}"

    def markdown(self) -> str:
        lines = [f"### Model card: `{self.name}` ({self.variant})", ""]
        vocab = (f"{self.vocabulary_size} words ({' '.join(self.vocabulary)})" if isinstance(self.vocabulary, list)
                 else self.vocabulary)
        method = METHODS.get(self.variant)
        if method:
            lines += [f"- **Method**: after {method['paper']}. What differs here: "
                      + "; ".join(method["differs"]) + "."]
        lines += [
            f"- **Speakers**: {', '.join(self.speakers) or 'unknown'}",
            f"- **Vocabulary**: {vocab}",
            f"- **Data**: {self.data}",
            f"- **Training**: {self._training()}",
        ]
        if self.sampling:
            lines.append(f"- **Sampling**: {self.sampling}")
        if self.val:
            val = ", ".join(f"{label} {self.val[k]:.3f}" for k, label in VAL_LABELS.items() if k in self.val)
            if val:
                lines.append(f"- **Validation at that step**: {val}")
        lines.append("")
        if self.scores:
            lines += [f"**Measured on {self.scores_on}**", "", "| metric | value |", "|---|---|"]
            for key, label in CARD_METRICS.items():
                if key in self.scores and self.scores[key] is not None:
                    ci = self.scores_ci.get(key)
                    lines.append(f"| {label} | {_fmt(self.scores[key])}{f' ± {_fmt(ci)}' if ci is not None else ''} |")
            lines.append("")
        else:
            lines += ["**No held-out scores recorded for this model.**", ""]
        lines.append("Sources: " + "; ".join(f"{k}: {v}" for k, v in self.sources.items()) + ".")
        return "\n".join(lines) + "\n"

    def _training(self) -> str:
        if self.steps is None:
            return "unknown"
        if self.stage and " + " in self.stage:  # an adapted cascade (model_card)
            return f"{self.steps} steps in all over its stages ({self.stage}), then composed into one checkpoint"
        if self.stage == "compose":
            return "composed from separately trained parts, no further training (checkpoints/README.md)"
        of = f" of {self.planned_steps}" if self.planned_steps else ""
        adv = (f", adversarial: LSGAN + feature matching against the `{self.adversarial}` discriminator"
               if self.adversarial else "")
        return (f"the weights of step {self.steps}{of} of the last stage (`{self.stage}`{adv}); "
                "earlier stages in checkpoints/README.md")


def _fmt(x: float) -> str:
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.3f}"


def is_shipped(model) -> bool:
    """True for a model loaded from ``checkpoints/`` (by its shipped name), whose test scores are in results.json."""
    path = getattr(model, "path", None)
    return path is not None and Path(path).resolve().parent == CHECKPOINT_DIR.resolve()


def shipped_scores(name: str, path: Path = SHIPPED_RESULTS) -> tuple[dict, dict, str] | None:
    """(means, ci95s, description) of ``name`` in an evaluation's results.json, or None if it is not there."""
    if not path.is_file():
        return None
    results = json.loads(path.read_text())
    summary = results.get("summary", {}).get(name)
    if not summary:
        return None
    means = {k: v["mean"] for k, v in summary.items() if v.get("mean") is not None}
    cis = {k: v["ci95"] for k, v in summary.items() if v.get("ci95") is not None}
    s = results.get("settings", {})
    n = min((v["n"] for v in summary.values() if v.get("n")), default=0)
    on = f"GRID s1 `{s.get('split', '?')}`, {n} clips (ASR {s.get('asr', '?')}, 95% t-intervals over clips)"
    return means, cis, on


def _adapted_facts(adapt: dict) -> dict | None:
    """Speakers, vocabulary, data and held-out scores of an adapted model from its ``info["adapt"]``."""
    clips = adapt.get("clips") or []
    n_train = sum(c.get("role") == "train" for c in clips)
    base = adapt.get("base", "?")
    base_speakers = SHIPPED_TRAINING["speakers"] if (CHECKPOINT_DIR / f"{base}.safetensors").is_file() else []
    held = adapt.get("heldout") or {}
    facts = {
        "speakers": [*base_speakers, f"a new speaker ({n_train} clips)"],
        "vocabulary": list(GRID_VOCAB),
        "data": (f"adapted from `{base}` on {n_train} clips of a new speaker ({adapt.get('steps', '?')}"
                 + (f" of {adapt['steps_planned']} planned" if adapt.get("steps_planned") else "")
                 + f" steps, best at {adapt.get('best_step', '?')}); {held.get('n', 0)} clips held out"),
    }
    scores = {k: v for k, v in (held.get("after") or {}).items() if v is not None}
    part = ("test clips (they neither trained nor selected it)" if held.get("part") == "test" else
            "held-out clips (they also selected the checkpoint: optimistic)")
    return {"facts": facts, "scores": scores,
            "scores_on": f"{held.get('n', 0)} {part} of the new speaker (their transcripts as the text)"}


def model_card(model) -> ModelCard:
    """The card of a loaded :class:`~naturall2s.model.LipToSpeech` (``model.info`` from its checkpoint)."""
    info = dict(getattr(model, "info", None) or {})
    name = getattr(model, "name", model.config.variant)
    shipped = is_shipped(model)
    train_config = info.get("train_config") or {}
    sources = {"training": "checkpoint metadata"}
    facts = {k: info[k] for k in ("speakers", "vocabulary", "data") if k in info}
    adapted = _adapted_facts(info.get("adapt")) if isinstance(info.get("adapt"), dict) else None
    if adapted:
        facts = {**adapted["facts"], **facts}
        sources["data"] = "checkpoint metadata (adapt)"
    elif len(facts) < 3 and shipped:
        facts = {**SHIPPED_TRAINING, **facts}
        sources["data"] = "checkpoints/README.md (the shipped checkpoints predate the provenance keys)"
    elif facts:
        sources["data"] = "checkpoint metadata"
    scores, cis, scores_on = dict(info.get("scores") or {}), {}, str(info.get("scores_on") or "")
    if scores:
        sources["scores"] = "checkpoint metadata"
    elif adapted and adapted["scores"]:
        scores, scores_on = adapted["scores"], adapted["scores_on"]
        sources["scores"] = "checkpoint metadata (adapt: held-out clips)"
    elif shipped and (found := shipped_scores(name)) is not None:
        scores, cis, scores_on = found
        sources["scores"] = str(SHIPPED_RESULTS.relative_to(REPO))
    stage, steps = info.get("stage"), info.get("step")
    if adapted and stage == "compose":  # an adapted cascade: its stages were trained, then put together
        stage = " + ".join(info["adapt"].get("stages") or {}) or "adapt"
        steps = info["adapt"].get("steps", steps)
    return ModelCard(
        name=name,
        variant=model.config.variant,
        speakers=list(facts.get("speakers") or []),
        vocabulary=facts.get("vocabulary") or "unknown",
        data=str(facts.get("data") or "unknown"),
        stage=stage,
        steps=steps,
        planned_steps=train_config.get("steps"),
        val={k: float(v) for k, v in (info.get("val") or {}).items()},
        scores=scores,
        scores_on=scores_on,
        scores_ci=cis,
        sources=sources,
        adversarial=train_config.get("disc") if train_config.get("adv_start", -1) >= 0 and stage != "lipreader"
        else None,
        sampling=_sampling(model.config),
    )


def _sampling(config) -> str | None:
    """How a sampling variant makes its mel by default (``synthesize``'s ``steps`` and ``guidance`` change it)."""
    if not getattr(config, "samples_mel", False):
        return None
    guided = (f"classifier guidance {config.guidance_scale:g} by the content judge inside the checkpoint toward the "
              "word head's reading" if config.guidance_scale > 0 else "no classifier guidance")
    return (f"{config.sampling_steps} Euler steps of the flow from seeded noise, {guided} (the defaults of "
            "`synthesize`, whose `steps` and `guidance` options change them)")
