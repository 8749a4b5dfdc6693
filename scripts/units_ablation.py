"""The units variant's ablation: its vocoder with the predicted speech units against the same vocoder without them.

    python scripts/units_ablation.py MODEL [--split val] [--cache ../naturall2s-work/cache/grid]
        [--data-root ../shared/data/grid] [--limit N] [--out DIR] [--asr auto] [--mos none]

Two systems of :func:`naturall2s.evaluate.evaluate` on the same clips and seed: ``units`` (``synthesize()``: the
multi-input vocoder reads the predicted mel and the unit head's units) and ``no units``
(``synthesize(unit_input=False)``: every unit equally likely, so the mel alone carries the content). The paired
differences (units minus no units) say what the method's own idea, the units beside the mel, does to intelligibility
(ESTOI, the WER of the ASR under the GRID grammar) and to everything else.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from naturall2s.errors import NaturalL2SError  # noqa: E402
from naturall2s.evaluate import add_scoring_arguments, evaluate_settings  # noqa: E402


class UnitInput:
    """A units model with or without its unit input, as an evaluation system (a name and ``synthesize(clip)``)."""

    def __init__(self, model, unit_input: bool):
        self.model, self.unit_input = model, unit_input
        self.name = "units" if unit_input else "no units"

    def synthesize(self, clip):
        return self.model.synthesize(clip, unit_input=self.unit_input)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a units checkpoint: a name or a .safetensors path")
    ap.add_argument("--split", default="val", help="split to score (default: %(default)s)")
    add_scoring_arguments(ap, out="results/units_ablation")
    args = ap.parse_args(argv)

    import torch

    import naturall2s
    from naturall2s.evaluate import markdown_table

    torch.set_num_threads(1)
    try:
        model = naturall2s.load_model(args.model)
        if model.config.variant != "units":
            raise NaturalL2SError(f"{model.name} is a {model.config.variant} model: it has no unit input to ablate")
        systems = [UnitInput(model, False), UnitInput(model, True)]  # the last is the one the others are paired with
        results = evaluate_settings(systems, args)
    except NaturalL2SError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown_table(results), end="")
    print(f"results in {args.out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
