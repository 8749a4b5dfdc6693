"""The lipvoicer variant's flow matching (naturall2s/flow.py) and sampling options: the sampler, classifier guidance
toward the word head's reading, determinism, and clear errors for bad options."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from naturall2s import audio
from naturall2s.errors import NaturalL2SError
from naturall2s.flow import FlowDenoiser, flow_targets, masked_mse, sample, word_log_prob
from naturall2s.model import ModelConfig, build
from naturall2s.roi import LIP_DIM, ROI_HEIGHT, ROI_WIDTH, MouthClip

TINY = dict(dim=32, n_layers=1, n_heads=2, head_hidden=32, gen_dim=32, gen_intermediate_dim=64, gen_layers=1,
            dropout=0.0, flow_dim=32, flow_intermediate_dim=64, flow_layers=2, sampling_steps=4,
            judge={"dim": 32, "dilations": [1, 2]})
T = 10


def clip(seed: int = 0, frames: int = T) -> MouthClip:
    g = torch.Generator().manual_seed(seed)
    roi = torch.randint(0, 256, (frames, ROI_HEIGHT, ROI_WIDTH), generator=g, dtype=torch.uint8).numpy()
    return MouthClip(roi=roi, lips=torch.randn(frames, LIP_DIM, generator=g).numpy(), audio=None, fps=25.0,
                     detected=np.ones(frames, bool), source="synthetic")


def tiny_model():
    torch.manual_seed(0)
    return build("lipvoicer", **TINY).eval()


def test_flow_targets_lie_on_the_straight_path_from_noise_to_data():
    x1 = torch.randn(3, 8, 20)
    x_t, t, v = flow_targets(x1, generator=torch.Generator().manual_seed(1))
    x0 = x1 - v
    torch.testing.assert_close(x_t, t[:, None, None] * x1 + (1 - t[:, None, None]) * x0)
    assert ((0 <= t) & (t < 1)).all()
    mask = torch.ones(3, 20, dtype=torch.bool)
    mask[0, 10:] = False
    pred = v.clone()
    pred[0, :, 10:] += 100.0  # errors in padding do not count
    assert float(masked_mse(pred, v, mask)) == 0.0


def test_sampler_follows_the_velocity_and_guidance_climbs_the_log_probability():
    """A denoiser whose velocity points at a fixed mel reaches it in one Euler step; a guiding log-probability (here
    -|x - goal|^2) pulls the samples toward its own goal, more with a larger scale; the result is a function of the
    noise alone."""
    class Toward(torch.nn.Module):  # gain 1: the exact velocity of the straight path toward `target`
        def __init__(self, target, gain=1.0):
            super().__init__()
            self.target, self.gain = target, gain

        def forward(self, x, t, cond_h):
            return self.gain * (self.target - x) / (1 - t[:, None, None]).clamp(min=1e-3)

    target, goal, cond = torch.zeros(1, 4, 6), torch.ones(1, 4, 6), torch.zeros(1)
    noise = torch.randn(1, 4, 6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sample(Toward(target), cond, noise, steps=1), target)
    torch.testing.assert_close(sample(Toward(target), cond, noise, steps=5), target)
    net = Toward(target, gain=0.5)  # an imperfect denoiser: its clean estimate still depends on x_t

    def log_prob(x):
        return -((x - goal) ** 2).flatten(1).sum(1)

    def distance(x):
        return float((x - goal).norm())

    plain = sample(net, cond, noise, steps=5)
    weak = sample(net, cond, noise, steps=5, guidance=0.2, log_prob=log_prob)
    strong = sample(net, cond, noise, steps=5, guidance=0.8, log_prob=log_prob)
    assert distance(strong) < distance(weak) < distance(plain)
    torch.testing.assert_close(sample(net, cond, noise, steps=5, guidance=0.8, log_prob=log_prob), strong)
    with torch.inference_mode():  # as synthesize and the live stream call it
        torch.testing.assert_close(sample(net, cond, noise, steps=5, guidance=0.8, log_prob=log_prob), strong)
    with pytest.raises(ValueError, match="steps must be at least 1"):
        sample(net, cond, noise, steps=0)


def test_denoiser_shapes_and_time_conditioning():
    net = FlowDenoiser(n_mels=80, cond_dim=32, dim=16, intermediate_dim=32, n_layers=3)
    x, cond = torch.randn(2, 80, 40), torch.randn(2, 40, 32)
    for p in net.parameters():  # the time modulation starts at zero: perturb it to see it
        torch.nn.init.normal_(p, std=0.1)
    h = net.condition(cond)
    assert h.shape == (2, 16, 40)
    v0, v1 = net(x, torch.zeros(2), h), net(x, torch.full((2,), 0.9), h)
    assert v0.shape == (2, 80, 40) and not torch.allclose(v0, v1)


def test_guidance_moves_the_judges_log_probability_of_the_read_words_up():
    """On an untrained tiny model, the content judge's log-probability of the word head's reading in the sampled mel
    rises with the guidance scale; guidance 0 and > 0 give different waveforms, each the same on every call."""
    model = tiny_model()
    mouth = clip()
    results = {g: model.synthesize(mouth, guidance=g) for g in (0.0, 0.3, 1.0)}
    lp = {g: r.extras["judge_log_prob"] for g, r in results.items()}
    assert lp[0.0] < lp[0.3] < lp[1.0], lp
    assert not np.array_equal(results[0.0].wav, results[1.0].wav)
    np.testing.assert_array_equal(model.synthesize(mouth, guidance=1.0).wav, results[1.0].wav)
    # the same number straight from the judge on the returned mel (mean per video frame)
    words = torch.as_tensor(results[1.0].extras["words"])[None]
    direct = word_log_prob(model.judge, torch.as_tensor(results[1.0].mel)[None], words) / T
    assert math.isclose(float(direct[0]), lp[1.0], rel_tol=1e-4)


def test_synthesize_length_defaults_and_determinism():
    model = tiny_model()
    out = model.synthesize(clip())
    assert out.wav.shape == (T * audio.SAMPLES_PER_VIDEO_FRAME,) and out.mel.shape == (audio.N_MELS, 4 * T)
    assert out.extras["steps"] == 4 and out.extras["guidance"] == 0.5  # the config's defaults
    assert out.extras["words"].shape == (T,)
    before = torch.get_rng_state()
    again = model.synthesize(clip())
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is left alone
    np.testing.assert_array_equal(out.wav, again.wav)
    other = model.synthesize(clip(), steps=2)
    assert other.extras["steps"] == 2 and not np.array_equal(out.wav, other.wav)


@pytest.mark.parametrize("kwargs,message", [
    ({"steps": 0}, "sampling steps must be a whole number of at least 1, got 0"),
    ({"steps": 2.5}, "sampling steps must be a whole number of at least 1, got 2.5"),
    ({"steps": True}, "sampling steps must be a whole number"),
    ({"guidance": -0.1}, "guidance scale must be a finite number of at least 0, got -0.1"),
    ({"guidance": float("nan")}, "guidance scale must be a finite number of at least 0"),
    ({"guidance": "1"}, "guidance scale must be a finite number"),
])
def test_bad_sampling_options_are_clear_errors(kwargs, message):
    with pytest.raises(NaturalL2SError, match=message):
        tiny_model().synthesize(clip(), **kwargs)


def test_sampling_options_belong_to_the_sampling_variant_and_its_config():
    plain = build("mel-vocoder", dim=32, n_layers=1, n_heads=2, head_hidden=32, gen_dim=32, gen_intermediate_dim=64,
                  gen_layers=1)
    with pytest.raises(NaturalL2SError, match="a mel-vocoder model has none"):
        plain.synthesize(clip(), steps=4)
    with pytest.raises(NaturalL2SError, match="a mel-vocoder model has none"):
        plain.synthesize(clip(), guidance=0.0)
    with pytest.raises(ValueError, match="word_head must be true"):
        ModelConfig(variant="lipvoicer", word_head=False)
    with pytest.raises(ValueError, match="belongs to the lipvoicer variant"):
        ModelConfig(variant="mel-gl", judge={"dim": 8})
    with pytest.raises(ValueError, match="the config's sampling steps"):
        ModelConfig(variant="lipvoicer", sampling_steps=0)
    assert ModelConfig(variant="lipvoicer").word_head and not ModelConfig(variant="mel-gl").word_head
    # the judge's architecture is kept whole in the config (what the checkpoint stores and loads back)
    cfg = ModelConfig(variant="lipvoicer", judge={"dim": 16})
    assert cfg.judge["dim"] == 16 and cfg.judge["dilations"] == [1, 2, 4, 8, 1, 2]
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
