"""Matplotlib figures for the studio: waveform, log-mel spectrogram, F0 contour, mouth-ROI frame strip.

Every system of one request is drawn on the same axes (a :class:`PlotScale` made once per request by
:func:`shared_scale`): the same time span, the same mel colour range and the same F0 range, so columns can be
compared by eye. Figures are plain :class:`matplotlib.figure.Figure` objects (no pyplot state: safe in
Gradio's worker threads, freed with the last reference). For speed (every figure is drawn on each request) the
margins are fixed rather than laid out by matplotlib's constrained layout (half the drawing time), and waveforms are
drawn as their min/max envelope in ``WAVEFORM_BINS`` bins rather than sample by sample (a third of the time).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from naturall2s.audio import F0_MAX, HOP_LENGTH, SAMPLE_RATE

FIG_WIDTH = 3.6  # inches; one studio column
FIG_HEIGHT = 1.9
DPI = 100
F0_HEADROOM = 1.1  # F0 axis top = F0_HEADROOM * highest F0 drawn (at least F0_MAX)
MEL_DYNAMIC_RANGE = 9.0  # natural-log units below the loudest mel bin that still get colour
STRIP_FRAMES = 8
WAVEFORM_BINS = 2000  # envelope bins of a drawn waveform (more than the pixels of the widest plot)
MARGINS = {"left": 0.17, "right": 0.97, "bottom": 0.24, "top": 0.87}  # of a column figure
PREDICTED_COLOUR = "#1f77b4"
REFERENCE_COLOUR = "#d62728"


@dataclass(frozen=True)
class PlotScale:
    """Axes shared by every system of one request."""

    duration: float  # seconds: x axis of every time plot is [0, duration]
    mel_min: float  # colour limits of the log-mel images (natural log)
    mel_max: float
    f0_max: float  # Hz: top of the F0 axis


def shared_scale(duration: float, mels: list[np.ndarray], f0s: list[np.ndarray | None]) -> PlotScale:
    """One scale for a request: ``mels`` (80, F) log-mels and ``f0s`` (F,) Hz contours of every system (+ reference)."""
    tops = [float(np.max(m)) for m in mels if m is not None and np.size(m)]
    mel_max = max(tops) if tops else 0.0
    peaks = [float(np.max(f)) for f in f0s if f is not None and np.size(f)]
    f0_max = max([F0_MAX, *peaks]) * F0_HEADROOM
    return PlotScale(duration=float(duration), mel_min=mel_max - MEL_DYNAMIC_RANGE, mel_max=mel_max, f0_max=f0_max)


def _figure() -> tuple[Figure, object]:
    fig = Figure(figsize=(FIG_WIDTH, FIG_HEIGHT), dpi=DPI)
    fig.subplots_adjust(**MARGINS)
    return fig, fig.add_subplot()


def draw_waveform(ax, wav: np.ndarray, sample_rate: int, *, color: str, label: str | None = None,
                  alpha: float = 1.0) -> None:
    """Waveform (N,) as its min/max envelope over ``WAVEFORM_BINS`` equal bins (time in seconds)."""
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    per_bin = max(1, len(wav) // WAVEFORM_BINS)
    n = len(wav) // per_bin
    if n == 0:
        return
    bins = wav[: n * per_bin].reshape(n, per_bin)
    t = np.arange(n) * per_bin / sample_rate
    ax.fill_between(t, bins.min(axis=1), bins.max(axis=1), color=color, alpha=alpha, lw=0, label=label)


def _frame_times(n_frames: int) -> np.ndarray:
    """Start time (s) of each 100 Hz audio frame: (n_frames,)."""
    return np.arange(n_frames) * (HOP_LENGTH / SAMPLE_RATE)


def waveform_figure(wav: np.ndarray, sample_rate: int, *, scale: PlotScale, title: str = "") -> Figure:
    """Waveform (N,) float in [-1, 1] over [0, scale.duration] s."""
    fig, ax = _figure()
    draw_waveform(ax, wav, sample_rate, color=PREDICTED_COLOUR)
    ax.set_xlim(0, scale.duration)
    ax.set_ylim(-1, 1)
    ax.set_xlabel("time (s)")
    ax.set_title(title, fontsize=9)
    return fig


def mel_figure(mel: np.ndarray, *, scale: PlotScale, title: str = "") -> Figure:
    """Log-mel spectrogram (n_mels, F) at 100 Hz, colour range shared across systems."""
    fig, ax = _figure()
    mel = np.asarray(mel, dtype=np.float32)
    ax.imshow(
        mel,
        origin="lower",
        aspect="auto",
        interpolation="nearest",
        extent=(0, mel.shape[1] * HOP_LENGTH / SAMPLE_RATE, 0, mel.shape[0]),
        vmin=scale.mel_min,
        vmax=scale.mel_max,
        cmap="magma",
    )
    ax.set_xlim(0, scale.duration)
    ax.set_ylim(0, mel.shape[0])
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel bin")
    ax.set_title(title, fontsize=9)
    return fig


def voiced_line(f0: np.ndarray) -> np.ndarray:
    """(F,) Hz with 0 where unvoiced → NaN there, so the line breaks instead of dropping to 0."""
    f0 = np.asarray(f0, dtype=np.float32).copy()
    f0[f0 <= 0] = np.nan
    return f0


def f0_figure(
    f0: np.ndarray | None,
    *,
    scale: PlotScale,
    reference_f0: np.ndarray | None = None,
    title: str = "",
    label: str = "predicted",
) -> Figure:
    """F0 contour (F,) Hz at 100 Hz (0 = unvoiced), with the reference contour overlaid when given.

    ``label``: what the contour is ("predicted" by the model, or "tracked" from a waveform).
    """
    fig, ax = _figure()
    if reference_f0 is not None:
        ax.plot(_frame_times(len(reference_f0)), voiced_line(reference_f0), lw=1.0, color=REFERENCE_COLOUR,
                alpha=0.6, label="reference")
    if f0 is not None:
        ax.plot(_frame_times(len(f0)), voiced_line(f0), lw=1.2, color=PREDICTED_COLOUR, label=label)
    else:
        ax.text(0.5, 0.5, "no F0 output", ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xlim(0, scale.duration)
    ax.set_ylim(0, scale.f0_max)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("F0 (Hz)")
    ax.set_title(title, fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper right")
    return fig


def roi_strip_figure(roi: np.ndarray, *, fps: float, n_frames: int = STRIP_FRAMES) -> Figure:
    """``n_frames`` evenly spaced mouth crops from roi (T, H, W) uint8, each labelled with its time."""
    roi = np.asarray(roi)
    n = max(1, min(n_frames, len(roi)))
    idx = np.linspace(0, len(roi) - 1, n).round().astype(int)
    fig = Figure(figsize=(FIG_WIDTH * 2, FIG_WIDTH * 2 / n * roi.shape[1] / roi.shape[2] + 0.35), dpi=DPI)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.85, wspace=0.06)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, i in zip(axes, idx):
        ax.imshow(roi[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"{i / fps:.2f} s", fontsize=7)
        ax.set_axis_off()
    return fig


FOCUS_WIDTH = 13.0  # inches: the focus view spans the page (1400 px at 100 dpi, minus margins)
FOCUS_ROW_HEIGHT = 2.1
FOCUS_FONT = 11


def focus_figure(
    name: str,
    wav: np.ndarray,
    sample_rate: int,
    mel: np.ndarray,
    f0: np.ndarray | None,
    *,
    scale: PlotScale,
    reference_wav: np.ndarray | None = None,
    reference_mel: np.ndarray | None = None,
    reference_f0: np.ndarray | None = None,
    f0_label: str = "predicted",
) -> Figure:
    """One system at full page width, above the reference: waveforms overlaid, the system's log-mel (80, F), the
    reference's log-mel, and both F0 contours (F,) Hz; the same scale as the columns."""
    rows = 3 + (reference_mel is not None)
    fig = Figure(figsize=(FOCUS_WIDTH, FOCUS_ROW_HEIGHT * rows), dpi=DPI)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.35 / rows, top=1 - 0.15 / rows, hspace=0.28)
    axes = fig.subplots(rows, 1, sharex=True)
    ax = axes[0]
    if reference_wav is not None:
        draw_waveform(ax, reference_wav, SAMPLE_RATE, color=REFERENCE_COLOUR, alpha=0.5, label="reference")
    draw_waveform(ax, wav, sample_rate, color=PREDICTED_COLOUR, alpha=0.8, label=name)
    ax.set_ylim(-1, 1)
    ax.set_ylabel("waveform", fontsize=FOCUS_FONT)
    ax.legend(fontsize=FOCUS_FONT - 2, loc="upper right")
    mels = [(f"{name}: log-mel", mel)] + ([("reference: log-mel", reference_mel)] if reference_mel is not None else [])
    for ax, (title, m) in zip(axes[1:], mels):
        m = np.asarray(m, dtype=np.float32)
        ax.imshow(m, origin="lower", aspect="auto", interpolation="nearest",
                  extent=(0, m.shape[1] * HOP_LENGTH / SAMPLE_RATE, 0, m.shape[0]),
                  vmin=scale.mel_min, vmax=scale.mel_max, cmap="magma")
        ax.set_ylabel("mel bin", fontsize=FOCUS_FONT)
        ax.set_title(title, fontsize=FOCUS_FONT, loc="left")
    ax = axes[-1]
    if reference_f0 is not None:
        ax.plot(_frame_times(len(reference_f0)), voiced_line(reference_f0), lw=1.2, color=REFERENCE_COLOUR,
                alpha=0.7, label="reference (tracked)")
    if f0 is not None:
        ax.plot(_frame_times(len(f0)), voiced_line(f0), lw=1.6, color=PREDICTED_COLOUR, label=f"{name} ({f0_label})")
    ax.set_ylim(0, scale.f0_max)
    ax.set_ylabel("F0 (Hz)", fontsize=FOCUS_FONT)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=FOCUS_FONT - 2, loc="upper right")
    ax.set_xlim(0, scale.duration)
    ax.set_xlabel("time (s)", fontsize=FOCUS_FONT)
    for a in axes:
        a.tick_params(labelsize=FOCUS_FONT - 1)
    return fig
