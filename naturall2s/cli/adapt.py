"""``python -m naturall2s adapt CLIP_OR_DIR... --name NAME``: a model of a new speaker from a few of their clips."""
from __future__ import annotations

import argparse

HELP = "adapt a model to a new speaker from a few of their clips (with their own audio; no transcripts needed)"
DESCRIPTION = (
    "Fine-tune a model on clips of one person (video with its own audio track). Transcripts come from the offline "
    "ASR under the GRID grammar (a sidecar CLIP.txt wins; an unsure or non-GRID transcript is refused), word "
    "timings from forced alignment. A few clips are held out to select the checkpoint (validation) and, when there "
    "are enough usable clips (see --test), a few more to test it: a before/after table (without a test part, it "
    "says that its scores are optimistic). The checkpoint goes to the user models folder "
    "(~/.cache/naturall2s/models, $NATURALL2S_MODELS, or --out) and is then found by name like a shipped model. "
    "Resumable: after Ctrl-C, run the same command again."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from naturall2s.adapt import BASE_CLIPS_PER_CLIP, DEFAULT_MINUTES, TEST_MIN_CLIPS
    from naturall2s.landmarks import DETECTOR_NAMES

    parser.add_argument("clips", nargs="+", metavar="CLIP_OR_DIR", help="video files, or folders of them")
    parser.add_argument("--name", required=True, help="name of the new model (letters, digits, . _ -; required, no default)")
    parser.add_argument("--base", default="naturall2s", metavar="NAME",
                        help="model to adapt, a name or a .safetensors path, of any variant: naturall2s and "
                             "naturall2s-noddsp train end to end (stage synth), mel-gl its lip reader and mel head "
                             "(stage lipreader), mel-vocoder those and then its vocoder on the clips' real mels, "
                             "units its vocoder on the clips' real mels and units, then its lip reader and unit head, "
                             "ltbs its vocoder on the clips' real mels, then its front end, variance adaptor, mel "
                             "decoder and post-net, lipvoicer its vocoder on the clips' real mels, then its "
                             "flow-matching denoiser (default: %(default)s)")
    parser.add_argument("--minutes", type=float, default=DEFAULT_MINUTES, metavar="M",
                        help="cap on the wall time in minutes: training stops there and keeps its best checkpoint so "
                             "far; resumable; 0: no cap (default: %(default)s, what the recipe takes on one CPU "
                             "thread for 25 clips)")
    parser.add_argument("--out", default=None, metavar="DIR", help="folder for the checkpoint (default: the user models folder)")
    parser.add_argument("--keep-base", default=None, metavar="CACHE",
                        help="prepared cache of the base speaker to mix into training: one model for both (default: none)")
    parser.add_argument("--names-as-transcripts", action="store_true",
                        help="take each clip's transcript from its GRID clip name (e.g. bbaf2n) instead of the ASR (default: off)")
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help="training steps of each stage (default: the recipe's)")
    parser.add_argument("--holdout", type=int, default=None, metavar="N",
                        help="clips held out to select the checkpoint (default: a fifth, 1 to 5; with a test part, "
                             "two fewer, at least 2)")
    parser.add_argument("--test", type=int, default=None, metavar="N",
                        help=f"clips held out to score the result only (default: a fifth, 1 to 5, from "
                             f"{TEST_MIN_CLIPS} usable clips on, else none; 0: none)")
    parser.add_argument("--recipe", type=__import__("json").loads, default=None, metavar="JSON",
                        help='overrides of the recipe, e.g. \'{"lr": 3e-4}\', or of one stage\'s, e.g. '
                             '\'{"vocoder": {"steps": 50}}\' (naturall2s.adapt.RECIPE; default: none)')
    parser.add_argument("--base-clips", type=int, default=None, metavar="N",
                        help=f"with --keep-base: how many base clips to mix in (default: {BASE_CLIPS_PER_CLIP} per "
                             "training clip)")
    parser.add_argument("--device", default="auto", help="auto (a GPU when present), cpu or cuda (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, metavar="N", help="CPU threads, 0: all cores (default: %(default)s)")
    parser.add_argument("--detector", default="auto", choices=DETECTOR_NAMES,
                        help="face landmark detector (default: %(default)s: FAN when its weights are on disk, "
                             "else MediaPipe)")
    parser.add_argument("--seed", type=int, default=1337,
                        help="seed of the held-out draw and the training (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from naturall2s.adapt import adapt, heldout_table
    from naturall2s.checkpoints import read_metadata

    path = adapt(args.clips, name=args.name, base=args.base, minutes=args.minutes or None, out=args.out,
                 keep_base=args.keep_base, names_as_transcripts=args.names_as_transcripts, steps=args.steps,
                 recipe=args.recipe, holdout=args.holdout, test=args.test, base_clips=args.base_clips, device=args.device,
                 threads=args.threads, detector=args.detector, seed=args.seed)
    print(heldout_table(read_metadata(path)["info"]))
    print(f"use it: python -m naturall2s synthesize VIDEO --model {args.name}")
    return 0
