"""``python -m naturall2s live [VIDEO | --camera N] -o take.wav --model M``: speech while the face speaks."""
from __future__ import annotations

import argparse

from naturall2s.cli import at_least

HELP = "live synthesis: a camera (or a video fed at its real rate) in, speech out as it is made"
DESCRIPTION = (
    "Track the mouth frame by frame and synthesize speech in chunks as the frames arrive (naturall2s.stream). "
    "With VIDEO, its frames are fed at 25 fps in real time, as a camera would give them; with --camera N, "
    "OpenCV's camera N is read until Ctrl-C or --seconds. Prints each chunk's latency (from a frame's arrival to "
    "its audio) and ends with 'latency: median X ms, p95 Y ms; real-time factor Z'. Writes the take as a wav "
    "(and with --video-out, the frames it saw, dubbed)."
)



def add_arguments(parser: argparse.ArgumentParser) -> None:
    from naturall2s.stream import DEFAULT_HOP, DEFAULT_LOOKAHEAD, DEFAULT_WINDOW

    parser.add_argument("video", nargs="?", default=None,
                        help="a video to feed at its real rate (default: none; then --camera is needed)")
    parser.add_argument("--camera", type=int, default=None, metavar="N",
                        help="read OpenCV camera N instead of a file (default: none)")
    parser.add_argument("-o", "--output", default="take.wav", help="output wav, 16 kHz mono (default: %(default)s)")
    parser.add_argument("--model", default="naturall2s", metavar="NAME",
                        help="model name (python -m naturall2s models, adapted ones too) or .safetensors path "
                             "(default: %(default)s)")
    parser.add_argument("--lookahead", type=at_least(0.0), default=DEFAULT_LOOKAHEAD, metavar="S",
                        help="seconds of future frames the model waits for (whole frames, at least one; "
                             "default: %(default)s)")
    parser.add_argument("--window", type=at_least(0.0), default=DEFAULT_WINDOW, metavar="S",
                        help="seconds of past frames the model sees (default: %(default)s)")
    parser.add_argument("--hop", type=int, default=DEFAULT_HOP, metavar="K",
                        help="frames between model runs (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default: %(default)s; more only help on an otherwise idle machine)")
    parser.add_argument("--no-student", action="store_true",
                        help="run the model's own transformer on the windows even when it has a live student "
                             "(default: the student when there is one)")
    parser.add_argument("--seconds", type=at_least(0.0), default=0, metavar="S",
                        help="stop after S seconds (default: %(default)s: the whole file, or until Ctrl-C)")
    parser.add_argument("--video-out", default=None, metavar="MP4",
                        help="also write the frames seen, with the take as their sound (default: no video)")
    parser.add_argument("--quiet", action="store_true",
                        help="print only the summary line, not every chunk (default: every chunk)")


def _file_frames(path: str, seconds: float):
    """The file's frames at 25 fps (at most naturall2s.video.MAX_SECONDS long, as for synthesize)."""
    from naturall2s.roi import decode_clip

    frames = decode_clip(path).frames
    return frames[: int(round(seconds * 25))] if seconds else frames


def _camera_frames(index: int, seconds: float):
    """Frames of OpenCV camera ``index`` resampled to 25 fps (the latest frame at each 40 ms tick)."""
    import time

    import cv2

    from naturall2s.errors import NaturalL2SError

    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        raise NaturalL2SError(f"cannot open camera {index} (is it connected, and free?)")
    try:
        start = time.perf_counter()
        i = 0
        while not seconds or i < seconds * 25:
            ok, bgr = cap.read()
            if not ok:
                raise NaturalL2SError(f"camera {index} stopped giving frames")
            if time.perf_counter() - start < i / 25:  # camera faster than 25 fps: drop this one
                continue
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            i += 1
    finally:
        cap.release()


def run(args) -> int:
    import sys

    import numpy as np
    import soundfile as sf

    from naturall2s import load_model
    from naturall2s.audio import SAMPLE_RATE
    from naturall2s.errors import NaturalL2SError
    from naturall2s.stream import FPS, SAMPLES_PER_FRAME, feed_frames

    if (args.video is None) == (args.camera is None):
        raise NaturalL2SError("give a VIDEO or --camera N (one of them)")
    model = load_model(args.model)
    live = model.stream(lookahead=args.lookahead, window=args.window, hop=args.hop, threads=args.threads,
                        student=False if args.no_student else None)
    if args.video is not None:
        frames = _file_frames(args.video, args.seconds)
        real_time = True
    else:
        frames = _camera_frames(args.camera, args.seconds)
        real_time = False  # the camera itself paces the frames
    seen = [] if args.video_out else None

    def tap(source):
        for f in source:
            if seen is not None:
                seen.append(f)
            yield f

    last_message = [""]
    out = sf.SoundFile(args.output, "w", samplerate=SAMPLE_RATE, channels=1, subtype="PCM_16")
    done = [0]

    def on_chunk(chunk, live):
        out.write(chunk)
        frames_out = len(chunk) // SAMPLES_PER_FRAME
        first = done[0]
        done[0] += frames_out
        if not args.quiet:
            lat = live._latencies[-frames_out:] if frames_out else []
            print(f"chunk frames {first}-{done[0] - 1}: {frames_out * 1000 // FPS} ms of audio, latency "
                  f"{1000 * min(lat):.0f}-{1000 * max(lat):.0f} ms" if lat else f"chunk frames {first}-{done[0] - 1}")
        if live.message != last_message[0]:
            last_message[0] = live.message
            if live.message:
                print(f"note: {live.message}", file=sys.stderr)

    try:
        try:
            feed_frames(live, tap(frames), real_time=real_time, on_chunk=on_chunk)
        except KeyboardInterrupt:
            rest = live.flush()
            if len(rest):
                on_chunk(rest, live)
    finally:
        out.close()
    s = live.stats()
    print(f"{args.output}: {s.audio_seconds:.2f} s of speech from {model.name}; lip-read: {live.text or '(nothing)'}")
    if args.video_out and seen:
        import tempfile
        from pathlib import Path

        from naturall2s.audio import load_audio
        from naturall2s.video import mux_audio, write_rgb_video

        with tempfile.TemporaryDirectory(prefix="naturall2s-live-") as work:
            silent = Path(work) / "frames.mp4"
            write_rgb_video(silent, np.stack(seen), fps=FPS)
            mux_audio(silent, load_audio(args.output), SAMPLE_RATE, args.video_out)
        print(f"{args.video_out}: dubbed video")
    print(f"latency: median {1000 * s.latency_median:.0f} ms, p95 {1000 * s.latency_p95:.0f} ms; "
          f"real-time factor {s.real_time_factor:.3f}")
    return 0
