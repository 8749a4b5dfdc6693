"""Mean F0 of each model's speech against the real speaker's, on the clips of a split: does a model speak in the
voice (pitch) of the person on screen? Used for the one-model-several-voices check of ``adapt --keep-base``.

    python scripts/mean_f0.py --data-root ../shared/data/grid --cache CACHE --split test [--limit N] MODEL...

Per clip, the mean F0 (Hz, pyworld, voiced frames) of the real audio and of each model's output (torch reseeded per
synthesis, as in the evaluation); prints per system the mean over clips ± a 95% t-interval, and each model's paired
difference from the real speaker in cents.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def mean_f0(wav: np.ndarray) -> float:
    """Mean F0 (Hz) over the voiced frames of (N,) float32 audio at 16 kHz; nan when nothing is voiced."""
    from naturall2s.audio import f0_voicing

    f0, voiced = f0_voicing(np.asarray(wav, np.float32))
    return float(f0[voiced].mean()) if voiced.any() else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model names or .safetensors paths")
    parser.add_argument("--data-root", required=True, help="root with splits.json (and <speaker>/<name>.mp4)")
    parser.add_argument("--cache", default=None, help="prepared cache (else the videos are read)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()

    import torch

    import naturall2s
    from naturall2s import audio
    from naturall2s.evaluate import SEED, _cached_record, _mouth_clip, _reference_audio, split_clips
    from naturall2s.metrics import mean_ci

    models = [naturall2s.load_model(m) for m in args.models]
    for m, arg in zip(models, args.models):
        m.name = Path(arg).stem
    cache = Path(args.cache) if args.cache else None
    clips = split_clips(Path(args.data_root), args.split, limit=args.limit)
    detector = None
    if cache is None:
        from naturall2s.landmarks import get_detector

        detector = get_detector("auto")
    rows: dict[str, list[float]] = {"real": [], **{m.name: [] for m in models}}
    for clip in clips:
        cached = _cached_record(cache, clip)
        mouth = _mouth_clip(clip, cached, detector)
        rows["real"].append(mean_f0(_reference_audio(clip, cached, mouth)))
        for m in models:
            torch.manual_seed(SEED)
            out = m.synthesize(mouth)
            rows[m.name].append(mean_f0(audio.resample(out.wav, out.sample_rate, audio.SAMPLE_RATE)))
    real = np.array(rows["real"])
    print(f"mean F0 on {len(clips)} clips of {args.data_root} `{args.split}` (Hz, mean ± 95% t-interval over clips)")
    print("| system | mean F0 Hz | vs real, cents (paired) |\n|---|---|---|")
    for name, values in rows.items():
        v = mean_ci(values)
        cell = f"{v['mean']:.1f} ± {v['ci95']:.1f}"
        diff = "–" if name == "real" else (lambda d: f"{d['mean']:+.0f} ± {d['ci95']:.0f}")(
            mean_ci(list(1200 * np.log2(np.array(values) / real))))
        print(f"| {name} | {cell} | {diff} |")


if __name__ == "__main__":
    main()
