"""Video and audio-track input/output: the only module that talks to ffmpeg / moviepy.

Decoding pipes raw frames (``rgb24``) and raw audio (``f32le``) out of the ffmpeg binary that ships with
``imageio_ffmpeg``, so any container/codec that ffmpeg reads works (mp4, mov, mkv, avi, mpg, webm, ...).
Frames are resampled to ``FPS`` by ffmpeg's timestamp-based ``fps`` filter, so variable-frame-rate
sources come out right; audio is downmixed to mono and resampled to ``SAMPLE_RATE``.

Every file is probed first (``ffmpeg -i``): unreadable files raise ``NotAVideoError``, audio-only files
``NoVideoStreamError`` and clips longer than ``max_seconds`` ``ClipTooLongError`` before anything is decoded.
Writers go to a temporary file next to the target and ``os.replace`` it, so nothing half-written remains.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from naturall2s.files import atomic_path
from naturall2s.audio import SAMPLE_RATE
from naturall2s.errors import ClipTooLongError, NotAVideoError, NoVideoStreamError

FPS = 25
MAX_SECONDS = 60.0

# ffmpeg demuxers that read single images, not videos
_IMAGE_FORMATS = ("image2", "_pipe", "png", "bmp", "tiff")
# extra decode time allowed past max_seconds when the container does not state a duration (s)
_DURATION_SLACK = 0.5


@dataclass
class VideoData:
    """A decoded clip.

    frames: (T, H, W, 3) uint8 RGB at ``fps`` frames per second.
    audio: (N,) float32 mono in [-1, 1] at ``SAMPLE_RATE`` Hz, or None when the file has no audio track.
    source_fps: the container's (average) frame rate before resampling, frames/s.
    duration: the container's duration in seconds (``T / fps`` when the container does not say).
    path: the file it came from ("" for in-memory clips).
    """

    frames: np.ndarray
    audio: np.ndarray | None
    source_fps: float
    duration: float
    path: str
    fps: float = FPS


@dataclass
class _Probe:
    """What ``ffmpeg -i`` says about a file (sizes after rotation)."""

    duration: float | None
    width: int
    height: int
    fps: float | None
    has_audio: bool


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _input_arg(path: Path) -> str:
    """``file:`` URL so that names like ``a:b.mp4`` or ``-x.mp4`` are never read as protocols/options."""
    return "file:" + str(path.resolve())


def _check_file(path: str | os.PathLike) -> Path:
    """Raise NotAVideoError for a missing, non-regular or empty file; return it as a Path."""
    p = Path(path)
    if not p.exists():
        raise NotAVideoError(f"file not found: {p}")
    if not p.is_file():
        raise NotAVideoError(f"not a file: {p}")
    if p.stat().st_size == 0:
        raise NotAVideoError(f"file is empty: {p}")
    return p


def _ffmpeg_error_line(stderr: str) -> str:
    """The last meaningful line of ffmpeg's stderr, for error messages."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    lines = [ln for ln in lines if "output file" not in ln.lower()]
    return lines[-1] if lines else "unknown ffmpeg error"


def probe(path: str | os.PathLike) -> _Probe:
    """Read duration, picture size, frame rate and audio presence of a file with ``ffmpeg -i``.

    Raises NotAVideoError (unreadable / image / corrupt) or NoVideoStreamError (no video stream).
    """
    p = _check_file(path)
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", _input_arg(p)],
                          capture_output=True, text=True, errors="replace")
    info = proc.stderr
    m_fmt = re.search(r"Input #0, (.*?), from ", info)
    if not m_fmt:
        raise NotAVideoError(f"{p.name} is not a readable video ({_ffmpeg_error_line(info)})")
    fmt = m_fmt.group(1)
    if any(tag in fmt for tag in _IMAGE_FORMATS):
        raise NotAVideoError(f"{p.name} is a still image ({fmt}), not a video")
    streams = [ln for ln in info.splitlines() if re.match(r"\s*Stream #\d+:\d+", ln)]
    video = [ln for ln in streams if ": Video:" in ln and "attached pic" not in ln]
    has_audio = any(": Audio:" in ln for ln in streams)
    if not video:
        if has_audio:
            raise NoVideoStreamError(f"{p.name} has an audio track but no video stream")
        raise NotAVideoError(f"{p.name} holds no video stream")
    vline = video[0]
    m_size = re.search(r", (\d{1,5})x(\d{1,5})\b", vline)
    if not m_size:
        raise NotAVideoError(f"{p.name}: cannot read the picture size of its video stream")
    width, height = int(m_size.group(1)), int(m_size.group(2))
    if width == 0 or height == 0:
        raise NotAVideoError(f"{p.name}: the video stream has an empty picture ({width}x{height})")
    m_rot = re.search(r"rotation of (-?[\d.]+) degrees", info)
    if m_rot and round(abs(float(m_rot.group(1)))) % 180 == 90:
        width, height = height, width  # ffmpeg auto-rotates on decode
    m_fps = re.search(r", ([\d.]+k?) fps", vline) or re.search(r", ([\d.]+k?) tbr", vline)
    fps = None
    if m_fps:
        txt = m_fps.group(1)
        fps = float(txt[:-1]) * 1000 if txt.endswith("k") else float(txt)
    m_dur = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", info)
    duration = None
    if m_dur:
        h, mi, s = m_dur.groups()
        duration = int(h) * 3600 + int(mi) * 60 + float(s)
    return _Probe(duration=duration, width=width, height=height, fps=fps, has_audio=has_audio)


def _output_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """Decoded (W, H): the source size, shrunk so the longer side is at most ``max_side`` (even sizes)."""
    if max_side is None or max(width, height) <= max_side:
        return width, height
    s = max_side / max(width, height)
    return max(2, int(round(width * s / 2)) * 2), max(2, int(round(height * s / 2)) * 2)


def _check_length(p: Path, info: _Probe, max_seconds: float) -> None:
    if info.duration is not None and info.duration > max_seconds:
        raise ClipTooLongError(
            f"{p.name} lasts {info.duration:.1f} s; the maximum is {max_seconds:g} s (trim it, or raise max_seconds)")


def _decode(p: Path, info: _Probe, *, fps: float, max_side: int | None, limit_s: float,
            sample_rate: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode ``p`` in one ffmpeg pass: frames (T, H, W, 3) uint8 RGB at ``fps`` and, when ``sample_rate`` is
    given, the first audio track as (N,) float32 mono at that rate (else None); at most ``limit_s`` seconds.
    """
    w, h = _output_size(info.width, info.height, max_side)
    vf = f"fps={fps:g},scale={w}:{h}:flags=area"
    with tempfile.TemporaryDirectory(prefix="naturall2s-decode-") as work:
        audio_path = Path(work) / "audio.f32"
        cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", "-i", _input_arg(p),
               "-map", "0:V:0", "-vf", vf, "-fps_mode", "passthrough", "-t", f"{limit_s:.3f}",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
        if sample_rate is not None:
            cmd += ["-map", "0:a:0", "-ac", "1", "-ar", str(sample_rate), "-t", f"{limit_s:.3f}",
                    "-f", "f32le", str(audio_path)]
        frames = _read_frames(p, cmd, shape=(int(np.ceil(limit_s * fps)) + 2, h, w, 3), fps=fps)
        audio = None
        if sample_rate is not None and audio_path.is_file() and audio_path.stat().st_size >= 4:
            audio = np.fromfile(audio_path, dtype=np.float32)
    return frames, audio


def _read_frames(p: Path, cmd: list[str], *, shape: tuple[int, int, int, int], fps: float) -> np.ndarray:
    """Run ffmpeg ``cmd`` (rawvideo rgb24 on stdout) and read at most shape[0] frames of (H, W, 3)."""
    h, w = shape[1], shape[2]
    # frames are read straight into one preallocated (writable) array: no second copy of a long clip in memory
    frames = np.empty(shape, dtype=np.uint8)
    flat = memoryview(frames).cast("B")
    frame_bytes = w * h * 3
    n = 0
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: a chatty ffmpeg can never block on it
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        finished = False
        try:
            while n < len(frames) and _read_into(proc.stdout, flat[n * frame_bytes:(n + 1) * frame_bytes]):
                n += 1
            finished = True
        finally:
            proc.stdout.close()  # (if ffmpeg had more frames than the buffer holds, it stops on the closed pipe)
            if not finished:
                proc.kill()
            try:
                returncode = proc.wait(timeout=60)  # let it finish other outputs (the audio file)
            except subprocess.TimeoutExpired:
                proc.kill()
                returncode = proc.wait()
        err.seek(0)
        errors = err.read().decode(errors="replace")
    if n == 0:
        msg = _ffmpeg_error_line(errors) if returncode or errors.strip() else "no frames"
        raise NotAVideoError(f"{p.name}: could not decode any video frame ({msg})")
    if "partial file" in errors:  # the index promised more data than the file holds (e.g. a cut-off download)
        raise NotAVideoError(f"{p.name} is truncated: only {n / fps:.1f} s of its picture could be read")
    return frames[:n]


def _read_into(stream, view: memoryview) -> bool:
    """Fill ``view`` completely from ``stream``; False at end of stream (a partial frame is dropped)."""
    got = 0
    while got < len(view):
        k = stream.readinto(view[got:])
        if not k:
            return False
        got += k
    return True


def _decode_audio(p: Path, *, sample_rate: int) -> np.ndarray | None:
    """Decode the first audio track as (N,) float32 mono at ``sample_rate``; None if it yields nothing."""
    cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", "-i", _input_arg(p), "-vn", "-sn", "-dn",
           "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "pipe:1"]
    proc = subprocess.run(cmd, capture_output=True)
    n = len(proc.stdout) // 4
    if n == 0:
        return None
    return np.frombuffer(proc.stdout, np.float32, count=n).copy()


def read_video(path: str | os.PathLike, *, fps: float = FPS, max_seconds: float = MAX_SECONDS,
               with_audio: bool = True, max_side: int | None = None) -> VideoData:
    """Decode a video file: frames resampled to ``fps`` and its audio track at SAMPLE_RATE Hz mono.

    max_side: when given, frames are downscaled (aspect kept) so the longer side is at most this many pixels.
    Raises NotAVideoError, NoVideoStreamError or ClipTooLongError (the latter before decoding).
    """
    p = Path(path)
    info = probe(p)  # checks the file first
    _check_length(p, info, max_seconds)
    limit_s = (info.duration if info.duration is not None else max_seconds) + _DURATION_SLACK
    frames, audio = _decode(p, info, fps=fps, max_side=max_side, limit_s=limit_s,
                            sample_rate=SAMPLE_RATE if with_audio and info.has_audio else None)
    if info.duration is None and len(frames) > max_seconds * fps + 1:
        raise ClipTooLongError(f"{p.name} is longer than the maximum of {max_seconds:g} s")
    duration = info.duration if info.duration is not None else len(frames) / fps
    return VideoData(frames=frames, audio=audio, source_fps=float(info.fps or fps), duration=float(duration),
                     path=str(p), fps=float(fps))


def read_audio_track(path: str | os.PathLike, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray | None:
    """The audio track of a media file as (N,) float32 mono at ``sample_rate`` Hz, or None if it has none.

    Works for audio-only files too; raises NotAVideoError if ffmpeg cannot read the file at all.
    """
    p = _check_file(path)
    try:
        info = probe(p)
        has_audio = info.has_audio
    except NoVideoStreamError:
        has_audio = True
    if not has_audio:
        return None
    return _decode_audio(p, sample_rate=sample_rate)


def write_gray_video(path: str | os.PathLike, frames: np.ndarray, *, fps: float = FPS, scale: int = 4) -> None:
    """Write (T, h, w) uint8 grayscale frames as an H.264 mp4 a person can watch.

    Each frame is enlarged ``scale`` times with nearest-neighbour interpolation (the pixels the model sees),
    then padded to even sizes for yuv420p. Written atomically (temporary file, then os.replace).
    """
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    if frames.ndim != 3 or len(frames) == 0:
        raise ValueError(f"frames must be (T, h, w) with T > 0, got shape {frames.shape}")
    scale = max(1, int(scale))
    t, h, w = frames.shape
    out = Path(path)
    vf = f"scale={w * scale}:{h * scale}:flags=neighbor,pad=ceil(iw/2)*2:ceil(ih/2)*2"
    with atomic_path(out) as tmp:
        cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", "-y", "-f", "rawvideo", "-pix_fmt", "gray",
               "-s", f"{w}x{h}", "-r", f"{fps:g}", "-i", "pipe:0", "-vf", vf,
               "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
               "-movflags", "+faststart", str(tmp)]
        proc = subprocess.run(cmd, input=frames.tobytes(), capture_output=True)
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg failed writing {out}: {_ffmpeg_error_line(proc.stderr.decode(errors='replace'))}")


def mux_audio(video_path: str | os.PathLike, wav: np.ndarray, sample_rate: int,
              out_path: str | os.PathLike) -> None:
    """Write ``out_path``: the picture of ``video_path`` with ``wav`` ((N,) float, mono) as its only sound.

    The sound is cut to the picture's length (a shorter one ends in silence). H.264 + AAC via moviepy,
    written atomically (temporary file, then os.replace).
    """
    from moviepy import AudioArrayClip, VideoFileClip

    src = Path(video_path)
    probe(src)  # typed errors for bad inputs (missing, empty, not a video) before moviepy sees them
    out = Path(out_path)
    wav = np.clip(np.asarray(wav, dtype=np.float32).reshape(-1), -1.0, 1.0)
    if len(wav) == 0:
        raise ValueError("wav is empty")
    video = audio = None
    try:
        with atomic_path(out) as tmp, tempfile.TemporaryDirectory(prefix="naturall2s-mux-") as work:
            video = VideoFileClip(str(src), audio=False)
            wav = wav[: int(round(video.duration * sample_rate))]  # cut to the picture's length
            # stereo on purpose: moviepy 2.2's AudioArrayClip always returns 2 channels and mislabels mono
            audio = AudioArrayClip(np.repeat(wav[:, None], 2, axis=1).astype(np.float64), fps=int(sample_rate))
            clip = video.with_audio(audio)
            clip.write_videofile(str(tmp), codec="libx264", audio_codec="aac", audio_fps=int(sample_rate),
                                 fps=video.fps, preset="veryfast", pixel_format="yuv420p",
                                 temp_audiofile=os.path.join(work, "audio.m4a"), logger=None,
                                 ffmpeg_params=["-movflags", "+faststart"])
    finally:
        for c in (audio, video):
            if c is not None:
                c.close()


class RGBVideoWriter:
    """An H.264 mp4 written frame by frame (a live take: nothing is held in memory), no sound.

    ``write(frame (H, W, 3) uint8 RGB)``: the first frame fixes the size (cut to even sides); later frames of another
    size are resized to it. ``close()`` finishes the file (atomically in place) and returns its path.
    """

    def __init__(self, path: str | os.PathLike, *, fps: float = FPS):
        self.path, self.fps = Path(path), fps
        self.size: tuple[int, int] | None = None  # (H, W)
        self._proc: subprocess.Popen | None = None
        self._tmp: Path | None = None
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        import cv2

        if self._proc is None:
            h, w = frame.shape[:2]
            self.size = (max(2, h - h % 2), max(2, w - w % 2))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = self.path.with_name(f".{self.path.stem}.part{self.path.suffix}")
            self._proc = subprocess.Popen(
                [ffmpeg_exe(), "-v", "error", "-nostdin", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                 "-s", f"{self.size[1]}x{self.size[0]}", "-r", f"{self.fps:g}", "-i", "pipe:0",
                 "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
                 "-movflags", "+faststart", "-f", "mp4", str(self._tmp)],
                stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
        if frame.shape[:2] != self.size:
            frame = cv2.resize(frame, (self.size[1], self.size[0]), interpolation=cv2.INTER_AREA)
        self._proc.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
        self.frames += 1

    def close(self) -> Path | None:
        """Finish the file; -> its path, or None when no frame was written or ffmpeg failed."""
        if self._proc is None:
            return None
        proc, self._proc = self._proc, None
        try:
            proc.stdin.close()
            ok = proc.wait(timeout=120) == 0
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            ok = False
        if ok and self._tmp.is_file():
            os.replace(self._tmp, self.path)
            return self.path
        self._tmp.unlink(missing_ok=True)
        return None


def write_rgb_video(path: str | os.PathLike, frames: np.ndarray, *, fps: float = FPS) -> Path:
    """Write (T, H, W, 3) uint8 RGB frames as an H.264 mp4 without sound (:class:`RGBVideoWriter`)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be (T, H, W, 3) with T > 0, got {frames.shape}")
    writer = RGBVideoWriter(path, fps=fps)
    for frame in frames:
        writer.write(frame)
    out = writer.close()
    if out is None:
        raise RuntimeError(f"ffmpeg failed writing {path}")
    return out
