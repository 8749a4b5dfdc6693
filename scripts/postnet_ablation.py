"""The ltbs variant's post-net ablation: the flow post-net against none, and its temperature, on one checkpoint.

    python scripts/postnet_ablation.py MODEL [--split val] [--temperatures 0 0.33 0.67 1]
        [--cache ../naturall2s-work/cache/grid] [--data-root ../shared/data/grid] [--limit N] [--out DIR]
        [--asr auto] [--mos none]

Every setting is one system of :func:`naturall2s.evaluate.evaluate` on the same clips and seed: ``no post-net``
(``synthesize(postnet=False)``: the mel decoder's output) and ``post-net T=t`` for each temperature
(``synthesize(temperature=t)``; 0: z = 0). Its columns (STOI / ESTOI, the WER of the ASR under the GRID grammar, MCD,
F0, ...) come with paired differences against the last setting; the result files go to ``--out``. The summary table
names the temperature with the best ESTOI (choose it on ``val``, never ``test``) and the command that composes it into
the checkpoint as its default: ``train --steps 0 --arch '{..., "ltbs": {"postnet_temperature": T}}'``
(``LTBS_TEMPERATURE`` in scripts/train_grid.sh step 9 and scripts/cpu_runs.sh's ltbs plan).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from naturall2s.errors import NaturalL2SError  # noqa: E402
from naturall2s.evaluate import add_scoring_arguments, evaluate_settings  # noqa: E402


class Setting:
    """One post-net setting of an ltbs model as an evaluation system (a name and ``synthesize(clip)``)."""

    def __init__(self, model, postnet: bool, temperature: float | None = None):
        self.model, self.postnet, self.temperature = model, postnet, temperature
        self.name = f"post-net T={temperature:g}" if postnet else "no post-net"

    def synthesize(self, clip):
        if not self.postnet:
            return self.model.synthesize(clip, postnet=False)
        return self.model.synthesize(clip, temperature=self.temperature)


def settings(model, temperatures: list[float]) -> list[Setting]:
    """No post-net, then the post-net at each temperature, each checked as synthesize checks it (NaturalL2SError)."""
    if model.config.variant != "ltbs":
        raise NaturalL2SError(f"{model.name} is a {model.config.variant} model: it has no post-net to ablate (an ltbs "
                              "model has)")
    if len(set(temperatures)) != len(temperatures):
        raise NaturalL2SError(f"each temperature once, got {temperatures}")
    for t in temperatures:
        model.postnet_options(True, t)
    return [Setting(model, False)] + [Setting(model, True, t) for t in temperatures]


def summary_table(results: dict, systems: list[Setting]) -> tuple[str, Setting | None]:
    """One row per setting (mean ± 95% interval over clips of the headline measures) -> (markdown, the post-net
    setting with the best mean ESTOI, or None)."""
    keys = (("estoi", "ESTOI ↑"), ("stoi", "STOI ↑"), ("wer", "WER ↓"), ("mcd", "MCD dB ↓"),
            ("f0_rmse_cents", "F0 RMSE ¢ ↓"), ("rtf", "RTF ↓"))
    lines = ["| setting | " + " | ".join(label for _, label in keys) + " |", "|---|" + "---:|" * len(keys)]
    best, best_estoi = None, -float("inf")
    for s in systems:
        cells = []
        for key, _ in keys:
            v = results["summary"].get(s.name, {}).get(key, {})
            mean, ci = v.get("mean"), v.get("ci95")
            cells.append("–" if mean is None else f"{mean:.3f}" + (f" ± {ci:.3f}" if ci is not None else ""))
        lines.append(f"| {s.name} | " + " | ".join(cells) + " |")
        estoi = results["summary"].get(s.name, {}).get("estoi", {}).get("mean")
        if s.postnet and estoi is not None and estoi > best_estoi:
            best, best_estoi = s, estoi
    return "\n".join(lines) + "\n", best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="an ltbs checkpoint: a name or a .safetensors path")
    ap.add_argument("--split", default="val",
                    help="split to score (default: %(default)s; choose the temperature on val)")
    ap.add_argument("--temperatures", type=float, nargs="+", default=[0.0, 0.33, 0.67, 1.0],
                    help="post-net temperatures; 0 is z = 0 (default: %(default)s)")
    add_scoring_arguments(ap, out="results/postnet_ablation")
    args = ap.parse_args(argv)

    import torch

    import naturall2s
    from naturall2s.evaluate import markdown_table

    torch.set_num_threads(1)  # the real-time factor of one CPU thread, as the variant's target is stated
    try:
        model = naturall2s.load_model(args.model)
        systems = settings(model, args.temperatures)
        results = evaluate_settings(systems, args)
    except NaturalL2SError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = min((v["n"] for s in results["summary"].values() for v in s.values() if v.get("n")), default=0)
    print(f"{model.name} on {args.split} ({n} clips), seed {naturall2s.model.DEFAULT_SEED}; one CPU thread; "
          f"stored default temperature {model.config.ltbs['postnet_temperature']:g}\n")
    table, best = summary_table(results, systems)
    print(table)
    if best is not None:
        print(f"best ESTOI on {args.split}: {best.name}; as the default: train --steps 0 ... --arch "
              f"'{{..., \"ltbs\": {{\"postnet_temperature\": {best.temperature:g}}}}}' (LTBS_TEMPERATURE="
              f"{best.temperature:g})\n")
    print(markdown_table(results), end="")
    print(f"results in {args.out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
