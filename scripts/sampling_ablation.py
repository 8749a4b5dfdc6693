"""The lipvoicer variant's sampling ablation: quality against the number of Euler steps and the guidance scale.

    python scripts/sampling_ablation.py MODEL [--split val] [--steps 2 4 10 20] [--guidance 0 0.5]
        [--cache ../naturall2s-work/cache/grid] [--data-root ../shared/data/grid] [--limit N] [--out DIR]
        [--asr auto] [--mos none]

Every (steps, guidance) pair is one system of :func:`naturall2s.evaluate.evaluate` (``synthesize(steps=, guidance=)``
on the same clips, the same seed): STOI / ESTOI, the WER of the ASR under the GRID grammar and the rest of its
columns, with paired differences against the last setting; the result files go to ``--out``. The summary table adds
the content judge's mean log-probability (per video frame) of the word head's reading in the sampled mel, the
quantity the guidance climbs. Choose the defaults on ``val`` (never ``test``) in two passes, the guidance at the
config's steps, then the steps at the chosen guidance (each setting of 50 clips costs about 2-3 CPU-minutes, most of it
the scoring):

    python scripts/sampling_ablation.py WORK/runs/lipvoicer/lipvoicer.safetensors --steps 10 --guidance 0 0.25 0.5 1 2
    python scripts/sampling_ablation.py WORK/runs/lipvoicer/lipvoicer.safetensors --steps 2 4 10 20 --guidance 0 W

and compose them into the checkpoint with ``train --steps 0 --arch '{"sampling_steps": N, "guidance_scale": W}'``
(``LIPVOICER_STEPS=N LIPVOICER_GUIDANCE=W scripts/cpu_runs.sh lipvoicer``; step 10 of scripts/train_grid.sh). The
second pass on ``test`` with the chosen W is the issue's ablation table (steps, and guidance 0 against W).
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from naturall2s.errors import NaturalL2SError  # noqa: E402
from naturall2s.evaluate import add_scoring_arguments, evaluate_settings  # noqa: E402


class Setting:
    """One sampling setting of a lipvoicer model as an evaluation system (a name and ``synthesize(clip)``)."""

    def __init__(self, model, steps: int, guidance: float):
        self.model, self.steps, self.guidance = model, steps, guidance
        self.name = f"steps={steps} guidance={guidance:g}"
        self.judge_log_probs: list[float] = []

    def synthesize(self, clip):
        out = self.model.synthesize(clip, steps=self.steps, guidance=self.guidance)
        self.judge_log_probs.append(out.extras["judge_log_prob"])
        return out


def settings(model, steps: list[int], guidance: list[float]) -> list[Setting]:
    """The grid of settings, each checked as synthesize checks it (NaturalL2SError for a bad value)."""
    if not model.config.samples_mel:
        raise NaturalL2SError(f"{model.name} is a {model.config.variant} model: it has no sampling to ablate "
                              "(a lipvoicer model has)")
    for n, w in itertools.product(steps, guidance):
        model.sampling_options(n, w)
    return [Setting(model, n, w) for n, w in itertools.product(steps, guidance)]


def summary_table(results: dict, systems: list[Setting]) -> str:
    """One row per setting: the headline measures (mean ± 95% interval over clips) and the judge's log-probability."""
    keys = (("estoi", "ESTOI ↑"), ("stoi", "STOI ↑"), ("wer", "WER ↓"), ("rtf", "RTF ↓"))
    lines = ["| steps | guidance | " + " | ".join(label for _, label in keys) + " | judge log p / frame ↑ |",
             "|---:|---:|" + "---:|" * (len(keys) + 1)]
    for s in systems:
        cells = []
        for key, _ in keys:
            v = results["summary"].get(s.name, {}).get(key, {})
            mean, ci = v.get("mean"), v.get("ci95")
            cells.append("–" if mean is None else f"{mean:.3f}" + (f" ± {ci:.3f}" if ci is not None else ""))
        lp = f"{np.mean(s.judge_log_probs):.3f}" if s.judge_log_probs else "–"
        lines.append(f"| {s.steps} | {s.guidance:g} | " + " | ".join(cells) + f" | {lp} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a lipvoicer checkpoint: a name or a .safetensors path")
    ap.add_argument("--split", default="val", help="split to score (default: %(default)s; choose defaults on val)")
    ap.add_argument("--steps", type=int, nargs="+", default=[2, 4, 10, 20], help="Euler steps (default: %(default)s)")
    ap.add_argument("--guidance", type=float, nargs="+", default=[0.0, 0.5],
                    help="guidance scales; 0 is no guidance (default: %(default)s)")
    add_scoring_arguments(ap, out="results/sampling_ablation")
    args = ap.parse_args(argv)

    import torch

    import naturall2s
    from naturall2s.evaluate import markdown_table

    torch.set_num_threads(1)  # the real-time factor of one CPU thread, as the variant's target is stated
    try:
        model = naturall2s.load_model(args.model)
        if Path(args.model).suffix == ".safetensors":
            model.name = Path(args.model).stem  # as evaluate names a file's column
        systems = settings(model, args.steps, args.guidance)
        results = evaluate_settings(systems, args)
    except NaturalL2SError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = max((s.get("estoi", {}).get("n") or 0 for s in results["summary"].values()), default=0)
    print(f"{model.name} on {args.split} ({n} clips), seed {naturall2s.model.DEFAULT_SEED}; one CPU thread\n")
    print(summary_table(results, systems))
    print(markdown_table(results), end="")
    print(f"results in {args.out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
