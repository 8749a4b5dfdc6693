"""The assembled model: every variant's shapes, gradients through the DDSP prior, checkpoints round trip."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from naturall2s import audio, losses
from naturall2s.checkpoints import load_model, read_metadata, save_model
from naturall2s.data import UNKNOWN_WORD
from naturall2s.errors import CheckpointError
from naturall2s.model import VARIANTS, ModelConfig, build
from naturall2s.roi import LIP_DIM, ROI_HEIGHT, ROI_WIDTH, MouthClip

TINY = dict(dim=32, n_layers=1, n_heads=2, head_hidden=32, gen_dim=32, gen_intermediate_dim=64, gen_layers=1,
            n_harmonics=16, dropout=0.0)
T = 10  # video frames → 40 audio frames, 6400 samples


def inputs(batch=2, frames=T, seed=0):
    g = torch.Generator().manual_seed(seed)
    roi = torch.randint(0, 256, (batch, frames, ROI_HEIGHT, ROI_WIDTH), generator=g, dtype=torch.uint8)
    lips = torch.randn(batch, frames, LIP_DIM, generator=g)
    return roi, lips


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_output_shapes(variant):
    torch.manual_seed(0)
    model = build(variant, **TINY)
    roi, lips = inputs()
    out = model(roi, lips)
    F, N = 4 * T, T * audio.SAMPLES_PER_VIDEO_FRAME
    assert out["ctc_log_probs"].shape == (2, T, model.config.vocab_size)
    if variant in ("mel-gl", "mel-vocoder", "units"):
        assert out["mel"].shape == (2, audio.N_MELS, F)
    if variant == "units":
        assert out["unit_logits"].shape == (2, F, model.config.n_units) and out["units"].shape == (2, F)
    if variant != "mel-gl":
        assert out["wav"].shape == (2, N)
        assert torch.isfinite(out["wav"]).all()
    if variant.startswith("naturall2s") or variant == "ltbs":
        assert out["log_f0"].shape == out["voicing_logit"].shape == out["loudness"].shape == (2, F)
    assert ("coarse" in out) == (variant == "naturall2s")
    if variant == "naturall2s":
        assert out["coarse"].shape == (2, N)


def test_word_head_conditions_the_speech_heads():
    """The frame-level word posteriors reach the speech path through a (zero-initialised) word embedding."""
    torch.manual_seed(0)
    model = build("naturall2s", word_head=True, **TINY).eval()
    roi, lips = inputs()
    torch.manual_seed(1)  # the same noise excitation for both runs
    out = model(roi, lips)
    assert out["word_logits"].shape == (2, T, model.config.vocab_size)
    plain = build("naturall2s", **TINY).eval()
    plain.load_state_dict(model.state_dict(), strict=False)
    torch.manual_seed(1)
    torch.testing.assert_close(plain(roi, lips)["wav"], out["wav"])  # zero embedding: the plain model
    with torch.no_grad():
        model.word_embed.weight.normal_()
    assert not torch.allclose(model(roi, lips)["wav"], out["wav"])
    loss = losses.word_ce_loss(model(roi, lips)["word_logits"], torch.randint(0, 52, (2, T)),
                              ignore_index=UNKNOWN_WORD)["word/ce"]
    loss.backward()
    assert model.word_head.proj.weight.grad.abs().sum() > 0 and model.frontend.proj.weight.grad.abs().sum() > 0


def test_gradients_reach_f0_predictor_through_the_synthesizer():
    """A waveform-only loss (no F0 loss) must move the F0 head: the DDSP synth is differentiable in F0."""
    torch.manual_seed(0)
    model = build("naturall2s", **TINY)
    roi, lips = inputs()
    out = model(roi, lips)
    target = torch.randn_like(out["coarse"]) * 0.1
    loss = sum(losses.multi_resolution_stft_loss(out["coarse"], target).values())
    loss.backward()
    grads = [p.grad for p in model.f0_head.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0


def test_noddsp_has_no_synthesizer():
    model = build("naturall2s-noddsp", **TINY)
    assert not hasattr(model, "synth") and not hasattr(model, "control_head")


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="unknown variant"):
        ModelConfig(variant="wavenet")
    with pytest.raises(ValueError, match="f0_bins"):
        ModelConfig(f0_bins=1)


def test_shipped_regression_f0_head_keeps_its_output_layout():
    """Old checkpoints (regression F0 head) load into the current layout: channel 0 is log F0, 1 voicing, 2
    loudness. A model trained so must still give F0 in the speaker's range and voicing where it speaks."""
    model = build("naturall2s", **TINY)
    assert model.config.f0_bins == 0 and model.f0_head.net.out[-1].out_channels == 3
    with torch.no_grad():
        last = model.f0_head.net.out[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 5.0, 1.0]))  # sigmoid(0): the middle of the log-F0 range
    out = model(*inputs(batch=1))
    assert torch.allclose(out["log_f0"], torch.tensor(0.5 * (math.log(60.0) + math.log(400.0))))
    assert (out["voicing_logit"] == 5.0).all() and torch.allclose(out["loudness"], torch.tensor(-30.0))


def test_units_vocoder_starts_as_the_plain_vocoder_and_reads_units():
    """The unit input's projection starts at zero: the units variant's vocoder, filled with a mel-vocoder's tensors
    (all of them fit), gives the mel-vocoder's speech; once trained, the units change it. Hard units and one-hot
    weights over them are the same input."""
    torch.manual_seed(0)
    cascade = build("mel-vocoder", **TINY).eval()
    units = build("units", **TINY, n_units=8).eval()
    missing, unexpected = units.load_state_dict(cascade.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("unit_", "vocoder.unit_")) for k in missing)
    roi, lips = inputs()
    a, b = cascade(roi, lips), units(roi, lips)
    torch.testing.assert_close(a["wav"], b["wav"])
    with torch.no_grad():
        units.vocoder.unit_proj.weight.normal_()
    mel = a["mel"]
    hard = torch.randint(0, 8, (2, mel.shape[-1]))
    with torch.no_grad():
        w_hard = units(mel=mel, units=hard)["wav"]
        w_soft = units(mel=mel, units=torch.nn.functional.one_hot(hard, 8).float())["wav"]
    torch.testing.assert_close(w_hard, w_soft)
    assert not torch.allclose(w_hard, a["wav"])
    with pytest.raises(ValueError, match="n_units=8 but got units=None"):
        units.vocoder(mel.transpose(1, 2))
    with pytest.raises(ValueError, match="n_units belongs to the units variant"):
        ModelConfig(variant="mel-vocoder", n_units=8)
    assert ModelConfig(variant="units").n_units == 200  # the default codebook size
    # the ablation (scripts/units_ablation.py): every unit equally likely, i.e. the mean unit embedding
    with torch.no_grad():
        out = units(roi, lips, unit_input=False)
        mean_unit = units(mel=out["mel"], units=torch.full((2, mel.shape[-1], 8), 1 / 8))["wav"]
    torch.testing.assert_close(out["wav"], mean_unit)
    assert not torch.allclose(out["wav"], units(roi, lips)["wav"])


def test_unit_input_is_the_units_variants_option():
    from naturall2s.errors import NaturalL2SError

    roi, lips = inputs(batch=1)
    clip = MouthClip(roi=roi[0].numpy(), lips=lips[0].numpy(), audio=None, fps=25.0,
                     detected=np.ones(roi.shape[1], bool), source="")
    with pytest.raises(NaturalL2SError, match="units variant's ablation"):
        build("mel-vocoder", **TINY).synthesize(clip, unit_input=False)
    with pytest.raises(NaturalL2SError, match="units variant's ablation"):
        build("units", **TINY, n_units=8).synthesize(clip, unit_input="no")
    assert build("units", **TINY, n_units=8).synthesize(clip, unit_input=False).wav.size > 0


@pytest.mark.parametrize("variant", ["naturall2s", "mel-vocoder", "units"])
def test_save_load_gives_identical_outputs(tmp_path, variant):
    torch.manual_seed(0)
    model = build(variant, **TINY).eval()
    roi, lips = inputs(batch=1)
    path = save_model(model, tmp_path / "m.safetensors", dtype=torch.float32, info={"step": 7})
    loaded = load_model(path)
    with torch.no_grad():
        a, b = model(roi, lips), loaded(roi, lips)
    key = "wav" if "wav" in a else "mel"
    torch.manual_seed(1)  # noise in the DDSP synth: compare deterministic parts, then the waveform with a fixed seed
    for k in ("ctc_log_probs", "log_f0", "mel", "unit_logits"):
        if k in a:
            assert torch.equal(a[k], b[k]), k
    assert read_metadata(path)["info"]["step"] == 7
    assert loaded.config == model.config
    # fp16 shipping: same architecture, close outputs
    half = load_model(save_model(model, tmp_path / "h.safetensors"))
    with torch.no_grad():
        c = half(roi, lips)
    assert (tmp_path / "h.safetensors").stat().st_size < path.stat().st_size * 0.6
    assert torch.allclose(a["ctc_log_probs"], c["ctc_log_probs"], atol=5e-2)
    assert a[key].shape == c[key].shape


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no model named"):
        load_model("no-such-model")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError):
        load_model(bad)
    # weights of one architecture under another's config → mismatch
    model = build("naturall2s", **TINY)
    path = save_model(model, tmp_path / "m.safetensors")
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    meta = {"format": "naturall2s/1", "config": __import__("json").dumps({**model.config.to_dict(), "dim": 48}),
            "info": "{}"}
    save_file(state, str(tmp_path / "mismatch.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(tmp_path / "mismatch.safetensors")


@pytest.mark.parametrize("variant", VARIANTS)
def test_synthesize_a_mouth_clip(variant):
    torch.manual_seed(0)
    model = build(variant, **TINY)
    roi, lips = inputs(batch=1)
    clip = MouthClip(roi=roi[0].numpy(), lips=lips[0].numpy(), audio=None, fps=25.0,
                     detected=np.ones(T, bool), source="synthetic")
    result = model.synthesize(clip)
    assert result.sample_rate == audio.SAMPLE_RATE
    assert result.wav.dtype == np.float32 and result.wav.shape == (T * audio.SAMPLES_PER_VIDEO_FRAME,)
    assert np.abs(result.wav).max() <= 1.0
    assert result.mel.shape[0] == audio.N_MELS
    assert isinstance(result.text, str) and result.seconds > 0
    assert (result.f0 is not None) == (variant.startswith("naturall2s") or variant == "ltbs")  # predicted pitch
    assert (result.coarse is not None) == (variant == "naturall2s")
