"""What do the metrics give speech that was *not* predicted from video? The real speech of a split scored as is,
re-synthesised by WORLD (pyworld: Harvest F0, CheapTrick envelope, D4C aperiodicity) with its own F0, with that F0
off by a smooth random error of 170 or 340 cents RMS (the size of the shipped models' F0 errors), and with a
monotone F0 (the clip's median); with ``--vocoder``, also the cascade's neural vocoder on the real log-mel (copy
synthesis). STOI and ESTOI (pystoi) against the real audio, WER with the evaluation's recogniser (pocketsphinx + the
GRID grammar) against the transcript; mean ± 95% Student-t interval over clips. Bounds for the results table:
how far vocoding alone and F0 errors alone move each metric.

    python scripts/resynthesis_bounds.py --cache cache/grid --split test [--vocoder mel-vocoder] [--limit N]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from naturall2s import audio, load_model, metrics  # noqa: E402
from naturall2s.asr import get_asr  # noqa: E402
from naturall2s.data import CachedGrid  # noqa: E402

F0_ERRORS_CENTS = (170, 340)
SMOOTH_FRAMES = 10  # the F0 error is white noise averaged over 100 ms (unit RMS), scaled to the cents above


def world_variants(wav: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """(N,) float speech -> {name: (N,) float32 WORLD resynthesis} for the F0 conditions of the module docstring."""
    import pyworld

    x = wav.astype(np.float64)
    period = 1000.0 * audio.HOP_LENGTH / audio.SAMPLE_RATE
    f0, t = pyworld.harvest(x, audio.SAMPLE_RATE, f0_floor=audio.F0_MIN, f0_ceil=audio.F0_MAX, frame_period=period)
    sp = pyworld.cheaptrick(x, f0, t, audio.SAMPLE_RATE)
    ap = pyworld.d4c(x, f0, t, audio.SAMPLE_RATE)
    voiced = f0 > 0
    error = np.convolve(rng.standard_normal(len(f0)), np.ones(SMOOTH_FRAMES) / np.sqrt(SMOOTH_FRAMES), mode="same")
    tracks = {"WORLD, own F0": f0}
    tracks |= {f"WORLD, F0 off {c} ¢": f0 * 2 ** (c * error / 1200) for c in F0_ERRORS_CENTS}
    tracks["WORLD, monotone F0"] = np.where(voiced, np.median(f0[voiced]) if voiced.any() else 0.0, 0.0)
    return {name: pyworld.synthesize(np.ascontiguousarray(track), sp, ap, audio.SAMPLE_RATE, frame_period=period)
            [: len(x)].astype(np.float32) for name, track in tracks.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", required=True, help="prepared cache (python -m naturall2s prepare)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--vocoder", default="", help="a mel-vocoder model name or path: also copy-synthesise real mels")
    ap.add_argument("--limit", type=int, default=0, help="only the first N clips (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    clips = CachedGrid(args.cache, args.split)
    n = min(len(clips), args.limit) if args.limit else len(clips)
    asr = get_asr("auto", grammar="grid")
    vocoder = load_model(args.vocoder) if args.vocoder else None
    if vocoder is not None and vocoder.config.variant != "mel-vocoder":
        raise SystemExit(f"{args.vocoder}: variant {vocoder.config.variant} has no vocoder on mels")
    rng = np.random.default_rng(args.seed)
    scores: dict[str, dict[str, list[float]]] = {}
    for i in tqdm(range(n), desc=f"resynthesis bounds ({args.split})"):
        clip = clips[i]
        real = clip["audio"].numpy()
        outputs = {"real speech": real, **world_variants(real, rng)}
        if vocoder is not None:
            with torch.inference_mode():
                outputs["vocoder on the real mel"] = vocoder(mel=clip["mel"][None])["wav"][0].clamp(-1, 1).numpy()
        for name, wav in outputs.items():
            row = scores.setdefault(name, {"STOI": [], "ESTOI": [], "WER": []})
            row["STOI"].append(metrics.stoi(real, wav))
            row["ESTOI"].append(metrics.estoi(real, wav))
            row["WER"].append(metrics.wer(clip["text"], asr.transcribe(wav, audio.SAMPLE_RATE)))
    print(f"\n{args.split}, {n} clips; WER by {asr.name}\n")
    print("| speech | STOI | ESTOI | WER |\n|---|---|---|---|")
    for name, row in scores.items():
        cells = []
        for values in row.values():
            ci = metrics.mean_ci(values)
            cells.append(f"{ci['mean']:.3f} ± {ci['ci95']:.3f}" if ci["n"] > 1 else f"{ci['mean']:.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
