"""Synthesis real-time factor and peak memory of each variant on this machine (model only, no face landmarks).

    python benchmarks/bench_synthesis.py [--seconds 3] [--repeats 7] [--threads 2] [--variants ...]

Each variant runs in a fresh subprocess so its peak resident memory (ru_maxrss) is its own. The model is the shipped
checkpoint when present (else an untrained model of the default architecture: the same cost). The input is a
synthetic mouth clip of the given length; RTF = compute seconds / audio seconds. Prints medians and the ratio of
each variant's RTF to naturall2s's.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(variant: str, seconds: float, repeats: int, threads: int) -> dict:
    import resource
    import time

    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from naturall2s import available_models, load_model
    from naturall2s.model import build
    from naturall2s.roi import LIP_DIM, ROI_HEIGHT, ROI_WIDTH, MouthClip

    shipped = variant in available_models()
    model = load_model(variant) if shipped else build(variant).eval()
    t = int(round(seconds * 25))
    rng = np.random.default_rng(0)
    clip = MouthClip(roi=rng.integers(0, 256, (t, ROI_HEIGHT, ROI_WIDTH), dtype=np.uint8),
                     lips=rng.standard_normal((t, LIP_DIM)).astype(np.float32), audio=None, fps=25.0,
                     detected=np.ones(t, bool), source="synthetic")
    model.synthesize(clip)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = model.synthesize(clip)
        times.append(time.perf_counter() - start)
    audio_s = len(out.wav) / out.sample_rate
    return {
        "variant": variant,
        "shipped": shipped,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "median_s": statistics.median(times),
        "rtf": statistics.median(times) / audio_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    from naturall2s.model import VARIANTS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variants", nargs="*", default=list(VARIANTS))
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.seconds, args.repeats, args.threads)))
        return
    rows = []
    for v in args.variants:
        cmd = [sys.executable, __file__, "--child", v, "--seconds", str(args.seconds), "--repeats", str(args.repeats),
               "--threads", str(args.threads)]
        res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    base = next((r["rtf"] for r in rows if r["variant"] == "naturall2s"), None)
    print(f"clip {args.seconds:.1f} s, {args.repeats} runs each, {args.threads} threads; model only (no landmarks)")
    print("| variant | weights | params (M) | median s | RTF | RTF / naturall2s | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['rtf'] / base:.2f}" if base else "-"
        print(f"| {r['variant']} | {'shipped' if r['shipped'] else 'untrained'} | {r['params_m']:.2f} | "
              f"{r['median_s']:.3f} | {r['rtf']:.4f} | {ratio} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
