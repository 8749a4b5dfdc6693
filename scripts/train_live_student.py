"""Train a live student: a copy of a model's front-end transformer that works on windows whose future is cut short.

Live synthesis (naturall2s/stream.py) runs the front end's transformer on the last frames of the take only, so the
newest frames' features lack the future the offline transformer uses. The student starts as the model's own
transformer (+ final norm) and is trained to give, on such windows, the features the offline model computes from the
whole clip (mean squared error over the last ``--tail`` frames of each window, where the future is short). The
per-frame part of the front end (stem, trunk, lip MLP, projection) is frozen and shared, so it is computed once per
clip; the rest of the model is untouched.

    python scripts/train_live_student.py prepare --model naturall2s --data-root ../shared/data/grid --out runs/live
    python scripts/train_live_student.py train --model naturall2s --out runs/live --steps 3000
    # -> runs/live/<model>.safetensors: the whole model with the student's transformer, loaded like any checkpoint
    #    (naturall2s.checkpoints.load_model); copy it to checkpoints/live/<model>.safetensors to ship it

Windows: length W uniform in [--min-window, --window], ending at a random frame e; positions from 0 at the window
start (as live). One thread, CPU.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def prepare(args) -> None:
    from naturall2s import load_model
    from naturall2s.landmarks import get_detector
    from naturall2s.roi import extract_mouth
    from naturall2s.stream import contextualize, frame_projections

    model = load_model(args.model)
    root = Path(args.data_root)
    names = json.loads((root / "splits.json").read_text())["s1"][args.split][: args.limit]
    out = Path(args.out) / f"{args.model}-{args.split}"
    out.mkdir(parents=True, exist_ok=True)
    det = get_detector("mediapipe")
    start = time.time()
    for i, name in enumerate(names):
        path = out / f"{name}.npz"
        if path.exists():
            continue
        try:
            clip = extract_mouth(root / "s1" / f"{name}.mp4", detector=det)
        except Exception as e:  # a clip without a face: skip it
            print(f"skip {name}: {e}", file=sys.stderr)
            continue
        with torch.inference_mode():
            proj = frame_projections(model.frontend, clip.roi, clip.lips)
            feats = contextualize(model.frontend, proj[None])[0]
        np.savez(path, proj=proj.numpy().astype(np.float32), feats=feats.numpy().astype(np.float32))
        if i % 25 == 0:
            print(f"{i + 1}/{len(names)} clips, {time.time() - start:.0f} s", flush=True)


def _load(folder: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    items = []
    for p in sorted(folder.glob("*.npz")):
        z = np.load(p)
        items.append((torch.from_numpy(z["proj"]), torch.from_numpy(z["feats"])))
    return items


def _batch(items, rng: np.random.Generator, *, batch: int, min_window: int, window: int, tail: int):
    """(proj (B, W, D), target (B, W, D), weight (B, W)) windows; weight 1 on each window's last ``tail`` frames."""
    w = int(rng.integers(min_window, window + 1))
    xs, ys, ms = [], [], []
    for _ in range(batch):
        proj, feats = items[int(rng.integers(len(items)))]
        t = len(proj)
        e = int(rng.integers(min(w, t), t + 1))
        s = max(0, e - w)
        x, y = proj[s:e], feats[s:e]
        m = torch.zeros(e - s)
        m[-tail:] = 1.0
        pad = w - (e - s)
        if pad:  # shorter than the window (a clip's start): left-aligned, padded with zeros, masked out
            x = torch.cat([x, x.new_zeros(pad, x.shape[1])])
            y = torch.cat([y, y.new_zeros(pad, y.shape[1])])
            m = torch.cat([m, m.new_zeros(pad)])
        xs.append(x), ys.append(y), ms.append(m)
    return torch.stack(xs), torch.stack(ys), torch.stack(ms)


def _loss(student, x, y, m) -> torch.Tensor:
    from naturall2s.stream import contextualize

    pred = contextualize(student, x)
    err = ((pred - y) ** 2).mean(-1)
    return (err * m).sum() / m.sum()


def train(args) -> None:
    import copy

    from naturall2s import load_model
    from naturall2s.checkpoints import save_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_model(args.model)
    out = Path(args.out)
    items = _load(out / f"{args.model}-train")
    val = _load(out / f"{args.model}-val")
    print(f"{len(items)} train clips, {len(val)} val clips")
    student = copy.deepcopy(model.frontend)
    student.train()
    for p in student.parameters():
        p.requires_grad_(False)
    params = [*student.transformer.parameters(), *student.norm.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    rng = np.random.default_rng(0)
    vrng = np.random.default_rng(1)
    vbatches = [_batch(val, vrng, batch=32, min_window=args.min_window, window=args.window, tail=args.tail)
                for _ in range(8)]

    def validate() -> float:
        student.eval()
        with torch.no_grad():
            v = float(np.mean([_loss(student, *b).item() for b in vbatches]))
        student.train()
        return v

    teacher = validate_teacher = None
    student.eval()
    with torch.no_grad():
        validate_teacher = float(np.mean([_loss(model.frontend, *b).item() for b in vbatches]))
    student.train()
    print(f"val loss of the offline transformer on live windows: {validate_teacher:.4f}")
    best, start = float("inf"), time.time()
    for step in range(1, args.steps + 1):
        x, y, m = _batch(items, rng, batch=args.batch_size, min_window=args.min_window, window=args.window,
                         tail=args.tail)
        loss = _loss(student, x, y, m)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % args.eval_every == 0 or step == args.steps:
            v = validate()
            print(f"step {step}: train {loss.item():.4f} val {v:.4f} ({time.time() - start:.0f} s)", flush=True)
            if v < best:
                best = v
                model.frontend.transformer.load_state_dict(student.transformer.state_dict())
                model.frontend.norm.load_state_dict(student.norm.state_dict())
                info = dict(getattr(model, "info", {}) or {})
                info["live_student"] = {"base": args.model, "steps": step, "val_mse": round(v, 5),
                                        "val_mse_offline_transformer": round(validate_teacher, 5),
                                        "window": args.window, "min_window": args.min_window, "tail": args.tail,
                                        "train_clips": len(items), "date": time.strftime("%Y-%m-%d")}
                save_model(model, out / f"{args.model}.safetensors", info=info)
    del teacher


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="per-frame projections and offline features of GRID clips")
    p.add_argument("--model", default="naturall2s", help="model name (default: %(default)s)")
    p.add_argument("--data-root", default="../shared/data/grid", help="GRID root (default: %(default)s)")
    p.add_argument("--split", default="train", help="split (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="first N clips (default: all)")
    p.add_argument("--out", default="runs/live", help="output folder (default: %(default)s)")
    p = sub.add_parser("train", help="train the student")
    p.add_argument("--model", default="naturall2s", help="model name (default: %(default)s)")
    p.add_argument("--out", default="runs/live", help="folder of prepare's output (default: %(default)s)")
    p.add_argument("--steps", type=int, default=3000, help="steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="windows per step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (default: %(default)s)")
    p.add_argument("--window", type=int, default=50, help="longest window, frames (default: %(default)s)")
    p.add_argument("--min-window", type=int, default=12, help="shortest window, frames (default: %(default)s)")
    p.add_argument("--tail", type=int, default=16, help="frames at each window's end in the loss (default: %(default)s)")
    p.add_argument("--eval-every", type=int, default=250, help="steps between validations (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    args = ap.parse_args()
    prepare(args) if args.cmd == "prepare" else train(args)


if __name__ == "__main__":
    main()
