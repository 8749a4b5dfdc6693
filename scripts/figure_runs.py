"""Learning curves of a `scripts/cpu_runs.sh` plan: a figure, and the validations as a markdown table.

    python scripts/figure_runs.py adversarial   # -> assets/adversarial_val.png: ESTOI, speech WER, pause buzz, MOS on val
    python scripts/figure_runs.py curves        # -> assets/curves.png: ESTOI and log-mel L1, val and the 200 train clips
    python scripts/figure_runs.py retrieval     # -> assets/retrieval.png (the same panels as curves)
    python scripts/figure_runs.py joint         # -> assets/joint.png: the front end trained against frozen (retrieval's control),
                                                #    and the long runs from v6 (augmented and not)
    python scripts/figure_runs.py ltbs          # -> assets/ltbs.png: ESTOI and log-mel L1 of the vocoded speech, the
                                                #    post-net's NLL, the pitch predictor's log-F0 L1
    python scripts/figure_runs.py units         # -> assets/units.png: ESTOI, log-mel L1, unit accuracy, lip-read WER
    python scripts/figure_runs.py lipvoicer     # -> assets/lipvoicer.png: the judge's word accuracy, the flow's MSE,
                                                #    ESTOI and log-mel L1 of the sampled speech, the judge on it
    options: --work ../naturall2s-work (the plan's runs are WORK/runs/PLAN/<run>/log.csv), --out PNG, --table

Reads each run's ``log.csv`` (written by ``python -m naturall2s train``): its ``val`` rows (the keys ``train/...`` are
the same measures on training clips, ``train --eval-train N``), its ``train`` rows' ``cpu_hours``, and its ``config``
rows, which mark where a resumed run changed its recipe (a dotted line). Where a run selects (``select`` finite in its
validations, the adversarial plan's guarded selection), the selected step is circled. MOS is the judge only: it was
never a loss or the selection.
"""
from __future__ import annotations

import argparse
import csv
import json
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIT_PANELS = (("estoi", "ESTOI ↑ (differentiable)"), ("score", "log-mel L1 ↓"))
PLANS = {  # runs and panels (log key, title); a fit panel draws `train/<key>` dashed beside `key`
    "adversarial": (("naturall2s", "naturall2s-noddsp", "mel-vocoder"),
                    (("estoi", "ESTOI ↑ (val)"), ("speech/wer", "speech WER ↓ (val)"), ("comb", "comb dB ↓ (val)"),
                     ("judge/mos", "MOS, distillmos ↑ (val; read only)"))),
    "curves": (("size1x", "size2x"), FIT_PANELS),
    "retrieval": (("control", "prior"), FIT_PANELS),
    "joint": (("unfrozen", "augmented", "../retrieval/control", "long", "long-control"),  # a run folder under runs/PLAN
              FIT_PANELS),
    # one run: the speech synthesize makes (predicted pitch and energy, post-net), vocoded by the cascade's vocoder
    "ltbs": (("synth",), (("estoi", "ESTOI ↑ (val)"), ("score", "log-mel L1 ↓ (val)"),
                          ("flow/nll", "post-net NLL, nats per value ↓ (val)"), ("pitch/l1", "log-F0 L1 ↓ (val)"))),
    # the vocoder run scores real mels + real units, the lip-reader run the whole model (predicted mels + units)
    "units": (("vocoder", "lipreader"), (("estoi", "ESTOI ↑ (val)"), ("score", "log-mel L1 ↓ (val)"),
                                         ("unit/acc", "unit accuracy ↑ (val)"),
                                         ("lipread/wer", "lip-read WER ↓ (val)"))),
    # the judge run scores real speech (word/acc), the flow run its sampled, vocoded speech
    "lipvoicer": (("judge", "flow"), (("word/acc", "judge word accuracy ↑ (val, real speech)"),
                                      ("flow/mse", "flow-matching MSE ↓ (val)"), ("estoi", "ESTOI ↑ (val)"),
                                      ("content/acc", "judge word accuracy ↑ (val, sampled speech)"))),
}
TABLE_KEYS = (("score", "val log-mel L1"), ("estoi", "val ESTOI"), ("train/score", "train log-mel L1"),
              ("train/estoi", "train ESTOI"))


def read_run(path: Path) -> tuple[list[tuple[int, dict, float]], list[int]]:
    """(step, val dict, CPU-hours so far) rows, and the steps where the configuration changed on a resume."""
    vals, changes, last, cpu = [], [], None, float("nan")
    for row in csv.reader(path.read_text().splitlines()):
        if row[1] == "train":
            cpu = json.loads(row[2]).get("cpu_hours", cpu)
        elif row[1] == "val":
            vals.append((int(row[0]), json.loads(row[2]), cpu))
        elif row[1] == "config":
            cfg = json.loads(row[2])
            key = json.dumps({k: v for k, v in cfg.items() if k not in ("max_minutes", "threads")}, sort_keys=True)
            if int(row[0]) > 0 and key != last:  # (a run's first record after step 0: its earlier recipe unknown)
                changes.append(int(row[0]))
            last = key
    return vals, [c for c in changes if any(s > c for s, _, _ in vals)]  # a change no validation followed: unmarked


def table(runs: dict[str, list[tuple[int, dict, float]]]) -> str:
    """The validations of every run as a markdown table (nan where a run did not log a key)."""
    lines = ["| run | step | " + " | ".join(t for _, t in TABLE_KEYS) + " | CPU-hours |",
             "|---|---:|" + "---:|" * (len(TABLE_KEYS) + 1)]
    for name, vals in runs.items():
        for step, v, cpu in vals:
            cells = " | ".join(f"{v.get(k, float('nan')):.3f}" for k, _ in TABLE_KEYS)
            lines.append(f"| {name} | {step} | {cells} | {cpu:.2f} |")
    return "\n".join(lines)


def figure(runs: dict[str, tuple[list, list]], panels, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6), constrained_layout=True)
    for i, (name, (vals, changes)) in enumerate(runs.items()):
        finite = [(s, v) for s, v, _ in vals if v.get("select", float("inf")) != float("inf")]
        best = min(finite, key=lambda sv: sv[1]["select"])[0] if finite else None
        for ax, (key, panel_title) in zip(axes, panels):
            for k, style, label in ((key, "o-", name), (f"train/{key}", "s--", f"{name} (train clips)")):
                pts = [(s, v[k]) for s, v, _ in vals if k in v]
                if pts:
                    ax.plot(*zip(*pts), style, color=f"C{i}", ms=3, label=label)
                    if best in dict(pts):
                        ax.plot([best], [dict(pts)[best]], "o", ms=10, mfc="none", color=f"C{i}")
            for s in changes:
                ax.axvline(s, color=f"C{i}", ls=":", lw=1)
            ax.set_title(panel_title)
            ax.set_xlabel("step")
    seen = {}  # every run in the legend, also those missing from the last panel (the units plan's vocoder run)
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    axes[-1].legend(list(seen.values()), list(seen), fontsize=8)
    fig.suptitle(textwrap.fill(title, 45 * len(panels)), fontsize=10)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("plan", choices=sorted(PLANS))
    p.add_argument("--work", type=Path, default=REPO.parent / "naturall2s-work")
    p.add_argument("--out", type=Path, default=None, help="default: assets/<plan>.png (adversarial_val.png)")
    p.add_argument("--table", action="store_true", help="print the validations as a markdown table as well")
    args = p.parse_args()
    names, panels = PLANS[args.plan]
    logs = {n.removeprefix("../"): args.work / "runs" / args.plan / n / "log.csv" for n in names}
    runs = {n: read_run(log) for n, log in logs.items() if log.is_file()}
    if not runs:
        raise SystemExit(f"no runs of plan {args.plan!r} under {args.work / 'runs' / args.plan}")
    if args.table:
        print(table({n: vals for n, (vals, _) in runs.items()}))
    name = "adversarial_val" if args.plan == "adversarial" else args.plan
    figure(runs, panels, args.out or REPO / "assets" / f"{name}.png",
           f"scripts/cpu_runs.sh {args.plan}: learning curves on val (solid) and 200 training clips (dashed); circled: "
           "the selected step; dotted: a recipe change on resume")


if __name__ == "__main__":
    main()
