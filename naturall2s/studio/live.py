"""The studio's "Live" tab: the webcam in, speech out while the face speaks (:mod:`naturall2s.stream`).

Gradio streaming: the webcam image component streams pictures to :meth:`LiveTab.on_frame` (``stream_every`` =
``FRAME_EVERY``), which only stores the newest one and returns the mouth crop, the lip-read words and the status (so
the browser sends the next picture at once). A worker thread per take pushes the newest picture into the session's
:class:`~naturall2s.stream.LiveSynth` every 1/25 s (the browser's rate is not exactly 25 fps: the newest picture
stands for the frame due); when it falls ``MAX_BACKLOG`` behind (a CPU too slow for the model) it skips ticks and the
status says so. The audio goes to a streaming audio player through a generator (:meth:`LiveTab.audio_stream`, the
"Listen" button) that yields what the model made since its last yield every ``AUDIO_EVERY`` seconds (Gradio encodes it
with an ``ffmpeg`` on PATH; without one the tab says so). Stop flushes the take and returns it as a wav and as a dubbed
mp4 (frames encoded as they came by :class:`naturall2s.video.RGBVideoWriter`, the audio appended to a wav file:
nothing of the take is held in memory).

One live take at a time per browser session; sessions are keyed by Gradio's session hash. A bad frame, an unknown
model, no face or several faces give a message in the tab; nothing raises out of a callback.
"""
from __future__ import annotations

import html
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np

from naturall2s.errors import NaturalL2SError

log = logging.getLogger(__name__)

FPS = 25
FRAME_EVERY = 0.04  # s between webcam frames the browser sends (it may send fewer)
AUDIO_EVERY = 0.2  # s between audio chunks sent to the player
TIME_LIMIT = 600  # s: the longest live take
MAX_BACKLOG = 0.5  # s: a worker this far behind the camera skips frames to catch up
LIVE_SESSIONS = 2  # live takes at once (each keeps a CPU core busy)
ROI_SCALE = 4  # the mouth crop is shown this many times enlarged
LIVE_INTRO = """## Live: mouth words at the camera and hear them
Start the webcam and speak **silently** (GRID-style sentences work best, e.g. *"bin blue at f two now"*): the model
speaks as you go, a fraction of a second behind. The mouth crop the model sees and the words it lip-reads appear
beside the camera. **Stop** gives the take as a wav and as a video with the new speech. If the browser blocks the
camera, allow it for this page (the camera icon in the address bar) and start again."""


@dataclass
class LiveSession:
    """One browser session's take: the synthesizer, where the take is written, what the player has not heard."""

    model_name: str
    live: object  # naturall2s.stream.LiveSynth
    work: Path
    wav_writer: object  # soundfile.SoundFile
    started: float = field(default_factory=time.perf_counter)
    pushed: int = 0  # 25 fps frames pushed
    pending: list = field(default_factory=list)  # audio chunks not yet sent to the player
    lock: threading.Lock = field(default_factory=threading.Lock)
    video: object | None = None  # naturall2s.video.RGBVideoWriter: the frames, encoded as they come
    done: bool = False
    error: str = ""
    latest: np.ndarray | None = None  # the newest picture from the browser
    worker: threading.Thread | None = None  # pushes ``latest`` at 25 fps
    stop: threading.Event = field(default_factory=threading.Event)
    skipped: int = 0  # 25 fps ticks skipped because the worker fell behind

    @property
    def wav_path(self) -> Path:
        return self.work / "live_take.wav"

    @property
    def frames_path(self) -> Path:
        return self.work / "live_frames.mp4"


class LiveTab:
    """Callbacks of the Live tab for one :class:`~naturall2s.studio.pipeline.Studio`."""

    def __init__(self, studio, *, lookahead: float | None = None):
        self.studio = studio
        self.lookahead = lookahead
        self.sessions: dict[str, LiveSession] = {}
        self._lock = threading.Lock()

    # ---- session
    def _key(self, request: gr.Request | None) -> str:
        return (getattr(request, "session_hash", None) or "default") if request is not None else "default"

    def start(self, model_name: str, request: gr.Request | None = None) -> LiveSession:
        """A fresh take with ``model_name`` (replacing the session's previous take)."""
        import soundfile as sf

        from naturall2s.audio import SAMPLE_RATE

        if model_name not in self.studio.system_names:
            raise NaturalL2SError(f"unknown system {model_name!r}; pick one of {', '.join(self.studio.system_names)}")
        model = dict(self.studio.models)[model_name]
        if not hasattr(model, "stream"):
            raise NaturalL2SError(f"{model_name} cannot speak live (it has no streaming synthesis)")
        kwargs = {} if self.lookahead is None else {"lookahead": self.lookahead}
        live = model.stream(**kwargs)
        work = self.studio.new_work_dir()
        session = LiveSession(model_name=model_name, live=live, work=work,
                              wav_writer=sf.SoundFile(str(work / "live_take.wav"), "w", samplerate=SAMPLE_RATE,
                                                      channels=1, subtype="PCM_16"))
        key = self._key(request)
        with self._lock:
            old = self.sessions.pop(key, None)
            self.sessions[key] = session
        if old is not None:
            old.stop.set()
            with old.lock:
                old.done = True
                _close(old)
        return session

    def session(self, request: gr.Request | None) -> LiveSession | None:
        with self._lock:
            return self.sessions.get(self._key(request))

    # ---- frames in
    def on_frame(self, frame, model_name: str, request: gr.Request | None = None):
        """One webcam picture: it becomes the picture the session's worker pushes at the next 25 fps ticks;
        -> the mouth crop, the lip-read words, the status line (cheap: the browser sends the next picture when this
        returns)."""
        try:
            if frame is None:
                return gr.skip(), gr.skip(), gr.skip()
            frame = np.asarray(frame)
            if frame.ndim == 3 and frame.shape[2] == 4:
                frame = frame[:, :, :3]
            frame = np.ascontiguousarray(frame, dtype=np.uint8)
            from naturall2s.stream import _check_frame

            _check_frame(frame)
            session = self.session(request)
            if session is not None and session.done and session.model_name == model_name:
                return gr.skip(), gr.skip(), gr.skip()  # stopped: the take stays on screen until "Listen" again
            if session is None or session.done or session.model_name != model_name:
                session = self.start(model_name, request)
            session.latest = frame
            if session.worker is None:
                session.worker = threading.Thread(target=self._work, args=(session,), daemon=True,
                                                  name="naturall2s-live")
                session.worker.start()
            live = session.live
            roi = None if live.last_roi is None else np.kron(live.last_roi, np.ones((ROI_SCALE, ROI_SCALE), np.uint8))
            return roi, live.text or "…", _status(live.message, session)
        except Exception as e:  # never let one request kill the stream
            log.warning("live frame failed", exc_info=e)
            msg = str(e) if isinstance(e, NaturalL2SError) else f"internal error ({type(e).__name__}): {e}"
            return gr.skip(), gr.skip(), f"⚠️ {html.escape(msg)}"

    def _work(self, session: LiveSession) -> None:
        """The session's worker: every 1/25 s, push the newest picture; when it falls more than MAX_BACKLOG behind
        (a CPU too slow for this model), skip ticks to catch up and count them."""
        next_tick = time.perf_counter()
        session.started = next_tick
        while not session.stop.is_set():
            now = time.perf_counter()
            if now < next_tick:
                time.sleep(min(next_tick - now, 0.05))
                continue
            if now - next_tick > MAX_BACKLOG:
                skip = int((now - next_tick) * FPS)
                next_tick += skip / FPS
                session.skipped += skip
            frame = session.latest
            try:
                with session.lock:
                    if session.done:
                        return
                    chunk = session.live.push(frame, arrival=next_tick)
                    session.pushed += 1
                    self._write_frame(session, frame)
                    if len(chunk):
                        session.wav_writer.write(chunk)
                        session.pending.append(chunk)
            except Exception as e:  # a frame the model cannot take: say so, keep going
                log.warning("live push failed", exc_info=e)
                session.error = str(e) if isinstance(e, NaturalL2SError) else f"internal error ({type(e).__name__})"
            next_tick += 1 / FPS

    @staticmethod
    def _write_frame(session: LiveSession, frame: np.ndarray) -> None:
        """Append one frame to the take's video (naturall2s.video.RGBVideoWriter: ffmpeg encodes as it comes)."""
        from naturall2s.video import RGBVideoWriter

        if session.video is None:
            session.video = RGBVideoWriter(session.frames_path, fps=FPS)
        try:
            session.video.write(frame)
        except (BrokenPipeError, OSError) as e:
            session.error = f"the video writer stopped ({e})"

    # ---- audio out
    def audio_stream(self, request: gr.Request | None = None):
        """Generator for the streaming player ("Listen"): (16000, int16 samples) every AUDIO_EVERY s while the take
        runs. Pressed after a Stop whose audio was all played, it ends that take, so the camera's next picture starts a new
        one."""
        from naturall2s.audio import SAMPLE_RATE

        key = self._key(request)
        with self._lock:
            old = self.sessions.get(key)
            if old is not None and old.done and not old.pending:  # a stopped take whose audio was all played
                del self.sessions[key]

        missing = player_available()
        if missing:
            gr.Warning(html.escape(missing))
            return
        deadline = time.perf_counter() + TIME_LIMIT
        waited = 0.0
        while time.perf_counter() < deadline:
            session = self.session(request)
            if session is None or (session.done and not session.pending and waited < 30):
                # the camera has not sent a frame yet (or the last take is over and the next has not begun)
                if waited > 30:
                    return
                time.sleep(AUDIO_EVERY)
                waited += AUDIO_EVERY
                continue
            with session.lock:
                chunks, session.pending = session.pending, []
                done = session.done
            if chunks:
                wav = np.concatenate(chunks)
                yield SAMPLE_RATE, (np.clip(wav, -1, 1) * 32767).astype(np.int16)
            elif done:
                return
            time.sleep(AUDIO_EVERY)

    # ---- stop
    def stop(self, request: gr.Request | None = None):
        """End the take: -> (wav path, dubbed mp4 path, status)."""
        try:
            session = self.session(request)
            if session is None or session.pushed == 0:
                raise NaturalL2SError("start the camera and speak first: there is no take to stop")
            session.stop.set()
            if session.worker is not None:
                session.worker.join(timeout=10)
            with session.lock:
                if not session.done:
                    rest = session.live.flush()
                    if len(rest):
                        session.wav_writer.write(rest)
                        session.pending.append(rest)
                    session.done = True
                    _close(session)
            dubbed = session.work / "live_dubbed.mp4"
            if session.frames_path.is_file() and not dubbed.is_file():
                from naturall2s.audio import SAMPLE_RATE, load_audio
                from naturall2s.video import mux_audio

                mux_audio(session.frames_path, load_audio(session.wav_path), SAMPLE_RATE, dubbed)
            s = session.live.stats()
            status = (f"Take: {s.audio_seconds:.1f} s · latency median {1000 * s.latency_median:.0f} ms, "
                      f"p95 {1000 * s.latency_p95:.0f} ms · real-time factor {s.real_time_factor:.2f}")
            if session.skipped:
                status += f" · {session.skipped / FPS:.1f} s of frames skipped (this computer is too slow for it)"
            return str(session.wav_path), str(dubbed) if dubbed.is_file() else None, status
        except Exception as e:
            log.warning("live stop failed", exc_info=e)
            msg = str(e) if isinstance(e, NaturalL2SError) else f"internal error ({type(e).__name__}): {e}"
            gr.Warning(html.escape(msg))
            return gr.skip(), gr.skip(), f"⚠️ {html.escape(msg)}"

    # ---- layout
    def build(self, demo) -> None:
        """The tab's components and events (call inside ``with gr.Tab("Live")``)."""
        names = self.studio.system_names
        gr.Markdown(LIVE_INTRO)
        if player_available():
            gr.Markdown(f"**Note:** {html.escape(player_available())}.")
        with gr.Row():
            with gr.Column(scale=2):
                model = gr.Dropdown(choices=names, value="naturall2s" if "naturall2s" in names else
                                    (names[0] if names else None), label="Model", elem_id="live-model")
                camera = gr.Image(label="Camera", sources=["webcam"], streaming=True, type="numpy",
                                  elem_id="live-camera", height=300)
            with gr.Column(scale=1):
                roi = gr.Image(label="What the model sees (mouth crop)", interactive=False, type="numpy",
                               elem_id="live-roi", height=200)
                words = gr.Textbox(label="Lip-read words", interactive=False, elem_id="live-words")
                status = gr.Markdown(elem_id="live-status")
        speech = gr.Audio(label="Speech, as it is made", streaming=True, autoplay=True, interactive=False,
                          elem_id="live-audio")
        with gr.Row():
            listen = gr.Button("Listen", variant="primary", elem_id="live-listen")
            stop = gr.Button("Stop", variant="stop", elem_id="live-stop")
        with gr.Row():
            take_wav = gr.Audio(label="The take (wav)", type="filepath", interactive=False, elem_id="live-take")
            take_video = gr.Video(label="The take, dubbed (mp4)", interactive=False, elem_id="live-dubbed")
        camera.stream(self.on_frame, inputs=[camera, model], outputs=[roi, words, status], stream_every=FRAME_EVERY,
                      time_limit=TIME_LIMIT, concurrency_limit=LIVE_SESSIONS, api_visibility="private",
                      show_progress="hidden")
        listen.click(self.audio_stream, outputs=[speech], api_visibility="private", show_progress="hidden",
                     concurrency_limit=None)
        stop.click(self.stop, outputs=[take_wav, take_video, status], api_visibility="private",
                   concurrency_limit=None)
        model.change(lambda: (None, "", ""), outputs=[roi, words, status], api_visibility="private", queue=False)
        demo.load(lambda: gr.Dropdown(choices=self.studio.system_names), outputs=[model], api_visibility="private",
                  queue=False)


def _status(message: str, session: LiveSession) -> str:
    if session.error:
        return f"⚠️ {html.escape(session.error)}"
    if message:
        return f"⚠️ {html.escape(message)}"
    text = f"Speaking with **{html.escape(session.model_name)}** · {session.pushed / FPS:.1f} s"
    if session.skipped:
        text += f" · {session.skipped / FPS:.1f} s skipped: this computer is too slow for live speech"
    return text


def _close(session: LiveSession) -> None:
    """Close the session's writers (the wav, the ffmpeg pipe: waits for the mp4 to be finished)."""
    try:
        session.wav_writer.close()
    except Exception:  # already closed
        pass
    if session.video is not None:
        try:
            session.video.close()
        except Exception as e:  # the take's wav is still there
            log.warning("live video writer: %s", e)


def player_available() -> str:
    """"" when Gradio's streaming audio player can work here, else why not: it encodes with an ``ffmpeg`` program on
    PATH (Debian: ``apt-get install ffmpeg``; naturall2s's own ffmpeg, from imageio-ffmpeg, is not on PATH, and putting
    it there alone would make Gradio look for an ``ffprobe`` it does not ship)."""
    import shutil

    if shutil.which("ffmpeg") is None:
        return ("live playback needs the ffmpeg program on PATH (e.g. apt-get install ffmpeg); "
                "without it, Stop still gives the take as a wav and a dubbed video")
    return ""


def add_live_tab(studio_app, demo) -> LiveTab:
    """Build the Live tab inside the current ``gr.Tab`` for a :class:`~naturall2s.studio.ui.StudioApp`."""
    tab = LiveTab(studio_app.studio)
    tab.build(demo)
    return tab
