"""Calibrate the out-of-domain warning (naturall2s.domain) and print how well each signal separates the groups.

Groups: GRID s1 train / val / test (from a prepared cache), other speakers' GRID clips (``--speakers``, e.g. s4,
never trained on) and in-the-wild clips (``--wild``). For every shipped model (or ``--models``) it computes the
clip summaries, the training statistics (from s1 ``train``), every clip's signals, and prints per group the
signal's median [min, max] and its firing rate at the model's thresholds, then the overall warning
rate with the audio signals and from the video alone. The statistics come from s1 ``train``, the thresholds from
s1 ``val`` (median ± domain.SPREAD_RULE robust standard deviations) — test, s4 and wild are only reported.

    nice -n 5 python scripts/calibrate_domain.py --cache CACHE --speakers ../shared/data/speakers/s4 \\
        --wild ../shared/data/wild --work /tmp/domain [--write]

``--write`` stores the training statistics in ``naturall2s/resources/domain_reference.json``. ``--work`` keeps the
mouth crops of the videos and the audio summaries between runs (scratch, outside the repository).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from naturall2s import domain  # noqa: E402
from naturall2s.checkpoints import available_models, load_model  # noqa: E402
from naturall2s.data import load_cached, load_splits  # noqa: E402

GROUPS = ("train", "val", "test", "speakers", "wild")


def video_clips(folder: Path, work: Path, tag: str) -> dict[str, dict]:
    """{name: {roi, lips, audio}} of every mp4 in ``folder``; mouth crops cached in ``work`` as npz."""
    from naturall2s.landmarks import get_detector
    from naturall2s.roi import extract_mouth

    out, detector = {}, None
    for path in tqdm(sorted(folder.glob("*.mp4")), desc=f"mouths {tag}", unit="clip"):
        cached = work / "mouths" / f"{tag}_{path.stem}.npz"
        if not cached.is_file():
            detector = detector or get_detector("auto")
            clip = extract_mouth(path, detector=detector)
            cached.parent.mkdir(parents=True, exist_ok=True)
            audio = clip.audio if clip.audio is not None else np.zeros(0, np.float32)
            np.savez(cached, roi=clip.roi, lips=clip.lips, audio=audio)
        with np.load(cached) as z:
            out[f"{tag}/{path.stem}"] = {"roi": z["roi"], "lips": z["lips"], "audio": z["audio"]}
    return out


def load_groups(args) -> dict[str, dict[str, dict]]:
    splits = load_splits(args.cache)
    groups = {}
    for split in ("train", "val", "test"):
        names = splits[split][: args.limit] if args.limit else splits[split]
        groups[split] = {}
        for n in tqdm(names, desc=f"cache {split}", unit="clip"):
            rec = load_cached(Path(args.cache) / "clips" / f"{n}.npz")
            groups[split][n] = {"roi": rec["roi"], "lips": rec["lips"].astype(np.float32), "audio": rec["audio"]}
    groups["speakers"] = video_clips(Path(args.speakers), args.work, "speakers") if args.speakers else {}
    groups["wild"] = video_clips(Path(args.wild), args.work, "wild") if args.wild else {}
    return groups


def audio_summaries(groups, work: Path) -> dict[str, tuple]:
    """{clip: (embedding or None, median F0 or None)}, cached in ``work/audio.npz``."""
    path = work / "audio.json"
    done = json.loads(path.read_text()) if path.is_file() else {}
    clips = [(g, n, c) for g, cs in groups.items() for n, c in cs.items()]
    for g, n, c in tqdm(clips, desc="audio", unit="clip"):
        key = f"{g}:{n}"
        if key in done:
            continue
        a = c["audio"]
        if a.size and float(np.abs(a).max()) > 0:
            emb, f0 = domain.voice_summary(a.astype(np.float32))
            done[key] = [emb.tolist(), f0]
        else:
            done[key] = [None, None]
    path.write_text(json.dumps(done))
    return {k: (None if e is None else np.asarray(e, np.float32), f) for k, (e, f) in done.items()}


def model_signals(model, groups, audio) -> tuple[dict, dict]:
    """(reference statistics, {group: {clip: signals}}) for one model; with and without the audio."""
    summaries = {}
    for g, clips in groups.items():
        summaries[g] = {}
        for n, c in tqdm(clips.items(), desc=f"{model.name} {g}", unit="clip", leave=False):
            s = domain.summarize(model, c["roi"], c["lips"])
            s.embedding, s.f0_median = audio[f"{g}:{n}"]
            summaries[g][n] = s
    reference = domain.reference_statistics(
        list(summaries["train"].values()), val=list(summaries["val"].values()),
        description=f"GRID s1: statistics of the {len(summaries['train'])} train clips, thresholds from the "
                    f"{len(summaries['val'])} val clips (median ± {domain.SPREAD_RULE:g} robust sd)")
    values = {g: {n: domain.signals(s, reference) for n, s in ss.items()} for g, ss in summaries.items()}
    return reference, values


def report(name: str, values: dict, thresholds: dict) -> None:
    print(f"\n## {name}\n")
    names = list(thresholds)
    head = "| signal | threshold | " + " | ".join(f"{g} (n={len(values[g])})" for g in GROUPS if values[g]) + " |"
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for sig in names:
        kind, direction, t = thresholds[sig]
        cells = []
        for g in GROUPS:
            if not values[g]:
                continue
            v = np.array([x[sig] for x in values[g].values() if sig in x])
            if not v.size:
                cells.append("–")
                continue
            rate = np.mean(v > t) if direction == "max" else np.mean(v < t)
            cells.append(f"{np.median(v):.3f} [{v.min():.3f}, {v.max():.3f}] fires {rate:.0%}")
        print(f"| {sig} ({kind}) | {'>' if direction == 'max' else '<'} {t:g} | " + " | ".join(cells) + " |")
    for label, keep in (("warning, video + audio", ("video", "audio")), ("warning, video only", ("video",))):
        th = {k: v for k, v in thresholds.items() if v[0] in keep}
        cells = []
        for g in GROUPS:
            if values[g]:
                fired = [bool(domain.fired(x, th)) for x in values[g].values()]
                cells.append(f"{np.mean(fired):.0%} ({sum(fired)}/{len(fired)})")
        print(f"| **{label}** | | " + " | ".join(cells) + " |")
    vv = list(values["val"].values())
    print("val min / max: " + "; ".join(
        f"{sig} {min(x[sig] for x in vv if sig in x):.3f} / {max(x[sig] for x in vv if sig in x):.3f}"
        for sig in thresholds if any(sig in x for x in vv)))
    for g in ("speakers", "wild"):
        missed = [n for n, x in values[g].items() if not domain.fired(x, thresholds)]
        if missed:
            print(f"{g}: no warning on {', '.join(missed)}")
    for g in ("val", "test"):
        hit = [n for n, x in values[g].items() if domain.fired(x, thresholds)]
        if hit:
            print(f"{g}: warning on " + ", ".join(f"{n} ({', '.join(domain.fired(values[g][n], thresholds))})"
                                                  for n in hit))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache", required=True, help="prepared GRID s1 cache (train/val/test)")
    p.add_argument("--speakers", default=None, help="folder of other speakers' GRID mp4s (e.g. speakers/s4)")
    p.add_argument("--wild", default=None, help="folder of in-the-wild mp4s")
    p.add_argument("--models", nargs="+", default=None, help="shipped model names (default: all)")
    p.add_argument("--work", type=Path, required=True, help="scratch folder for mouth crops and audio summaries")
    p.add_argument("--limit", type=int, default=None, help="first N clips of each split (a quick look)")
    p.add_argument("--write", action="store_true", help="write naturall2s/resources/domain_reference.json")
    p.add_argument("--dump", type=Path, default=None, help="write every clip's signals as JSON here")
    args = p.parse_args()
    torch.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    groups = load_groups(args)
    audio = audio_summaries(groups, args.work)
    references, dump = {}, {}
    for name in args.models or available_models():
        model = load_model(name)
        references[name], values = model_signals(model, groups, audio)
        dump[name] = values
        report(name, values, domain.thresholds_of(references[name]))
    if args.dump:
        args.dump.write_text(json.dumps(dump, indent=1))
    if args.write:
        write_references(references)
        print(f"\nwrote {domain.REFERENCE_FILE.relative_to(REPO)}")
    return 0


def write_references(references: dict[str, dict]) -> None:
    """resources/domain_reference.json, compact; a model whose statistics equal an earlier one's (the same front
    end, e.g. mel-gl and mel-vocoder) is stored as ``{"same_as": name}``."""
    models = {}
    for name, ref in references.items():
        same = next((n for n, r in models.items() if r == ref), None)
        models[name] = {"same_as": same} if same else ref
    doc = {"about": "training statistics of the shipped models for naturall2s.domain: aggregates over GRID s1 "
                    "train only (means, principal directions and variances of per-clip mean features and lip "
                    "shapes, a unit mean speaker embedding, a median F0) and thresholds from s1 val; written by "
                    "scripts/calibrate_domain.py --write",
           "models": models}
    text = json.dumps(doc, separators=(",", ":"))
    domain.REFERENCE_FILE.write_text(text.replace(',"', ',\n"') + "\n")  # one key per line: readable diffs


if __name__ == "__main__":
    raise SystemExit(main())
