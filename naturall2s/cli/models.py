"""python -m naturall2s models"""
HELP = "list the available models (shipped checkpoints, then adapted ones) with variant, size, stage and step"
DESCRIPTION = (
    "One line per model: name, variant, file size, the training stage that wrote it and its training step "
    "(0 for a model composed from other checkpoints without training of its own, e.g. mel-vocoder = lip reader "
    "+ vocoder), and its best validation log-mel L1 when it was measured."
)


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table (default: off)")


def run(args) -> int:
    import json
    from pathlib import Path

    from naturall2s.checkpoints import available_models, read_metadata, resolve

    rows = []
    for name in available_models():
        path = resolve(name)
        info = read_metadata(path)
        meta_info = info["info"]
        rows.append(
            {
                "name": name,
                "variant": info["config"]["variant"],
                "size_mb": round(path.stat().st_size / 2**20, 1),
                "stage": meta_info.get("stage"),
                "step": meta_info.get("step"),
                "composed_from": [Path(p).parent.name for p in meta_info["init"].split(",")]
                if meta_info.get("stage") == "compose" and meta_info.get("init") else None,
                "val_score": meta_info.get("val", {}).get("score"),
                "path": str(path),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no models in checkpoints/ (train one: python -m naturall2s train --help)")
    else:
        print(f"{'name':<20} {'variant':<20} {'MB':>6} {'stage':<9} {'step':>6}  val log-mel L1")
        for r in rows:
            score = f"{r['val_score']:.3f}" if r["val_score"] is not None else "-"
            step = "?" if r["step"] is None else str(r["step"])
            extra = f"  (composed from {' + '.join(r['composed_from'])})" if r["composed_from"] else ""
            print(f"{r['name']:<20} {r['variant']:<20} {r['size_mb']:>6} {r['stage'] or '?':<9} {step:>6}  "
                  f"{score}{extra}")
    return 0
