"""The ltbs variant (after Kim et al., AAAI 2024): the flow post-net's invertibility and log-determinant, the
variance quantisers, its stages on the tiny cache (train, resume, compose with a cascade's vocoder, load,
synthesize), the post-net on/off ablation, and clear errors for bad options."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from naturall2s import audio
from naturall2s.checkpoints import load_model, load_tensors, save_model
from naturall2s.errors import NaturalL2SError
from naturall2s.ltbs import (
    LOSS_KEYS, PostNetFlow, energy_index, pitch_index, postnet_nll,
)
from naturall2s.model import ModelConfig, build
from naturall2s.roi import MouthClip
from naturall2s.train import TrainConfig, train
from tests.test_train import TINY, cache, cfg_for, synthetic_clip  # noqa: F401  (cache: the tiny cache fixture)

LTBS_ARCH = {**TINY, "word_head": True, "ltbs": {"pitch_bins": 16, "energy_bins": 8, "decoder_layers": 1,
                                                  "postnet_steps": 2, "postnet_layers": 1, "postnet_hidden": 16}}


def perturbed_flow(channels: int, cond_dim: int, *, seed: int = 0, scale: float = 0.03, **kw) -> PostNetFlow:
    """A small post-net flow whose weights are moved off their identity-like initialisation (as training would)."""
    torch.manual_seed(seed)
    flow = PostNetFlow(channels=channels, cond_dim=cond_dim, **{"hidden": 16, "n_steps": 3, "n_layers": 2,
                                                                "kernel_size": 5, **kw})
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn_like(p))
    return flow


def test_flow_round_trip_is_exact_and_padding_stays_silent():
    """x -> z -> x within 1e-4 (float32), a padded frame stays 0 both ways and counts in no log-determinant."""
    flow = perturbed_flow(80, 24)
    g = torch.Generator().manual_seed(1)
    x, cond = torch.randn(2, 80, 30, generator=g), torch.randn(2, 24, 30, generator=g)
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[1, 25:] = False
    x = x * mask[:, None]
    with torch.no_grad():
        z, logdet = flow(x, cond, mask)
        back = flow.inverse(z, cond, mask)
    assert (back - x).abs().max() < 1e-4
    assert (z[1, :, 25:] == 0).all() and (back[1, :, 25:] == 0).all()
    assert not torch.allclose(z, x, atol=1e-2)  # a real transform, not the identity
    with torch.no_grad():  # the second clip's log-determinant is that of its 25 valid frames alone
        _, short = flow(x[1:, :, :25], cond[1:, :, :25])
    assert torch.allclose(short, logdet[1:], atol=1e-3)


def test_flow_log_determinant_matches_the_numerical_jacobian():
    """On a tiny case (4 mel bins, 3 frames) the flow's log-determinant is log|det| of its Jacobian (autograd)."""
    flow = perturbed_flow(4, 3, scale=0.3, hidden=8).double()
    g = torch.Generator().manual_seed(2)
    x, cond = torch.randn(1, 4, 3, generator=g, dtype=torch.float64), torch.randn(1, 3, 3, generator=g,
                                                                                 dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: flow(v.reshape(1, 4, 3), cond)[0].reshape(-1), x.reshape(-1))
    sign, logabsdet = torch.linalg.slogdet(jac)
    with torch.no_grad():
        _, logdet = flow(x, cond)
    assert sign != 0 and abs(float(logdet[0]) - float(logabsdet)) < 1e-8
    assert abs(float(logdet[0])) > 0.1  # a volume change to check, not 0 = 0


def test_postnet_nll_of_a_volume_preserving_flow_is_the_gaussian_one():
    """At initialisation (act-norm and coupling the identity, the 1x1 convs rotations) the NLL is the standard
    normal's."""
    flow = PostNetFlow(channels=6, cond_dim=2, hidden=8, n_steps=2, n_layers=1, kernel_size=3)
    x = torch.randn(3, 6, 5)
    with torch.no_grad():
        z, logdet = flow(x, torch.randn(3, 2, 5))
    assert torch.allclose(logdet, torch.zeros(3), atol=1e-5)
    expected = 0.5 * float((x ** 2).mean()) + 0.5 * math.log(2 * math.pi)
    assert float(postnet_nll(z, logdet)) == pytest.approx(expected, abs=1e-5)


def test_pitch_and_energy_quantisers():
    log_f0 = torch.log(torch.tensor([[audio.F0_MIN, 30.0, 1000.0, math.sqrt(audio.F0_MIN * audio.F0_MAX)]]))
    idx = pitch_index(log_f0, torch.tensor([[True, True, True, False]]), 10)
    assert idx.tolist() == [[1, 1, 10, 0]]  # unvoiced is 0; out of range clamps to the end buckets
    lo, hi = math.log(audio.F0_MIN), math.log(audio.F0_MAX)
    inside = torch.tensor([[lo + 0.55 * (hi - lo), lo + 0.05 * (hi - lo)]])
    assert pitch_index(inside, torch.ones(1, 2, dtype=torch.bool), 10).tolist() == [[6, 1]]  # bucket 5 + 1, 0 + 1
    assert energy_index(torch.tensor([[-120.0, -90.0, -45.0, -0.01, 10.0]]), 4).tolist() == [[0, 0, 2, 3, 3]]


def test_model_shapes_postnet_options_and_bad_configurations():
    torch.manual_seed(0)
    model = build("ltbs", **LTBS_ARCH).eval()
    assert model.config.ltbs["postnet_temperature"] == 0.0 and model.config.ltbs["postnet_kernel"] == 5
    roi = torch.randint(0, 256, (2, 10, 48, 72), dtype=torch.uint8)
    lips = torch.randn(2, 10, 40)
    with torch.no_grad():
        out = model(roi, lips)
    assert out["mel"].shape == out["decoder_mel"].shape == (2, audio.N_MELS, 40) and out["wav"].shape == (2, 6400)
    assert out["log_f0"].shape == out["voicing_logit"].shape == out["loudness"].shape == (2, 40)
    with pytest.raises(ValueError, match="belongs to the ltbs variant"):
        ModelConfig(variant="naturall2s", ltbs={"postnet_steps": 2})
    with pytest.raises(ValueError, match="unknown ltbs config keys"):
        ModelConfig(variant="ltbs", ltbs={"flows": 2})
    with pytest.raises(ValueError, match="postnet_steps must be a whole number of at least 1"):
        ModelConfig(variant="ltbs", ltbs={"postnet_steps": 0})
    with pytest.raises(ValueError, match="postnet_temperature must be a finite number"):
        ModelConfig(variant="ltbs", ltbs={"postnet_temperature": -0.5})
    with pytest.raises(ValueError, match="variance_kernel must be odd"):
        ModelConfig(variant="ltbs", ltbs={"variance_kernel": 4})
    with pytest.raises(ValueError, match="n_mels must be even"):
        ModelConfig(variant="ltbs", n_mels=79)
    with pytest.raises(ValueError, match="retrieval prior"):
        ModelConfig(variant="ltbs", word_head=True, retrieval_prior=True)
    clip = synthetic_clip(3, frames=8)
    mouth = MouthClip(roi=clip["roi"], lips=clip["lips"], audio=None, fps=25.0, detected=clip["detected"], source="")
    for bad, match in (({"temperature": -1.0}, "temperature must be a finite number"),
                       ({"temperature": float("nan")}, "temperature must be a finite number"),
                       ({"postnet": "off"}, "postnet must be True or False")):
        with pytest.raises(NaturalL2SError, match=match):
            model.synthesize(mouth, **bad)
    other = build("naturall2s-noddsp", **TINY)
    for bad in ({"postnet": False}, {"temperature": 0.5}):
        with pytest.raises(NaturalL2SError, match="options of the ltbs variant"):
            other.synthesize(mouth, **bad)


def test_ltbs_stages_train_compose_load_and_synthesize(cache, tmp_path):  # noqa: F811
    """The recipe on the tiny cache: the synth stage (frozen front end, cached features) trains only the acoustic
    model on its five losses and resumes; --steps 0 composes it with a cascade's vocoder; the loaded model speaks a
    clip of 640 samples per frame, deterministically; the post-net on and off differ, and so do temperatures."""
    cascade = build("mel-vocoder", **{**TINY, "word_head": True})
    cascade_path = save_model(cascade, tmp_path / "cascade.safetensors", dtype=torch.float32)
    cfg = cfg_for(cache, tmp_path / "synth", variant="ltbs", stage="synth", arch=LTBS_ARCH, freeze_frontend=True,
                  segment_frames=6, init=str(cascade_path))
    run = Path(train(cfg)["run_dir"])
    assert (run / "state.pt").is_file() and (run / "features.pt").is_file()
    rows = list(csv.reader((run / "log.csv").read_text().splitlines()))
    train_rows = [json.loads(r[2]) for r in rows if r[1] == "train"]
    val_rows = [json.loads(r[2]) for r in rows if r[1] == "val"]
    assert train_rows and all(np.isfinite(r[k]) for r in train_rows for k in LOSS_KEYS)
    assert all(r["decoder/l1"] > 0 and r["energy/l1"] > 0 for r in train_rows)
    assert val_rows and all(np.isfinite(r["estoi"]) and np.isfinite(r["flow/nll"]) for r in val_rows)
    trained = load_tensors(run / "best.safetensors")
    start = cascade.state_dict()
    changed = {k.split(".")[0] for k, v in trained.items() if k in start and not torch.equal(v, start[k].half())}
    assert not changed  # the front end, word conditioning and the cascade's vocoder stay as they were
    assert train(cfg_for(cache, tmp_path / "synth", variant="ltbs", stage="synth", arch=LTBS_ARCH,
                         freeze_frontend=True, segment_frames=6, init=str(cascade_path), steps=3))["step"] == 3

    out = tmp_path / "ltbs.safetensors"
    train(TrainConfig(variant="ltbs", stage="synth", steps=0, arch=LTBS_ARCH, run_dir=str(tmp_path / "c"),
                      cache=str(tmp_path / "nowhere"), init=f"{run / 'best.safetensors'},{cascade_path}",
                      export=str(out)))
    model = load_model(out)
    assert model.config.variant == "ltbs" and model.config.ltbs["postnet_steps"] == 2
    composed = load_tensors(out)
    trained = load_tensors(run / "best.safetensors")  # the resumed run's best
    assert all(torch.equal(composed[k], trained[k]) for k in trained if k.startswith("acoustic."))
    clip = synthetic_clip(7, frames=10)
    mouth = MouthClip(roi=clip["roi"], lips=clip["lips"], audio=None, fps=25.0, detected=clip["detected"], source="")
    a, b = model.synthesize(mouth), model.synthesize(mouth)
    assert a.wav.shape == (10 * audio.SAMPLES_PER_VIDEO_FRAME,) and np.isfinite(a.wav).all()
    assert np.array_equal(a.wav, b.wav) and a.mel.shape == (audio.N_MELS, 40)
    assert a.f0.shape == a.voicing.shape == a.extras["loudness"].shape == (40,)
    assert a.extras["postnet"] is True and a.extras["temperature"] == 0.0
    off = model.synthesize(mouth, postnet=False)
    assert off.extras["postnet"] is False and not np.allclose(off.mel, a.mel, atol=1e-4)
    warm = model.synthesize(mouth, temperature=0.7)
    assert not np.allclose(warm.mel, a.mel, atol=1e-4)
    assert np.array_equal(warm.wav, model.synthesize(mouth, temperature=0.7).wav)  # seeded: the same draw
    assert not np.array_equal(warm.wav, model.synthesize(mouth, temperature=0.7, seed=1).wav)


def test_ltbs_vocoder_stage_trains_only_its_vocoder(cache, tmp_path):  # noqa: F811
    init = save_model(build("ltbs", **LTBS_ARCH), tmp_path / "ltbs0.safetensors", dtype=torch.float32)
    run = Path(train(cfg_for(cache, tmp_path / "voc", variant="ltbs", stage="vocoder", arch=LTBS_ARCH,
                             segment_frames=6, init=str(init)))["run_dir"])
    before, after = load_tensors(init), load_tensors(run / "best.safetensors")
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k].half(), after[k])}
    assert changed == {"vocoder"}


def test_ltbs_bad_training_options_are_clear_errors(cache, tmp_path):  # noqa: F811
    for extra, match in (({"adv_start": 0}, "--adv-start"), ({"teacher_f0": True}, "--teacher-f0"),
                         ({"lambdas": {"stoi/neg": 10}}, "a stoi/neg weight")):
        with pytest.raises(NaturalL2SError, match=f"make no waveform.*{match}"):
            train(cfg_for(cache, tmp_path / "bad", variant="ltbs", stage="synth", arch=LTBS_ARCH, **extra))
    with pytest.raises(NaturalL2SError, match="no lipreader stage"):
        train(cfg_for(cache, tmp_path / "bad", variant="ltbs", stage="lipreader", arch=LTBS_ARCH))
    # composition: some --init must hold the acoustic model, and no later one may swap the front end under it
    plain = save_model(build("mel-vocoder", **{**TINY, "word_head": True}), tmp_path / "cascade.safetensors")
    torch.manual_seed(5)
    other = save_model(build("mel-vocoder", **{**TINY, "word_head": True}), tmp_path / "other.safetensors")
    ltbs = save_model(build("ltbs", **LTBS_ARCH), tmp_path / "ltbs.safetensors")
    compose = dict(variant="ltbs", stage="synth", steps=0, arch=LTBS_ARCH, run_dir=str(tmp_path / "c"))
    with pytest.raises(NaturalL2SError, match="holds an ltbs acoustic model"):
        train(TrainConfig(**compose, init=str(plain)))
    with pytest.raises(NaturalL2SError, match="replaces the shared conditioning"):
        train(TrainConfig(**compose, init=f"{ltbs},{other}"))
    train(TrainConfig(**compose, init=f"{other},{ltbs}"))  # the acoustic model's own front end wins: fine


def test_figure_runs_draws_the_ltbs_plan(tmp_path):
    """The ltbs plan's one run (the vocoded speech's ESTOI and log-mel L1, the post-net's NLL, the log-F0 L1) draws."""
    import subprocess
    import sys

    folder = tmp_path / "runs" / "ltbs" / "synth"
    folder.mkdir(parents=True)
    val = {"score": 0.9, "estoi": 0.3, "flow/nll": 0.4, "pitch/l1": 0.08, "select": -0.3}
    with open(folder / "log.csv", "w", newline="") as f:
        csv.writer(f).writerows([[400, "train", json.dumps({"cpu_hours": 0.09})], [400, "val", json.dumps(val)]])
    repo = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, str(repo / "scripts" / "figure_runs.py"), "ltbs", "--work", str(tmp_path),
                          "--table", "--out", str(tmp_path / "l.png")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "| synth | 400 | 0.900 | 0.300 |" in res.stdout and (tmp_path / "l.png").stat().st_size > 0
