"""The studio's "Live" tab: the webcam in, speech out while the face speaks (:mod:`naturall2s.stream`).

Gradio streaming: the webcam image component streams pictures to :meth:`LiveTab.on_frame` (``stream_every`` =
``FRAME_EVERY``), which only stores the newest one and returns the mouth crop, the lip-read words, the status and the
audio made since its last return (so the browser sends the next picture at once). A worker thread per take pushes the
newest picture into the session's :class:`~naturall2s.stream.LiveSynth` every 1/25 s (the browser's rate is not exactly
25 fps: the newest picture stands for the frame due); when it falls ``MAX_BACKLOG`` behind (a CPU too slow for the
model) it skips ticks and the status says so.

The audio goes back in the camera's own stream event: each return carries the new samples as a small JSON text
(:func:`encode_chunks`: take id, numbered chunks of 16 kHz int16 PCM in base64, the new one and those of the last
``RESEND`` s, as the page misses a reply now and then) in a hidden textbox, whose change runs a Web Audio player in
the page (``PLAYER_JS``). The player schedules the chunks back to back after a jitter buffer of
``JITTER`` s, plays 10% faster while it is more than ``CATCH_UP`` s behind and drops its queue when it would play more
than ``MAX_LAG`` s behind, so the delay cannot grow;
"Listen" starts it (a browser plays sound only after a click) and it plays from then on, not from the take's start.
Stop flushes the take and returns it as a wav and as a dubbed mp4 (frames encoded as they came by
:class:`naturall2s.video.RGBVideoWriter`, the audio appended to a wav file: nothing of the take is held in memory).

A take ends without Stop when its page goes away: Gradio's ``unload`` event (the page closed or reloaded) or, if that
never comes, no camera picture for ``IDLE_TIMEOUT`` s; its worker and video encoder stop and a line is logged.

One live take at a time per browser session; sessions are keyed by Gradio's session hash. A bad frame, an unknown
model, no face or several faces give a message in the tab; nothing raises out of a callback.
"""
from __future__ import annotations

import base64
import html
import json
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
JITTER = 0.1  # s: the browser player's jitter buffer (a chunk after a gap plays this long after it arrives)
MAX_LAG = 0.4  # s: the browser player drops what it has queued when it is this far behind
CATCH_UP = 0.15  # s: the browser player plays SPEED_UP times faster while it is this far behind (catches up without
SPEED_UP = 1.1  #    dropping; benchmarks/live_transport/player_policy.py replays measured arrivals through the choices)
RESEND = 0.2  # s: each reply to a picture repeats the audio chunks of about this long before the new one (the page
#               misses a reply now and then: Gradio runs a change event once for values that come at once)
IDLE_TIMEOUT = 5.0  # s without a camera picture: the page is gone, the take ends
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
    take: int = 0  # the take's number in this server (the browser player restarts on a new one)
    sent: int = 0  # audio chunks sent to the browser (their sequence numbers)
    recent: list = field(default_factory=list)  # (seq, base64 PCM, samples) of the last chunks sent (RESEND)
    last_frame: float = field(default_factory=time.monotonic)  # when the browser last sent a picture
    ended: str = ""  # why the take ended without Stop ("" while it runs or after Stop)

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
        self._takes = 0
        self.idle_timeout = IDLE_TIMEOUT

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
            self._takes += 1
            session.take = self._takes
            old = self.sessions.pop(key, None)
            self.sessions[key] = session
        if old is not None:
            self._end(old, "replaced by a new take")
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
                return gr.skip(), gr.skip(), gr.skip(), gr.skip()
            frame = np.asarray(frame)
            if frame.ndim == 3 and frame.shape[2] == 4:
                frame = frame[:, :, :3]
            frame = np.ascontiguousarray(frame, dtype=np.uint8)
            from naturall2s.stream import _check_frame

            _check_frame(frame)
            session = self.session(request)
            if session is not None and session.done and not session.ended and session.model_name == model_name:
                return gr.skip(), gr.skip(), gr.skip(), gr.skip()  # stopped: the take stays until "Listen" again
            if session is None or session.done or session.model_name != model_name:
                session = self.start(model_name, request)
            session.latest = frame
            session.last_frame = time.monotonic()
            if session.worker is None:
                session.worker = threading.Thread(target=self._work, args=(session,), daemon=True,
                                                  name="naturall2s-live")
                session.worker.start()
            live = session.live
            roi = None if live.last_roi is None else np.kron(live.last_roi, np.ones((ROI_SCALE, ROI_SCALE), np.uint8))
            audio = self.take_audio(session)
            return roi, live.text or "…", _status(live.message, session), gr.skip() if audio is None else audio
        except Exception as e:  # never let one request kill the stream
            log.warning("live frame failed", exc_info=e)
            msg = str(e) if isinstance(e, NaturalL2SError) else f"internal error ({type(e).__name__}): {e}"
            return gr.skip(), gr.skip(), f"⚠️ {html.escape(msg)}", gr.skip()

    def _work(self, session: LiveSession) -> None:
        """The session's worker: every 1/25 s, push the newest picture; when it falls more than MAX_BACKLOG behind
        (a CPU too slow for this model), skip ticks to catch up and count them."""
        next_tick = time.perf_counter()
        session.started = next_tick
        while not session.stop.is_set():
            idle = time.monotonic() - session.last_frame
            if idle > self.idle_timeout:
                self._end(session, f"no camera picture for {idle:.0f} s (the page is gone)")
                return
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
    def take_audio(self, session: LiveSession) -> str | None:
        """The audio made since the last call as a new chunk, with the chunks of the last ``RESEND`` s before it, as the
        page player's JSON (:func:`encode_chunks`); None if there is no new audio."""
        from naturall2s.audio import SAMPLE_RATE

        with session.lock:
            chunks, session.pending = session.pending, []
            if not chunks:
                return None
            samples = np.concatenate(chunks)
            session.recent.append((session.sent, pcm_base64(samples), len(samples)))
            session.sent += 1
            while sum(n for _, _, n in session.recent[1:]) > RESEND * SAMPLE_RATE:
                session.recent.pop(0)
            recent = [(seq, b64) for seq, b64, _ in session.recent]
        return encode_chunks(session.take, recent)

    def listen(self, request: gr.Request | None = None) -> None:
        """"Listen" (the page's player starts in the click's own script): after a Stop it ends that take, so the
        camera's next picture starts a new one."""
        key = self._key(request)
        with self._lock:
            old = self.sessions.get(key)
            if old is not None and old.done:
                del self.sessions[key]

    def _end(self, session: LiveSession, why: str = "") -> bool:
        """Stop the take's worker, flush its audio, close its wav and video writers (idempotent). ``why`` is set for a
        take that ends without Stop (logged). -> whether this call ended it."""
        session.stop.set()
        worker = session.worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout=10)
        with session.lock:
            if session.done:
                return False
            rest = session.live.flush()
            if len(rest):
                session.wav_writer.write(rest)
                session.pending.append(rest)
            session.done = True
            session.ended = why
            _close(session)
        if why:
            log.info("live take %d (%s) ended: %s; %.1f s of frames", session.take, session.model_name, why,
                     session.pushed / FPS)
        return True

    def on_unload(self, request: gr.Request | None = None) -> None:
        """The page was closed or reloaded (Gradio's unload event): end its take and forget it."""
        key = self._key(request)
        with self._lock:
            session = self.sessions.pop(key, None)
        if session is not None:
            self._end(session, "the page was closed")

    # ---- stop
    def stop(self, request: gr.Request | None = None):
        """End the take: -> (wav path, dubbed mp4 path, status)."""
        try:
            session = self.session(request)
            if session is None or session.pushed == 0:
                raise NaturalL2SError("start the camera and speak first: there is no take to stop")
            self._end(session)
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
        pcm = gr.Textbox(visible="hidden", elem_id="live-pcm")  # the audio chunks for the page's player
        gr.HTML('<div id="live-player">Speech: press <b>Listen</b> to hear it as it is made.</div>',
                elem_id="live-player-box")
        with gr.Row():
            listen = gr.Button("Listen", variant="primary", elem_id="live-listen")
            stop = gr.Button("Stop", variant="stop", elem_id="live-stop")
        with gr.Row():
            take_wav = gr.Audio(label="The take (wav)", type="filepath", interactive=False, elem_id="live-take")
            take_video = gr.Video(label="The take, dubbed (mp4)", interactive=False, elem_id="live-dubbed")
        camera.stream(self.on_frame, inputs=[camera, model], outputs=[roi, words, status, pcm], stream_every=FRAME_EVERY,
                      time_limit=TIME_LIMIT, concurrency_limit=LIVE_SESSIONS, api_visibility="private",
                      show_progress="hidden")
        pcm.change(None, inputs=[pcm], js=f"(m) => {{ {PLAYER_JS} window.naturall2sLivePlayer.push(m); }}",
                   queue=False, show_progress="hidden")
        listen.click(self.listen, js=f"() => {{ {PLAYER_JS} window.naturall2sLivePlayer.start(); return []; }}",
                     api_visibility="private", show_progress="hidden", queue=False)
        stop.click(self.stop, outputs=[take_wav, take_video, status], api_visibility="private",
                   concurrency_limit=None)
        model.change(lambda: (None, "", ""), outputs=[roi, words, status], api_visibility="private", queue=False)
        demo.load(lambda: gr.Dropdown(choices=self.studio.system_names), outputs=[model], api_visibility="private",
                  queue=False)
        demo.unload(self.on_unload)


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


def pcm_base64(samples: np.ndarray) -> str:
    """Float samples in [-1, 1] -> base64 of little-endian int16 (clipped)."""
    return base64.b64encode((np.clip(np.asarray(samples, np.float32), -1, 1) * 32767).round().astype("<i2").tobytes()
                            ).decode()


def encode_chunks(take: int, chunks: list[tuple[int, str]]) -> str:
    """The JSON text the page's player reads: {"take", "rate", "chunks": [[seq, base64 int16 PCM], ...]} (oldest
    first; the player plays each (take, seq) once)."""
    from naturall2s.audio import SAMPLE_RATE

    return json.dumps({"take": take, "rate": SAMPLE_RATE, "chunks": [[seq, b64] for seq, b64 in chunks]})


def decode_chunks(text: str) -> tuple[int, list[tuple[int, np.ndarray]]]:
    """The inverse of :func:`encode_chunks` -> (take, [(seq, float32 samples)]) (what the page's player reads)."""
    m = json.loads(text)
    return m["take"], [(seq, np.frombuffer(base64.b64decode(b64), "<i2").astype(np.float32) / 32767)
                       for seq, b64 in m["chunks"]]


# The page's player (defined once, by whichever handler runs first). Chunks are scheduled back to back on the
# AudioContext's clock; after an underrun the next one starts JITTER s ahead; when a chunk would start more than
# MAX_LAG s after now (the chunks came late and all at once) the sources not yet started are stopped and the new chunk
# starts JITTER s ahead; a chunk that would end more than MAX_LAG + JITTER s after now (a long one, after a stall)
# loses its head: the delay cannot grow. A chunk that starts more than CATCH_UP s ahead plays SPEED_UP times faster
# (its pitch too), which brings the delay back down without dropping; the counter `faster` counts those samples. A chunk already played (take, seq) is skipped (each reply repeats the
# last RESEND s); a gap in seq (a chunk missed beyond that) is counted.
# Its counters (window.naturall2sLivePlayer: scheduled, dropped, gaps, chunks, in samples or chunks) and its last
# arrivals ([audio clock, chunk's duration, queue ahead of the clock] in s) are for tests and measurements.
PLAYER_JS = (
    "if (!window.naturall2sLivePlayer) { const P = window.naturall2sLivePlayer = {ctx: null, out: null, "
    "listening: false, next: 0, take: -1, seq: -1, queued: [], arrivals: [], scheduled: 0, dropped: 0, gaps: 0, chunks: 0, "
    f"faster: 0, JITTER: {JITTER}, MAX_LAG: {MAX_LAG}, CATCH_UP: {CATCH_UP}, SPEED_UP: {SPEED_UP}}};"
    "P.show = () => { const el = document.getElementById('live-player'); if (el) el.textContent = P.listening ? "
    "`Listening: ${(P.scheduled / 16000).toFixed(1)} s played` + (P.dropped ? `, ${(P.dropped / 16000).toFixed(1)} s "
    "dropped to keep up` : '') : 'Speech: press Listen to hear it as it is made.'; };"
    "P.start = () => { if (!P.ctx) { P.ctx = new AudioContext(); P.out = P.ctx.createGain(); "
    "P.out.connect(P.ctx.destination); P.started = [P.ctx.currentTime, performance.now()]; } P.ctx.resume(); P.listening = true; P.next = 0; P.show(); };"
    "P.push = (text) => { if (!text) return; let m; try { m = JSON.parse(text); } catch (e) { return; } "
    "if (m.take !== P.take) { P.take = m.take; P.seq = -1; } "
    "for (const [seq, b64] of m.chunks) { if (seq <= P.seq) continue; "
    "if (P.seq >= 0 && seq > P.seq + 1) P.gaps += seq - P.seq - 1; P.seq = seq; P.chunks++; "
    "if (P.listening && P.ctx) P.play(b64, m.rate); } P.show(); };"
    "P.play = (b64, rate) => { const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)); "
    "const pcm = new Int16Array(bytes.buffer); if (!pcm.length) return; "
    "const buf = P.ctx.createBuffer(1, pcm.length, rate); const x = buf.getChannelData(0); "
    "for (let i = 0; i < pcm.length; i++) x[i] = pcm[i] / 32767; "
    "const now = P.ctx.currentTime; P.queued = P.queued.filter((q) => q.end > now); "
    "P.arrivals.push([now, buf.duration, P.next - now]); if (P.arrivals.length > 3000) P.arrivals.shift(); "
    "if (P.next < now) P.next = now + P.JITTER; "
    "else if (P.next - now > P.MAX_LAG) { for (const q of P.queued) { if (q.start > now) { "
    "q.src.stop(); P.dropped += q.n; P.scheduled -= q.n; } } P.queued = P.queued.filter((q) => q.start <= now); "
    "P.next = Math.max(now + P.JITTER, P.queued.length ? P.queued[P.queued.length - 1].end : 0); } "
    "const r = P.next - now > P.CATCH_UP ? P.SPEED_UP : 1; "
    "const skip = Math.max(0, P.next + buf.duration / r - now - P.MAX_LAG - P.JITTER) * r; "
    "if (skip >= buf.duration) { P.dropped += pcm.length; return; } "
    "const n = Math.round((buf.duration - skip) * rate); P.dropped += pcm.length - n; if (r > 1) P.faster += n; "
    "const src = P.ctx.createBufferSource(); src.buffer = buf; src.playbackRate.value = r; src.connect(P.out); "
    "src.start(P.next, skip); const d = (buf.duration - skip) / r; "
    "P.queued.push({src, start: P.next, end: P.next + d, n}); P.next += d; P.scheduled += n; }; }"
)


def add_live_tab(studio_app, demo) -> LiveTab:
    """Build the Live tab inside the current ``gr.Tab`` for a :class:`~naturall2s.studio.ui.StudioApp`."""
    tab = LiveTab(studio_app.studio)
    tab.build(demo)
    return tab
