"""python -m naturall2s models"""
HELP = "list the models (shipped ones in checkpoints/, your own in the user models folder) with their facts"
DESCRIPTION = (
    "One line per model: name, variant, file size, the training stage that wrote it and its training step "
    "(0 for a model composed from other checkpoints without training of its own, e.g. mel-vocoder = lip reader "
    "+ vocoder), its best validation log-mel L1 when it was measured, and where it is (shipped, or yours: "
    "adapted from which base)."
)


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table (default: off)")


def run(args) -> int:
    import json
    from pathlib import Path

    from naturall2s.checkpoints import CHECKPOINT_DIR, available_models, read_metadata, resolve, user_models_dir

    rows = []
    for name in available_models():
        path = resolve(name)
        meta = read_metadata(path)
        info = meta["info"]
        rows.append(
            {
                "name": name,
                "variant": meta["config"]["variant"],
                "size_mb": round(path.stat().st_size / 2**20, 1),
                "stage": info.get("stage"),
                "step": info.get("step"),
                "composed_from": [Path(p).parent.name for p in info["init"].split(",")]
                if info.get("stage") == "compose" and info.get("init") and "adapt" not in info else None,
                "val_score": info.get("val", {}).get("score"),
                "where": "shipped" if path.parent == CHECKPOINT_DIR else "user",
                "base": info.get("adapt", {}).get("base"),
                "path": str(path),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no models in {CHECKPOINT_DIR} or {user_models_dir()} (train one: python -m naturall2s train --help)")
    else:
        print(f"{'name':<20} {'variant':<20} {'MB':>6} {'stage':<9} {'step':>6}  {'val log-mel L1':<15} where")
        for r in rows:
            score = f"{r['val_score']:.3f}" if r["val_score"] is not None else "-"
            step = "?" if r["step"] is None else str(r["step"])
            where = r["where"] + (f" (adapted from {r['base']})" if r["base"] else "")
            where += f" (composed from {' + '.join(r['composed_from'])})" if r["composed_from"] else ""
            print(f"{r['name']:<20} {r['variant']:<20} {r['size_mb']:>6} {r['stage'] or '?':<9} {step:>6}  "
                  f"{score:<15} {where}")
        print(f"your models folder: {user_models_dir()}")
    return 0
