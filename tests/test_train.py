"""Training: a tiny model overfits one clip, runs resume, every stage runs, two-process torchrun (gloo) works."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from naturall2s import audio
from naturall2s.checkpoints import load_model, load_state
from naturall2s.data import CachedGrid, clip_features, collate, save_npz_atomic
from naturall2s.grid import name_transcript, text_to_tokens
from naturall2s.roi import LIP_DIM, ROI_HEIGHT, ROI_WIDTH
from naturall2s.errors import NaturalL2SError
from naturall2s.train import TrainConfig, compute_losses, build_model, train

REPO = Path(__file__).resolve().parents[1]
TINY = {"dim": 32, "n_layers": 1, "n_heads": 2, "head_hidden": 32, "gen_dim": 32, "gen_intermediate_dim": 64,
        "gen_layers": 1, "n_harmonics": 16, "dropout": 0.0}
T = 12
NAMES = {"train": ["bbaf2n", "lgwa5s"], "val": ["sria8p"], "test": ["pbiu9a"]}


def synthetic_clip(seed: int, frames: int = T) -> dict:
    """A clip whose 'mouth' brightness follows the loudness of a voiced tone (so video predicts audio)."""
    rng = np.random.default_rng(seed)
    n = frames * audio.SAMPLES_PER_VIDEO_FRAME
    t = np.arange(n) / audio.SAMPLE_RATE
    f0 = 110 + 40 * seed
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 1.5 * t + seed)
    wav = (0.3 * env * np.sin(2 * np.pi * f0 * t) + 0.1 * env * np.sin(4 * np.pi * f0 * t)).astype(np.float32)
    frame_env = env[:: audio.SAMPLES_PER_VIDEO_FRAME][:frames]
    roi = (rng.integers(0, 30, (frames, ROI_HEIGHT, ROI_WIDTH)) + 200 * frame_env[:, None, None]).astype(np.uint8)
    lips = (rng.standard_normal((frames, LIP_DIM)) * 0.05 + frame_env[:, None]).astype(np.float32)
    return {"roi": roi, "lips": lips, "detected": np.ones(frames, bool), "audio_16k": wav}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    (root / "clips").mkdir()
    for i, name in enumerate(n for names in NAMES.values() for n in names):
        text = name_transcript(name)
        words = np.repeat(text_to_tokens(text), 2)  # 6 words of 2 frames
        rec = clip_features(**synthetic_clip(i), text=text, words=np.pad(words, (0, T - len(words))))
        save_npz_atomic(root / "clips" / f"{name}.npz", rec)
    (root / "splits.json").write_text(json.dumps({"s1": NAMES}))
    (root / "manifest.json").write_text(json.dumps({"version": 1}))
    return root


def cfg_for(cache, tmp_path, **kw) -> TrainConfig:
    base = dict(cache=str(cache), run_dir=str(tmp_path / "run"), arch=TINY, batch_size=2, steps=2, eval_every=2,
                warmup=1, log_every=1, threads=1)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("variant,stage", [("mel-gl", "lipreader"), ("naturall2s", "synth")])
def test_tiny_model_overfits_one_clip(cache, tmp_path, variant, stage):
    """The training losses of one clip fall by at least 3x within 80 steps (the same compute_losses as train())."""
    torch.manual_seed(0)
    cfg = cfg_for(cache, tmp_path, variant=variant, stage=stage)
    model = build_model(cfg)
    batch = collate([CachedGrid(cache, "train")[0]])
    from naturall2s import losses

    keys = {"lipreader": ("ctc", "melhead/l1"), "synth": ("stft/mag", "mel/l1", "f0/l1", "vuv/bce")}[stage]
    lambdas = {**losses.DEFAULT_LAMBDAS}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(80):
        ls, _ = compute_losses(model, batch, cfg)
        total = losses.weighted_sum({k: ls[k] for k in keys}, lambdas)
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(float(total.detach()))
    assert history[-1] < history[0] / 3, history[::10]


@pytest.mark.parametrize("variant,stage,extra", [
    ("mel-gl", "lipreader", {}),
    ("naturall2s", "synth", {"freeze_frontend": True, "segment_frames": 6, "adv_start": 0, "adv_segment": 3200}),
    ("naturall2s-noddsp", "synth", {}),
    ("mel-gl", "lipreader", {"augment": True, "arch": {**TINY, "word_head": True}}),
    ("naturall2s", "synth", {"teacher_f0": True, "arch": {**TINY, "f0_grad_scale": 0.01, "prior_mode": "excitation"}}),
    ("naturall2s", "synth", {"arch": {**TINY, "prior_free_phase": True, "f0_bins": 24}, "lambdas": {"f0/l1": 0.0}}),
    ("naturall2s-noddsp", "synth", {"lambdas": {"stoi/neg": 10.0}}),
])
def test_stage_runs_saves_and_resumes(cache, tmp_path, variant, stage, extra):
    cfg = cfg_for(cache, tmp_path, variant=variant, stage=stage, **extra)
    result = train(cfg)
    run = Path(result["run_dir"])
    assert result["step"] == 2 and (run / "state.pt").exists() and (run / "best.safetensors").exists()
    model = load_model(run / "best.safetensors")
    assert model.config.variant == variant
    # the architecture travels in the checkpoint
    assert model.config.prior_mode == cfg.arch.get("prior_mode", "refine")
    assert model.config.prior_free_phase == cfg.arch.get("prior_free_phase", False)
    assert model.config.f0_bins == cfg.arch.get("f0_bins", 0)
    # resume: the same command with more steps continues from step 2
    result = train(cfg_for(cache, tmp_path, variant=variant, stage=stage, steps=4, **extra))
    assert result["step"] == 4
    assert load_state(run / "state.pt")["step"] == 4
    rows = list(csv.reader((run / "log.csv").read_text().splitlines()))
    assert any(r[1] == "val" for r in rows)
    if cfg.arch.get("word_head"):  # the frame-level word loss is trained and its accuracy validated
        assert model.config.word_head
        assert all('"word/ce"' in r[2] for r in rows if r[1] == "train")
        assert all('"word/acc"' in r[2] for r in rows if r[1] == "val")
    val_rows = [json.loads(r[2]) for r in rows if r[1] == "val"]
    train_rows = [json.loads(r[2]) for r in rows if r[1] == "train"]
    # a classifying F0 head trains on its cross-entropy (finite, positive); a regressing one has none
    assert all((np.isfinite(r["f0/ce"]) and r["f0/ce"] > 0) if cfg.arch.get("f0_bins") else "f0/ce" not in r
               for r in train_rows)
    if variant == "mel-gl":  # no waveform model: no intelligibility to validate
        assert not any("estoi" in r for r in val_rows)
    else:  # validation reports the differentiable ESTOI of the output, whether or not it is a training loss
        assert all(np.isfinite(r["estoi"]) and -1 <= r["estoi"] <= 1 for r in val_rows)
    if cfg.lambdas.get("stoi/neg"):  # the intelligibility loss is computed and finite
        assert train_rows and all(np.isfinite(r["stoi/neg"]) and -1 <= r["stoi/neg"] <= 1 for r in train_rows)
    else:
        assert not any("stoi/neg" in r[2] for r in rows)  # weight 0: not even computed


def test_vocoder_stage_trains_only_the_vocoder(cache, tmp_path):
    lip = train(cfg_for(cache, tmp_path / "a", variant="mel-gl", stage="lipreader"))
    init = Path(lip["run_dir"]) / "best.safetensors"
    cfg = cfg_for(cache, tmp_path / "b", variant="mel-vocoder", stage="vocoder", init=str(init))
    train(cfg)
    before, after = load_model(init), load_model(Path(cfg.run_dir) / "best.safetensors")
    for k, v in before.state_dict().items():  # the lip reader's weights are untouched
        assert torch.equal(v, after.state_dict()[k]), k


def test_frozen_front_end_freezes_the_lip_reading_heads_only():
    from naturall2s.train import trainable_parameters

    cfg = TrainConfig(variant="naturall2s", stage="synth", freeze_frontend=True, arch={**TINY, "word_head": True})
    model = build_model(cfg)
    trained = {id(p) for p in trainable_parameters(model, cfg)}
    for module in (model.frontend, model.ctc, model.word_head):
        assert not any(id(p) in trained for p in module.parameters())
    for module in (model.word_embed, model.f0_head, model.generator):
        assert all(id(p) in trained for p in module.parameters())


def test_wrong_stage_for_variant_is_a_clear_error(cache, tmp_path):
    from naturall2s.errors import NaturalL2SError

    with pytest.raises(NaturalL2SError, match="no synth stage"):
        train(cfg_for(cache, tmp_path, variant="mel-gl", stage="synth"))


def test_torchrun_two_processes_gloo(cache, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "naturall2s", "train", "--variant", "naturall2s", "--stage", "synth", "--cache", str(cache),
           "--run-dir", str(tmp_path / "ddp"), "--steps", "2", "--batch-size", "1", "--eval-every", "2",
           "--threads", "1", "--device", "cpu", "--arch", json.dumps(TINY)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert load_state(tmp_path / "ddp" / "state.pt")["step"] == 2


def test_compose_joins_a_vocoder_run_and_the_lip_reader(cache, tmp_path):
    """--steps 0 trains nothing: later --init checkpoints win, so the lip reader's front end replaces the vocoder
    run's untrained one while the vocoder comes from its own run."""
    lip = Path(train(cfg_for(cache, tmp_path / "a", variant="mel-gl", stage="lipreader"))["run_dir"])
    voc = Path(train(cfg_for(cache, tmp_path / "b", variant="mel-vocoder", stage="vocoder"))["run_dir"])
    out = tmp_path / "composed.safetensors"
    train(TrainConfig(variant="mel-vocoder", stage="vocoder", steps=0, arch=TINY, run_dir=str(tmp_path / "c"),
                      cache=str(tmp_path / "nowhere"), init=f"{voc / 'best.safetensors'},{lip / 'best.safetensors'}",
                      export=str(out)))
    composed, lipreader, vocoder = (load_model(p) for p in (out, lip / "best.safetensors", voc / "best.safetensors"))
    state = composed.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in lipreader.state_dict().items())
    assert all(torch.equal(v, state[k]) for k, v in vocoder.state_dict().items() if k.startswith("vocoder."))


def test_oracle_f0_script_scores_a_ddsp_model_and_refuses_one_without_a_prior(cache, tmp_path):
    """CLI smoke test of scripts/oracle_f0.py (the F0 diagnostic of the results section) on tiny untrained models."""
    from naturall2s.checkpoints import save_model
    from naturall2s.model import build

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = [sys.executable, str(REPO / "scripts" / "oracle_f0.py"), "--cache", str(cache), "--split", "val"]
    ddsp = save_model(build("naturall2s", **TINY), tmp_path / "tiny-ddsp.safetensors")
    res = subprocess.run([*script, str(ddsp)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "tiny-ddsp.safetensors (val, 1 clips): ESTOI output" in res.stdout and "paired gain" in res.stdout
    plain = save_model(build("naturall2s-noddsp", **TINY), tmp_path / "tiny-plain.safetensors")
    res = subprocess.run([*script, str(plain)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "has no DDSP prior" in res.stderr


def test_judge_stage_then_content_supervised_synth_stage(cache, tmp_path):
    """The judge stage trains a word recognizer on the real log-mels and exports it; a synth run with ``--judge``
    optimises its content loss, validates the judge's accuracy on the generated speech and can select on ESTOI."""
    from naturall2s.content import load_judge
    from naturall2s.errors import NaturalL2SError

    judge_cfg = cfg_for(cache, tmp_path / "j", stage="judge", arch={"dim": 16, "dilations": [1, 2]}, steps=3,
                        eval_every=3, export=str(tmp_path / "judge.safetensors"))
    result = train(judge_cfg)
    assert result["step"] == 3 and 0.0 <= result["best"] <= 1.0
    judge = load_judge(tmp_path / "judge.safetensors")
    assert judge.config.dim == 16 and judge.config.dilations == (1, 2)
    assert load_state(tmp_path / "j" / "run" / "state.pt")["step"] == 3
    with pytest.raises(NaturalL2SError, match="content judge"):  # a content weight without a judge
        train(cfg_for(cache, tmp_path / "x", variant="naturall2s", stage="synth", lambdas={"content/ce": 1.0}))
    with pytest.raises(NaturalL2SError, match="synth stage"):  # a judge supervises generated speech only
        train(cfg_for(cache, tmp_path / "y", variant="mel-gl", stage="lipreader", judge=str(tmp_path / "judge.safetensors")))

    cfg = cfg_for(cache, tmp_path / "s", variant="naturall2s", stage="synth", judge=str(tmp_path / "judge.safetensors"),
                  lambdas={"content/ce": 1.0}, select="estoi")
    train(cfg)
    rows = list(csv.reader((Path(cfg.run_dir) / "log.csv").read_text().splitlines()))
    train_rows = [json.loads(r[2]) for r in rows if r[1] == "train"]
    val_rows = [json.loads(r[2]) for r in rows if r[1] == "val"]
    assert train_rows and all(np.isfinite(r["content/ce"]) and r["content/ce"] > 0 for r in train_rows)
    assert val_rows and all(0.0 <= r["content/acc"] <= 1.0 and r["select"] == -r["estoi"] for r in val_rows)
    info = load_model(Path(cfg.run_dir) / "best.safetensors").info
    assert info["train_config"]["select"] == "estoi" and info["train_config"]["judge"] == cfg.judge


def test_resynthesis_bounds_script_scores_real_speech_and_refuses_a_model_without_a_vocoder(cache, tmp_path):
    """CLI smoke test of scripts/resynthesis_bounds.py (the bounds of the results section) on the synthetic cache."""
    from naturall2s.checkpoints import save_model
    from naturall2s.model import build

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = [sys.executable, str(REPO / "scripts" / "resynthesis_bounds.py"), "--cache", str(cache), "--split", "val"]
    vocoder = save_model(build("mel-vocoder", **TINY), tmp_path / "tiny-vocoder.safetensors")
    res = subprocess.run([*script, "--vocoder", str(vocoder)], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [line for line in res.stdout.splitlines() if line.startswith("| ") and not line.startswith("| speech")]
    names = [r.split(" | ")[0][2:] for r in rows]
    assert names == ["real speech", "WORLD, own F0", "WORLD, F0 off 170 ¢", "WORLD, F0 off 340 ¢",
                     "WORLD, monotone F0", "vocoder on the real mel"]
    assert rows[0].split(" | ")[2] == "1.000"  # real speech against itself: ESTOI 1
    plain = save_model(build("naturall2s-noddsp", **TINY), tmp_path / "tiny-plain.safetensors")
    res = subprocess.run([*script, "--vocoder", str(plain)], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode != 0 and "has no vocoder on mels" in res.stderr


@pytest.mark.parametrize("gpu", ["0", "1"])
def test_recipe_command_lines_run(cache, tmp_path, gpu):
    """scripts/train_grid.sh end to end with SMOKE=1 (2 steps per command) on the synthetic cache: every command of
    the CPU recipe, and of the GPU recipe run on CPU under torchrun (DEVICE=cpu), parses and runs, and the
    checkpoints (six variants) and naturall2s's live student land in OUT (never in checkpoints/)."""
    work = tmp_path / "work"
    (work / "cache").mkdir(parents=True)
    (work / "cache" / "grid").symlink_to(cache, target_is_directory=True)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "SMOKE": "1", "PREPARE": "0", "OUT": str(out), "GPU": gpu, "DEVICE": "cpu",
           "PY": sys.executable, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    shipped = {p.name: p.stat().st_mtime_ns for p in (REPO / "checkpoints").iterdir()}
    res = subprocess.run(["bash", str(REPO / "scripts" / "train_grid.sh"), str(tmp_path / "no-data"), str(work)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    assert {p.name: p.stat().st_mtime_ns for p in (REPO / "checkpoints").iterdir()} == shipped
    for name in ("mel-gl", "mel-vocoder", "naturall2s-noddsp", "naturall2s", "units", "ltbs", "lipvoicer"):
        model = load_model(out / f"{name}.safetensors")
        assert model.config.variant == name and model.info["train_config"]["steps"] in (0, 2)
    assert load_model(out / "naturall2s.safetensors").config.prior_free_phase  # the shipped recipe's flags
    units = load_model(out / "units.safetensors")  # composed from its two stages, the codebook of the first
    assert units.has_codebook and units.config.n_units == 8 and units.config.word_head
    student = load_model(out / "live" / "naturall2s.safetensors")  # the live stage, beside its base model
    assert student.info["live_student"]["train_config"]["steps"] == 2
    assert load_model(out / "ltbs.safetensors").config.ltbs["postnet_temperature"] == 0.0  # as chosen on val
    lipvoicer = load_model(out / "lipvoicer.safetensors")  # the flow run + the cascade's vocoder, sampling defaults
    # the recipe's defaults are those chosen on val for the shipped checkpoint: 2 Euler steps, guidance 0.15, by the
    # judge the robust stage fine-tuned on the flow's estimates
    assert lipvoicer.has_mel_stats and lipvoicer.config.sampling_steps == 2 and lipvoicer.config.guidance_scale == 0.15
    assert lipvoicer.info["train_config"]["judge"].endswith("judge-robust/best.safetensors")
    cascade = load_model(out / "mel-vocoder.safetensors").state_dict()
    assert all(torch.equal(v, cascade[k]) for k, v in lipvoicer.state_dict().items() if k.startswith("vocoder."))


def test_adversarial_run_resumes_exactly_to_the_step(cache, tmp_path, monkeypatch):
    """An adversarial run stopped after its step-2 save and resumed ends with the same generator and discriminator
    weights as the same run uninterrupted: optimisers, discriminators, RNG and data order all travel in state.pt."""
    import naturall2s.train as train_module

    extra = dict(variant="naturall2s", stage="synth", freeze_frontend=True, segment_frames=6, adv_start=0,
                 adv_segment=3200, disc="mrd", steps=4, eval_every=2)
    whole = train(cfg_for(cache, tmp_path / "whole", **extra))
    assert whole["step"] == 4

    real_lr_at = train_module.lr_at

    def crash_at_step_3(step, cfg):
        if step == 3:
            raise KeyboardInterrupt  # what Ctrl-C or the end of a working session does
        return real_lr_at(step, cfg)

    monkeypatch.setattr(train_module, "lr_at", crash_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg_for(cache, tmp_path / "split", **extra))
    assert load_state(tmp_path / "split" / "run" / "state.pt")["step"] == 2
    monkeypatch.setattr(train_module, "lr_at", real_lr_at)
    assert train(cfg_for(cache, tmp_path / "split", **extra))["step"] == 4
    # --stop-at: a staged run stops at step 2 on the schedule of --steps 4, and the same command without it goes on
    assert train(cfg_for(cache, tmp_path / "staged", **extra, stop_at=2))["step"] == 2
    assert train(cfg_for(cache, tmp_path / "staged", **extra))["step"] == 4

    a = load_state(tmp_path / "whole" / "run" / "state.pt")
    for other in ("split", "staged"):
        b = load_state(tmp_path / other / "run" / "state.pt")
        for part in ("model", "disc"):
            assert a[part].keys() == b[part].keys()
            for k in a[part]:
                assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs after resuming ({other})"


def test_weight_ema_averages_swaps_in_and_restores():
    from naturall2s.train import WeightEMA

    model = torch.nn.Linear(2, 1)
    frozen = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
    model.register_parameter("fixed", frozen)
    start = model.weight.detach().clone()
    ema = WeightEMA(model, 0.75)
    assert set(ema.average) == {"weight", "bias"}  # only what trains
    with torch.no_grad():
        model.weight.add_(4.0)
    ema.update()
    assert torch.allclose(ema.average["weight"], start + 1.0)  # 0.75·start + 0.25·(start + 4)
    with ema.applied():
        assert torch.allclose(model.weight, start + 1.0)
    assert torch.allclose(model.weight, start + 4.0)  # the weights themselves again
    other = WeightEMA(model, 0.75)
    other.load_state_dict(ema.state_dict())
    assert torch.equal(other.average["weight"], ema.average["weight"])


def test_ema_run_selects_the_average_and_resumes_exactly(cache, tmp_path, monkeypatch):
    """With --ema the validated and exported model is the average (not the last weights), and the average travels in
    state.pt: a run stopped at its step-2 save and resumed ends with the same average as the run uninterrupted."""
    import naturall2s.train as train_module
    from safetensors.torch import load_file

    extra = dict(variant="naturall2s", stage="synth", freeze_frontend=True, segment_frames=6, steps=4, eval_every=2,
                 lr=1e-2, ema=0.5)
    train(cfg_for(cache, tmp_path / "whole", **extra))
    st = load_state(tmp_path / "whole" / "run" / "state.pt")
    avg, weights = st["ema"]["average"], st["model"]
    assert any(not torch.equal(avg[k], weights[k]) for k in avg)
    best = load_file(tmp_path / "whole" / "run" / "best.safetensors")
    info = json.loads(__import__("safetensors").safe_open(
        str(tmp_path / "whole" / "run" / "best.safetensors"), "pt").metadata()["info"])
    if info["step"] == 4:  # the exported model is the average of the last step, not its weights
        k = next(k for k in avg if not torch.equal(avg[k], weights[k]) and k in best)
        assert torch.allclose(best[k].float(), avg[k].float(), atol=2e-3)

    real_lr_at = train_module.lr_at

    def crash_at_step_3(step, cfg):
        if step == 3:
            raise KeyboardInterrupt
        return real_lr_at(step, cfg)

    monkeypatch.setattr(train_module, "lr_at", crash_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg_for(cache, tmp_path / "split", **extra))
    monkeypatch.setattr(train_module, "lr_at", real_lr_at)
    assert train(cfg_for(cache, tmp_path / "split", **extra))["step"] == 4
    split = load_state(tmp_path / "split" / "run" / "state.pt")["ema"]["average"]
    for k in avg:
        assert torch.equal(avg[k], split[k]), f"ema {k} differs after resuming"
    with pytest.raises(NaturalL2SError, match="--ema"):
        train(cfg_for(cache, tmp_path / "bad", **{**extra, "ema": 1.0}))


def test_epoch_batches_are_a_function_of_seed_and_epoch_and_shard_without_overlap():
    from naturall2s.train import epoch_batches

    a = epoch_batches(10, 3, seed=1, epoch=0)
    assert a == epoch_batches(10, 3, seed=1, epoch=0) and a != epoch_batches(10, 3, seed=1, epoch=1)
    assert len(a) == 3 and all(len(b) == 3 for b in a) and len({i for b in a for i in b}) == 9
    r0, r1 = (epoch_batches(10, 2, seed=1, epoch=0, rank=r, world=2) for r in (0, 1))
    assert len(r0) == len(r1) == 2
    assert not {i for b in r0 for i in b} & {i for b in r1 for i in b}


def test_guarded_selection_refuses_regressions_and_prefers_less_buzz():
    from naturall2s.train import select_value

    cfg = TrainConfig(select="guarded", guard_estoi=0.01, guard_wer=0.03)
    base = {"estoi": 0.40, "speech/wer": 0.20, "comb": 18.0}
    assert select_value({**base, "comb": 9.0}, cfg, base) == 9.0
    assert select_value({**base, "comb": 9.0, "estoi": 0.385}, cfg, base) == float("inf")
    assert select_value({**base, "comb": 9.0, "speech/wer": 0.24}, cfg, base) == float("inf")
    assert select_value({**base, "comb": 9.0, "estoi": 0.395, "speech/wer": 0.22}, cfg, base) == 9.0
    assert select_value({**base, "comb": float("nan"), "score": 0.7}, cfg, base) == 0.7  # no pauses to measure
    assert select_value({"score": 0.6, "estoi": 0.4}, TrainConfig(select="estoi")) == -0.4
    assert select_value({"score": 0.6, "estoi": 0.4}, TrainConfig(select="mel")) == 0.6


def test_intelligible_selection_prefers_estoi_without_buzz_or_wer_regressions():
    from naturall2s.train import select_value

    cfg = TrainConfig(select="intelligible", guard_comb=1.0, guard_wer=0.03)
    base = {"estoi": 0.40, "speech/wer": 0.20, "comb": 4.5}
    assert select_value(base, cfg, base) == -0.40
    better = select_value({**base, "estoi": 0.42, "comb": 5.3}, cfg, base)
    assert better == -0.42 and better < select_value(base, cfg, base)  # more ESTOI, buzz within the guard: preferred
    assert select_value({**base, "estoi": 0.45, "comb": 5.6}, cfg, base) == float("inf")  # buzz regressed
    assert select_value({**base, "estoi": 0.45, "speech/wer": 0.24}, cfg, base) == float("inf")  # WER regressed


def test_unknown_discriminator_is_a_clear_error():
    from naturall2s.errors import NaturalL2SError
    from naturall2s.train import build_discriminators

    assert list(build_discriminators("mpd+mrd")) == ["mpd", "mrd"]
    with pytest.raises(NaturalL2SError, match="unknown --disc"):
        build_discriminators("msd")


def test_init_disc_starts_the_discriminators_from_a_file_of_their_kind(cache, tmp_path):
    """--init-disc: the exported discriminators (fp16, their kind in the metadata) start an adversarial run; another
    kind, a run without adversarial losses, and a file that is not a discriminators file are clear errors."""
    from naturall2s.checkpoints import load_discriminator, save_discriminator, save_model
    from naturall2s.errors import CheckpointError, NaturalL2SError
    from naturall2s.model import build
    from naturall2s.train import build_discriminators

    trained = build_discriminators("mrd")
    for v in trained.parameters():
        torch.nn.init.normal_(v)
    path = save_discriminator(trained.state_dict(), tmp_path / "discriminators" / "m.safetensors", kind="mrd",
                              info={"source": "a test"})
    kind, state, info = load_discriminator(path)
    assert kind == "mrd" and info == {"source": "a test"} and state.keys() == trained.state_dict().keys()
    warm = build_discriminators("mrd", str(path)).state_dict()
    for k, v in trained.state_dict().items():
        assert torch.allclose(warm[k], v, rtol=1e-3, atol=1e-3), k  # fp16 storage
    assert not torch.allclose(build_discriminators("mrd").state_dict()[k], v, atol=1e-3)  # not the fresh init
    extra = dict(variant="naturall2s", stage="synth", freeze_frontend=True, segment_frames=6, adv_start=0,
                 adv_segment=3200, disc="mrd", init_disc=str(path))
    assert train(cfg_for(cache, tmp_path / "warm", **extra))["step"] == 2
    assert "disc" in load_state(tmp_path / "warm" / "run" / "state.pt")
    with pytest.raises(NaturalL2SError, match="holds 'mrd' discriminators, not --disc 'mpd'"):
        train(cfg_for(cache, tmp_path / "kind", **{**extra, "disc": "mpd"}))
    with pytest.raises(NaturalL2SError, match="--init-disc starts the discriminators of the adversarial losses"):
        train(cfg_for(cache, tmp_path / "off", **{**extra, "adv_start": -1}))
    model_file = save_model(build("naturall2s", **TINY), tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="not a NaturalL2S discriminator file"):
        load_discriminator(model_file)


def test_train_help_explains_every_option_with_its_default_and_real_loss_names():
    import argparse
    import re

    from naturall2s import losses
    from naturall2s.train import HELP, add_config_arguments

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    text = parser.format_help()
    for action in parser._actions[1:]:
        assert action.help and "(default:" in action.help, action.dest
    assert set(HELP) == {a.dest for a in parser._actions[1:]}
    example = re.search(r"e\.g\. '(\{.*?\})'", HELP["lambdas"]).group(1)
    assert set(json.loads(example)) <= set(losses.DEFAULT_LAMBDAS)
    assert "--save-minutes" in text and "--disc" in text


def test_frozen_front_end_features_are_kept_for_a_resumed_run_and_refused_for_another_front_end(cache, tmp_path):
    from naturall2s.train import cache_features

    cfg = cfg_for(cache, tmp_path)
    model = build_model(cfg)
    sets = [CachedGrid(cache, "train"), CachedGrid(cache, "val")]
    path = tmp_path / "features.pt"
    first = cache_features(model, sets, "cpu", False, path=path)
    assert path.is_file() and set(first) == {n for ds in sets for n in ds.names}
    kept = load_state(path)["features"]
    kept[sets[0].names[0]].fill_(7.0)  # mark the kept copy: a resumed run must read it, not recompute
    from naturall2s.checkpoints import save_state

    save_state({**load_state(path), "features": kept}, path)
    assert torch.all(cache_features(model, sets, "cpu", False, path=path)[sets[0].names[0]] == 7.0)
    with torch.no_grad():
        next(model.frontend.parameters()).add_(0.1)  # another front end: the kept features no longer apply
    fresh = cache_features(model, sets, "cpu", False, path=path)
    assert not torch.all(fresh[sets[0].names[0]] == 7.0)


def test_guarded_adversarial_run_validates_the_speech_and_only_reads_the_mos(cache, tmp_path):
    """--select guarded: the start is validated first (the guard's baseline and the first best model); every
    validation transcribes and scores the speech (speech/wer, comb) and logs the predicted MOS, which the selection
    never reads."""
    from naturall2s.train import select_value

    cfg = cfg_for(cache, tmp_path, variant="naturall2s-noddsp", stage="synth", freeze_frontend=True, segment_frames=6,
                  adv_start=0, adv_segment=3200, disc="mrd", select="guarded")
    train(cfg)
    run = Path(cfg.run_dir)
    vals = [json.loads(r[2]) for r in csv.reader((run / "log.csv").read_text().splitlines()) if r[1] == "val"]
    assert len(vals) == 2 and all(np.isfinite(v["select"]) for v in vals)  # the start, then step 2
    for v in vals:
        assert 0 <= v["speech/wer"] and np.isfinite(v["estoi"]) and 1 <= v["judge/mos"] <= 5
    state = load_state(run / "state.pt")
    assert state["baseline"].keys() == {"estoi", "speech/wer", "comb"}
    np.testing.assert_equal([state["baseline"][k] for k in ("estoi", "speech/wer", "comb")],
                            [vals[0][k] for k in ("estoi", "speech/wer", "comb")])
    assert select_value({**vals[1], "judge/mos": 5.0}, cfg, state["baseline"]) == \
        select_value({**vals[1], "judge/mos": 1.0}, cfg, state["baseline"])
    assert (run / "best.safetensors").exists()


def test_eval_train_logs_the_fit_on_training_clips(cache, tmp_path):
    """--eval-train N scores N whole training clips at every validation, beside val, as train/<key>."""
    cfg = cfg_for(cache, tmp_path, variant="naturall2s", stage="synth", freeze_frontend=True, eval_train=2)
    train(cfg)
    rows = [r for r in csv.reader((Path(cfg.run_dir) / "log.csv").read_text().splitlines()) if r[1] == "val"]
    val = json.loads(rows[-1][2])
    assert np.isfinite(val["train/score"]) and np.isfinite(val["train/estoi"]) and np.isfinite(val["score"])
    assert val["train/score"] != val["score"]  # other clips: not a copy of the validation numbers


def test_retrieval_prior_trains_saves_and_synthesizes_from_its_own_index(cache, tmp_path):
    """A retrieval-prior model indexes the training clips, trains, resumes, and its checkpoint carries the index."""
    arch = {**TINY, "word_head": True, "retrieval_prior": True}
    cfg = cfg_for(cache, tmp_path, variant="naturall2s", stage="synth", freeze_frontend=True, arch=arch)
    train(cfg)
    assert train(cfg_for(cache, tmp_path, variant="naturall2s", stage="synth", freeze_frontend=True, arch=arch,
                         steps=4))["step"] == 4
    model = load_model(Path(cfg.run_dir) / "best.safetensors")
    n_train_frames = sum(CachedGrid(cache, "train")[i]["roi"].shape[0] for i in range(len(NAMES["train"])))
    assert model.config.retrieval_entries == n_train_frames
    item = CachedGrid(cache, "val")[0]
    with torch.no_grad():
        out = model(item["roi"][None], item["lips"][None])  # retrieves from the stored index
    assert out["wav"].shape[-1] == item["audio"].shape[-1] and torch.isfinite(out["wav"]).all()


def test_retrieval_leaves_a_clips_own_frames_out():
    from naturall2s.retrieval import FrameIndex

    feats = [torch.randn(6, 8), torch.randn(6, 8)]
    index = FrameIndex.build(feats, [torch.ones(6, dtype=torch.long)] * 2, [torch.randn(80, 24), torch.randn(80, 24)])
    word_lp = torch.zeros(6, 4)
    assert (index.clip[index.select(feats[0], word_lp)] == 0).all()  # its own frames are the nearest
    assert (index.clip[index.select(feats[0], word_lp, exclude_clip=0)] == 1).all()
    rows = index.select(feats[1], word_lp)
    assert index.jump_rate(rows) == 0.0 and torch.equal(index.mel_of(rows), index.mels[6:].reshape(-1, 80).T)


def test_retrieval_probe_script_scores_every_readout_and_refuses_to_score_its_index(cache, tmp_path):
    """CLI smoke test of scripts/retrieval_probe.py (the retrieval numbers of docs/results.md) on the synthetic cache."""
    from naturall2s.checkpoints import save_model
    from naturall2s.model import build

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    model = save_model(build("mel-vocoder", **TINY, word_head=True), tmp_path / "tiny-cascade.safetensors")
    script = [sys.executable, str(REPO / "scripts" / "retrieval_probe.py"), "--cache", str(cache), "--model", str(model)]
    res = subprocess.run([*script, "--split", "val"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [line for line in res.stdout.splitlines() if line.startswith("| ") and "read-out" not in line]
    assert len(rows) == 9 and rows[0].startswith("| predicted mel")
    estoi_means = [float(r.split(" | ")[1].split(" ")[0]) for r in rows]  # one val clip: no interval, a mean
    assert all(-1.0 <= e <= 1.0 for e in estoi_means), rows
    res = subprocess.run([*script, "--split", "train"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "is the index itself" in res.stderr


UNITS_ARCH = {**TINY, "word_head": True, "n_units": 8, "unit_dim": 8}


def test_units_stages_train_compose_load_and_synthesize(cache, tmp_path):
    """The units variant's recipe on the tiny cache: the vocoder stage fits the codebook (kept in units.pt and in the
    checkpoint) and trains on real mels + units, the lip reader stage inherits that codebook from its --init and
    trains the unit head (unit/ce) but not the vocoder, --steps 0 composes them, and the loaded model speaks a clip
    of 640 samples per frame."""
    from naturall2s.roi import MouthClip

    voc_cfg = cfg_for(cache, tmp_path / "voc", variant="units", stage="vocoder", arch=UNITS_ARCH, segment_frames=6,
                      degrade_mel=True)
    voc = Path(train(voc_cfg)["run_dir"])
    assert (voc / "units.pt").is_file()
    vocoder = load_model(voc / "best.safetensors")
    assert vocoder.config.variant == "units" and vocoder.config.n_units == 8 and vocoder.has_codebook
    lip_cfg = cfg_for(cache, tmp_path / "lip", variant="units", stage="lipreader", arch=UNITS_ARCH, augment=True,
                      init=str(voc / "best.safetensors"))
    lip = Path(train(lip_cfg)["run_dir"])
    assert not (lip / "units.pt").exists()  # inherited, not refitted
    rows = list(csv.reader((lip / "log.csv").read_text().splitlines()))
    train_rows = [json.loads(r[2]) for r in rows if r[1] == "train"]
    val_rows = [json.loads(r[2]) for r in rows if r[1] == "val"]
    assert train_rows and all(np.isfinite(r["unit/ce"]) and r["unit/ce"] > 0 for r in train_rows)
    assert val_rows and all(0 <= r["unit/acc"] <= 1 and np.isfinite(r["estoi"]) for r in val_rows)
    reader = load_model(lip / "best.safetensors")
    assert torch.equal(reader.unit_centroids, vocoder.unit_centroids)
    for k, v in vocoder.state_dict().items():  # the lip reader stage leaves the vocoder as it was
        if k.startswith("vocoder."):
            assert torch.equal(v, reader.state_dict()[k]), k
    out = tmp_path / "units.safetensors"
    train(TrainConfig(variant="units", stage="lipreader", steps=0, arch=UNITS_ARCH, run_dir=str(tmp_path / "c"),
                      cache=str(tmp_path / "nowhere"), init=f"{voc / 'best.safetensors'},{lip / 'best.safetensors'}",
                      export=str(out)))
    model = load_model(out)
    assert model.config.variant == "units" and torch.equal(model.unit_centroids, vocoder.unit_centroids)
    clip = synthetic_clip(7, frames=10)
    result = model.synthesize(MouthClip(roi=clip["roi"], lips=clip["lips"], audio=None, fps=25.0,
                                        detected=clip["detected"], source=""))
    assert result.wav.shape == (10 * audio.SAMPLES_PER_VIDEO_FRAME,) and np.isfinite(result.wav).all()
    assert result.extras["units"].shape == (40,) and result.extras["units"].max() < 8
    # a resumed vocoder run reads its codebook back and continues
    assert train(cfg_for(cache, tmp_path / "voc", variant="units", stage="vocoder", arch=UNITS_ARCH,
                         segment_frames=6, degrade_mel=True, steps=3))["step"] == 3


def test_units_bad_configurations_are_clear_errors(cache, tmp_path):
    from naturall2s.errors import NaturalL2SError

    with pytest.raises(NaturalL2SError, match="n_units must be at least 2"):
        train(cfg_for(cache, tmp_path / "a", variant="units", stage="vocoder", arch={**TINY, "n_units": 1}))
    with pytest.raises(NaturalL2SError, match="n_units belongs to the units variant"):
        train(cfg_for(cache, tmp_path / "b", variant="mel-vocoder", stage="vocoder", arch={**TINY, "n_units": 8}))
    with pytest.raises(NaturalL2SError, match="frames cannot make 5000 units"):  # the tiny cache has 96 frames
        train(cfg_for(cache, tmp_path / "c", variant="units", stage="vocoder", arch={**TINY, "n_units": 5000}))
    with pytest.raises(NaturalL2SError, match="no synth stage"):
        train(cfg_for(cache, tmp_path / "d", variant="units", stage="synth", arch=UNITS_ARCH))
    with pytest.raises(NaturalL2SError, match="belongs to the vocoder stage"):
        train(cfg_for(cache, tmp_path / "e", variant="units", stage="lipreader", arch=UNITS_ARCH, degrade_mel=True))
    # two runs whose codebooks differ cannot be composed into one model
    from naturall2s.checkpoints import save_model
    from naturall2s.model import build
    from naturall2s.units import Codebook

    paths = []
    for seed in (1, 2):
        model = build("units", **UNITS_ARCH)
        g = torch.Generator().manual_seed(seed)
        centroids = torch.randn(8, 39, generator=g)
        model.set_codebook(Codebook(mean=torch.zeros(39), std=torch.ones(39), centroids=centroids))
        paths.append(str(save_model(model, tmp_path / f"book{seed}.safetensors")))
    with pytest.raises(NaturalL2SError, match="different speech-unit codebooks"):
        train(TrainConfig(variant="units", stage="lipreader", steps=0, arch=UNITS_ARCH, run_dir=str(tmp_path / "f"),
                          init=",".join(paths)))


LIPVOICER_ARCH = {**TINY, "flow_dim": 16, "flow_intermediate_dim": 32, "flow_layers": 2, "sampling_steps": 2,
                  "guidance_scale": 0.5}
TINY_JUDGE = {"dim": 16, "dilations": [1, 2]}


def test_lipvoicer_stages_train_compose_load_and_synthesize(cache, tmp_path):
    """The lipvoicer variant's recipe on the tiny cache: a judge run and a lip reader, then the flow stage on the lip
    reader's frozen front end with that judge inside (flow/mse trained, the sampled speech validated, resumable),
    composed with a cascade's vocoder (--steps 0); the loaded model speaks a clip of 640 samples per frame, the same
    waveform every time, and guidance changes it."""
    from naturall2s.content import load_judge
    from naturall2s.errors import NaturalL2SError
    from naturall2s.roi import MouthClip

    judge_path = tmp_path / "judge.safetensors"
    train(cfg_for(cache, tmp_path / "j", stage="judge", arch=TINY_JUDGE, export=str(judge_path)))
    lip = Path(train(cfg_for(cache, tmp_path / "lip", variant="mel-gl", stage="lipreader",
                             arch={**TINY, "word_head": True}))["run_dir"]) / "best.safetensors"
    voc = Path(train(cfg_for(cache, tmp_path / "voc", variant="mel-vocoder", stage="vocoder", segment_frames=6,
                             init=str(lip), arch={**TINY, "word_head": True}))["run_dir"]) / "best.safetensors"
    flow_cfg = cfg_for(cache, tmp_path / "flow", variant="lipvoicer", stage="flow", arch=LIPVOICER_ARCH,
                       init=str(lip), judge=str(judge_path), segment_frames=6, select="estoi")
    run = Path(train(flow_cfg)["run_dir"])
    assert load_state(run / "state.pt")["step"] == 2 and (run / "features.pt").is_file()  # cached front end
    rows = list(csv.reader((run / "log.csv").read_text().splitlines()))
    train_rows = [json.loads(r[2]) for r in rows if r[1] == "train"]
    val_rows = [json.loads(r[2]) for r in rows if r[1] == "val"]
    assert train_rows and all(np.isfinite(r["flow/mse"]) and r["flow/mse"] > 0 for r in train_rows)
    assert val_rows and all(np.isfinite(r["flow/mse"]) and np.isfinite(r["estoi"]) and 0 <= r["content/acc"] <= 1
                            for r in val_rows)
    flow = load_model(run / "best.safetensors")
    lipreader, judge = load_model(lip), load_judge(judge_path)
    assert flow.config.variant == "lipvoicer" and flow.config.judge["dim"] == 16 and flow.has_mel_stats
    for k, v in judge.state_dict().items():  # the judge travels inside the model
        assert torch.equal(flow.state_dict()[f"judge.{k}"], v), k
    for k, v in lipreader.state_dict().items():  # the lip reader's features and heads stay as they were
        if k.startswith(("frontend.", "ctc.", "word_head.", "word_embed.", "upsample.")):
            assert torch.equal(flow.state_dict()[k], v), k
    # a resumed flow run continues to the step
    assert train(cfg_for(cache, tmp_path / "flow", variant="lipvoicer", stage="flow", arch=LIPVOICER_ARCH,
                         init=str(lip), judge=str(judge_path), segment_frames=6, select="estoi", steps=3))["step"] == 3

    out = tmp_path / "lipvoicer.safetensors"
    train(TrainConfig(variant="lipvoicer", stage="flow", steps=0, arch={**LIPVOICER_ARCH, "sampling_steps": 3},
                      run_dir=str(tmp_path / "c"), cache=str(tmp_path / "nowhere"),
                      init=f"{run / 'best.safetensors'},{voc}", export=str(out)))
    model = load_model(out)
    vocoder = load_model(voc)
    assert model.config.sampling_steps == 3 and model.config.judge["dim"] == 16  # the judge's config from --init
    for k, v in vocoder.state_dict().items():
        if k.startswith("vocoder."):
            assert torch.equal(model.state_dict()[k], v), k
    assert torch.equal(model.flow_mel_mean, flow.flow_mel_mean) and torch.equal(model.judge.out.weight,
                                                                                flow.judge.out.weight)
    clip = synthetic_clip(7, frames=10)
    mouth = MouthClip(roi=clip["roi"], lips=clip["lips"], audio=None, fps=25.0, detected=clip["detected"], source="")
    first, again = model.synthesize(mouth), model.synthesize(mouth)
    assert first.wav.shape == (10 * audio.SAMPLES_PER_VIDEO_FRAME,) and np.isfinite(first.wav).all()
    np.testing.assert_array_equal(first.wav, again.wav)  # DEFAULT_SEED: the same clip gives the same waveform
    assert first.extras["steps"] == 3 and first.extras["guidance"] == 0.5 and first.mel.shape == (audio.N_MELS, 40)
    unguided = model.synthesize(mouth, guidance=0.0)
    assert not np.array_equal(first.wav, unguided.wav)
    assert not np.array_equal(first.wav, model.synthesize(mouth, seed=1).wav)  # another seed, other noise

    # its judge fine-tuned (adversarially) on the model's own flow estimates, then composed into the model
    tuned_run = Path(train(cfg_for(cache, tmp_path / "jf", stage="judge", judge_flow=str(out), judge_robust=0.5,
                                   segment_frames=6))["run_dir"])
    rows = [r for r in csv.reader((tuned_run / "log.csv").read_text().splitlines()) if r[1] == "val"]
    assert [int(r[0]) for r in rows] == [0, 2]  # the model's own judge on the same val estimates, then step 2
    assert (tuned_run / "features.pt").is_file()  # the model's front end, cached
    tuned = load_judge(tuned_run / "best.safetensors")
    assert tuned.config.dim == 16 and load_state(tuned_run / "state.pt")["step"] == 2
    assert not torch.equal(tuned.out.weight, model.judge.out.weight.to(tuned.out.weight.dtype))
    guided = tmp_path / "guided.safetensors"
    train(TrainConfig(variant="lipvoicer", stage="flow", steps=0, arch=LIPVOICER_ARCH, run_dir=str(tmp_path / "c2"),
                      cache=str(tmp_path / "nowhere"), init=str(out), judge=str(tuned_run / "best.safetensors"),
                      export=str(guided)))
    reguided = load_model(guided)
    assert torch.equal(reguided.judge.out.weight, tuned.out.weight)
    assert torch.equal(reguided.denoiser.out.weight, model.denoiser.out.weight)
    with pytest.raises(NaturalL2SError, match="belongs to --stage judge"):
        train(cfg_for(cache, tmp_path / "jx", variant="lipvoicer", stage="flow", judge_flow=str(out)))


def test_adversarial_input_raises_the_judges_loss_by_a_step_of_the_given_size():
    """Adversarial training's inputs: one step of RMS ``rms`` per element that raises the judge's word loss."""
    from naturall2s import losses
    from naturall2s.content import JudgeConfig, WordJudge
    from naturall2s.data import UNKNOWN_WORD
    from naturall2s.train import adversarial_input

    torch.manual_seed(0)
    judge = WordJudge(JudgeConfig(dim=16, dilations=(1,))).eval()
    mel, words = torch.randn(3, audio.N_MELS, 40), torch.randint(1, 10, (3, 10))
    moved = adversarial_input(judge, mel, words, 0.5)
    rms = (moved - mel).flatten(1).pow(2).mean(dim=1).sqrt()
    assert torch.allclose(rms, torch.full((3,), 0.5), atol=1e-4)

    def loss(x):
        return float(losses.word_ce_loss(judge(x), words, ignore_index=UNKNOWN_WORD)["word/ce"])

    assert loss(moved) > loss(mel) + 0.01


def test_lipvoicer_bad_configurations_are_clear_errors(cache, tmp_path):
    from naturall2s.errors import NaturalL2SError

    judge_path = tmp_path / "judge.safetensors"
    train(cfg_for(cache, tmp_path / "j", stage="judge", arch=TINY_JUDGE, export=str(judge_path)))
    lv = dict(variant="lipvoicer", arch=LIPVOICER_ARCH, judge=str(judge_path))
    with pytest.raises(NaturalL2SError, match="has no synth stage: train its denoiser with --stage flow"):
        train(cfg_for(cache, tmp_path / "a", stage="synth", **lv))
    with pytest.raises(NaturalL2SError, match="has no lipreader stage"):
        train(cfg_for(cache, tmp_path / "b", stage="lipreader", **lv))
    with pytest.raises(NaturalL2SError, match="the flow stage trains the denoiser of --variant lipvoicer, not natu"):
        train(cfg_for(cache, tmp_path / "c", variant="naturall2s", stage="flow"))
    with pytest.raises(NaturalL2SError, match="carries its content judge"):
        train(cfg_for(cache, tmp_path / "d", variant="lipvoicer", stage="flow", arch=LIPVOICER_ARCH))
    with pytest.raises(NaturalL2SError, match="no adversarial losses"):
        train(cfg_for(cache, tmp_path / "e", stage="flow", adv_start=0, **lv))
    model = Path(train(cfg_for(cache, tmp_path / "f", variant="mel-gl", stage="lipreader"))["run_dir"])
    with pytest.raises(NaturalL2SError, match="is not a content judge"):
        train(cfg_for(cache, tmp_path / "g", variant="lipvoicer", stage="flow", arch=LIPVOICER_ARCH,
                      judge=str(model / "best.safetensors")))
    with pytest.raises(NaturalL2SError, match="guidance scale must be a finite number of at least 0"):
        train(cfg_for(cache, tmp_path / "h", stage="flow", **{**lv, "arch": {**LIPVOICER_ARCH, "guidance_scale": -1}}))
    with pytest.raises(NaturalL2SError, match="no mel statistics yet"):  # composed without a flow run
        train(TrainConfig(steps=0, stage="flow", run_dir=str(tmp_path / "i"), **lv))
    # a denoiser composed with a vocoder checkpoint of another front end (it would read features it never saw)
    flow = Path(train(cfg_for(cache, tmp_path / "k", stage="flow", init=str(model / "best.safetensors"),
                              **lv))["run_dir"]) / "best.safetensors"
    other = Path(train(cfg_for(cache, tmp_path / "l", variant="mel-vocoder", stage="vocoder", seed=5))["run_dir"])
    with pytest.raises(NaturalL2SError, match="replaced the front end whose features the denoiser"):
        train(TrainConfig(variant="lipvoicer", stage="flow", steps=0, arch=LIPVOICER_ARCH, run_dir=str(tmp_path / "m"),
                          init=f"{flow},{other / 'best.safetensors'}"))


def test_figure_runs_tables_validations_with_their_cpu_hours(tmp_path):
    """scripts/figure_runs.py reads a plan's log.csv files: each validation with the CPU-hours logged before it."""
    run = tmp_path / "runs" / "curves" / "size1x"
    run.mkdir(parents=True)
    with open(run / "log.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([0, "config", json.dumps({"lr": 5e-4})])
        w.writerow([600, "train", json.dumps({"mel/l1": 0.7, "cpu_hours": 0.35})])
        w.writerow([600, "val", json.dumps({"score": 0.656, "estoi": 0.317, "train/score": 0.639, "train/estoi": 0.311})])
    script = [sys.executable, str(REPO / "scripts" / "figure_runs.py")]
    res = subprocess.run([*script, "curves", "--work", str(tmp_path), "--table", "--out", str(tmp_path / "c.png")],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "| size1x | 600 | 0.656 | 0.317 | 0.639 | 0.311 | 0.35 |" in res.stdout
    assert (tmp_path / "c.png").stat().st_size > 0
    res = subprocess.run([*script, "retrieval", "--work", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode != 0 and "no runs of plan 'retrieval'" in res.stderr


def test_figure_runs_draws_the_units_plan(tmp_path):
    """The units plan's two runs (a vocoder without unit accuracy or lip reading, a lip reader with both) draw."""
    for run, val in (("vocoder", {"score": 0.36, "estoi": 0.80, "select": -0.80}),
                     ("lipreader", {"score": 1.1, "estoi": 0.35, "unit/acc": 0.2, "lipread/wer": 0.09, "select": -0.35})):
        folder = tmp_path / "runs" / "units" / run
        folder.mkdir(parents=True)
        with open(folder / "log.csv", "w", newline="") as f:
            csv.writer(f).writerows([[200, "train", json.dumps({"cpu_hours": 0.1})], [200, "val", json.dumps(val)]])
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "figure_runs.py"), "units", "--work", str(tmp_path),
                          "--table", "--out", str(tmp_path / "u.png")], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "| lipreader | 200 | 1.100 | 0.350 |" in res.stdout and (tmp_path / "u.png").stat().st_size > 0


def test_figure_runs_draws_the_lipvoicer_plan(tmp_path):
    """The lipvoicer plan's two runs (the judge on real speech, the flow run on its sampled speech) draw and table."""
    for run, val in (("judge", {"word/acc": 0.95}),
                     ("flow", {"flow/mse": 0.8, "score": 0.9, "estoi": 0.3, "content/acc": 0.7, "select": -0.3})):
        folder = tmp_path / "runs" / "lipvoicer" / run
        folder.mkdir(parents=True)
        quoted = json.dumps(val).replace(chr(34), 2 * chr(34))
        (folder / "log.csv").write_text(f'500,train,"{{""cpu_hours"": 0.1}}"\n500,val,"{quoted}"\n')
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "figure_runs.py"), "lipvoicer", "--work",
                          str(tmp_path), "--table", "--out", str(tmp_path / "l.png")], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "| flow | 500 | 0.900 | 0.300 |" in res.stdout and (tmp_path / "l.png").stat().st_size > 0


def test_live_stage_trains_resumes_and_its_export_streams(cache, tmp_path):
    """--stage live: the student trains 2 steps on the tiny cache and resumes to 4, exactly as a run of 4 steps; its
    export is the whole model with only the front end's transformer and norm changed, and streaming finds it beside
    its base model and uses it."""
    from naturall2s.checkpoints import save_model
    from naturall2s.errors import NaturalL2SError
    from naturall2s.model import build
    from naturall2s.stream import LiveSynth
    from tests.test_stream import FakeTracker, frames

    torch.manual_seed(0)
    base = save_model(build("naturall2s", **TINY), tmp_path / "tiny.safetensors")
    export = tmp_path / "live" / "tiny.safetensors"
    live_kw = dict(stage="live", init=str(base), export=str(export), live_window=8, live_min_window=4, live_tail=3)
    result = train(cfg_for(cache, tmp_path, **live_kw, steps=4, stop_at=2))
    assert result["step"] == 2 and np.isfinite(result["best"])
    assert train(cfg_for(cache, tmp_path, **live_kw, steps=4))["step"] == 4
    run = Path(result["run_dir"])
    assert load_state(run / "state.pt")["step"] == 4 and (run / "projections.pt").is_file()
    train(cfg_for(cache, tmp_path / "whole", **{**live_kw, "export": ""}, steps=4))
    whole = load_state(tmp_path / "whole" / "run" / "state.pt")["model"]
    assert all(torch.equal(v, whole[k]) for k, v in load_state(run / "state.pt")["model"].items())
    rows = list(csv.reader((run / "log.csv").read_text().splitlines()))
    assert all(json.loads(r[2])["cpu_hours"] > 0 for r in rows if r[1] == "train")
    vals = [json.loads(r[2]) for r in rows if r[1] == "val"]
    assert len(vals) == 2 and all(v["live/mse"] > 0 and v["live/mse_offline"] > 0 for v in vals)

    model, student = load_model(base), load_model(export)
    assert student.info["live_student"]["train_config"]["stage"] == "live"
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, student.state_dict()[k])}
    assert changed and all(k.startswith(("frontend.transformer.", "frontend.norm.")) for k in changed)
    live = LiveSynth(model, lookahead=0.08, window=1.0, student=True, tracker=FakeTracker())
    wav = np.concatenate([live.push(f) for f in frames(12)] + [live.flush()])
    assert live.student and len(wav) == 12 * audio.SAMPLES_PER_VIDEO_FRAME and np.isfinite(wav).all()
    with pytest.raises(NaturalL2SError, match="--init"):
        train(cfg_for(cache, tmp_path / "none", stage="live"))
    with pytest.raises(NaturalL2SError, match="--variant naturall2s"):
        train(cfg_for(cache, tmp_path / "other", **{**live_kw, "export": ""}, variant="mel-gl"))
