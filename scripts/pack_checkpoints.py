"""Store each weight of the shipped checkpoints once (naturall2s.checkpoints.pack), and report the sizes.

    python scripts/pack_checkpoints.py            # pack checkpoints/ in place
    python scripts/pack_checkpoints.py --check    # only say what packing would save (exit 1 if anything)
    python scripts/pack_checkpoints.py --int8 NAME [NAME ...]   # first store those models' own weights as int8

The variants start from the same front end and vocoder, and a live student keeps its model's heads, so their files
repeat megabytes of identical tensors. Owners come first: the four original models in the order they were trained
(the others share from them), then the other models by name, then the live students. A file that would not change is
left alone, so its git history does not grow. Run it after exporting a new shipped model.

``--int8`` (checkpoints.quantize_file) halves a model's own large weights: int8 with an fp16 scale per output channel.
`units` and `ltbs` ship so (2026-12-07). Measured on `units`: 12.8 -> 6.5 MB; on the 50 `val` clips, paired
against its fp16 file (`evaluate --split val --models units UNITS_INT8`), ESTOI +0.001 ± 0.002, WER +0.013 ± 0.013,
MOS -0.010 ± 0.008, voicing error -0.011 ± 0.007: small, but not nothing for a model whose claim is its WER. Score a
model on `val` both ways before shipping it int8 (results/int8/). A model whose tensors another file shares is
refused (owners stay fp16).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from naturall2s.checkpoints import CHECKPOINT_DIR, load_tensors, pack, quantize_file  # noqa: E402
from naturall2s.errors import CheckpointError  # noqa: E402

FIRST = ("mel-gl", "mel-vocoder", "naturall2s-noddsp", "naturall2s")  # owners before sharers


def shipped_order(folder: Path) -> list[Path]:
    top = sorted(folder.glob("[!.]*.safetensors"), key=lambda p: (FIRST.index(p.stem) if p.stem in FIRST
                                                                  else len(FIRST), p.stem))
    return top + sorted((folder / "live").glob("[!.]*.safetensors"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, default=CHECKPOINT_DIR)
    ap.add_argument("--check", action="store_true", help="pack a copy and report; change nothing")
    ap.add_argument("--int8", nargs="+", default=[], metavar="NAME",
                    help="first store these shipped models' own large weights as int8 (checkpoints.quantize_file)")
    args = ap.parse_args(argv)
    files = shipped_order(args.folder)
    with tempfile.TemporaryDirectory() as tmp:
        target = args.folder
        if args.check:
            target = Path(tmp) / "checkpoints"
            shutil.copytree(args.folder, target, ignore=shutil.ignore_patterns("discriminators"))
            files = shipped_order(target)
        for name in args.int8:
            path = target / f"{name}.safetensors"
            if path not in files:
                raise SystemExit(f"no shipped model {name!r} in {target}")
            try:
                b0, b1 = quantize_file(path, others=files)
            except CheckpointError as e:
                raise SystemExit(f"error: {e}") from None
            print(f"{name}: int8, {b0 / 1e6:.1f} MB -> {b1 / 1e6:.1f} MB")
        before = {str(p): load_tensors(p) for p in files}
        sizes = pack(files)
        for p in files:  # every file still loads to the very same tensors
            after = load_tensors(p)
            assert after.keys() == before[str(p)].keys() and all(
                after[k].equal(before[str(p)][k]) for k in after), p
        total0 = total1 = 0
        for p in files:
            b0, b1 = sizes[str(p)]
            total0, total1 = total0 + b0, total1 + b1
            print(f"{p.relative_to(target)}: {b0 / 1e6:.1f} MB -> {b1 / 1e6:.1f} MB")
        print(f"in all: {total0 / 1e6:.1f} MB -> {total1 / 1e6:.1f} MB")
    return 1 if args.check and total1 < total0 else 0


if __name__ == "__main__":
    raise SystemExit(main())
