"""How much do F0 errors cost a DDSP model's intelligibility? ESTOI (pystoi) of each model's output and of its
DDSP prior alone, with the predicted F0 and with the real F0 (pyworld, from the prepared cache) driving the
synthesizer; the same noise seed for both runs of a clip.

    python scripts/oracle_f0.py --cache cache/grid --split val naturall2s [path/to/other.safetensors ...]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from naturall2s import load_model  # noqa: E402
from naturall2s.data import CachedGrid  # noqa: E402
from naturall2s.metrics import estoi, mean_ci  # noqa: E402
from naturall2s.train import real_f0  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="naturall2s model names or .safetensors paths")
    ap.add_argument("--cache", required=True, help="prepared cache (python -m naturall2s prepare)")
    ap.add_argument("--split", default="val")
    args = ap.parse_args()
    clips = CachedGrid(args.cache, args.split)
    for name in args.models:
        model = load_model(name).eval()
        if not model.config.uses_ddsp:
            raise SystemExit(f"{name}: variant {model.config.variant} has no DDSP prior")
        rows = []
        for i in tqdm(range(len(clips)), desc=name):
            clip = clips[i]
            ref = clip["audio"].numpy()
            row = []
            for f0 in (None, real_f0(clip["f0"], clip["voiced"])[None]):  # as --teacher-f0 drives it
                torch.manual_seed(0)
                with torch.inference_mode():
                    out = model(clip["roi"][None], clip["lips"][None], f0_hz=f0)
                row += [estoi(ref, out[key][0].clamp(-1, 1).numpy()) for key in ("wav", "coarse")]
            rows.append(row)
        r = np.array(rows)
        gain = mean_ci(r[:, 2] - r[:, 0])
        print(f"{name} ({args.split}, {len(r)} clips): ESTOI output {r[:, 0].mean():.3f} (prior {r[:, 1].mean():.3f}) "
              f"with its F0; {r[:, 2].mean():.3f} (prior {r[:, 3].mean():.3f}) with the real F0; "
              f"paired gain {gain['mean']:+.4f} ± {gain['ci95']:.4f}")


if __name__ == "__main__":
    main()
