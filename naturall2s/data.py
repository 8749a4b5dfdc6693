"""GRID corpus: transcripts, splits, the preparation cache and the training Dataset.

GRID layout under ``data_root``: ``<speaker>/<name>.mp4``, ``align/<speaker>/<name>.align`` and
``splits.json`` (``{"s1": {"train": [...], "val": [...], "test": [...]}}``).

Cache layout made by :func:`prepare`: ``<cache>/manifest.json``, ``<cache>/splits.json`` (a copy) and
``<cache>/clips/<name>.npz`` with the keys of :data:`NPZ_KEYS`; lengths follow the project convention
(``T`` video frames, ``4T`` audio frames, ``640T`` samples at 16 kHz).
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from naturall2s.files import atomic_path
from naturall2s.audio import (
    F0_MAX, F0_MIN, F_MAX, F_MIN, HOP_LENGTH, LOG_CLAMP, LOUDNESS_FLOOR_DB, N_FFT, N_MELS, PCM16_SCALE, SAMPLE_RATE,
    SAMPLES_PER_VIDEO_FRAME, fit_length, f0_voicing, log_mel, loudness,
)
from naturall2s.errors import DataError
from naturall2s.grid import BLANK, name_transcript, text_to_tokens

ALIGN_UNITS_PER_SECOND = 25000.0  # .align times: 1000 units = one 40 ms video frame
SILENCE_WORDS = frozenset({"sil", "sp"})
AUDIO_FRAMES_PER_VIDEO_FRAME = SAMPLES_PER_VIDEO_FRAME // HOP_LENGTH  # 4
SPLITS = ("train", "val", "test")
CACHE_VERSION = 2  # 2: + per-frame word labels ("words")

NPZ_KEYS = ("roi", "lips", "audio", "mel", "f0", "voiced", "loudness", "text", "detected", "words")
UNKNOWN_WORD = 255
"""Frame label where the word is unknown (no .align file): ignored by the frame-level word loss."""


def unknown_words(n_frames: int) -> np.ndarray:
    """Word labels of a clip without an alignment: (n_frames,) uint8 of UNKNOWN_WORD."""
    return np.full(n_frames, UNKNOWN_WORD, dtype=np.uint8)


# ------------------------------------------------------------------------------------ transcripts
def read_align(path: str | Path) -> list[tuple[float, float, str]]:
    """Word timings of a GRID ``.align`` file: [(start_s, end_s, word), ...] in seconds, silences included."""
    path = Path(path)
    try:
        lines = path.read_text().split("\n")
    except OSError as e:
        raise DataError(f"cannot read alignment {path}: {e}") from e
    words = []
    for i, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise DataError(f"{path}:{i}: expected 'start end word', got {line!r}")
        try:
            start, end = float(parts[0]), float(parts[1])
        except ValueError as e:
            raise DataError(f"{path}:{i}: bad time in {line!r}") from e
        words.append((start / ALIGN_UNITS_PER_SECOND, end / ALIGN_UNITS_PER_SECOND, parts[2].lower()))
    return words


def align_transcript(path: str | Path) -> str:
    """The sentence of a GRID ``.align`` file: its words in order without sil/sp, space-separated."""
    return _sentence(read_align(path))


def _sentence(words: list[tuple[float, float, str]]) -> str:
    return " ".join(w for _, _, w in words if w not in SILENCE_WORDS)


def word_frames(words: list[tuple[float, float, str]], n_frames: int, *, fps: float = 25.0) -> np.ndarray:
    """Per-video-frame word labels from :func:`read_align` timings -> (n_frames,) uint8.

    Frame ``t`` (centre ``(t + 0.5) / fps`` s) gets the token (1..51) of the word spoken at that instant, ``BLANK``
    (0) in silence (sil/sp or outside every word). Raises DataError on a word outside GRID_VOCAB.
    """
    labels = np.zeros(n_frames, dtype=np.uint8)
    centres = (np.arange(n_frames) + 0.5) / fps
    for start, end, word in words:
        if word in SILENCE_WORDS:
            continue
        token = text_to_tokens(word)[0]
        labels[(centres >= start) & (centres < end)] = token
    return labels


def align_pauses(words: list[tuple[float, float, str]], n_frames: int) -> np.ndarray:
    """Pause mask over 100 Hz audio frames from :func:`read_align` timings -> (n_frames,) bool.

    Frame ``k`` (samples ``[160k, 160k + 160)``, centre ``(k + 0.5) / 100`` s) is a pause when no word (sil/sp
    excluded) is spoken at its centre: :func:`word_frames` at 100 frames per second, labels == BLANK.
    """
    return word_frames(words, n_frames, fps=SAMPLE_RATE / HOP_LENGTH) == BLANK


def label_pauses(labels: np.ndarray) -> np.ndarray:
    """Pause mask over 100 Hz audio frames from per-video-frame word labels (the cache's ``words``, (T,)).

    -> (4T,) bool: BLANK frames repeated AUDIO_FRAMES_PER_VIDEO_FRAME times. Raises DataError when the labels are
    unknown (UNKNOWN_WORD: the clip had no alignment), since then nothing says where the pauses are.
    """
    labels = np.asarray(labels).reshape(-1)
    if np.any(labels == UNKNOWN_WORD):
        raise DataError("the clip has no word labels (no .align file): its pauses are unknown")
    return np.repeat(labels == BLANK, AUDIO_FRAMES_PER_VIDEO_FRAME)


# ------------------------------------------------------------------------------------------ splits
def split_entries(data_root: Path) -> list[tuple[str, str, str]]:
    """[(split, speaker, name), ...] from ``data_root/splits.json``, in file order; name None opens a split."""
    path = Path(data_root) / "splits.json"
    if not path.is_file():
        raise DataError(f"no splits.json in {data_root} (expected {{speaker: {{train/val/test: [names]}}}})")
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from e
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected {{speaker: {{split: [names]}}}}")
    entries, seen = [], {}
    for speaker, splits in raw.items():
        if not isinstance(splits, dict):
            raise DataError(f"{path}: speaker {speaker!r} should map split names to lists of clips")
        for split, names in splits.items():
            entries.append((split, speaker, None))  # marks the split as present even when empty
            for name in names:
                if name in seen and seen[name] != speaker:
                    raise DataError(f"{path}: clip name {name!r} appears for two speakers; names must be unique")
                seen[name] = speaker
                entries.append((split, speaker, name))
    return entries


def load_splits(data_root: str | Path) -> dict[str, list[str]]:
    """Clip names per split (all speakers merged) from ``data_root/splits.json`` (a GRID root or a cache)."""
    out: dict[str, list[str]] = {}
    for split, _, name in split_entries(Path(data_root)):
        names = out.setdefault(split, [])
        if name is not None:
            names.append(name)
    return out


# ------------------------------------------------------------------------------------- preparation
def clip_features(roi, lips, detected, audio_16k, text: str, words: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The npz record of one clip: video arrays of T frames, audio fitted to 640T samples, features at 4T.

    roi (T,48,72) uint8, lips (T,40), detected (T,) bool, audio_16k (N,) float32, words (T,) frame word labels
    (:func:`word_frames`; None: all ``UNKNOWN_WORD``) -> dict of NPZ_KEYS arrays with the cache dtypes
    (audio int16, mel/lips/loudness float16, words uint8).
    """
    n_frames = int(roi.shape[0])
    if words is None:
        words = unknown_words(n_frames)
    elif len(words) != n_frames:
        raise DataError(f"word labels cover {len(words)} frames, the clip has {n_frames}")
    wav = fit_length(np.asarray(audio_16k, dtype=np.float32), n_frames * SAMPLES_PER_VIDEO_FRAME)
    wav = np.clip(wav, -1.0, 1.0)
    f0, voiced = f0_voicing(wav)
    with torch.no_grad():
        mel = log_mel(torch.from_numpy(wav)).numpy()
    return {
        "roi": np.asarray(roi, dtype=np.uint8),
        "lips": np.asarray(lips, dtype=np.float16),
        "audio": np.round(wav * PCM16_SCALE).astype(np.int16),
        "mel": mel.astype(np.float16),
        "f0": f0.astype(np.float32),
        "voiced": voiced.astype(bool),
        "loudness": loudness(wav).astype(np.float16),
        "text": np.array(text),
        "detected": np.asarray(detected, dtype=bool),
        "words": np.asarray(words, dtype=np.uint8),
    }


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez into a temp file in the same folder, then os.replace: a killed run never leaves a partial file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _write_json_atomic(path: Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def _cache_state(path: Path) -> str:
    """``"complete"`` (every key: skipped on a rerun), ``"no-words"`` (a version-1 record: word labels are added
    in place) or ``"missing"`` (absent or unreadable: prepared again)."""
    try:
        with np.load(path) as z:
            missing = set(NPZ_KEYS) - set(z.files)
    except Exception:
        return "missing"
    return "complete" if not missing else "no-words" if missing == {"words"} else "missing"


# Per-process state of a preparation worker: the detector is built once in the pool initializer.
_WORKER: dict = {}


def _init_worker(detector: str, single_thread: bool = True) -> None:
    """Pool initializer: one torch thread per worker process and this process's own face detector."""
    if single_thread:
        torch.set_num_threads(1)
    from naturall2s.landmarks import get_detector

    _WORKER["detector"] = get_detector(detector)


def _clip_text(name: str, align: str | Path, n_frames: int) -> tuple[str, np.ndarray]:
    """(sentence, frame word labels) from the .align file; without one, the sentence the name spells and
    unknown labels."""
    if Path(align).is_file():
        words = read_align(align)
        return _sentence(words), word_frames(words, n_frames)
    return name_transcript(name), unknown_words(n_frames)


def _add_word_labels(path: Path, align: Path) -> None:
    """Upgrade a version-1 cache npz (no ``words``) in place, atomically: no video is decoded again."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    _, arrays["words"] = _clip_text(path.stem, align, int(arrays["roi"].shape[0]))
    save_npz_atomic(path, arrays)


def _prepare_one(job: tuple[str, str, str, str]) -> dict:
    """Prepare one clip (name, mp4, align, out npz) in a worker. Never raises: failures come back as a record."""
    name, mp4, align, out = job
    t0 = time.perf_counter()
    det = getattr(_WORKER.get("detector"), "name", None)
    try:
        from naturall2s.roi import extract_mouth

        clip = extract_mouth(mp4, detector=_WORKER.get("detector"))
        if clip.audio is None:
            raise DataError(f"{mp4} has no audio track")
        text, words = _clip_text(name, align, int(clip.roi.shape[0]))
        arrays = clip_features(clip.roi, clip.lips, clip.detected, clip.audio, text, words)
        save_npz_atomic(Path(out), arrays)
        return {"name": name, "ok": True, "seconds": time.perf_counter() - t0, "detector": det,
                "frames": int(clip.roi.shape[0]), "detected": float(np.mean(clip.detected))}
    except Exception as e:  # recorded in the summary and manifest; the run goes on
        return {"name": name, "ok": False, "seconds": time.perf_counter() - t0, "detector": det,
                "error": f"{type(e).__name__}: {e}"}


def prepare(data_root: str | Path, out: str | Path, *, workers: int = 2, detector: str = "auto",
            limit: int | None = None, splits=SPLITS, progress: bool = True) -> dict:
    """Turn GRID clips into ``out/clips/<name>.npz`` (mouth ROI, lips, audio and features); resumable.

    Clips whose npz already exists and loads are skipped; each clip is written atomically, so a killed run
    loses at most the clips in flight. A failing clip is recorded (name + error) and the run goes on.
    ``workers`` processes (a spawn pool; 0 or 1 = in this process) each build their own detector once.
    ``limit`` caps the number of clips taken (in splits.json order). Returns the summary dict that is also
    stored in ``out/manifest.json``: prepared / skipped / failed counts, failures, wall seconds, constants.
    """
    data_root, out = Path(data_root), Path(out)
    if not data_root.is_dir():
        raise DataError(f"GRID data root not found: {data_root}")
    wanted = tuple(splits)
    unknown = set(wanted) - set(SPLITS)
    if unknown:
        raise DataError(f"unknown split(s) {sorted(unknown)}; choose from {list(SPLITS)}")
    entries = [e for e in split_entries(data_root) if e[0] in wanted and e[2] is not None]
    if limit is not None:
        entries = entries[: max(0, int(limit))]
    clips_dir = out / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "splits.json") as tmp:
        shutil.copyfile(data_root / "splits.json", tmp)

    t_start = time.perf_counter()
    jobs, skipped, upgraded, failures = [], 0, 0, []
    for _, speaker, name in entries:
        target = clips_dir / f"{name}.npz"
        mp4 = data_root / speaker / f"{name}.mp4"
        state = _cache_state(target)
        if state == "no-words":
            _add_word_labels(target, data_root / "align" / speaker / f"{name}.align")
            upgraded += 1
        if state != "missing":
            skipped += 1
        elif not mp4.is_file():
            failures.append({"name": name, "error": f"video not found: {mp4}"})
        else:
            jobs.append((name, str(mp4), str(data_root / "align" / speaker / f"{name}.align"), str(target)))

    results = _run_jobs(jobs, workers=workers, detector=detector, progress=progress)
    failures += [{"name": r["name"], "error": r["error"]} for r in results if not r["ok"]]
    done = [r for r in results if r["ok"]]
    summary = {
        "prepared": len(done),
        "skipped": skipped,
        "upgraded": upgraded,
        "failed": len(failures),
        "failures": failures,
        "wall_s": round(time.perf_counter() - t_start, 2),
        "clip_s_median": round(float(np.median([r["seconds"] for r in done])), 3) if done else None,
        "out": str(out),
    }
    used = next((r["detector"] for r in results if r.get("detector")), None)
    _write_manifest(out, summary, detector=used, wanted=wanted)
    return summary


def _run_jobs(jobs: list[tuple[str, str, str, str]], *, workers: int, detector: str, progress: bool) -> list[dict]:
    """Run :func:`_prepare_one` over ``jobs`` with a tqdm bar, in a spawn pool of ``workers`` or in-process."""
    from tqdm import tqdm

    if not jobs:
        return []
    bar = tqdm(total=len(jobs), desc="prepare", unit="clip", disable=not progress)
    results = []
    try:
        if workers <= 1:
            _init_worker(detector, single_thread=False)
            for job in jobs:
                results.append(_prepare_one(job))
                bar.update()
        else:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")  # detectors and torch hold threads: never fork them
            with ctx.Pool(min(workers, len(jobs)), initializer=_init_worker, initargs=(detector,)) as pool:
                for r in pool.imap_unordered(_prepare_one, jobs, chunksize=1):
                    results.append(r)
                    bar.update()
                    if not r["ok"]:
                        bar.write(f"failed {r['name']}: {r['error']}")
    finally:
        bar.close()
    return results


def _write_manifest(out: Path, summary: dict, *, detector: str | None, wanted) -> None:
    """manifest.json: constants, detector, per-split counts of cached clips and the last run's summary.

    ``detector`` is the concrete detector the workers used (None when no clip ran: the previous one is kept).
    """
    from naturall2s.roi import LIP_DIM, ROI_HEIGHT, ROI_WIDTH

    splits = load_splits(out)
    cached = {s: sum((out / "clips" / f"{n}.npz").is_file() for n in names) for s, names in splits.items()}
    manifest_path = out / "manifest.json"
    previous = {}
    if manifest_path.is_file():
        try:
            previous = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            previous = {}
    det_name = detector or previous.get("detector")
    manifest = {
        "version": CACHE_VERSION,
        "sample_rate": SAMPLE_RATE, "hop_length": HOP_LENGTH, "samples_per_video_frame": SAMPLES_PER_VIDEO_FRAME,
        "n_fft": N_FFT, "n_mels": N_MELS, "f_min": F_MIN, "f_max": F_MAX, "f0_min": F0_MIN, "f0_max": F0_MAX,
        "log_clamp": LOG_CLAMP, "loudness_floor_db": LOUDNESS_FLOOR_DB,
        "roi_height": ROI_HEIGHT, "roi_width": ROI_WIDTH, "lip_dim": LIP_DIM,
        "detector": det_name,
        "splits_requested": list(wanted),
        "counts": {s: {"listed": len(splits[s]), "cached": cached[s]} for s in splits},
        "last_run": summary,
    }
    _write_json_atomic(manifest_path, manifest)


# ------------------------------------------------------------------------------------------ reading
def _load_raw(path: Path) -> dict:
    """An npz record with its stored dtypes (text as str). Raises DataError when unreadable or incomplete."""
    try:
        with np.load(path) as z:
            missing = set(NPZ_KEYS) - set(z.files)
            if missing:
                raise DataError(f"{path} lacks keys {sorted(missing)}; re-run `python -m naturall2s prepare` "
                                "(it adds word labels to an older cache in place)")
            rec = {k: z[k] for k in NPZ_KEYS}
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"cannot read cached clip {path}: {e}") from e
    rec["text"] = str(rec["text"])
    return rec


def load_cached(path: str | Path) -> dict[str, np.ndarray | str]:
    """One cached clip: the NPZ_KEYS arrays as stored, except audio (640T,) float32 in [-1, 1] and text a str."""
    rec = _load_raw(Path(path))
    rec["audio"] = rec["audio"].astype(np.float32) / PCM16_SCALE
    return rec


class CachedGrid(torch.utils.data.Dataset):
    """A split of a prepared cache, held in RAM (compact dtypes; converted per item).

    Items: ``roi (T,H,W) uint8, lips (T,40) float32, audio (640T,) float32, mel (80,4T) float32,
    f0 (4T,) float32, voiced (4T,) bool, loudness (4T,) float32, tokens (L,) long, words (T,) long, name str,
    text str, start int``.
    With ``segment_frames=S`` clips longer than S are cut to S video frames and the matching 4S audio frames
    / 640S samples: at a random start when ``train`` else at the start. Tokens stay the whole sentence.
    """

    def __init__(self, cache_dir: str | Path, split: str, *, segment_frames: int | None = None, train: bool = False):
        self.cache_dir = Path(cache_dir)
        if not (self.cache_dir / "splits.json").is_file():
            raise DataError(f"{self.cache_dir} is not a prepared cache (no splits.json); run `python -m naturall2s prepare`")
        splits = load_splits(self.cache_dir)
        if split not in splits:
            raise DataError(f"split {split!r} not in {self.cache_dir / 'splits.json'} (has {sorted(splits)})")
        paths = [self.cache_dir / "clips" / f"{n}.npz" for n in splits[split]]
        present = [p for p in paths if p.is_file()]
        self.missing = [p.stem for p in paths if not p.is_file()]
        if not present:
            raise DataError(f"no cached clips of split {split!r} in {self.cache_dir / 'clips'}; run prepare")
        self.records = [_load_raw(p) for p in present]
        self.names = [p.stem for p in present]
        self.segment_frames = segment_frames
        self.train = train

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        rec = self.records[i]
        n_frames = rec["roi"].shape[0]
        t0, t1 = 0, n_frames
        if self.segment_frames is not None and n_frames > self.segment_frames:
            if self.train:
                t0 = int(torch.randint(0, n_frames - self.segment_frames + 1, ()).item())
            t1 = t0 + self.segment_frames
        a0, a1 = t0 * AUDIO_FRAMES_PER_VIDEO_FRAME, t1 * AUDIO_FRAMES_PER_VIDEO_FRAME
        s0, s1 = t0 * SAMPLES_PER_VIDEO_FRAME, t1 * SAMPLES_PER_VIDEO_FRAME
        return {
            "roi": torch.from_numpy(rec["roi"][t0:t1].copy()),
            "lips": torch.from_numpy(rec["lips"][t0:t1].astype(np.float32)),
            "audio": torch.from_numpy(rec["audio"][s0:s1].astype(np.float32) / PCM16_SCALE),
            "mel": torch.from_numpy(rec["mel"][:, a0:a1].astype(np.float32)),
            "f0": torch.from_numpy(rec["f0"][a0:a1].copy()),
            "voiced": torch.from_numpy(rec["voiced"][a0:a1].copy()),
            "loudness": torch.from_numpy(rec["loudness"][a0:a1].astype(np.float32)),
            "tokens": torch.tensor(text_to_tokens(rec["text"]), dtype=torch.long),
            "words": torch.from_numpy(rec["words"][t0:t1].astype(np.int64)),
            "name": self.names[i],
            "text": rec["text"],
            "start": t0,
        }


# Padding values per key: silence for the audio features, blank for tokens, unknown for words, zero otherwise.
_PAD_VALUES = {"mel": float(np.log(LOG_CLAMP)), "loudness": LOUDNESS_FLOOR_DB, "tokens": BLANK, "words": UNKNOWN_WORD}


def _pad_stack(tensors: list[torch.Tensor], dim: int, value: float) -> torch.Tensor:
    """Stack tensors padded with ``value`` along ``dim`` (of each item) to the longest. -> (B, ...)"""
    size = max(t.shape[dim] for t in tensors)
    out = []
    for t in tensors:
        pad_shape = list(t.shape)
        pad_shape[dim] = size - t.shape[dim]
        out.append(torch.cat([t, torch.full(pad_shape, value, dtype=t.dtype)], dim=dim))
    return torch.stack(out)


def collate(items: list[dict]) -> dict:
    """Batch CachedGrid items, padding to the longest clip.

    -> ``roi (B,T,H,W) uint8, lips (B,T,40), audio (B,640T), mel (B,80,4T), f0 / voiced / loudness (B,4T),
    tokens (B,L) long (0-padded), words (B,T) long (UNKNOWN_WORD-padded), frames (B,) long video lengths,
    token_lengths (B,) long, start (B,) long first video frame of each item in its clip (segments), name / text
    lists``.
    Padding is silence (mel log(LOG_CLAMP), loudness LOUDNESS_FLOOR_DB, zeros elsewhere).
    """
    time_dims = {"roi": 0, "lips": 0, "audio": 0, "mel": 1, "f0": 0, "voiced": 0, "loudness": 0, "tokens": 0,
                 "words": 0}
    batch = {k: _pad_stack([it[k] for it in items], d, _PAD_VALUES.get(k, 0)) for k, d in time_dims.items()}
    batch["frames"] = torch.tensor([it["roi"].shape[0] for it in items], dtype=torch.long)
    batch["token_lengths"] = torch.tensor([len(it["tokens"]) for it in items], dtype=torch.long)
    batch["start"] = torch.tensor([it.get("start", 0) for it in items], dtype=torch.long)
    batch["name"] = [it["name"] for it in items]
    batch["text"] = [it["text"] for it in items]
    return batch
