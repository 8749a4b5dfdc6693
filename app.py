"""NaturalL2S Studio: the comparison web app.

    python app.py [--host 127.0.0.1] [--port 7860] [--share] [--examples DIR] [--votes PATH]
                  [--models NAME ...] [--max-seconds S]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent
DEFAULT_EXAMPLES = Path(os.environ.get("NATURALL2S_SHARED_DATA", REPO.parent / "shared" / "data")) / "grid"


def parse_args(argv=None) -> argparse.Namespace:
    from naturall2s.landmarks import DETECTOR_NAMES
    from naturall2s.studio.ab_store import default_votes_path
    from naturall2s.studio.ui import DEFAULT_MAX_SECONDS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s; 0.0.0.0: all)")
    p.add_argument("--port", type=int, default=7860, help="default: %(default)s")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    p.add_argument("--examples", type=Path, default=DEFAULT_EXAMPLES, metavar="DIR",
                   help="folder of example clips; a GRID root (with splits.json) gives its test clips "
                        "(default: %(default)s)")
    p.add_argument("--votes", type=Path, default=default_votes_path(), metavar="PATH",
                   help="SQLite file of A/B votes (default: %(default)s)")
    p.add_argument("--models", nargs="+", default=None, metavar="NAME",
                   help="systems to compare (default: every shipped checkpoint)")
    p.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS, metavar="S",
                   help="refuse longer clips (default: %(default)s)")
    p.add_argument("--detector", default="auto", choices=DETECTOR_NAMES,
                   help="face landmark detector (default: %(default)s)")
    p.add_argument("--cache", type=Path, default=None, metavar="DIR",
                   help="folder for per-request files, cleaned by age (default: <system temp>/naturall2s-studio)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import naturall2s
    from naturall2s.errors import NaturalL2SError
    from naturall2s.studio.ab_store import VoteStore
    from naturall2s.studio.pipeline import load_studio
    from naturall2s.studio.ui import find_examples, serve

    try:
        if not (args.models or naturall2s.available_models()):
            raise NaturalL2SError("no models: checkpoints/ holds no shipped checkpoint (see README: training)")
        print("loading models, landmark detector, ASR and speaker encoder ...", file=sys.stderr)
        studio = load_studio(args.models, detector=args.detector, max_seconds=args.max_seconds, cache_dir=args.cache)
        votes = VoteStore(args.votes)
    except NaturalL2SError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    examples = find_examples(args.examples)
    print(f"systems: {', '.join(studio.system_names)}; {len(examples)} examples; votes in {args.votes}",
          file=sys.stderr)
    serve(studio, votes=votes, examples=examples, host=args.host, port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
