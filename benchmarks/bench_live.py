"""Live synthesis (naturall2s/stream.py): latency and CPU at 25 fps, streamed against offline quality, memory over a
long take.

    nice -n 5 python benchmarks/bench_live.py latency [--variants ...] [--threads 1 2] [--seconds 12]
    nice -n 5 python benchmarks/bench_live.py quality [--clips 50] [--variant naturall2s] [--configs ...] [--mos]
    nice -n 5 python benchmarks/bench_live.py memory [--minutes 10] [--variant naturall2s]

``latency``: each (variant, threads) in a fresh subprocess; a GRID test clip, looped to ``--seconds``, is fed at 25 fps
in real time (``stream.feed_frames``: a late push keeps its frame's arrival time, so backlog counts). Latency of a
frame = from its arrival to the return of the push that emitted its audio (look-ahead + hop wait + compute + backlog).
CPU use = process CPU seconds / wall seconds of the feed (1.0 = one core busy).

``quality``: on the ``test`` split, each clip synthesized offline (``model.synthesize``) and streamed with each
config (frames pushed as fast as compute allows: the output does not depend on timing); ESTOI against the clip's
audio, WER of PocketSphinx under the GRID grammar against the ``.align`` sentence, optionally the DistillMOS
naturalness; paired differences streamed - offline, mean +- 95% t-interval over clips. Landmarks are detected once
per clip (MediaPipe, as the live tracker runs it) and replayed, so every config sees the same mouth.

``memory``: a looped clip pushed for ``--minutes`` of take (faster than real time); resident memory after the first
minute and at the end, and compute per frame in the first and the last minute (drift).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "grid"
VARIANTS = ("mel-gl", "mel-vocoder", "naturall2s-noddsp", "naturall2s")
# label -> LiveSynth keywords
CONFIGS = {
    "L=160ms own": dict(lookahead=0.16, student=False),
    "L=240ms own": dict(lookahead=0.24, student=False),
    "L=160ms student": dict(lookahead=0.16, student=True),
    "L=240ms student": dict(lookahead=0.24, student=True),
}


class Replay:
    """A FrameTracker that replays landmarks detected beforehand (one detection per clip for every config)."""

    def __init__(self, landmarks):
        self.landmarks, self.t = landmarks, 0

    def reset(self):
        self.t = 0

    def track(self, frame):
        t, self.t = self.t, self.t + 1
        return self.landmarks[t], 1 if t == 0 else None


def test_clip(index: int = 0) -> Path:
    names = json.loads((DATA / "splits.json").read_text())["s1"]["test"]
    return DATA / "s1" / f"{names[index]}.mp4"


# ---------------------------------------------------------------------------------------------------- latency
def latency_child(variant: str, threads: int, seconds: float, config: dict) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from naturall2s import load_model
    from naturall2s.roi import decode_clip
    from naturall2s.stream import feed_frames

    frames = decode_clip(test_clip()).frames
    reps = int(np.ceil(seconds * 25 / len(frames)))
    feed = np.concatenate([frames] * reps)[: int(seconds * 25)]
    model = load_model(variant)
    live = model.stream(threads=threads, **config)
    feed_frames(live, frames[:10], real_time=False)  # warm-up (lazy initialisation), then a fresh take
    cpu0, wall0 = time.process_time(), time.perf_counter()
    push_cpu = []  # process CPU seconds of each push that emitted audio (all threads: tracker, torch)
    for i, frame in enumerate(feed):  # stream.feed_frames, with each push's CPU time recorded
        due = wall0 + i / 25
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        c0 = time.process_time()
        if len(live.push(frame, arrival=due)):
            push_cpu.append(time.process_time() - c0)
    live.flush()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    s = live.stats()
    hop_wait = (live.hop - 1) / 2 / 25  # mean wait for the next run, s
    return {"variant": variant, "threads": threads, "config": config, "student": live.student,
            "lookahead_ms": 1000 * live.lookahead, "median_ms": 1000 * s.latency_median, "p95_ms": 1000 * s.latency_p95,
            "cpu_use": cpu / wall, "rtf": s.real_time_factor, "model_ms_per_run": 1000 * s.model_seconds / max(s.runs, 1),
            "frames": s.frames, "push_cpu_median_ms": 1000 * float(np.median(push_cpu)),
            "push_cpu_p95_ms": 1000 * float(np.percentile(push_cpu, 95)),
            # latency on a core of its own: look-ahead + waiting for the hop + the CPU time of the emitting push
            "idle_core_median_ms": 1000 * (live.lookahead + hop_wait + float(np.median(push_cpu))),
            "idle_core_p95_ms": 1000 * (live.lookahead + (live.hop - 1) / 25 + float(np.percentile(push_cpu, 95))),
            "load_average": list(__import__("os").getloadavg())}


def latency(args) -> None:
    rows = []
    for variant in args.variants:
        for threads in args.threads:
            config = json.loads(args.config)
            cmd = [sys.executable, __file__, "_latency_child", variant, str(threads), str(args.seconds), args.config]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                print(out.stderr[-2000:], file=sys.stderr)
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{variant:18s} threads {threads}: latency median {row['median_ms']:.0f} ms, p95 {row['p95_ms']:.0f} "
                  f"ms (look-ahead {row['lookahead_ms']:.0f} ms{', student' if row['student'] else ''}); CPU use "
                  f"{row['cpu_use']:.2f} cores; RTF {row['rtf']:.3f}; model {row['model_ms_per_run']:.0f} ms/run; CPU "
                  f"per emitting push median {row['push_cpu_median_ms']:.0f} ms, p95 {row['push_cpu_p95_ms']:.0f} ms -> "
                  f"latency on a free core median {row['idle_core_median_ms']:.0f} ms, p95 {row['idle_core_p95_ms']:.0f}"
                  f" ms; load average {row['load_average'][0]:.1f}",
                  flush=True)
            del config
    _save(args, {"latency": rows})


# ---------------------------------------------------------------------------------------------------- quality
def quality(args) -> None:
    import numpy as np

    from naturall2s import load_model, metrics
    from naturall2s.asr import get_asr
    from naturall2s.evaluate import clip_text, split_clips
    from naturall2s.landmarks import get_detector
    from naturall2s.roi import MouthClip, crop_mouth, decode_clip
    from naturall2s.stream import LiveSynth

    import torch

    torch.set_num_threads(1)
    model = load_model(args.variant)
    configs = {k: CONFIGS[k] for k in args.configs}
    asr = get_asr("pocketsphinx", grammar="grid")
    mos = None
    if args.mos:
        from naturall2s.naturalness import get_mos_predictor

        mos = get_mos_predictor("distillmos")
    det = get_detector("mediapipe")
    rows = []
    for i, clip in enumerate(split_clips(args.data_root, "test", limit=args.clips)):
        data = decode_clip(clip.video)
        landmarks = det.detect(data.frames)
        roi, lips, detected = crop_mouth(data.frames, landmarks)
        offline = model.synthesize(MouthClip(roi=roi, lips=lips, audio=data.audio, fps=25.0, detected=detected,
                                             source=str(clip.video))).wav
        ref = np.zeros(len(offline), np.float32)
        ref[: min(len(ref), len(data.audio))] = data.audio[: len(ref)]
        text = clip_text(clip)
        wavs = {"offline": offline}
        for label, kw in configs.items():
            live = LiveSynth(model, tracker=Replay(landmarks), **kw)
            wavs[label] = np.concatenate([live.push(f) for f in data.frames] + [live.flush()])
        row = {"clip": clip.name}
        for label, wav in wavs.items():
            row[label] = {"estoi": metrics.estoi(ref, wav), "wer": metrics.wer(text, asr.transcribe(wav, 16000)),
                          "estoi_vs_offline": metrics.estoi(offline, wav) if label != "offline" else 1.0}
            if mos is not None:
                row[label]["mos"] = float(mos.score([wav], 16000)[0])
        rows.append(row)
        print(f"{i + 1} {clip.name}: " + "; ".join(f"{k} ESTOI {v['estoi']:.3f} WER {v['wer']:.2f}"
                                                  for k, v in row.items() if k != "clip"), flush=True)
    summary = {}
    measures = ["estoi", "wer", "estoi_vs_offline"] + (["mos"] if mos is not None else [])
    for label in ["offline", *configs]:
        summary[label] = {m: metrics.mean_ci([r[label][m] for r in rows]) for m in measures}
        if label != "offline":
            summary[label].update({f"d_{m}": metrics.mean_ci([r[label][m] - r["offline"][m] for r in rows])
                                   for m in measures if m != "estoi_vs_offline"})
    print(f"\n{args.variant}, {len(rows)} test clips (mean +- 95% t-interval; d = streamed - offline, paired)")
    for label, s in summary.items():
        line = " ".join(f"{m} {v['mean']:.3f}+-{v['ci95']:.3f}" for m, v in s.items())
        print(f"{label:18s} {line}")
    _save(args, {"quality": summary, "clips": rows, "variant": args.variant})


# ---------------------------------------------------------------------------------------------------- memory
def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory(args) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from naturall2s import load_model
    from naturall2s.landmarks import get_detector
    from naturall2s.roi import decode_clip

    frames = decode_clip(test_clip()).frames
    landmarks = get_detector("mediapipe").detect(frames)
    model = load_model(args.variant)
    live = model.stream(tracker=_Looped(landmarks))
    total = int(args.minutes * 60 * 25)
    per_minute, samples = [], 0
    rss_after_first = None
    start = time.perf_counter()
    minute_start = start
    for i in range(total):
        samples += len(live.push(frames[i % len(frames)]))
        if (i + 1) % 1500 == 0:
            now = time.perf_counter()
            per_minute.append(1000 * (now - minute_start) / 1500)
            minute_start = now
            if rss_after_first is None:
                rss_after_first = _rss_mb()
            print(f"minute {len(per_minute)}: {per_minute[-1]:.1f} ms per frame, RSS {_rss_mb():.1f} MB", flush=True)
    samples += len(live.flush())
    rss_end = _rss_mb()
    out = {"variant": args.variant, "minutes": args.minutes, "samples": samples, "expected": total * 640,
           "rss_after_first_minute_mb": rss_after_first, "rss_end_mb": rss_end,
           "growth_mb": rss_end - rss_after_first if rss_after_first else None,
           "ms_per_frame_first_minute": per_minute[0] if per_minute else None,
           "ms_per_frame_last_minute": per_minute[-1] if per_minute else None}
    print(json.dumps(out))
    _save(args, {"memory": out})


class _Looped(Replay):
    def track(self, frame):
        t, self.t = self.t, self.t + 1
        return self.landmarks[t % len(self.landmarks)], 1 if t % 250 == 0 else None


def _save(args, obj) -> None:
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(obj, indent=1, default=float))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_latency_child":
        _, _, variant, threads, seconds, config = sys.argv
        print(json.dumps(latency_child(variant, int(threads), float(seconds), json.loads(config)), default=float))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("latency")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--config", default="{}", help='LiveSynth keywords as JSON, e.g. \'{"lookahead": 0.24}\'')
    p.add_argument("--out", default=None)
    p = sub.add_parser("quality")
    p.add_argument("--variant", default="naturall2s")
    p.add_argument("--clips", type=int, default=50)
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--mos", action="store_true")
    p.add_argument("--data-root", default=str(DATA))
    p.add_argument("--out", default=None)
    p = sub.add_parser("memory")
    p.add_argument("--variant", default="naturall2s")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--out", default=None)
    args = ap.parse_args()
    {"latency": latency, "quality": quality, "memory": memory}[args.cmd](args)


if __name__ == "__main__":
    main()
