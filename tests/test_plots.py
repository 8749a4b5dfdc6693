"""Studio figures build from small synthetic signals and share their axes across systems."""
from __future__ import annotations

import io

import numpy as np
import pytest

from naturall2s.studio import plots

SR = 16000


@pytest.fixture
def signals():
    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    wav = (0.5 * np.sin(2 * np.pi * 150 * t)).astype(np.float32)
    mel_a = rng.normal(-5, 1, (80, 100)).astype(np.float32)
    mel_b = rng.normal(-3, 1, (80, 100)).astype(np.float32)
    f0 = np.where(np.arange(100) % 20 < 12, 150.0, 0.0).astype(np.float32)
    ref_f0 = np.where(np.arange(100) % 20 < 12, 520.0, 0.0).astype(np.float32)  # above F0_MAX on purpose
    return wav, mel_a, mel_b, f0, ref_f0


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def test_shared_scale_covers_every_system(signals):
    _, mel_a, mel_b, f0, ref_f0 = signals
    s = plots.shared_scale(1.0, [mel_a, mel_b], [f0, ref_f0, None])
    assert s.mel_max == pytest.approx(max(mel_a.max(), mel_b.max()))
    assert s.mel_min == pytest.approx(s.mel_max - plots.MEL_DYNAMIC_RANGE)
    assert s.f0_max == pytest.approx(520.0 * plots.F0_HEADROOM)
    assert plots.shared_scale(1.0, [], [None]).f0_max == pytest.approx(plots.F0_MAX * plots.F0_HEADROOM)


def test_figures_use_the_shared_axes(signals):
    wav, mel_a, mel_b, f0, ref_f0 = signals
    scale = plots.shared_scale(1.2, [mel_a, mel_b], [f0, ref_f0])
    figs = [
        plots.waveform_figure(wav, SR, scale=scale, title="w"),
        plots.mel_figure(mel_a, scale=scale, title="a"),
        plots.mel_figure(mel_b, scale=scale, title="b"),
        plots.f0_figure(f0, scale=scale, reference_f0=ref_f0, title="f0"),
        plots.f0_figure(None, scale=scale),
    ]
    for fig in figs:
        (ax,) = fig.axes
        assert ax.get_xlim() == pytest.approx((0, 1.2))
        assert _png(fig)[:4] == b"\x89PNG"
    assert figs[0].axes[0].get_ylim() == (-1, 1)
    clims = {fig.axes[0].images[0].get_clim() for fig in figs[1:3]}
    assert clims == {(scale.mel_min, scale.mel_max)}
    f0_ax = figs[3].axes[0]
    assert f0_ax.get_ylim() == pytest.approx((0, scale.f0_max))
    labels = [line.get_label() for line in f0_ax.get_lines()]
    assert labels == ["reference", "predicted"]
    # unvoiced frames are gaps (NaN), not drops to 0 Hz
    y = f0_ax.get_lines()[1].get_ydata()
    assert np.isnan(y[f0 == 0]).all() and (y[f0 > 0] == 150).all()


def test_roi_strip(signals):
    roi = np.random.default_rng(1).integers(0, 255, (30, 48, 72), dtype=np.uint8)
    fig = plots.roi_strip_figure(roi, fps=25.0, n_frames=6)
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes][-1] == f"{29 / 25:.2f} s"
    assert _png(fig)[:4] == b"\x89PNG"
    assert len(plots.roi_strip_figure(roi[:2], fps=25.0).axes) == 2
