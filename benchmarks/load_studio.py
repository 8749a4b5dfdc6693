"""Latency of the studio's ``/synthesize``: one request at a time, then N at once, from separate gradio_client clients.

    python benchmarks/load_studio.py [--url http://127.0.0.1:7860/] [-n 8] [--repeats 8] [--models NAME ...]
                                     [--scoring-workers 2]

Without ``--url`` it starts ``app.py`` in a subprocess on a free port (set through ``GRADIO_SERVER_PORT``), so the
clients do not share the server's interpreter. Each request sends a different GRID test clip (3 s, with its own
audio: every score is computed; no output is reused between requests). ``/synthesize`` answers twice: every
system's audio first ("audio" below: the time until that message arrives), then the metrics table ("end to end").
Prints each request's times, then median and p95 of both, for sequential requests and for N concurrent ones;
exits 1 if any request failed.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED_DATA = Path(os.environ.get("NATURALL2S_SHARED_DATA", REPO.parent / "shared" / "data"))
POLL_S = 0.01
START_TIMEOUT_S = 600.0


def test_clips() -> list[Path]:
    """The GRID s1 test clips, in split order."""
    grid = SHARED_DATA / "grid"
    names = json.loads((grid / "splits.json").read_text())["s1"]["test"]
    return [grid / "s1" / f"{n}.mp4" for n in names]


def default_clip() -> Path:
    """The first GRID test clip."""
    return test_clips()[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(models: list[str] | None, scoring_workers: int, log_path: Path) -> tuple[subprocess.Popen, str]:
    """``app.py`` in a subprocess; returns it and its URL once it answers."""
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1"}
    cmd = [sys.executable, str(REPO / "app.py"), "--scoring-workers", str(scoring_workers),
           "--votes", str(log_path.with_suffix(".votes.sqlite")), "--jobs", str(log_path.with_suffix(".jobs.sqlite"))]
    if models:
        cmd += ["--models", *models]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    while time.perf_counter() - t0 < START_TIMEOUT_S:
        if proc.poll() is not None:
            raise SystemExit(f"app.py exited with {proc.returncode}; see {log_path}")
        try:
            urllib.request.urlopen(url, timeout=5)
            print(f"studio up in {time.perf_counter() - t0:.1f} s at {url}")
            return proc, url
        except OSError:
            time.sleep(1.0)
    proc.terminate()
    raise SystemExit("the studio did not start in time")


def one_request(url: str, clip: Path) -> tuple[float, float, str | None]:
    """(seconds until every system's audio arrived, seconds until the scores arrived, error or None)."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    t0 = time.perf_counter()
    audio_t = None
    try:
        job = client.submit(handle_file(str(clip)), "", api_name="/synthesize")
        while not job.done():
            if audio_t is None and job.outputs():
                audio_t = time.perf_counter() - t0
            time.sleep(POLL_S)
        out = job.result()
        total = time.perf_counter() - t0
        assert out[-1] and out[-1]["data"], "empty metrics table"
        assert all(out[:-1]), "a system's audio is missing"
        return audio_t if audio_t is not None else total, total, None
    except Exception as e:  # report, do not stop the other requests
        return audio_t or float("nan"), time.perf_counter() - t0, f"{type(e).__name__}: {e}"


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20, method="inclusive")[-1] if len(xs) > 1 else xs[0]


def report(label: str, results: list[tuple[float, float, str | None]], clips: list[Path]) -> int:
    for (audio_t, total, err), clip in zip(results, clips):
        print(f"  {clip.name}: audio {audio_t:5.2f} s, end to end {total:5.2f} s {'ERROR ' + err if err else ''}")
    ok = [r for r in results if not r[2]]
    audio, total = [r[0] for r in ok], [r[1] for r in ok]
    if ok:
        print(f"{label}: audio median {statistics.median(audio):.2f} s, p95 {p95(audio):.2f} s; "
              f"end to end median {statistics.median(total):.2f} s, p95 {p95(total):.2f} s; "
              f"errors {len(results) - len(ok)}")
    return len(results) - len(ok)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=None, help="a running studio (default: start app.py in a subprocess)")
    ap.add_argument("-n", type=int, default=8, help="concurrent requests in the second part (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=8, help="sequential requests in the first part (default: %(default)s)")
    ap.add_argument("--models", nargs="+", default=None, help="systems (default: every shipped model)")
    ap.add_argument("--scoring-workers", type=int, default=2, help="app.py --scoring-workers (default: %(default)s)")
    ap.add_argument("--log", type=Path, default=Path("/tmp/naturall2s-load-studio.log"),
                    help="the started app's output (default: %(default)s)")
    args = ap.parse_args()
    clips = test_clips()
    need = 1 + args.repeats + args.n
    if len(clips) < need:
        raise SystemExit(f"need {need} test clips, have {len(clips)}")
    proc = None
    url = args.url
    if url is None:
        proc, url = start_app(args.models, args.scoring_workers, args.log)
    try:
        one_request(url, clips[0])  # warm-up (first-call costs), not timed
        seq_clips = clips[1:1 + args.repeats]
        sequential = [one_request(url, c) for c in seq_clips]
        par_clips = clips[1 + args.repeats:need]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.n) as pool:
            concurrent = list(pool.map(lambda c: one_request(url, c), par_clips))
        wall = time.perf_counter() - t0
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    errors = report(f"1 at a time ({args.repeats} requests)", sequential, seq_clips)
    errors += report(f"{args.n} concurrent", concurrent, par_clips)
    print(f"{args.n} concurrent: wall {wall:.2f} s ({args.n / wall:.2f} requests/s)")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
