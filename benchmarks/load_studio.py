"""Load test of the studio: N simultaneous ``/synthesize`` requests from separate gradio_client clients.

    python benchmarks/load_studio.py [--url http://127.0.0.1:7860/] [--clip CLIP.mp4] [-n 8] [--models NAME ...]

Without ``--url`` it starts the studio in this process on a free port (every shipped model, or ``--models``).
Prints each request's latency, then the median and maximum and the error count; exits 1 if any request failed.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED_DATA = Path(os.environ.get("NATURALL2S_SHARED_DATA", REPO.parent / "shared" / "data"))


def default_clip() -> Path:
    """The first GRID test clip."""
    grid = SHARED_DATA / "grid"
    name = json.loads((grid / "splits.json").read_text())["s1"]["test"][0]
    return grid / "s1" / f"{name}.mp4"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_studio(models: list[str] | None, tmp: Path) -> tuple[object, str]:
    from naturall2s.studio.ab_store import VoteStore
    from naturall2s.studio.pipeline import load_studio
    from naturall2s.studio.ui import serve

    t0 = time.perf_counter()
    studio = load_studio(models, cache_dir=tmp / "cache")
    print(f"start-up (models, detector, ASR, speaker encoder): {time.perf_counter() - t0:.1f} s; "
          f"systems: {', '.join(studio.system_names)}")
    return serve(studio, votes=VoteStore(tmp / "votes.sqlite"), port=free_port(), prevent_thread_lock=True, quiet=True)


def one_request(url: str, clip: Path, i: int) -> tuple[int, float, str | None]:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    t0 = time.perf_counter()
    try:
        out = client.predict(handle_file(str(clip)), "", api_name="/synthesize")
        assert out[-1]["data"], "empty metrics table"
        return i, time.perf_counter() - t0, None
    except Exception as e:  # report, do not stop the other requests
        return i, time.perf_counter() - t0, f"{type(e).__name__}: {e}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=None, help="a running studio (default: start one here)")
    ap.add_argument("--clip", type=Path, default=None, help="video to send (default: the first GRID test clip)")
    ap.add_argument("-n", type=int, default=8, help="simultaneous requests")
    ap.add_argument("--models", nargs="+", default=None)
    args = ap.parse_args()
    clip = args.clip or default_clip()
    with tempfile.TemporaryDirectory(prefix="naturall2s-load-") as tmp:
        demo, url = (None, args.url) if args.url else start_studio(args.models, Path(tmp))
        try:
            one_request(url, clip, -1)  # warm-up (first-call costs), not timed
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.n) as pool:
                results = list(pool.map(lambda i: one_request(url, clip, i), range(args.n)))
            wall = time.perf_counter() - t0
        finally:
            if demo is not None:
                demo.close()
    latencies = sorted(r[1] for r in results)
    errors = [r for r in results if r[2]]
    for i, lat, err in results:
        print(f"request {i}: {lat:6.2f} s {'ERROR ' + err if err else 'ok'}")
    print(f"{args.n} simultaneous /synthesize on {clip.name}: median {statistics.median(latencies):.2f} s, "
          f"max {latencies[-1]:.2f} s, wall {wall:.2f} s, errors {len(errors)}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
