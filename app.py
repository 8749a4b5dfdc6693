"""NaturalL2S Studio: the comparison web app.

    python app.py [--host HOST] [--port PORT] [--share] [--examples DIR ...] [--votes PATH] [--jobs PATH]
                  [--models NAME ...] [--max-seconds S] [--scoring-workers N] [--seed N]

Host and port default to Gradio's environment variables GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (127.0.0.1:7860
when unset); --host/--port override them.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent
# the clips shipped in examples/ (GRID s1 test clips, CC BY 4.0), then the GRID test split when the data is present
DEFAULT_EXAMPLES = [REPO / "examples",
                    Path(os.environ.get("NATURALL2S_SHARED_DATA", REPO.parent / "shared" / "data")) / "grid"]
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def parse_args(argv=None) -> argparse.Namespace:
    from naturall2s.landmarks import DETECTOR_NAMES
    from naturall2s.studio.ab_store import default_votes_path
    from naturall2s.studio.scoring import DEFAULT_WORKERS
    from naturall2s.studio.ui import DEFAULT_MAX_SECONDS

    env_host = os.environ.get("GRADIO_SERVER_NAME")
    env_port = os.environ.get("GRADIO_SERVER_PORT")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default=env_host or DEFAULT_HOST,
                   help="interface to listen on, 0.0.0.0 for all (default: %(default)s, from $GRADIO_SERVER_NAME when set)")
    p.add_argument("--port", type=int, default=int(env_port) if env_port else DEFAULT_PORT,
                   help="port (default: %(default)s, from $GRADIO_SERVER_PORT when set)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (default: off)")
    p.add_argument("--examples", type=Path, nargs="+", default=DEFAULT_EXAMPLES, metavar="DIR",
                   help="folders of example clips, in order; a GRID root (with splits.json) gives its test clips; "
                        "missing folders are skipped (default: examples/ of this repository, then "
                        f"{DEFAULT_EXAMPLES[1]})")
    p.add_argument("--votes", type=Path, default=default_votes_path(), metavar="PATH",
                   help="SQLite file of A/B votes (default: %(default)s)")
    p.add_argument("--jobs", type=Path, default=default_votes_path().with_name("studio_jobs.sqlite"),
                   metavar="PATH", help="SQLite file of the 'Add a speaker' jobs (their clips go beside it; default: %(default)s)")
    p.add_argument("--models", nargs="+", default=None, metavar="NAME",
                   help="systems to compare (default: every shipped checkpoint and the user's adapted models)")
    p.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS, metavar="S",
                   help="refuse longer clips (default: %(default)s)")
    p.add_argument("--detector", default="auto", choices=DETECTOR_NAMES,
                   help="face landmark detector (default: %(default)s: FAN when its weights are on disk, else MediaPipe)")
    p.add_argument("--cache", type=Path, default=None, metavar="DIR",
                   help="folder for per-request files, cleaned by age (default: <system temp>/naturall2s-studio)")
    p.add_argument("--scoring-workers", type=int, default=DEFAULT_WORKERS, metavar="N",
                   help="processes that score outputs (ASR, STOI, PESQ, F0, speaker) side by side; 0: in the app (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="torch threads per model run (default: %(default)s: requests and models already run side by side)")
    p.add_argument("--seed", type=int, default=None, metavar="N",
                   help="synthesis seed (default: the models' own fixed default, so a clip always sounds the same)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    import naturall2s
    from naturall2s.errors import NaturalL2SError
    from naturall2s.studio import enroll
    from naturall2s.studio.ab_store import VoteStore
    from naturall2s.studio.jobs import JobRunner, JobStore
    from naturall2s.studio.pipeline import load_studio
    from naturall2s.studio.ui import find_examples_in, serve

    torch.set_num_threads(max(1, args.threads))
    try:
        if not (args.models or naturall2s.available_models()):
            raise NaturalL2SError("no models: checkpoints/ holds no shipped checkpoint (see README: training)")
        print("loading models, landmark detector, ASR and speaker encoder ...", file=sys.stderr, flush=True)
        studio = load_studio(args.models, detector=args.detector, max_seconds=args.max_seconds, cache_dir=args.cache,
                             scoring_workers=args.scoring_workers, seed=args.seed)
        votes = VoteStore(args.votes)
        jobs = None
        if (why := enroll.adaptation_available()) is None:
            jobs = JobRunner(JobStore(args.jobs), enroll.adapt_work, on_done=enroll.serve_when_done(studio))
        else:
            print(f"'Add a speaker' is off: {why}", file=sys.stderr, flush=True)
    except NaturalL2SError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    examples = find_examples_in(args.examples)
    print(f"systems: {', '.join(studio.system_names)}; {len(examples)} examples; votes in {args.votes}",
          file=sys.stderr, flush=True)
    serve(studio, votes=votes, examples=examples, jobs=jobs, host=args.host, port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
