"""How much the units variant's speech units say about what is spoken: k-means codebooks fitted on the training split
of a prepared cache, scored on another split's frames against the GRID word labels.

    python scripts/unit_purity.py --cache ../naturall2s-work/cache/grid --units 100 200 [--raw] [--split val]

Prints, per codebook: the fit's wall time, ``purity`` (share of frames whose word is their unit's most frequent
word), ``pnmi`` (mutual information between unit and word over the word entropy: HuBERT's PNMI with words for
phones) and the perplexity of the unit usage (units in effective use). ``--raw`` also fits on unstandardised MFCCs
(HuBERT's recipe as published); every line uses the seed of ``naturall2s.units.KMEANS_SEED``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from naturall2s.data import AUDIO_FRAMES_PER_VIDEO_FRAME, UNKNOWN_WORD, CachedGrid  # noqa: E402
from naturall2s.grid import GRID_VOCAB  # noqa: E402
from naturall2s.units import fit_codebook, purity  # noqa: E402


def frames_and_words(ds: CachedGrid) -> tuple[list[torch.Tensor], torch.Tensor]:
    """[(n_mels, F)] log-mels and the (ΣF,) word label of every 100 Hz frame (the video frame's label, 4 times)."""
    mels, words = [], []
    for rec in ds.records:
        mel = torch.from_numpy(rec["mel"].astype("float32"))
        mels.append(mel)
        w = torch.from_numpy(rec["words"].astype("int64")).repeat_interleave(AUDIO_FRAMES_PER_VIDEO_FRAME)
        words.append(w[: mel.shape[1]])
    return mels, torch.cat(words)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", required=True)
    ap.add_argument("--units", type=int, nargs="+", default=[100, 200])
    ap.add_argument("--split", default="val", help="the split whose frames are scored (the fit uses train)")
    ap.add_argument("--raw", action="store_true", help="also fit on unstandardised MFCCs")
    args = ap.parse_args(argv)
    train_mels, _ = frames_and_words(CachedGrid(args.cache, "train"))
    mels, words = frames_and_words(CachedGrid(args.cache, args.split))
    labelled = words != UNKNOWN_WORD
    print(f"fit on {sum(m.shape[1] for m in train_mels)} train frames; scored on {int(labelled.sum())} labelled "
          f"{args.split} frames against {len(GRID_VOCAB) + 1} labels (51 words + silence)")
    print("| features | units | fit s | purity | pnmi | perplexity |\n|---|---|---|---|---|---|")
    for standardize in (True, False) if args.raw else (True,):
        for k in args.units:
            t0 = time.perf_counter()
            book = fit_codebook(train_mels, k, standardize=standardize)
            seconds = time.perf_counter() - t0
            units = torch.cat([book.units(m) for m in mels])
            s = purity(units[labelled], words[labelled], k, len(GRID_VOCAB) + 1)
            name = "MFCC+Δ+ΔΔ, standardised" if standardize else "MFCC+Δ+ΔΔ, raw"
            print(f"| {name} | {k} | {seconds:.1f} | {s['purity']:.3f} | {s['pnmi']:.3f} | {s['perplexity']:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
