"""``python -m naturall2s evaluate``: objective scores of models (and the real audio) on a GRID split."""
from __future__ import annotations

import argparse

HELP = ("score models on a GRID split: STOI, ESTOI, PESQ, MOS, pause buzz, MCD, F0, voicing, WER/CER, speaker "
        "similarity, RTF")
DESCRIPTION = (
    "Run each model on every clip of a GRID split and score its speech against the real recording: "
    "STOI, ESTOI, PESQ-nb/wb, predicted MOS (naturalness), the pause buzz (comb dB), MCD, F0 RMSE (cents), voicing error, WER/CER (ASR vs the .align transcript), "
    "speaker similarity and real-time factor. --reference scores the real audio itself (the evaluator's floor). "
    "Writes results.md, summary.csv, clips.csv and results.json into --out and prints the table "
    "(mean ± 95% Student-t interval over clips)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from naturall2s.landmarks import DETECTOR_NAMES

    parser.add_argument("--split", default="test", help="split of splits.json to score (default: %(default)s)")
    parser.add_argument("--models", nargs="+", default=[], metavar="NAME",
                        help="model names (python -m naturall2s models) or .safetensors paths (default: none; with --reference "
                             "only the real audio is scored)")
    parser.add_argument("--focus", default=None, metavar="NAME",
                        help="model compared clip by clip with every other model (default: the last of --models)")
    parser.add_argument("--reference", action="store_true", help="also score the real audio as system 'reference' (default: off)")
    parser.add_argument("--data-root", default="../shared/data/grid",
                        metavar="DIR",
                        help="GRID root with <speaker>/*.mp4, align/ and splits.json (default: %(default)s)")
    parser.add_argument("--cache", default=None,
                        metavar="DIR",
                        help="prepared cache to take mouth crops and audio from (default: extract from the videos)")
    parser.add_argument("--out", default="results", metavar="DIR", help="folder for the result files (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="score only the first N clips of the split (default: every clip)")
    parser.add_argument("--asr", default="auto", choices=["auto", "pocketsphinx", "whisper"],
                        help="speech recogniser for WER/CER (default: %(default)s: pocketsphinx with the grammar; "
                             "without a grammar Whisper when its weights are on disk)")
    parser.add_argument("--grammar", default="grid", choices=["grid", "none"],
                        help="pocketsphinx grammar (default: %(default)s: the GRID sentence; none: open vocabulary)")
    parser.add_argument("--speaker", default="auto", choices=["auto", "resemblyzer", "ecapa"],
                        help="speaker encoder (default: %(default)s: ECAPA when its files are on disk, else Resemblyzer)")
    parser.add_argument("--mos", default="auto", choices=["auto", "distillmos", "utmos", "none"],
                        help="MOS predictor (default: %(default)s: UTMOS when its weights are on disk, else DistillMOS; "
                             "none: no MOS)")
    parser.add_argument("--detector", default="auto", choices=DETECTOR_NAMES,
                        help="face landmark detector when no --cache is given (default: %(default)s: FAN when its weights "
                             "are on disk, else MediaPipe)")


def run(args: argparse.Namespace) -> int:
    from naturall2s.evaluate import evaluate, markdown_table

    detector = None
    if args.models and args.cache is None:
        from naturall2s.landmarks import get_detector

        detector = get_detector(args.detector)
    results = evaluate(args.models, data_root=args.data_root, split=args.split, cache=args.cache,
                       reference=args.reference, out_dir=args.out, limit=args.limit, asr=args.asr,
                       grammar=None if args.grammar == "none" else args.grammar, speaker=args.speaker,
                       detector=detector, focus=args.focus, mos=None if args.mos == "none" else args.mos)
    print(markdown_table(results), end="")
    for s in results["skipped"]:
        print(f"skipped {s['clip']}: {s['reason']}")
    print(f"results in {args.out}/ (results.md, summary.csv, clips.csv, results.json)")
    return 0
