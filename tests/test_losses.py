"""Losses: keys and finiteness, zero at the optimum, masks that really exclude padding, weighting rules."""
from __future__ import annotations

import math

import pytest
import torch

from naturall2s import losses
from naturall2s.content import JudgeConfig, WordJudge

B, N = 2, 8000


def noise(seed=0, n=N):
    return torch.randn(B, n, generator=torch.Generator().manual_seed(seed)) * 0.1


def test_stft_and_mel_losses_zero_at_target_positive_elsewhere():
    x, y = noise(0), noise(1)
    same = {**losses.multi_resolution_stft_loss(x, x), **losses.mel_loss(x, x)}
    diff = {**losses.multi_resolution_stft_loss(x, y), **losses.mel_loss(x, y)}
    assert set(same) == {"stft/sc", "stft/mag", "mel/l1"}
    for k in same:
        assert same[k].item() == pytest.approx(0.0, abs=1e-5), k
        assert torch.isfinite(diff[k]) and diff[k] > 0.05, k


def test_waveform_losses_ignore_padding():
    """Sample and frame masks: differences confined to the padded tail must not count."""
    x = noise(0)
    y = x.clone()
    y[:, 6000:] = noise(5)[:, 6000:]  # differs only in the padded tail
    frame_mask = torch.arange(N // 160)[None].expand(B, -1) < 6000 // 160  # (B, 50) @ 100 Hz
    for mask in (frame_mask, losses.sample_mask(frame_mask, N)):
        out = {**losses.multi_resolution_stft_loss(x, y, mask=mask), **losses.mel_loss(x, y, mask=mask)}
        assert all(v.item() == pytest.approx(0.0, abs=1e-5) for v in out.values()), out
    unmasked = losses.multi_resolution_stft_loss(x, y)
    assert unmasked["stft/sc"] > 0.05


def test_stft_loss_gradient_is_finite_for_silence():
    pred = torch.zeros(B, N, requires_grad=True)
    sum(losses.multi_resolution_stft_loss(pred, noise(0)).values()).backward()
    assert torch.isfinite(pred.grad).all()


def test_f0_losses_count_voiced_valid_frames_only():
    f0 = torch.tensor([[100.0, 0.0, 200.0, 150.0], [120.0, 130.0, 0.0, 0.0]])
    voiced = f0 > 0
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    pred = torch.log(f0.clamp(min=1)) + 0.1
    pred = torch.where(voiced, pred, torch.full_like(pred, 99.0))  # garbage where unvoiced
    pred[0, 3] = 99.0  # garbage where padded
    logits = torch.where(voiced, 20.0, -20.0)
    out = losses.f0_losses(pred, logits, f0, voiced, mask=mask)
    assert out["f0/l1"].item() == pytest.approx(0.1, abs=1e-5)
    assert out["vuv/bce"].item() < 1e-6
    wrong = losses.f0_losses(pred, -logits, f0, voiced, mask=mask)["vuv/bce"]
    assert wrong.item() == pytest.approx(20.0, rel=1e-3)


def test_f0_loss_with_no_voiced_frame_is_zero_and_differentiable():
    pred = torch.zeros(1, 5, requires_grad=True)
    out = losses.f0_losses(pred, torch.zeros(1, 5), torch.zeros(1, 5), torch.zeros(1, 5, dtype=torch.bool))
    assert out["f0/l1"].item() == 0.0
    out["f0/l1"].backward()


def test_f0_cross_entropy_prefers_the_true_pitch_bin_and_ignores_unvoiced_frames():
    centres = torch.linspace(math.log(60.0), math.log(400.0), 120)
    f0 = torch.tensor([[100.0, 0.0, 200.0, 150.0]])
    voiced = f0 > 0
    true_bin = (centres[None, :, None] - torch.log(f0.clamp(min=1))[..., None, :]).abs().argmin(1)  # (1, 4)

    def peaked(bins):
        return 8.0 * torch.nn.functional.one_hot(bins, 120).float()

    def ce(logits, **kw):
        return losses.f0_losses(torch.zeros(1, 4), torch.zeros(1, 4), f0, voiced, f0_logits=logits,
                                bin_centres=centres, **kw)["f0/ce"]

    right, wrong = ce(peaked(true_bin)), ce(peaked((true_bin + 20) % 120))
    assert right.item() < wrong.item() - 2.0  # nats
    # an unvoiced frame's logits do not count (and its log(1 Hz) target, far below every bin, gives no NaN)
    logits = peaked(true_bin).requires_grad_(True)
    ce(logits).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0, 1].abs().sum() == 0
    assert ce(peaked(true_bin), mask=torch.tensor([[True, True, False, True]])).item() == pytest.approx(
        right.item(), rel=0.2)
    # no voiced frame: zero and differentiable
    unvoiced = torch.zeros(1, 4, dtype=torch.bool)
    none = losses.f0_losses(torch.zeros(1, 4), torch.zeros(1, 4), torch.zeros(1, 4), unvoiced, f0_logits=logits,
                            bin_centres=centres)["f0/ce"]
    assert none.item() == 0.0
    none.backward()
    assert "f0/ce" not in losses.f0_losses(torch.zeros(1, 4), torch.zeros(1, 4), f0, voiced)  # regression head


def test_loudness_loss_masked():
    pred = torch.tensor([[-30.0, -40.0, 0.0]])
    target = torch.tensor([[-32.0, -36.0, -90.0]])
    mask = torch.tensor([[True, True, False]])
    assert losses.loudness_loss(pred, target, mask=mask)["loud/l1"].item() == pytest.approx(3.0)


def test_ctc_loss_finite_and_lower_for_the_right_tokens():
    t, v = 12, 6
    tokens = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])  # padded with 0 beyond target_lengths
    target_lengths = torch.tensor([3, 2])
    input_lengths = torch.tensor([12, 9])
    path = torch.tensor([[0, 1, 1, 0, 2, 2, 0, 3, 3, 0, 0, 0], [4, 4, 0, 5, 5, 0, 0, 0, 0, 0, 0, 0]])
    good = torch.nn.functional.one_hot(path, v).float() * 10
    good_loss = losses.ctc_loss(good.log_softmax(-1), tokens, input_lengths, target_lengths)["ctc"]
    flat = torch.zeros(B, t, v, requires_grad=True)
    flat_loss = losses.ctc_loss(flat.log_softmax(-1), tokens, input_lengths, target_lengths)["ctc"]
    assert torch.isfinite(good_loss) and torch.isfinite(flat_loss)
    assert good_loss < 0.1 < flat_loss
    flat_loss.backward()
    assert torch.isfinite(flat.grad).all()


def test_adversarial_losses():
    ones, zeros = [torch.ones(B, 5), torch.ones(B, 3)], [torch.zeros(B, 5), torch.zeros(B, 3)]
    assert losses.generator_adv_loss(ones)["adv/gen"].item() == 0.0
    assert losses.generator_adv_loss(zeros)["adv/gen"].item() == pytest.approx(2.0)  # summed over 2
    assert losses.discriminator_loss(ones, zeros)["adv/disc"].item() == 0.0
    assert losses.discriminator_loss(zeros, ones)["adv/disc"].item() == pytest.approx(4.0)
    real = [[torch.ones(B, 4), torch.zeros(B, 2, 2)], [torch.ones(B, 3)]]
    fake = [[torch.ones(B, 4), torch.ones(B, 2, 2)], [torch.ones(B, 3) * 3]]
    assert losses.feature_matching_loss(real, real)["adv/feat"].item() == 0.0
    assert losses.feature_matching_loss(real, fake)["adv/feat"].item() == pytest.approx(3.0)
    with pytest.raises(ValueError):
        losses.feature_matching_loss(real, fake[:1])


def speech_like(seed=0, n=16000):
    """Harmonics of 120 Hz under a random syllable-rate envelope (the band envelopes (E)STOI correlates), (B, n)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 16000
    env = torch.nn.functional.interpolate(torch.rand(B, 1, 12, generator=g), size=n, mode="linear")[:, 0]
    carrier = sum(torch.sin(2 * math.pi * 120 * k * t) / k for k in range(1, 20))
    return 0.1 * env * carrier + 0.001 * torch.randn(B, n, generator=g)


def test_intelligibility_loss_is_minus_one_at_target_and_pulls_towards_it():
    x, y = speech_like(0), speech_like(1)
    assert losses.intelligibility_loss(x, x)["stoi/neg"].item() == pytest.approx(-1.0, abs=1e-3)
    other = losses.intelligibility_loss(y, x)["stoi/neg"]
    assert -0.9 < other.item() < 0.5  # another envelope: far from the optimum
    mix = (0.5 * x + 0.5 * y).requires_grad_(True)
    loss = losses.intelligibility_loss(mix, x)["stoi/neg"]
    loss.backward()
    assert torch.isfinite(mix.grad).all() and mix.grad.abs().sum() > 0
    # a small step against the gradient raises the (E)STOI towards the target
    with torch.no_grad():
        stepped = mix - 1e-2 * mix.grad / mix.grad.abs().max()
    assert losses.intelligibility_loss(stepped, x)["stoi/neg"] < loss


def test_intelligibility_loss_ignores_padding():
    x, y = speech_like(0), speech_like(1)
    mask = torch.ones(B, 16000, dtype=torch.bool)
    mask[:, 12000:] = False
    tail_differs = torch.cat([x[:, :12000], y[:, 12000:]], dim=1)
    assert losses.intelligibility_loss(tail_differs, x, mask=mask)["stoi/neg"].item() == pytest.approx(-1.0, abs=1e-3)


def test_weighted_sum_requires_every_weight():
    ls = {"stft/sc": torch.tensor(2.0), "ctc": torch.tensor(3.0), "mystery": torch.tensor(1.0)}
    with pytest.raises(KeyError, match="mystery"):
        losses.weighted_sum(ls, {"stft/sc": 1.0, "ctc": 1.0})
    total = losses.weighted_sum(ls, {"stft/sc": 0.5, "ctc": 2.0, "mystery": 0.0})
    assert total.item() == pytest.approx(7.0)


def test_default_lambdas_cover_every_loss_key():
    x, y = noise(0), noise(1)
    f = torch.rand(B, 50) * 200 + 80
    all_losses = {
        **losses.multi_resolution_stft_loss(x, y), **losses.mel_loss(x, y),
        **losses.f0_losses(torch.log(f), torch.zeros(B, 50), f, f > 150, f0_logits=torch.randn(B, 50, 30),
                           bin_centres=torch.linspace(math.log(60.0), math.log(400.0), 30)),
        **losses.loudness_loss(torch.zeros(B, 50), torch.ones(B, 50)),
        **losses.ctc_loss(torch.zeros(B, 10, 4).log_softmax(-1), torch.tensor([[1, 2], [3, 0]]),
                          torch.tensor([10, 10]), torch.tensor([2, 1])),
        **losses.generator_adv_loss([torch.rand(B, 3)]),
        **losses.feature_matching_loss([torch.rand(B, 3)], [torch.rand(B, 3)]),
        **losses.discriminator_loss([torch.rand(B, 3)], [torch.rand(B, 3)]),
        **losses.intelligibility_loss(speech_like(), speech_like(1)),
        **losses.content_loss(WordJudge(JudgeConfig(dim=8, dilations=(1,))), x,
                              torch.randint(0, 52, (B, x.shape[-1] // 640)), ignore_index=255),
    }
    assert all(torch.isfinite(v) and v.ndim == 0 for v in all_losses.values())
    total = losses.weighted_sum(all_losses, losses.DEFAULT_LAMBDAS)
    assert math.isfinite(total.item())


def test_constant_tensors_first_built_in_inference_mode_still_train():
    """The cached filterbanks and transforms (audio.tensor_cache) are built outside inference mode: a synthesis under
    torch.inference_mode first (the studio, streaming), then a training step in the same process (adapting a speaker
    in the studio) must not fail with "Inference tensors cannot be saved for backward"."""
    from naturall2s import audio, losses

    for fn in (audio._mel_transform, losses._mel_filters, losses._neg_stoi):
        fn.cache_clear()
    with torch.inference_mode():
        audio.log_mel(torch.randn(1, 16000))
        losses.mel_loss(torch.randn(1, 16000), torch.randn(1, 16000))
    x = torch.randn(1, 16000, requires_grad=True)
    (audio.log_mel(x).sum() + losses.mel_loss(x, torch.randn(1, 16000))["mel/l1"]).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
