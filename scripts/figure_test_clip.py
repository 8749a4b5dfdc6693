"""Figure for one GRID test clip: real vs. synthesized log-mel spectrograms and F0 contours.

    python scripts/figure_test_clip.py [--clip NAME] [--models naturall2s naturall2s-noddsp] [--out assets/test_clip.png]

The clip's mouth crop comes from the video (the same path as `synthesize`); its real audio is the reference. F0 is
measured the same way (audio.f0_voicing) on every signal; for models that predict F0, the prediction is drawn too.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    sys.path.insert(0, str(REPO))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from naturall2s import audio, load_model
    from naturall2s.grid import name_transcript
    from naturall2s.roi import extract_mouth
    from naturall2s.studio.plots import voiced_line

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data" / "grid")
    p.add_argument("--clip", default=None, help="test clip name (default: the first of the test split)")
    p.add_argument("--models", nargs="+", default=["naturall2s"])
    p.add_argument("--out", type=Path, default=REPO / "assets" / "test_clip.png")
    args = p.parse_args()

    name = args.clip or json.loads((args.data_root / "splits.json").read_text())["s1"]["test"][0]
    clip = extract_mouth(args.data_root / "s1" / f"{name}.mp4")
    real = audio.fit_length(clip.audio, clip.roi.shape[0] * audio.SAMPLES_PER_VIDEO_FRAME)
    rows = [("real", real, None)]
    for m in args.models:
        out = load_model(m).synthesize(clip)
        rows.append((m, out.wav, out.f0))

    import torch

    mels = [audio.log_mel(torch.from_numpy(w)).numpy() for _, w, _ in rows]
    vmin, vmax = min(float(np.percentile(m, 5)) for m in mels), max(float(m.max()) for m in mels)
    fig, axes = plt.subplots(len(rows) + 1, 1, figsize=(9, 2.3 * (len(rows) + 1)), constrained_layout=True)
    duration = len(real) / audio.SAMPLE_RATE
    for ax, (label, _, _), mel in zip(axes, rows, mels):
        ax.imshow(mel, origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap="magma",
                  extent=(0, duration, 0, mel.shape[0]))
        ax.set_ylabel("mel bin")
        ax.set_title(f"{label}: log-mel")
    ax = axes[-1]
    t = np.arange(mels[0].shape[1]) / 100.0
    for (label, wav, predicted), style in zip(rows, ("k-", "C0-", "C1-", "C2-")):
        f0, _ = audio.f0_voicing(wav)
        ax.plot(t[: len(f0)], voiced_line(f0), style, lw=1.5, label=f"{label} (measured)")
        if predicted is not None:
            ax.plot(t[: len(predicted)], voiced_line(predicted), style[:-1] + ":", lw=1.2, label=f"{label} (predicted)")
    ax.set_xlim(0, duration)
    ax.set_ylim(60, 300)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("F0 (Hz)")
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    fig.suptitle(f"GRID s1 test clip {name}: \u201c{name_transcript(name)}\u201d")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
