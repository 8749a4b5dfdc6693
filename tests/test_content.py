"""The content judge (naturall2s.content) and its loss: shapes, checkpoints, and text supervision that can fail."""
from __future__ import annotations

import pytest
import torch

from naturall2s import audio, losses
from naturall2s.checkpoints import load_model, save_model
from naturall2s.content import JudgeConfig, WordJudge, load_judge, spec_augment
from naturall2s.data import UNKNOWN_WORD
from naturall2s.errors import CheckpointError

TINY = JudgeConfig(dim=16, dilations=(1, 2), dropout=0.0)
T = 10  # video frames
SR, SPF = audio.SAMPLE_RATE, audio.SAMPLES_PER_VIDEO_FRAME


def two_word_clip() -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 640T) waveform: a 220 Hz tone for 5 frames then noise for 5; (1, T) labels: word 3, then word 7."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(5 * SPF) / SR
    wav = torch.cat([0.3 * torch.sin(2 * torch.pi * 220 * t), 0.1 * torch.randn(5 * SPF, generator=g)])[None]
    return wav, torch.tensor([[3] * 5 + [7] * 5])


def test_judge_maps_log_mel_frames_to_video_rate_word_logits():
    judge = WordJudge(TINY)
    out = judge(torch.randn(2, audio.N_MELS, 4 * T))
    assert out.shape == (2, T, TINY.n_words)
    # odd audio lengths: whole video frames only
    assert judge(torch.randn(1, audio.N_MELS, 4 * T + 3)).shape == (1, T, TINY.n_words)


def test_spec_augment_masks_but_keeps_shape_and_leaves_the_input_alone():
    torch.manual_seed(0)
    x = torch.randn(3, audio.N_MELS, 100)
    before = x.clone()
    y = spec_augment(x, max_gain=0.0)
    assert y.shape == x.shape and torch.equal(x, before)
    assert (y != x).any()  # some time or frequency band was masked


def test_judge_checkpoint_round_trip_and_refusals(tmp_path):
    judge = WordJudge(TINY).eval()
    path = save_model(judge, tmp_path / "judge.safetensors", info={"stage": "judge"})
    loaded = load_judge(path)
    mel = torch.randn(1, audio.N_MELS, 4 * T)
    assert torch.allclose(loaded(mel), judge(mel), atol=1e-2)  # fp16 storage
    assert loaded.config.dilations == TINY.dilations and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    with pytest.raises(CheckpointError, match="model config does not match"):  # a judge is not a speech model
        load_model(path)
    from naturall2s.model import LipToSpeech, ModelConfig

    speech = save_model(LipToSpeech(ModelConfig(variant="mel-gl", dim=32, n_layers=1, n_heads=2, head_hidden=32)),
                        tmp_path / "mel-gl.safetensors")
    with pytest.raises(CheckpointError, match="not a content judge"):
        load_judge(speech)


def test_content_loss_rewards_the_right_words_and_trains_the_speech_not_the_judge():
    """A judge fitted to one clip: its content loss is lower for that clip than for the clip with its halves
    swapped, and its gradient reaches the waveform but leaves the frozen judge untouched."""
    torch.manual_seed(0)
    wav, words = two_word_clip()
    judge = WordJudge(TINY)
    opt = torch.optim.Adam(judge.parameters(), lr=1e-2)
    for _ in range(60):
        loss = losses.content_loss(judge, wav, words, ignore_index=UNKNOWN_WORD)["content/ce"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    judge.eval().zero_grad(set_to_none=True)
    for p in judge.parameters():
        p.requires_grad_(False)
    right = losses.content_loss(judge, wav, words, ignore_index=UNKNOWN_WORD)["content/ce"]
    swapped = torch.cat([wav[:, 5 * SPF:], wav[:, : 5 * SPF]], dim=1)
    wrong = losses.content_loss(judge, swapped, words, ignore_index=UNKNOWN_WORD)["content/ce"]
    assert float(right) < 0.5 < float(wrong), (float(right), float(wrong))

    x = swapped.clone().requires_grad_(True)
    losses.content_loss(judge, x, words, ignore_index=UNKNOWN_WORD)["content/ce"].backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in judge.parameters())


def test_content_loss_ignores_unknown_and_padded_frames():
    torch.manual_seed(0)
    judge = WordJudge(TINY).eval()
    wav, words = two_word_clip()
    half = words.clone()
    half[:, 5:] = UNKNOWN_WORD
    a = losses.content_loss(judge, wav, half, ignore_index=UNKNOWN_WORD)["content/ce"]
    logits = judge(audio.log_mel(wav))[:, :5]
    expected = torch.nn.functional.cross_entropy(logits[0], words[0, :5])
    assert torch.allclose(a, expected, atol=1e-5)
    none = torch.full_like(words, UNKNOWN_WORD)
    assert float(losses.content_loss(judge, wav, none, ignore_index=UNKNOWN_WORD)["content/ce"].detach()) == 0.0
