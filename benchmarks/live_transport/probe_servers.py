"""The two servers of ``bench.py``, each with the same probe in place of the model: every 1/25 s the newest camera
picture is pushed, and a picture brighter than mid-grey becomes 40 ms of a 1 kHz tone, a darker one 40 ms of silence.
The server appends the time of each dark-to-bright change it pushes (s since the epoch) to ``$PROBE_LOG``.

    python probe_servers.py gradio PORT     # the studio's Live tab (naturall2s/studio/live.py), Gradio 6 streaming
                                            # ($LIVE_TAB_REPO: take naturall2s from that checkout instead of this one)
    python probe_servers.py fastrtc PORT    # its fastrtc equivalent (WebRTC both ways); run with a Python that has
                                            # fastrtc, which needs gradio<6: a venv of its own
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TONE = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(640) / 16000)).astype(np.float32)  # 40 ms at 16 kHz


class Probe:
    """What the model would make of a picture: TONE for a bright one, silence for a dark one."""

    def __init__(self):
        self.bright = False
        self.n = 0

    def __call__(self, frame: np.ndarray | None) -> np.ndarray:
        self.n += 1
        bright = frame is not None and float(frame.mean()) > 128
        if bright and not self.bright:
            with open(os.environ["PROBE_LOG"], "a") as f:
                f.write(f"{time.time():.4f}\n")
        self.bright = bright
        return TONE.copy() if bright else np.zeros(len(TONE), np.float32)


def gradio_server(port: int) -> None:
    """The Live tab as the studio builds it, its model a LiveSynth stand-in around :class:`Probe`."""
    import gradio as gr

    sys.path.insert(0, os.environ.get("LIVE_TAB_REPO") or str(Path(__file__).resolve().parents[2]))
    from naturall2s.stream import LiveStats
    from naturall2s.studio.live import LiveTab

    class ProbeSynth:
        last_roi, text, message = None, "", ""

        def __init__(self):
            self.probe = Probe()

        def push(self, frame, *, arrival=None):
            return self.probe(frame)

        def flush(self):
            return np.zeros(0, np.float32)

        def stats(self):
            n = self.probe.n
            return LiveStats(frames=n, latency_median=0.0, latency_p95=0.0, compute_seconds=0.0, model_seconds=0.0,
                             audio_seconds=n / 25, runs=n)

    class ProbeModel:
        def stream(self, **kw):
            return ProbeSynth()

    class ProbeStudio:
        system_names = ["probe"]
        models = [("probe", ProbeModel())]

        def new_work_dir(self):
            return Path(tempfile.mkdtemp(prefix="live-probe-"))

    with gr.Blocks() as demo:
        LiveTab(ProbeStudio()).build(demo)
    demo.launch(server_name="127.0.0.1", server_port=port)


def fastrtc_server(port: int) -> None:
    """fastrtc's audio-video stream: the camera's frames arrive over WebRTC; every 1/25 s the newest goes through
    :class:`Probe` and its audio goes back over WebRTC (the microphone track is ignored)."""
    import asyncio

    from fastrtc import AsyncAudioVideoStreamHandler, Stream

    class Handler(AsyncAudioVideoStreamHandler):
        def __init__(self):
            super().__init__(expected_layout="mono", output_sample_rate=16000, input_sample_rate=48000)
            self.latest = None
            self.next_tick = None
            self.probe = Probe()

        async def receive(self, frame):
            pass

        async def emit(self):
            now = time.perf_counter()
            self.next_tick = now if self.next_tick is None else self.next_tick
            if self.next_tick > now:
                await asyncio.sleep(self.next_tick - now)
            self.next_tick += 0.04
            return 16000, self.probe(self.latest)

        async def video_receive(self, frame):
            self.latest = frame

        async def video_emit(self):
            return self.latest if self.latest is not None else np.zeros((480, 640, 3), np.uint8)

        def copy(self):
            return Handler()

    Stream(Handler(), modality="audio-video", mode="send-receive", concurrency_limit=4).ui.launch(
        server_name="127.0.0.1", server_port=port)


if __name__ == "__main__":
    {"gradio": gradio_server, "fastrtc": fastrtc_server}[sys.argv[1]](int(sys.argv[2]))
