"""Speaker adaptation (naturall2s.adapt, ``python -m naturall2s adapt``): end to end on synthetic clips (a tiny base
model of each kind, 2 steps), resume after an interruption (also inside the cascade's second stage), the adapted
model's out-of-domain statistics, the adapted model found by name, bad input, forced alignment against
GRID's own word timings, and (real data) three clips of GRID speaker s4 through the shipped model."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from naturall2s import adapt as adapt_mod
from naturall2s.adapt import (RECIPE, AdaptError, adapt, check_clip, heldout_sizes, holdout_size, speaker_outliers,
                              split_holdout, split_parts, stage_recipe, verdict)
from naturall2s.checkpoints import available_models, load_model, read_metadata, resolve, save_model
from naturall2s.model import build
from naturall2s.roi import MouthClip

from tests.conftest import SHARED_DATA, _require
from tests.test_train import TINY, synthetic_clip

SENTENCES = ["bin blue at f two now", "lay green by k five soon", "place red in a nine please",
             "set white with x zero again", "bin red at b one now"]
FRAMES = 50  # 2 s clips


@pytest.fixture
def models_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "models"
    monkeypatch.setenv("NATURALL2S_MODELS", str(folder))
    return folder


@pytest.fixture
def tiny_base(tmp_path) -> Path:
    """An untrained tiny naturall2s with a stored training config (feature noise and loss weights are inherited)."""
    info = {"step": 0, "train_config": {"feature_noise": 0.1, "lambdas": {"stoi/neg": 10.0}}}
    return save_model(build("naturall2s", **TINY, word_head=True), tmp_path / "tiny-base.safetensors", info=info)


@pytest.fixture
def synthetic_clips(tmp_path, monkeypatch) -> list[Path]:
    """Five 'videos' with sidecar transcripts; the mouth extraction returns synthetic crops and a voiced tone."""
    folder = tmp_path / "clips"
    folder.mkdir()
    paths = []
    for i, text in enumerate(SENTENCES):
        p = folder / f"take{i}.mp4"
        p.write_bytes(b"not decoded: extract_mouth is replaced below")
        p.with_suffix(".txt").write_text(text + "\n")
        paths.append(p)
    clips = {str(p): synthetic_clip(i, frames=FRAMES) for i, p in enumerate(paths)}

    def fake_extract(path, **kwargs):
        c = clips[str(path)]
        return MouthClip(roi=c["roi"], lips=c["lips"], audio=c["audio_16k"], fps=25.0, detected=c["detected"],
                         source=str(path))

    def even_alignment(wav, sample_rate, text):  # a tone has no phones to align: words spread over 0.2-1.8 s
        words = text.split()
        edges = np.linspace(0.2, 1.8, len(words) + 1)
        return [(float(a), float(b), w) for a, b, w in zip(edges[:-1], edges[1:], words)]

    monkeypatch.setattr("naturall2s.roi.extract_mouth", fake_extract)
    monkeypatch.setattr("naturall2s.asr.align_words", even_alignment)
    monkeypatch.setattr("naturall2s.landmarks.get_detector", lambda name="auto", **kw: None)
    return paths


def test_adapt_end_to_end_on_synthetic_clips(synthetic_clips, tiny_base, models_dir):
    seen = []
    path = adapt([synthetic_clips[0].parent], name="newvoice", base=str(tiny_base), steps=2, threads=1,
                 recipe={"eval_every": 1}, progress=lambda f, m: seen.append((f, m)), verbose=False)
    assert path == models_dir / "newvoice.safetensors" and path.is_file()
    info = read_metadata(path)["info"]
    a = info["adapt"]
    assert a["base"] == "tiny-base" and a["steps"] == 2 and a["wall_s"] > 0
    roles = sorted(c["role"] for c in a["clips"])
    assert roles == ["train"] * 4 + ["validation"]  # 5 clips: one held out, no test part (fewer than 15)
    assert a["steps_planned"] == 2 and a["heldout"]["part"] == "validation"
    assert any("optimistic" in w for w in adapt_mod.verdict(info))  # the same clip selected and scored it
    assert all(c["source"] == "sidecar" for c in a["clips"])
    assert {c["transcript"] for c in a["clips"]} == set(SENTENCES)
    h = a["heldout"]
    assert h["n"] == 1 and set(h["before"]) == set(h["after"]) >= set(adapt_mod.SCORED)
    assert any(k.startswith("mos_") for k in h["after"])  # the predicted naturalness is scored too
    assert 0 <= h["after"]["wer"] <= 1 and np.isfinite(h["after"]["estoi"])
    # the adaptation trained with the base model's own loss weights and feature noise, on the recipe
    assert info["train_config"]["lambdas"] == {"stoi/neg": 10.0} and info["train_config"]["feature_noise"] == 0.1
    assert info["train_config"]["augment"] is True and info["train_config"]["freeze_frontend"] is False
    # a base without discriminators of its own: no adversarial losses (a fresh discriminator would judge at random)
    assert info["train_config"]["adv_start"] == -1 and info["train_config"]["init_disc"] == ""
    # progress reached the end, monotonically, counting the training steps done of those planned with an ETA
    fractions = [f for f, _ in seen]
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    steps = [m for _, m in seen if m.startswith("training step")]
    assert steps[0].startswith("training step 1/2") and steps[-1].startswith("training step 2/2")
    assert "left" in steps[-1]  # after the first step, the pace and the time left
    # found by name, like a shipped model
    assert "newvoice" in available_models()
    assert resolve("newvoice") == path
    model = load_model("newvoice")
    assert model.name == "newvoice" and model.config.variant == "naturall2s" and model.config.word_head
    # the word labels came from the forced alignment: the cached frames spell each sentence
    from naturall2s.data import load_cached
    from naturall2s.grid import tokens_to_text

    rec = load_cached(models_dir / ".adapt" / "newvoice" / "cache" / "clips" / "take0.npz")
    spoken = [int(t) for i, t in enumerate(rec["words"]) if t and (i == 0 or t != rec["words"][i - 1])]
    assert tokens_to_text(spoken) == SENTENCES[0]


def test_adapted_model_warns_against_the_speaker_it_was_adapted_to(synthetic_clips, tiny_base, models_dir):
    """The out-of-domain statistics of an adapted model are its training clips' voice (few clips: no face
    subspace), so a voice far from them is flagged in the adapted model's name."""
    from naturall2s import domain

    path = adapt(synthetic_clips, name="voiced", base=str(tiny_base), steps=1, threads=1, verbose=False)
    ref = read_metadata(path)["info"]["domain"]
    assert ref["clips"] == 4 and "speaker" in ref and "f0" in ref and "features" not in ref
    # the training tones sit at 110-270 Hz; the statistics' median is among them
    assert 110 <= ref["f0"]["median_hz"] <= 270
    model = load_model("voiced")
    assert domain.model_reference(model) == ref
    far = synthetic_clip(6, frames=FRAMES)  # a 350 Hz tone
    clip = MouthClip(roi=far["roi"], lips=far["lips"], audio=far["audio_16k"], fps=25.0, detected=far["detected"],
                     source="far")
    report = domain.assess(clip, model=model)
    assert "pitch_distance" in report.fired and "face_distance" not in report.evidence
    assert report.message.startswith("This voice is unlike anything model voiced was trained on")


def test_adapt_trains_adversarially_against_the_base_models_own_discriminators(synthetic_clips, tiny_base,
                                                                             models_dir):
    """A base that ships discriminators (``discriminators/<name>.safetensors`` beside it) is adapted with the
    adversarial and feature-matching losses from step 0 against them, warm; ``{"adv_start": -1}`` switches it off."""
    import csv

    from naturall2s.checkpoints import save_discriminator
    from naturall2s.train import build_discriminators

    disc_file = save_discriminator(build_discriminators("mrd").state_dict(),
                                   tiny_base.parent / "discriminators" / "tiny-base.safetensors", kind="mrd")
    path = adapt(synthetic_clips, name="warm", base=str(tiny_base), steps=2, threads=1, verbose=False,
                 recipe={"eval_every": 1, "lambdas": {"adv/feat": 3.0}})
    tc = read_metadata(path)["info"]["train_config"]
    assert tc["adv_start"] == 0 and tc["init_disc"] == str(disc_file) and tc["disc"] == "mrd"
    assert tc["lambdas"] == {"stoi/neg": 10.0, "adv/feat": 3.0}  # the recipe's weight beside the base model's
    with open(models_dir / ".adapt" / "warm" / "run" / "synth" / "log.csv") as f:
        rows = [json.loads(r[2]) for r in csv.reader(f) if r[1] == "train"]
    assert rows and all("adv/gen" in r and "adv/feat" in r for r in rows)
    off = adapt_mod.with_discriminator(stage_recipe("synth", {"adv_start": -1}), tiny_base)
    assert off["adv_start"] == -1 and "init_disc" not in off
    on = adapt_mod.with_discriminator(stage_recipe("synth"), tiny_base)
    assert on["adv_start"] == 0 and on["init_disc"] == str(disc_file)
    no_disc = tiny_base.parent / "other.safetensors"
    assert adapt_mod.with_discriminator(stage_recipe("synth"), no_disc)["adv_start"] == -1


def tiny_untrained(variant: str, folder: Path) -> Path:
    """An untrained tiny model of ``variant`` with a word head, saved as ``folder/tiny-<variant>.safetensors``."""
    return save_model(build(variant, **TINY, word_head=True), folder / f"tiny-{variant}.safetensors",
                      info={"step": 0, "train_config": {}})


@pytest.mark.parametrize("variant", ["mel-gl", "mel-vocoder"])
def test_mel_variants_adapt_through_their_training_stages(variant, synthetic_clips, models_dir, tmp_path):
    """The cascade variants adapt too: the lip reader + mel head (stage lipreader) and, for mel-vocoder, its vocoder
    on the new speaker's real mels (stage vocoder), composed into one checkpoint that loads by name and speaks."""
    base_path = tiny_untrained(variant, tmp_path)
    path = adapt(synthetic_clips, name=f"new-{variant}", base=str(base_path), steps=2, threads=1,
                 recipe={"eval_every": 1}, verbose=False)
    info = read_metadata(path)["info"]
    a = info["adapt"]
    stages = adapt_mod.ADAPT_STAGES[variant]
    assert a["base_variant"] == variant and list(a["stages"]) == list(stages)
    assert all(s["steps"] == 2 and s["best_step"] in (1, 2) for s in a["stages"].values())
    assert a["steps"] == 2 * len(stages)
    assert a["heldout"]["n"] == 1 and set(a["heldout"]["after"]) >= set(adapt_mod.SCORED)
    model = load_model(f"new-{variant}")
    assert model.name == f"new-{variant}" and model.config.variant == variant
    # every trained part changed, every other part is the base model's
    from naturall2s.checkpoints import load_tensors

    before, after = load_tensors(base_path), load_tensors(path)
    assert set(before) == set(after)
    changed = {k.split(".")[0] for k in before if not np.allclose(before[k].float(), after[k].float())}
    assert {"frontend", "mel_head"} <= changed and (("vocoder" in changed) == (variant == "mel-vocoder"))
    clip = synthetic_clip(0, frames=FRAMES)
    result = model.synthesize(MouthClip(roi=clip["roi"], lips=clip["lips"], audio=None, fps=25.0,
                                        detected=clip["detected"], source="synthetic"))
    assert result.wav.ndim == 1 and len(result.wav) > 0 and np.all(np.isfinite(result.wav))


def test_units_variant_adapts_its_vocoder_then_its_lip_reader_and_keeps_its_codebook(synthetic_clips, models_dir,
                                                                                      tmp_path):
    """The units variant adapts through its two stages in a chain (the vocoder on the new speaker's real mels and
    units, then the lip reader + unit head from that run): both parts change, the base's unit codebook stays."""
    import torch

    from naturall2s.units import fit_codebook

    base = build("units", **TINY, word_head=True, n_units=8, unit_dim=8)
    g = torch.Generator().manual_seed(0)
    base.set_codebook(fit_codebook([torch.randn(80, 200, generator=g) - 5 for _ in range(2)], 8))
    base_path = save_model(base, tmp_path / "tiny-units.safetensors", info={"step": 0, "train_config": {}})
    path = adapt(synthetic_clips, name="new-units", base=str(base_path), steps=2, threads=1,
                 recipe={"eval_every": 1}, verbose=False)
    a = read_metadata(path)["info"]["adapt"]
    assert list(a["stages"]) == ["vocoder", "lipreader"] and a["steps"] == 4
    from naturall2s.checkpoints import load_tensors

    before, after = load_tensors(base_path), load_tensors(path)
    changed = {k.split(".")[0] for k in before if not np.allclose(before[k].float(), after[k].float())}
    assert {"frontend", "mel_head", "unit_head", "vocoder"} <= changed
    assert all(torch.equal(before[k], after[k]) for k in ("unit_mean", "unit_std", "unit_centroids"))
    model = load_model("new-units")
    clip = synthetic_clip(0, frames=FRAMES)
    result = model.synthesize(MouthClip(roi=clip["roi"], lips=clip["lips"], audio=None, fps=25.0,
                                        detected=clip["detected"], source="synthetic"))
    assert result.wav.shape == (FRAMES * 640,) and np.all(np.isfinite(result.wav))


def test_ltbs_variant_adapts_its_vocoder_then_its_speech_path(synthetic_clips, models_dir, tmp_path):
    """The ltbs variant adapts in a chain: its vocoder on the new speaker's real mels, then (from that run) its front
    end, variance adaptor, mel decoder and post-net; the adapted vocoder survives into the model."""
    from naturall2s.checkpoints import load_tensors

    base_path = save_model(build("ltbs", **TINY, word_head=True, ltbs={"decoder_layers": 1, "postnet_steps": 2}),
                           tmp_path / "tiny-ltbs.safetensors", info={"step": 0, "train_config": {}})
    path = adapt(synthetic_clips, name="new-ltbs", base=str(base_path), steps=2, threads=1,
                 recipe={"eval_every": 1}, verbose=False)
    a = read_metadata(path)["info"]["adapt"]
    assert list(a["stages"]) == ["vocoder", "synth"] and a["steps"] == 4
    before, after = load_tensors(base_path), load_tensors(path)
    changed = {k.split(".")[0] for k in before if not np.allclose(before[k].float(), after[k].float())}
    assert {"frontend", "acoustic", "vocoder"} <= changed
    model = load_model("new-ltbs")
    clip = synthetic_clip(0, frames=FRAMES)
    result = model.synthesize(MouthClip(roi=clip["roi"], lips=clip["lips"], audio=None, fps=25.0,
                                        detected=clip["detected"], source="synthetic"))
    assert result.wav.shape == (FRAMES * 640,) and np.all(np.isfinite(result.wav))


def test_lipvoicer_variant_adapts_its_vocoder_then_its_denoiser_and_keeps_its_judge(synthetic_clips, models_dir,
                                                                                     tmp_path):
    """The lipvoicer variant adapts in a chain: its vocoder on the new speaker's real mels, then its flow-matching
    denoiser from that run; the lip reader, the content judge that guides the sampling and the mel statistics stay
    the base's."""
    import torch

    from naturall2s.checkpoints import load_tensors

    base = build("lipvoicer", **TINY, flow_dim=16, flow_intermediate_dim=32, flow_layers=1, sampling_steps=2,
                 judge={"dim": 16, "dilations": [1]})
    base.set_mel_stats(torch.full((80,), -5.0), torch.full((80,), 2.0))
    base_path = save_model(base, tmp_path / "tiny-lipvoicer.safetensors", info={"step": 0, "train_config": {}})
    path = adapt(synthetic_clips, name="new-lipvoicer", base=str(base_path), steps=2, threads=1,
                 recipe={"eval_every": 1}, verbose=False)
    a = read_metadata(path)["info"]["adapt"]
    assert list(a["stages"]) == ["vocoder", "flow"] and a["steps"] == 4
    before, after = load_tensors(base_path), load_tensors(path)
    changed = {k.split(".")[0] for k in before if not np.allclose(before[k].float(), after[k].float())}
    assert changed == {"denoiser", "vocoder"}, changed
    model = load_model("new-lipvoicer")
    clip = synthetic_clip(0, frames=FRAMES)
    result = model.synthesize(MouthClip(roi=clip["roi"], lips=clip["lips"], audio=None, fps=25.0,
                                        detected=clip["detected"], source="synthetic"))
    assert result.wav.shape == (FRAMES * 640,) and np.all(np.isfinite(result.wav))
    assert result.extras["steps"] == 2


def interrupt_then_resume(clips, models_dir: Path, *, stop_at: str, name: str, **kwargs) -> tuple[Path, list]:
    """adapt() stopped (Ctrl-C) at the first progress message starting with ``stop_at``, then run again to the end:
    (the checkpoint, the second run's [(fraction, message)])."""
    def stop(fraction, message):
        if message.startswith(stop_at):
            raise KeyboardInterrupt

    kwargs = dict(name=name, threads=1, recipe={"eval_every": 1}, verbose=False, **kwargs)
    with pytest.raises(KeyboardInterrupt):
        adapt(clips, progress=stop, **kwargs)
    assert not (models_dir / f"{name}.safetensors").exists()  # no model file before a complete checkpoint
    assert name not in available_models()
    seen = []
    return adapt(clips, progress=lambda f, m: seen.append((f, m)), **kwargs), seen


def test_interrupted_adaptation_resumes_and_writes_nothing_before(synthetic_clips, tiny_base, models_dir):
    path, seen = interrupt_then_resume(synthetic_clips, models_dir, stop_at="training step 2/", name="resumed",
                                       base=str(tiny_base), steps=4)
    messages = [m for _, m in seen]
    assert read_metadata(path)["info"]["adapt"]["steps"] == 4
    assert not any(m.startswith(("training step 1/", "training step 2/")) for m in messages)  # continued from step 2
    assert any(m.startswith("training step 4/4") for m in messages)
    assert not any(m.startswith("examined") for m in messages)  # the clips were not examined again


def test_cascade_interrupted_in_its_vocoder_stage_resumes_there(synthetic_clips, models_dir, tmp_path):
    path, seen = interrupt_then_resume(synthetic_clips, models_dir, stop_at="training step 3/4 (vocoder)",
                                       name="cascade",
                                       base=str(tiny_untrained("mel-vocoder", tmp_path)), steps=2)
    messages = [m for _, m in seen]
    assert not any("(lipreader)" in m for m in messages)  # the finished lip-reader run was not trained again
    assert any(m.startswith("training step 4/4 (vocoder)") for m in messages)  # steps counted over both stages
    assert not any(m.startswith("training step 3/4") for m in messages)  # continued from the vocoder's step 1
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    stages = read_metadata(path)["info"]["adapt"]["stages"]
    assert list(stages) == ["lipreader", "vocoder"] and all(s["steps"] == 2 for s in stages.values())


def test_bad_input_names_each_clip_and_its_reason(synthetic_clips, tiny_base, models_dir, tmp_path):
    synthetic_clips[1].with_suffix(".txt").write_text("hello there general kenobi\n")
    synthetic_clips[2].with_suffix(".txt").write_text("bin blue at w two now\n")  # no "w" in GRID
    with pytest.raises(AdaptError) as e:
        adapt(synthetic_clips[:3], name="bad", base=str(tiny_base), steps=1, threads=1, verbose=False)
    msg = str(e.value)
    assert "only 1 usable clip(s) of 3" in msg
    assert "take1.mp4" in msg and "take2.mp4" in msg and "not a GRID sentence" in msg
    assert not (models_dir / "bad.safetensors").exists()
    with pytest.raises(AdaptError, match="at least 3"):
        adapt(synthetic_clips[:2], name="few", base=str(tiny_base), verbose=False)
    with pytest.raises(AdaptError, match="bad model name"):
        adapt(synthetic_clips, name="../escape", base=str(tiny_base), verbose=False)
    with pytest.raises(AdaptError, match="shipped model"):
        adapt(synthetic_clips, name="naturall2s", base=str(tiny_base), verbose=False)
    with pytest.raises(AdaptError, match="no such file"):
        adapt([tmp_path / "nowhere.mp4"] * 3, name="gone", base=str(tiny_base), verbose=False)
    with pytest.raises(AdaptError, match="not a prepared cache"):
        adapt(synthetic_clips, name="kb", base=str(tiny_base), keep_base=str(tmp_path), verbose=False)


def test_check_clip_refuses_silence_short_clips_and_missing_audio(synthetic_clips, monkeypatch):
    import naturall2s.roi

    good = check_clip(synthetic_clips[0])
    assert good.ok and good.transcript == SENTENCES[0] and good.seconds == FRAMES / 25 and good.speech > 0.1
    assert [w for _, _, w in good.words] == SENTENCES[0].split()
    real = naturall2s.roi.extract_mouth

    def variant(change):
        def extract(path, **kw):
            c = real(path, **kw)
            return MouthClip(**{**c.__dict__, **change(c)})
        return extract

    monkeypatch.setattr("naturall2s.roi.extract_mouth", variant(lambda c: {"audio": None}))
    assert "no audio track" in check_clip(synthetic_clips[0]).reason
    monkeypatch.setattr("naturall2s.roi.extract_mouth", variant(lambda c: {"audio": np.zeros_like(c.audio)}))
    assert "no speech heard" in check_clip(synthetic_clips[0]).reason
    monkeypatch.setattr("naturall2s.roi.extract_mouth", variant(
        lambda c: {"roi": c.roi[:10], "lips": c.lips[:10], "detected": c.detected[:10], "audio": c.audio[:6400]}))
    assert "too short" in check_clip(synthetic_clips[0]).reason


def test_aligner_refuses_what_it_cannot_align():
    from naturall2s.asr import AlignmentError, align_words

    tone = (0.3 * np.sin(np.arange(32000) * 0.05)).astype(np.float32)  # no phones in it
    with pytest.raises(AlignmentError, match="could not be aligned"):
        align_words(tone, 16000, SENTENCES[0])
    with pytest.raises(AlignmentError, match="not in the pronunciation dictionary"):
        align_words(tone, 16000, "bin blue xyzzyq")


def test_stage_recipe_precedence():
    """RECIPE's common entries < its entry for the stage < the caller's common overrides < the caller's for the stage
    (so ``--recipe '{"lr": 3e-4}'`` restores a rate the recipe sets per stage)."""
    synth, lipreader = stage_recipe("synth"), stage_recipe("lipreader")
    assert synth["lr"] == RECIPE["synth"]["lr"] != lipreader["lr"] == RECIPE["lr"]
    assert stage_recipe("vocoder")["augment"] is False and synth["augment"] is True
    assert not any(isinstance(v, dict) for v in synth.values())
    assert stage_recipe("synth", {"lr": 1e-4})["lr"] == 1e-4
    assert stage_recipe("synth", {"lr": 1e-4, "synth": {"lr": 2e-5}})["lr"] == 2e-5
    assert stage_recipe("lipreader", {"synth": {"lr": 2e-5}})["lr"] == RECIPE["lr"]
    assert stage_recipe("vocoder", {"lambdas": {"adv/gen": 1.0}})["lambdas"] == {"adv/gen": 1.0}  # not a stage


def test_holdout_and_speaker_outliers():
    assert [holdout_size(n) for n in (3, 5, 10, 25, 100)] == [1, 1, 2, 5, 5]
    # a test part apart from the validation part from TEST_MIN_CLIPS usable clips on
    assert [heldout_sizes(n) for n in (3, 10, 14, 15, 25, 100)] == [(1, 0), (2, 0), (3, 0), (2, 3), (3, 5), (3, 5)]
    keys = [f"c{i:02d}" for i in range(25)]
    train, val, test = split_parts(keys, 3, 5)
    assert (len(train), len(val), len(test)) == (17, 3, 5) and not set(val) & set(test)
    assert set(train) | set(val) | set(test) == set(keys) and split_parts(keys[::-1], 3, 5)[2] == test[::-1]
    keys = [f"c{i}" for i in range(10)]
    train, held = split_holdout(keys, 2)
    assert len(held) == 2 and set(train) | set(held) == set(keys) and split_holdout(keys[::-1], 2)[1] == held[::-1]
    rng = np.random.default_rng(0)
    voice = rng.standard_normal(32)
    same = {f"a{i}": voice + 0.3 * rng.standard_normal(32) for i in range(5)}
    other = {"intruder": rng.standard_normal(32)}
    unit = {k: v / np.linalg.norm(v) for k, v in {**same, **other}.items()}
    assert list(speaker_outliers(unit)) == ["intruder"]


def test_cli_errors_cleanly_on_a_folder_without_videos(tmp_path):
    import sys

    res = subprocess.run([sys.executable, "-m", "naturall2s", "adapt", str(tmp_path), "--name", "x"],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert res.returncode == 2 and "error:" in res.stderr and "no video files" in res.stderr


@pytest.mark.parametrize("argv, minutes", [([], 15.0), (["--minutes", "4"], 4.0), (["--minutes", "0"], None)])
def test_cli_caps_the_wall_time_by_default_and_0_lifts_the_cap(argv, minutes, monkeypatch, tmp_path):
    """The recipe is sized for the default cap (adapt.DEFAULT_MINUTES); ``--minutes 0`` runs it uncapped."""
    import argparse

    import naturall2s.adapt as adapt_module
    from naturall2s.cli import adapt as cli

    seen = {}

    def fake_adapt(clips, **kwargs):
        seen.update(kwargs)
        raise AdaptError("stop here")

    monkeypatch.setattr(adapt_module, "adapt", fake_adapt)
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    with pytest.raises(AdaptError, match="stop here"):
        cli.run(parser.parse_args([str(tmp_path), "--name", "x", *argv]))
    assert adapt_module.DEFAULT_MINUTES == 15.0 and seen["minutes"] == minutes


def test_forced_alignment_matches_grid_word_timings(grid_root):
    """The aligner's word boundaries land within 2 video frames of the corpus's .align timings on average."""
    from naturall2s.asr import align_words
    from naturall2s.data import SILENCE_WORDS, read_align
    from naturall2s.video import read_audio_track

    names = sorted(p.stem for p in (grid_root / "align" / "s1").glob("*.align"))[:3]
    errors = []
    for n in names:
        ref = [w for w in read_align(grid_root / "align" / "s1" / f"{n}.align") if w[2] not in SILENCE_WORDS]
        got = align_words(read_audio_track(grid_root / "s1" / f"{n}.mp4"), 16000, " ".join(w for _, _, w in ref))
        assert [w for _, _, w in got] == [w for _, _, w in ref]
        errors += [abs(a[0] - b[0]) * 25 for a, b in zip(got, ref)] + [abs(a[1] - b[1]) * 25 for a, b in zip(got, ref)]
    assert np.mean(errors) < 2.0, errors


def test_real_s4_clips_adapt_the_shipped_model(models_dir):
    """Three real clips of GRID speaker s4 (no transcripts given: the ASR decodes them) through the shipped model,
    2 steps; then the adapted model synthesizes by name from the CLI."""
    s4 = _require(SHARED_DATA / "speakers" / "s4")
    clips = sorted(s4.glob("*.mp4"))[:3]
    path = adapt(clips, name="s4-test", steps=2, threads=1, recipe={"batch_size": 2, "eval_every": 2},
                 verbose=False)
    a = read_metadata(path)["info"]["adapt"]
    from naturall2s.grid import name_transcript
    from naturall2s.metrics import wer

    transcripts = {c["file"]: c["transcript"] for c in a["clips"]}
    assert all(c["source"] == "asr" for c in a["clips"])
    assert np.mean([wer(name_transcript(f), t) for f, t in transcripts.items()]) <= 0.34  # ASR on real speech
    assert a["heldout"]["n"] == 1 and np.isfinite(a["heldout"]["after"]["estoi"])
    model = load_model("s4-test")
    assert model.name == "s4-test" and model.info["adapt"]["base"] == "naturall2s"


def _adapted_info(before: dict, after: dict, *, steps=200, planned=200, part="test", n=5) -> dict:
    return {"adapt": {"base": "naturall2s", "steps": steps, "steps_planned": planned,
                      "heldout": {"n": n, "part": part, "before": before, "after": after, "paired": {}}}}


def test_verdict_flags_a_short_run_a_result_worse_than_its_base_and_optimistic_scores():
    good = {"wer": 0.2, "estoi": 0.45, "speaker_similarity": 0.8, "mos_distillmos": 3.1}
    base = {"wer": 0.6, "estoi": 0.13, "speaker_similarity": 0.43, "mos_distillmos": 2.6}
    assert verdict(_adapted_info(base, good)) == []
    worse = verdict(_adapted_info(base, {**good, "mos_distillmos": 2.31}, steps=21))
    assert worse[0] == "cut short by the time limit: trained 21 of 200 planned steps"
    assert "worse than its base naturall2s" in worse[1] and "MOS (distillmos) 2.600 -> 2.310" in worse[1]
    assert "WER" not in worse[1] and len(worse) == 2
    assert "WER 0.600 -> 0.700" in verdict(_adapted_info(base, {**good, "wer": 0.7}))[0]  # lower is better
    assert "optimistic" in verdict(_adapted_info(base, good, part="validation"))[0]
    table = adapt_mod.heldout_table(_adapted_info(base, {**good, "estoi": 0.1}))
    assert "neither trained nor selected" in table and "**Warning:** worse than its base" in table


@pytest.mark.parametrize("base_clips, expected", [(None, 3 * 4), (2, 2), (500, 30)])
def test_keep_base_mixes_three_base_clips_per_new_clip_by_default(base_clips, expected, tmp_path):
    """``--keep-base`` links a seeded draw of the base speaker's training clips (never more than it has), by default
    ``BASE_CLIPS_PER_CLIP`` per training clip of the new speaker, and lists them as the work cache's "base" speaker."""
    base = tmp_path / "base"
    (base / "clips").mkdir(parents=True)
    names = [f"s1clip{i}" for i in range(30)]
    for n in names:
        (base / "clips" / f"{n}.npz").write_bytes(b"")
    (base / "splits.json").write_text(json.dumps({"s1": {"train": names, "val": []}}))
    work = tmp_path / "work"
    (work / "clips").mkdir(parents=True)
    train = ["t0", "t1", "t2", "t3"]
    n = adapt_mod._layout_cache(work, train, ["h0"], str(base), base_clips, seed=0)
    splits = json.loads((work / "splits.json").read_text())
    assert adapt_mod.BASE_CLIPS_PER_CLIP == 3 and n == expected == len(splits["base"]["train"])
    assert splits["new"] == {"train": train, "val": ["h0"], "test": ["h0"]}
    linked = [(work / "clips" / f"{k}.npz").resolve().parent for k in splits["base"]["train"]]
    assert all(parent == (base / "clips").resolve() for parent in linked)


def test_non_grid_speech_is_refused_with_the_reason_and_a_sidecar_still_wins(wild_clips, tmp_path):
    import shutil

    clip = wild_clips[0]
    check = check_clip(clip)
    assert not check.ok and "transcript was refused" in check.reason and "sidecar .txt" in check.reason
    assert "unsure" in check.reason
    copy = tmp_path / clip.name
    shutil.copyfile(clip, copy)
    copy.with_suffix(".txt").write_text("bin blue at f two now\n")  # a person's word wins over the recogniser's doubt
    assert "refused" not in check_clip(copy).reason
