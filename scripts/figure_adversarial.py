"""Learning curves of the adversarial CPU runs on `val`: ESTOI, speech WER, pause buzz and predicted MOS against steps.

    python scripts/figure_adversarial.py [--runs ../naturall2s-work/runs/adversarial] [--out assets/adversarial_val.png]

Reads each run's ``log.csv`` (written by ``python -m naturall2s train``; ``scripts/adversarial_cpu.sh`` makes the
runs): its ``val`` rows, and its ``config`` rows, which mark where a resumed run changed its recipe (a dotted line).
The selected checkpoint (least comb among those the guard accepts, ``select`` finite) is circled. MOS is the judge
only: it was never a loss or the selection.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNS = ("naturall2s", "naturall2s-noddsp", "mel-vocoder")
PANELS = (("estoi", "ESTOI ↑ (val)"), ("speech/wer", "speech WER ↓ (val)"), ("comb", "comb dB ↓ (val)"),
          ("judge/mos", "MOS, distillmos ↑ (val; read only)"))


def read_run(path: Path) -> tuple[list[tuple[int, dict]], list[int]]:
    """(step, val dict) rows and the steps where the configuration changed on a resume."""
    vals, changes, last = [], [], None
    for row in csv.reader(path.read_text().splitlines()):
        if row[1] == "val":
            vals.append((int(row[0]), json.loads(row[2])))
        elif row[1] == "config":
            cfg = json.loads(row[2])
            key = json.dumps({k: v for k, v in cfg.items() if k not in ("max_minutes", "threads")}, sort_keys=True)
            if int(row[0]) > 0 and key != last:  # (a run's first record after step 0: its earlier recipe unknown)
                changes.append(int(row[0]))
            last = key
    return vals, [c for c in changes if any(s > c for s, _ in vals)]  # a change no validation followed: nothing to mark


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, default=REPO.parent / "naturall2s-work" / "runs" / "adversarial")
    p.add_argument("--out", type=Path, default=REPO / "assets" / "adversarial_val.png")
    args = p.parse_args()

    fig, axes = plt.subplots(1, len(PANELS), figsize=(16, 3.6), constrained_layout=True)
    vocoder_estoi = axes[0].twinx()  # the vocoder resynthesizes real mels: its ESTOI lives near 0.75, not 0.4
    vocoder_estoi.set_ylabel("mel-vocoder on real mels", color="C2")
    for i, name in enumerate(RUNS):
        log = args.runs / name / "log.csv"
        if not log.is_file():
            continue
        vals, changes = read_run(log)
        finite = [(s, v) for s, v in vals if v.get("select", float("inf")) != float("inf")]
        best = min(finite, key=lambda sv: sv[1]["select"])[0] if finite else None
        for ax, (key, title) in zip(axes, PANELS):
            ax = vocoder_estoi if (key, name) == ("estoi", "mel-vocoder") else ax
            pts = [(s, v[key]) for s, v in vals if key in v]
            if not pts:
                continue
            ax.plot(*zip(*pts), "o-", color=f"C{i}", ms=3, label=name)
            for s, y in pts:
                if s == best:
                    ax.plot([s], [y], "o", ms=10, mfc="none", color=f"C{i}")
            for s in changes:
                ax.axvline(s, color=f"C{i}", ls=":", lw=1)
            ax.set_title(title)
            ax.set_xlabel("step")
    axes[3].legend(*axes[1].get_legend_handles_labels(), loc="lower right", fontsize=8)
    fig.suptitle("Adversarial fine-tuning on the CPU: val learning curves (circled: the selected step; dotted: the "
                 "recipe change on resume)", fontsize=10)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
