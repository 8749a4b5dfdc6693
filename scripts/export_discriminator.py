"""Export the discriminators of an adversarial training run (its ``state.pt``) as a small fp16 safetensors file, so
that further adversarial training of the run's model (``train --init-disc``, ``adapt``) starts from them warm.

    python scripts/export_discriminator.py RUN_DIR --model NAME [--out checkpoints/discriminators/NAME.safetensors]

RUN_DIR: a ``train`` run folder with ``state.pt`` and ``config.json`` (e.g. one of ``scripts/adversarial_cpu.sh``'s);
NAME: the model the run's best checkpoint was shipped as (recorded in the file's info). The discriminator kind
(``--disc`` of the run, e.g. ``mrd``) is stored in the metadata, and the weights are checked to load into it. The
state's step should be the shipped model's (a discriminator from another step is still warm, but not its partner):
a mismatch with the run's ``best.safetensors`` is reported.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="the adversarial run's folder (state.pt, config.json)")
    parser.add_argument("--model", required=True, help="the name the run's model is shipped as, e.g. naturall2s")
    parser.add_argument("--out", default=None, help="default: checkpoints/discriminators/<model>.safetensors")
    args = parser.parse_args()

    from naturall2s.checkpoints import CHECKPOINT_DIR, DISC_FOLDER, load_state, read_metadata, save_discriminator
    from naturall2s.train import build_discriminators

    run = Path(args.run_dir)
    state = load_state(run / "state.pt")
    if "disc" not in state:
        sys.exit(f"error: {run / 'state.pt'} holds no discriminators (not an adversarial run)")
    config = json.loads((run / "config.json").read_text())
    kind = config["disc"]
    build_discriminators(kind).load_state_dict(state["disc"], strict=True)  # the weights fit the kind
    best = run / "best.safetensors"
    best_step = read_metadata(best)["info"].get("step") if best.is_file() else None
    if best_step is not None and best_step != state["step"]:
        print(f"note: the state is at step {state['step']}, the run's best model at step {best_step}")
    info = {"source": f"{run.parent.name}/{run.name} run, step {state['step']}", "model": args.model,
            "step": state["step"], "best_step": best_step, "variant": config["variant"], "stage": config["stage"],
            "lr_disc": config["lr_disc"], "adv_segment": config["adv_segment"]}
    out = Path(args.out) if args.out else CHECKPOINT_DIR / DISC_FOLDER / f"{args.model}.safetensors"
    save_discriminator(state["disc"], out, kind=kind, info=info)
    n = sum(v.numel() for v in state["disc"].values())
    print(f"{out}: {kind} discriminators, {n / 1e3:.1f}k parameters, {out.stat().st_size / 1e3:.0f} kB "
          f"({info['source']})")


if __name__ == "__main__":
    main()
