"""Live (streaming) synthesis: camera frames in, speech out while the person speaks.

``live = naturall2s.load_model(name).stream(lookahead=0.16, threads=2)`` builds a :class:`LiveSynth`;
``live.push(frame)`` takes one 25 fps camera frame ((H, W, 3) uint8 RGB) and returns the float32 16 kHz mono samples
that are now final ((n,), often empty), ``live.flush()`` the rest at the end of the take. The concatenation of every
``push`` and ``flush`` output is the take's audio: exactly 640 samples per pushed frame.

How (sliding windows over the offline model, no retraining; every variant and adapted models alike):

1. **Mouth tracking, frame by frame** (:class:`FrameTracker`): MediaPipe Face Mesh in tracking mode (as the offline
   detector runs it), iBUG-68 landmarks per frame; MediaPipe's face detector counts the faces in view every
   ``FACE_CHECK_EVERY`` frames. The crop is :mod:`naturall2s.roi`'s (same transforms, smoothing and warp) computed on
   the last ``CROP_HISTORY`` frames' landmarks: a frame's crop is final ``CROP_PENDING`` frames later (the centred
   smoothing windows); the newer ones are re-cropped at every frame, so the model always sees the best crop so far.
2. **The model on a window**: every ``hop`` frames, once ``hop`` more frames are final, the front end (a transformer
   over time) runs on the last ``window`` frames (never reaching back before the current face segment), the speech
   path on the last ``DECODE_CONTEXT`` + new + look-ahead frames of it. The audio of frames up to ``lookahead``
   before the newest is emitted: after frame ``i`` is pushed the output reaches ``(i + 1) / 25 - lookahead``
   seconds (with ``hop`` > 1, up to ``hop - 1`` frames later).
3. **Joins**: each run also makes ``crossfade`` seconds past what it emits; the next chunk starts with a raised-cosine
   crossfade from that tail. For the DDSP variant the harmonic oscillators' phase is carried from window to window
   (matched in the middle of the crossfade), so voiced speech keeps its phase across joins; F0 and voicing come from
   windows that overlap by all but ``hop`` frames, so they move only as much as the model's predictions do.
4. **No face**: a frame in a run of at least ``SILENCE_GAP`` frames without a face is silent (with ``FADE`` ramps);
   shorter gaps are interpolated as offline. A face that comes back starts a new segment: the window does not reach
   back past it, and the oscillator phase restarts.

Latency bookkeeping: ``push(frame, arrival=t)`` takes the frame's arrival time (``time.perf_counter()``; default: the
call's start); each emitted frame's latency is the time from its arrival to the return of the call that emitted its
audio (``lookahead`` + waiting for the hop + compute + any backlog). :meth:`LiveSynth.stats` summarises them.

Memory is bounded: the tracker and crops keep a fixed number of frames; nothing grows with the take except the
lip-read token list and one float per frame of latency record (about 16 bytes a frame, 0.25 MB for 10 minutes).
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from naturall2s import audio
from naturall2s.errors import NaturalL2SError

FPS = 25
SAMPLES_PER_FRAME = audio.SAMPLES_PER_VIDEO_FRAME  # 640
CROP_PENDING = 5  # a frame's crop is final this many frames later (roi's smoothing: 5-frame then 7-frame centred)
CROP_HISTORY = 16  # landmark frames the crop transforms are computed from (>= 2 * CROP_PENDING + 1)
# a frame's front-end projection is final once its crop and the 2 after it (the stem's 5-frame kernel) are
FEATURE_PENDING = CROP_PENDING + 3
STUDENT_FOLDER = "live"  # checkpoints/live/<model name>.safetensors: a model's live student (stream.load_student)
DEFAULT_FUTURE_PAD = 10  # frames: the newest frame's features held this long past it, as the window's future
TEXT_DELAY = 25  # frames the lip-read words lag the audio (1 s of future makes them nearly the offline words)
TEXT_WINDOW = 75  # frames the lip reader sees (3 s, a GRID clip)
TEXT_EVERY = 5  # frames between lip-reading passes (the model's own transformer on the window)
DECODE_CONTEXT = 8  # video frames of left context of the speech path (its receptive field: about 31 audio frames)
SILENCE_GAP = 5  # a run of this many frames without a face (0.2 s) is silent
FADE = 0.01  # s, ramp into and out of silence
FACE_CHECK_EVERY = 10  # frames between face counts (MediaPipe's face detector)
DEFAULT_LOOKAHEAD = 0.16  # s (4 frames); see benchmarks/bench_live.py for the latency / quality trade-off
DEFAULT_WINDOW = 2.0  # s (50 frames) of context for the front end's transformer
DEFAULT_HOP = 2  # frames between model runs (one run per 80 ms: a 2-core laptop keeps up with one thread)
DEFAULT_CROSSFADE = 0.01  # s


class FrameTracker:
    """Landmarks of one face, frame by frame, and how many faces are in view.

    MediaPipe Face Mesh in tracking mode (one face), as :class:`naturall2s.landmarks.MediaPipeDetector` runs it on
    a clip whose first frame shows one face; MediaPipe's face detector counts faces every ``face_check_every`` frames.
    ``track(frame (H,W,3) uint8 RGB) -> (landmarks (68, 2) float32 pixels, NaN when no face; faces: int | None,
    the face count when it was checked at this frame)``. ``reset()`` forgets the tracked face (a new take).
    """

    def __init__(self, *, face_check_every: int = FACE_CHECK_EVERY):
        from naturall2s.landmarks import MediaPipeDetector

        # the detector's one-face mesh and its face finder; its detect() resets the mesh at every call (one clip),
        # so the per-frame calls go to those objects directly
        self._detector = MediaPipeDetector(max_faces=1)
        self._mesh = self._detector._meshes[1]
        self._finder = self._detector._finder
        self.face_check_every = max(1, int(face_check_every))
        self._count = 0
        self.reset()

    def reset(self) -> None:
        from naturall2s.landmarks import _quiet_stderr

        with _quiet_stderr():
            self._mesh.reset()
        self._count = 0

    def track(self, frame: np.ndarray) -> tuple[np.ndarray, int | None]:
        from naturall2s.landmarks import _shrink

        h, w = frame.shape[:2]
        image = _shrink(frame, self._detector.max_side)
        faces = None
        if self._count % self.face_check_every == 0:
            faces = len(self._finder.process(image).detections or [])
        self._count += 1
        result = self._mesh.process(image)
        found = result.multi_face_landmarks
        if not found:
            return np.full((68, 2), np.nan, np.float32), faces
        return self._detector._to_ibug(found[0], w, h), faces

    def close(self) -> None:
        self._detector.close()


@dataclass
class LiveStats:
    """Summary of a take so far: latency over emitted frames (s), compute, audio length."""

    frames: int
    latency_median: float
    latency_p95: float
    compute_seconds: float  # model + tracking + cropping time inside push/flush
    model_seconds: float  # the model alone
    audio_seconds: float
    runs: int

    @property
    def real_time_factor(self) -> float:
        """Compute time per second of audio (below 1: keeps up with the camera)."""
        return self.compute_seconds / self.audio_seconds if self.audio_seconds else float("nan")


def _frame_gain(silent: np.ndarray, *, fade: int) -> np.ndarray:
    """Per-sample gain from per-frame silence flags: 0 in silent frames, 1 elsewhere, linear ramps of ``fade``
    samples placed inside the sounding side. silent (T,) bool -> (T * 640,) float32."""
    g = np.repeat((~np.asarray(silent, bool)).astype(np.float32), SAMPLES_PER_FRAME)
    if fade <= 1 or g.all() or not g.any():
        return g
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    edges = np.flatnonzero(np.diff(g) != 0)
    for e in edges:
        if g[e] == 0:  # silence -> sound at e + 1
            seg = g[e + 1:e + 1 + fade]
            seg[:] = np.minimum(seg, ramp[: len(seg)])
        else:  # sound -> silence after e
            lo = max(0, e + 1 - fade)
            seg = g[lo:e + 1]
            seg[:] = np.minimum(seg, ramp[::-1][-len(seg):])
    return g


def raised_cosine(n: int) -> np.ndarray:
    """Fade-in weights of a crossfade of ``n`` samples: (n,) float32 rising from near 0 to near 1 (sum with the
    reversed fade-out is exactly 1)."""
    i = np.arange(n, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(np.pi * (i + 0.5) / n)).astype(np.float32)


class LiveSynth:
    """Streaming synthesis for one take (see the module doc).

    model: a loaded :class:`naturall2s.model.LipToSpeech`. lookahead: seconds of future context (rounded to whole
    frames, at least one). window: seconds of context the front end sees. hop: frames between model runs.
    threads: torch intra-op threads (process-wide; None leaves torch's setting). crossfade: seconds. seed: the
    DDSP noise excitation's seed. future_pad: frames of held future (the newest frame's front-end projection repeated
    past it; without it the transformer sees speech cut off mid-word); None: ``DEFAULT_FUTURE_PAD`` with the model's own
    transformer, 0 with a student. student: None uses the model's live student when it has one (:func:`load_student`),
    False never, True requires it. tracker: a :class:`FrameTracker` to reuse (None
    builds one).
    """

    def __init__(self, model, *, lookahead: float = DEFAULT_LOOKAHEAD, window: float = DEFAULT_WINDOW,
                 hop: int = DEFAULT_HOP, threads: int | None = None, crossfade: float = DEFAULT_CROSSFADE,
                 seed: int = 0, future_pad: int | None = None, student: bool | None = None,
                 tracker: FrameTracker | None = None):
        self.model = model.eval()
        self.lookahead_frames = max(1, int(round(float(lookahead) * FPS)))
        self.window_frames = max(self.lookahead_frames + 2, int(round(float(window) * FPS)))
        self.hop = max(1, int(hop))
        self.crossfade = max(0, min(int(round(float(crossfade) * audio.SAMPLE_RATE)),
                                    self.lookahead_frames * SAMPLES_PER_FRAME))
        self.seed = int(seed)
        found = load_student(model) if student is not False else None
        if student and found is None:
            raise NaturalL2SError(f"{getattr(model, 'name', 'this model')} has no live student "
                                  f"(checkpoints/{STUDENT_FOLDER}/<name>.safetensors)")
        self.student = found is not None
        # the transformer and norm that read the window: the student's when there is one, else the model's own
        self.context_model = found if found is not None else model.frontend
        if future_pad is None:
            future_pad = 0 if self.student else DEFAULT_FUTURE_PAD
        self.future_pad = max(0, int(future_pad))
        if threads is not None:
            torch.set_num_threads(max(1, int(threads)))
        self.tracker = tracker or FrameTracker()
        self._generator = torch.Generator(device="cpu").manual_seed(self.seed)
        self._reset()

    # ------------------------------------------------------------------------------------------ state
    def _reset(self) -> None:
        from naturall2s.roi import LIP_DIM, ROI_HEIGHT, ROI_WIDTH

        self.tracker.reset()
        self._generator.manual_seed(self.seed)
        self.n = 0  # frames pushed
        self.emitted = 0  # frames whose audio is out
        keep = max(self.window_frames, TEXT_WINDOW) + CROP_HISTORY + 2
        self._landmarks: deque = deque(maxlen=CROP_HISTORY)  # (68, 2) per frame, the last CROP_HISTORY frames
        self._pending: deque = deque(maxlen=CROP_PENDING + 1)  # the newest frames (H,W,3), still to be re-cropped
        self._roi = np.zeros((keep, ROI_HEIGHT, ROI_WIDTH), np.uint8)  # ring buffers indexed by frame % keep
        self._lips = np.zeros((keep, LIP_DIM), np.float32)
        self._detected = np.zeros(keep, bool)
        self._arrival = np.zeros(keep, np.float64)
        self._keep = keep
        self._proj = torch.zeros(keep, self.model.frontend.dim)  # per-frame front-end projections (ring buffer)
        self._proj_final = 0  # projections of frames before this one are final
        self._gap = 0  # frames since the last face
        self._seg_start = 0  # first frame of the current face segment
        self._silent: dict[int, bool] = {}  # frame -> silent (frames not yet emitted)
        self._tail: np.ndarray | None = None  # crossfade samples past self.emitted from the last run
        self._phase: float | None = None  # oscillator phase (cycles) at the anchor sample of the next join
        self._tokens: list[int] = []
        self._prev_token = 0
        self._text_done = 0  # frames before this one are lip-read
        self.faces: int | None = None  # faces in view at the last count
        self.last_roi: np.ndarray | None = None  # the newest mouth crop (48, 72) uint8
        self._latencies: list[float] = []
        self._compute = 0.0
        self._model_seconds = 0.0
        self._runs = 0
        self._finished: LiveStats | None = None  # the last take's summary, after flush()

    @property
    def lookahead(self) -> float:
        """The look-ahead in seconds (whole frames)."""
        return self.lookahead_frames / FPS

    @property
    def text(self) -> str:
        """Lip-read words so far (greedy CTC over the frames emitted ``TEXT_DELAY`` frames ago and before)."""
        from naturall2s.grid import tokens_to_text

        return tokens_to_text(self._tokens)

    @property
    def message(self) -> str:
        """What is wrong with the picture now, in plain words ("" when one face is in view)."""
        if self.n == 0:
            return ""
        if self._gap >= SILENCE_GAP or (self.faces == 0 and self._gap > 0):
            return "no face in view: the speech is silent until a face is back"
        if self.faces is not None and self.faces > 1:
            return f"{self.faces} faces in view: speaking for one of them; keep one face in the picture"
        return ""

    def stats(self) -> LiveStats:
        """The take so far (after :meth:`flush`: the finished take, until the next push)."""
        if self._finished is not None:
            return self._finished
        lat = np.asarray(self._latencies, dtype=np.float64)
        return LiveStats(frames=self.n, latency_median=float(np.median(lat)) if len(lat) else float("nan"),
                         latency_p95=float(np.percentile(lat, 95)) if len(lat) else float("nan"),
                         compute_seconds=self._compute, model_seconds=self._model_seconds,
                         audio_seconds=self.emitted / FPS, runs=self._runs)

    # ------------------------------------------------------------------------------------------ frames
    def push(self, frame: np.ndarray, *, arrival: float | None = None) -> np.ndarray:
        """One camera frame (H, W, 3) uint8 RGB at 25 fps -> the (n,) float32 16 kHz samples now final (maybe empty).

        ``arrival``: when the frame arrived (``time.perf_counter()``), for the latency record. Raises
        NaturalL2SError for a frame that is not an RGB picture.
        """
        start = time.perf_counter()
        arrival = start if arrival is None else float(arrival)
        frame = _check_frame(frame)
        self._track(frame, arrival)
        out = self._maybe_run(final=False)
        done = time.perf_counter()
        self._compute += done - start
        self._record(out, done)
        return out

    def flush(self) -> np.ndarray:
        """The rest of the take's audio ((n,) float32); then the object is ready for a new take."""
        start = time.perf_counter()
        out = self._maybe_run(final=True) if self.n > self.emitted else np.zeros(0, np.float32)
        done = time.perf_counter()
        self._compute += done - start
        self._record(out, done)
        finished, latencies, tokens = self.stats(), self._latencies, self._tokens
        self._reset()
        # the take's summary and words stay readable until the next push
        self._finished, self._latencies, self._tokens = finished, latencies, tokens
        return out

    def _record(self, out: np.ndarray, done: float) -> None:
        frames = len(out) // SAMPLES_PER_FRAME
        first = self.emitted - frames
        for j in range(first, self.emitted):
            self._latencies.append(done - self._arrival[j % self._keep])

    def _track(self, frame: np.ndarray, arrival: float) -> None:
        from naturall2s.roi import EXTRACT_MAX_SIDE

        if self._finished is not None:  # a new take after flush(): drop the old take's record
            self._finished, self._latencies, self._tokens = None, [], []
        from naturall2s.landmarks import _shrink

        frame = _shrink(frame, EXTRACT_MAX_SIDE)  # as decode_clip gives the offline path its frames
        landmarks, faces = self.tracker.track(frame)
        if faces is not None:
            self.faces = faces
        t = self.n
        found = bool(np.isfinite(landmarks).all())
        slot = t % self._keep
        self._detected[slot] = found
        self._arrival[slot] = arrival
        if found:
            if self._gap >= SILENCE_GAP:
                self._seg_start = t  # a face is back after a silent gap: a new segment
                self._proj_final = t
                self._phase = None
            self._gap = 0
        else:
            self._gap += 1
            if self._gap >= SILENCE_GAP:  # this run of faceless frames is long enough to be silent
                for j in range(t - self._gap + 1, t + 1):
                    if j >= self.emitted:
                        self._silent[j] = True
        self._silent.setdefault(t, False)
        self._landmarks.append(landmarks)
        self._pending.append(frame)
        self.n = t + 1
        self._crop()

    def _crop(self) -> None:
        """(Re-)crop the pending frames from the transforms of the landmark history."""
        from naturall2s import roi

        lm = np.stack(self._landmarks)  # (K, 68, 2)
        det = np.isfinite(lm).all(axis=(1, 2))
        if not det.any():
            self.last_roi = None
            return
        filled = roi._interpolate_gaps(lm, det)
        mats = roi.mouth_transforms(filled, np.ones(len(filled), bool))
        half = np.array([roi.ROI_WIDTH / 2, roi.ROI_HEIGHT / 2])
        lips = ((roi.apply_affine(mats, filled[:, roi.LIP_POINTS]) - roi.CROP_CENTRE) / half).astype(np.float32)
        levels = roi._pyramid_levels(mats)
        k = len(lm)
        for i, frame in enumerate(self._pending):
            j = self.n - len(self._pending) + i  # frame index
            row = k - len(self._pending) + i  # its row in the history
            slot = j % self._keep
            self._roi[slot] = _warp(frame, mats[row], levels)
            self._lips[slot] = lips[row].reshape(-1)
        self.last_roi = self._roi[(self.n - 1) % self._keep]

    # ------------------------------------------------------------------------------------------ model
    def _maybe_run(self, *, final: bool) -> np.ndarray:
        target = self.n if final else self.n - self.lookahead_frames
        if target - self.emitted < (1 if final else self.hop):
            return np.zeros(0, np.float32)
        e = self.emitted
        silent = np.array([self._silent.get(j, False) for j in range(e, target)])
        ws = max(self.n - self.window_frames, self._seg_start, 0)
        window_faces = [self._detected[j % self._keep] for j in range(ws, self.n)]
        if ws >= target or not any(window_faces) or silent.all():
            wav = np.zeros((target - e) * SAMPLES_PER_FRAME, np.float32)
            self._tail, self._phase = None, None
        else:
            # frames before the window (the silent gap before a new face segment) are silence
            before = np.zeros((max(ws - e, 0)) * SAMPLES_PER_FRAME, np.float32)
            if len(before):
                self._tail, self._phase = None, None
            wav = np.concatenate([before, self._run_window(ws, max(e, ws), target, final=final)])
        wav *= _frame_gain(silent, fade=int(FADE * audio.SAMPLE_RATE))
        for j in range(e, target):
            self._silent.pop(j, None)
        self.emitted = target
        return wav

    def _frame_projections(self, lo: int, hi: int) -> None:
        """Recompute the cached per-frame front-end projections of frames [lo, hi) (:func:`frame_projections`), the
        stem reading 2 frames of real context before ``lo`` when they belong to the face segment (zeros before it,
        as at a clip's start) and zeros after the newest frame (as at a clip's end)."""
        s = max(lo - 2, self._seg_start)
        idx = [j % self._keep for j in range(s, hi)]
        proj = frame_projections(self.model.frontend, self._roi[idx], self._lips[idx])[lo - s:]
        for k, j in enumerate(range(lo, hi)):
            self._proj[j % self._keep] = proj[k]

    def _features(self, ws: int, *, pad: int) -> torch.Tensor:
        """Front-end features (1, n - ws, dim) of frames [ws, n): the cached projections (recomputing those whose
        crops may have changed since), ``pad`` copies of the newest one appended as a held future, positions from
        0 at ``ws``, the transformer and the final norm (the rest of VisualFrontEnd.forward)."""
        lo = max(min(self._proj_final, self.n - FEATURE_PENDING - (self.hop - 1)), ws)
        self._frame_projections(lo, self.n)
        self._proj_final = max(self._proj_final, self.n - FEATURE_PENDING)
        h = self._proj[[j % self._keep for j in range(ws, self.n)]]
        if pad > 0:
            h = torch.cat([h, h[-1:].expand(pad, -1)])
        return contextualize(self.context_model, h[None])[:, : self.n - ws]

    @torch.inference_mode()
    def _run_window(self, ws: int, e: int, target: int, *, final: bool) -> np.ndarray:
        """Run the model on frames [ws, n) and return the samples of frames [e, target) (crossfaded)."""
        model = self.model
        start = time.perf_counter()
        feats = self._features(ws, pad=0 if final else self.future_pad)  # (1, n - ws, dim)
        d0 = max(ws, e - DECODE_CONTEXT)
        tail_feats = feats[:, d0 - ws:]
        spf = SAMPLES_PER_FRAME
        lo, hi = (e - d0) * spf, (target - d0) * spf
        xf = 0 if final else self.crossfade
        anchor_next = hi + xf // 2  # the next join's crossfade middle, in this window's samples
        anchor_now = lo + xf // 2 if self._tail is not None else None
        wav, log_probs, phase_next = _speech(model, tail_feats, generator=self._generator,
                                            anchor=(anchor_now, self._phase) if anchor_now is not None
                                            and self._phase is not None else None, probe=anchor_next)
        chunk = wav[lo:hi].copy()
        if self._tail is not None and len(self._tail):
            n = min(len(self._tail), len(chunk))
            w = raised_cosine(len(self._tail))[:n]
            chunk[:n] = self._tail[:n] * (1 - w) + chunk[:n] * w
        self._tail = wav[hi:hi + xf].copy() if xf and len(wav) >= hi + xf else None
        self._phase = phase_next
        # greedy CTC TEXT_DELAY frames behind the audio, from the model's own transformer on the window (those frames
        # have seen 1 s of future: the words come out nearly as offline); everything at the end of the take
        lo_t = max(self._text_done, ws)
        hi_t = self.n if final else max(lo_t, target - TEXT_DELAY)
        steps = []
        if hi_t - lo_t >= TEXT_EVERY or (final and hi_t > lo_t):
            # the lip reader's own window: up to TEXT_WINDOW frames, from the face segment's start (its transformer
            # knows GRID's timing, so a take's first 3 s read as a clip would)
            tws = max(self.n - TEXT_WINDOW, self._seg_start, 0)
            lo_t = max(lo_t, tws)
            h = self._proj[[j % self._keep for j in range(tws, self.n)]]
            text_feats = contextualize(model.frontend, h[None])
            steps = model.ctc(text_feats[:, lo_t - tws:hi_t - tws])[0].argmax(-1).tolist()
        else:
            hi_t = lo_t
        for t in steps:
            if t != self._prev_token and t != 0:
                self._tokens.append(t)
            self._prev_token = t
        self._text_done = max(self._text_done, hi_t)
        self._model_seconds += time.perf_counter() - start
        self._runs += 1
        return np.clip(chunk, -1.0, 1.0).astype(np.float32)


def frame_projections(fe, roi: np.ndarray, lips: np.ndarray) -> torch.Tensor:
    """The per-frame part of :class:`~naturall2s.encoders.VisualFrontEnd` (stem, trunk, lip MLP, projection; eval
    mode, no positions): roi (T, H, W) uint8, lips (T, LIP_DIM) float32 -> (T, dim) on ``fe``'s device. The stem
    zero-pads 2 frames at both ends, as the front end does for a clip."""
    import torch.nn.functional as F

    from naturall2s.encoders import ROI_MEAN, ROI_STD

    device = fe.proj.weight.device
    x = torch.from_numpy(np.ascontiguousarray(roi)).to(device).float()[None] / 255.0  # (1, T, H, W)
    if tuple(x.shape[-2:]) != fe.in_size:
        x = F.interpolate(x, size=fe.in_size, mode="area")
    x = fe.stem(((x - ROI_MEAN) / ROI_STD)[:, None])  # (1, C, T, h, w)
    t, c, h, w = x.shape[2], x.shape[1], x.shape[3], x.shape[4]
    pooled = fe.trunk(x[0].transpose(0, 1).reshape(t, c, h, w)).mean(dim=(-2, -1))
    return fe.proj(torch.cat([pooled, fe.lip_mlp(torch.from_numpy(np.ascontiguousarray(lips)).to(device))], dim=-1))


def contextualize(fe, proj: torch.Tensor) -> torch.Tensor:
    """The temporal part of the front end: positions from 0, its transformer, its final norm. (B, T, dim) -> (B, T,
    dim). ``fe``: a VisualFrontEnd, or a live student's (:func:`load_student`)."""
    from naturall2s.encoders import sinusoidal_positions

    h = proj + sinusoidal_positions(proj.shape[1], proj.shape[2], device=proj.device, dtype=proj.dtype)
    return fe.norm(fe.transformer(h))


def student_path(model) -> Path | None:
    """Where a shipped model's live student would be: ``<its checkpoint folder>/live/<its name>.safetensors``."""
    path = getattr(model, "path", None)
    if not path:
        return None
    return Path(path).parent / STUDENT_FOLDER / f"{Path(path).stem}.safetensors"


def load_student(model):
    """The live student of ``model`` (the front end of the student checkpoint, whose transformer and norm were trained
    on live windows by ``python -m naturall2s train --stage live``), or None when it has none. Loaded with the checkpoint
    loader; used only when its per-frame layers are this model's own (a student of another model is ignored)."""
    from naturall2s.checkpoints import load_model

    path = student_path(model)
    if path is None or not path.is_file():
        return None
    student = load_model(path).frontend
    mine, theirs = model.frontend.state_dict(), student.state_dict()
    shared = [k for k in mine if not k.startswith(("transformer.", "norm."))]
    if any(mine[k].shape != theirs[k].shape or not torch.equal(mine[k], theirs[k]) for k in shared):
        return None
    return student.eval()


def _check_frame(frame) -> np.ndarray:
    """(H, W, 3) uint8 RGB, at least 16 pixels a side, or NaturalL2SError."""
    if not isinstance(frame, np.ndarray):
        raise NaturalL2SError(f"a camera frame must be a numpy array, got {type(frame).__name__}")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise NaturalL2SError(f"a camera frame must be H x W x 3 uint8 RGB, got {frame.shape} {frame.dtype}")
    if min(frame.shape[:2]) < 16:
        raise NaturalL2SError(f"a camera frame of {frame.shape[1]}x{frame.shape[0]} pixels is too small")
    return np.ascontiguousarray(frame)


def _warp(frame: np.ndarray, mat: np.ndarray, levels: int) -> np.ndarray:
    """One frame's mouth crop, as :func:`naturall2s.roi.crop_mouth` makes it: (H,W,3) uint8 RGB, (2,3) map ->
    (ROI_HEIGHT, ROI_WIDTH) uint8 gray."""
    import cv2

    from naturall2s.roi import ROI_HEIGHT, ROI_WIDTH

    warp = mat.copy()
    warp[:, :2] *= 2 ** levels
    for _ in range(levels):
        frame = cv2.pyrDown(frame)
    patch = cv2.warpAffine(frame, warp, (ROI_WIDTH, ROI_HEIGHT), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    return cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY)


def _speech(model, feats: torch.Tensor, *, generator: torch.Generator, anchor: tuple[int, float] | None,
            probe: int) -> tuple[np.ndarray, np.ndarray, float | None]:
    """The speech path of ``model`` on front-end features (1, T, dim) -> (wav (640 T,) float32, CTC log-probs
    (T, V), oscillator phase in cycles at sample ``probe`` or None).

    For the DDSP variant this is :meth:`LipToSpeech.decode` with the harmonic oscillators' phase set so that at
    sample ``anchor[0]`` it equals ``anchor[1]`` cycles (the phase the previous window had there); the other
    variants run ``decode`` itself (their phase is predicted per frame, not integrated).
    """
    c = model.config
    if not c.uses_ddsp:
        out = model.decode(feats, generator=generator)
        if c.variant == "mel-gl":
            wav = audio.griffin_lim(out["mel"][0].float())
        else:
            wav = out["wav"][0].float().numpy()
        return np.asarray(wav, np.float32), out["ctc_log_probs"][0].numpy(), None
    from naturall2s.synths import EPS, filtered_noise, harmonic_synth, remove_above_nyquist, upsample_frames

    synth = model.synth
    sr = synth.sample_rate
    log_probs = model.ctc(feats)
    h = feats
    if c.word_head:
        h = h + model.word_embed(torch.softmax(model.word_head(feats), dim=-1).to(h.dtype))
    h = model.upsample(h)
    heads = model.f0_head(h)
    controls = model.control_head(h)
    voiced = torch.sigmoid(heads["voicing_logit"])
    f0 = torch.exp(heads["log_f0"])  # (1, F)
    dist = remove_above_nyquist(controls["harmonic_distribution"], f0, sample_rate=sr)
    dist = dist / (dist.sum(-1, keepdim=True) + EPS)
    amplitudes = (controls["amplitude"] * voiced)[..., None] * dist
    f0_up = upsample_frames(f0[..., None], synth.hop_length)[..., 0]  # (1, N)
    cycles = torch.cumsum(f0_up[0].double() / sr, dim=0)  # the phase harmonic_synth will integrate
    shift = 0.0
    if anchor is not None and 0 <= anchor[0] < len(cycles):
        shift = (anchor[1] - float(cycles[anchor[0]])) % 1.0
        f0_up = f0_up.clone()
        f0_up[0, 0] += shift * sr  # one sample at the window's start carries the phase offset
    harmonic = harmonic_synth(f0_up, amplitudes, sample_rate=sr)
    noise = filtered_noise(controls["noise_magnitudes"], hop_length=synth.hop_length, generator=generator)
    wav = model.generator(h, harmonic + noise)[0].float().numpy()
    phase = float((float(cycles[probe]) + shift) % 1.0) if 0 <= probe < len(cycles) else None
    return wav, log_probs[0].numpy(), phase


def feed_frames(live: LiveSynth, frames, *, fps: float = FPS, real_time: bool = True, on_chunk=None) -> np.ndarray:
    """Push ``frames`` ((H,W,3) uint8 RGB each, an iterable) into ``live`` as a camera would: frame ``i`` arrives at
    ``start + i / fps`` (``real_time``: sleeps until then; a late push keeps its arrival time, so backlog counts as
    latency). ``on_chunk(samples, live)`` is called after each non-empty push. -> the whole take, (N,) float32."""
    out = []
    start = time.perf_counter()
    for i, frame in enumerate(frames):
        due = start + i / fps
        if real_time:
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        chunk = live.push(frame, arrival=due if real_time else None)
        if len(chunk):
            out.append(chunk)
            if on_chunk is not None:
                on_chunk(chunk, live)
    chunk = live.flush()
    if len(chunk):
        out.append(chunk)
        if on_chunk is not None:
            on_chunk(chunk, live)
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def percentile_ms(values, q: float) -> float:
    """The q-th percentile of seconds, in ms (nan when empty)."""
    v = np.asarray(values, dtype=np.float64)
    return float(np.percentile(v, q) * 1000) if len(v) else math.nan

