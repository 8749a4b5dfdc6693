"""Speaker encoders for the speaker-similarity column of the evaluation.

:func:`get_speaker_encoder` picks one; each has ``name`` and ``embed(wav, sample_rate) -> (D,)`` float32 with
unit L2 norm, so the cosine of two embeddings (:func:`naturall2s.metrics.speaker_similarity`) is their dot product.
Models are loaded once per process. Nothing is downloaded:

- :class:`ResemblyzerEncoder` — the GE2E d-vector model of Resemblyzer (D = 256; weights ship in its wheel):
  the offline default.
- :class:`EcapaEncoder` — SpeechBrain ECAPA-TDNN trained on VoxCeleb (``speechbrain/spkrec-ecapa-voxceleb``,
  D = 192), used when its files are already in :data:`ECAPA_LOCAL_DIR` or the local Hugging Face cache.
"""
from __future__ import annotations

import contextlib
import functools
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np

from naturall2s import audio
from naturall2s.errors import NaturalL2SError

REPO = Path(__file__).resolve().parents[1]
ENCODER_NAMES = ("auto", "resemblyzer", "ecapa")
ENCODER_RATE = 16000  # Hz: both encoders take 16 kHz audio
ECAPA_REPO_ID = "speechbrain/spkrec-ecapa-voxceleb"
ECAPA_LOCAL_DIR = REPO / "pretrained_models" / "spkrec-ecapa-voxceleb"  # SpeechBrain's usual savedir, repo-relative
ECAPA_FILES = ("hyperparams.yaml", "embedding_model.ckpt", "mean_var_norm_emb.ckpt", "classifier.ckpt",
               "label_encoder.txt")
VAD_MIN_SECONDS = 0.5  # keep Resemblyzer's silence trimming only when it leaves at least this much audio
SILENCE_RMS = 1e-5  # below this RMS a signal is treated as digital silence (no volume normalisation)


class SpeakerEncoder(Protocol):
    """Maps speech to a unit-norm speaker embedding."""

    name: str

    def embed(self, wav: np.ndarray, sample_rate: int) -> np.ndarray: ...


class SpeakerEncoderUnavailableError(NaturalL2SError):
    """The requested speaker encoder's package or weights are not on this machine."""


def _unit(v) -> np.ndarray:
    """(D,) float32 scaled to unit L2 norm (a zero vector stays zero)."""
    v = np.asarray(v, np.float32).reshape(-1)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def _mono16k(wav, sample_rate: int) -> np.ndarray:
    """(N,) float audio at ``sample_rate`` -> (M,) float32 at ENCODER_RATE."""
    return audio.resample(np.asarray(wav, np.float32).reshape(-1), int(sample_rate), ENCODER_RATE)


class ResemblyzerEncoder:
    """Resemblyzer's GE2E VoiceEncoder on CPU: (N,) audio -> (256,) unit-norm d-vector.

    Preprocessing follows Resemblyzer (volume raised to -30 dBFS, long silences cut by WebRTC VAD) except that
    the VAD cut is skipped when it would leave under VAD_MIN_SECONDS (e.g. for buzzy or noisy generated audio),
    so every input gets a meaningful embedding, and digital silence is embedded as is.
    """

    name = "resemblyzer-ge2e"

    def __init__(self):
        self._encoder = _resemblyzer_model()

    def embed(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        """(N,) float audio at ``sample_rate`` -> (256,) float32, unit norm."""
        normalize_volume, trim_long_silences = _resemblyzer_audio()
        from resemblyzer.hparams import audio_norm_target_dBFS

        x = _mono16k(wav, sample_rate)
        if x.size and float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) > SILENCE_RMS:
            x = normalize_volume(x, audio_norm_target_dBFS, increase_only=True)
            trimmed = trim_long_silences(np.clip(x, -1.0, 1.0))
            if trimmed.shape[0] >= VAD_MIN_SECONDS * ENCODER_RATE:
                x = trimmed
        with torch_threads(1):
            return _unit(self._encoder.embed_utterance(x.astype(np.float32)))


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` torch intra-op threads, restoring the previous count after (also used by
    :mod:`naturall2s.naturalness`).

    The GE2E LSTM runs ~500 tiny sequential steps per utterance; with several threads each step ends in a thread
    barrier, which on a busy machine costs seconds per utterance (measured: 0.02 s with one thread, 1-5 s with two
    on a loaded 2-core box), so it always runs single-threaded.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _resemblyzer_audio():
    """resemblyzer's (normalize_volume, trim_long_silences), imported without its scipy deprecation warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="resemblyzer")
        from resemblyzer.audio import normalize_volume, trim_long_silences
    return normalize_volume, trim_long_silences


@functools.lru_cache(maxsize=None)
def _resemblyzer_model():
    """The VoiceEncoder (weights from the resemblyzer wheel), once per process."""
    _resemblyzer_audio()
    from resemblyzer import VoiceEncoder

    return VoiceEncoder("cpu", verbose=False)


def find_ecapa() -> Path | None:
    """The local folder holding SpeechBrain's ECAPA files (ECAPA_LOCAL_DIR, then the HF cache), or None."""
    candidates = [ECAPA_LOCAL_DIR]
    try:
        from huggingface_hub import snapshot_download

        candidates.append(Path(snapshot_download(ECAPA_REPO_ID, local_files_only=True)))
    except Exception:  # not cached (LocalEntryNotFoundError), or no hub client: nothing on disk
        pass
    for folder in candidates:
        if all((folder / f).is_file() for f in ECAPA_FILES):
            return folder
    return None


class EcapaEncoder:
    """SpeechBrain ECAPA-TDNN (VoxCeleb) speaker embeddings: (N,) audio -> (192,) unit-norm, from local files only."""

    name = "ecapa-voxceleb"

    def __init__(self, folder: str | Path | None = None):
        folder = Path(folder) if folder is not None else find_ecapa()
        if folder is None or not all((folder / f).is_file() for f in ECAPA_FILES):
            raise SpeakerEncoderUnavailableError(
                f"SpeechBrain ECAPA weights not found (looked in {ECAPA_LOCAL_DIR} and the Hugging Face cache for "
                f"{ECAPA_REPO_ID}); nothing is downloaded automatically"
            )
        self._model = _ecapa_model(str(folder))

    def embed(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        """(N,) float audio at ``sample_rate`` -> (192,) float32, unit norm."""
        import torch

        x = torch.from_numpy(_mono16k(wav, sample_rate))[None]
        with torch.inference_mode():
            emb = self._model.encode_batch(x)  # (1, 1, 192)
        return _unit(emb.reshape(-1).cpu().numpy())


@functools.lru_cache(maxsize=None)
def _ecapa_model(folder: str):
    """The EncoderClassifier loaded from a local folder (its hparams' pretrained_path pointed there), once."""
    from speechbrain.inference.speaker import EncoderClassifier

    model = EncoderClassifier.from_hparams(source=folder, savedir=None, run_opts={"device": "cpu"},
                                           overrides={"pretrained_path": folder})
    model.eval()
    return model


def get_speaker_encoder(name: str = "auto") -> SpeakerEncoder:
    """A speaker encoder by name: ``"resemblyzer"``, ``"ecapa"`` or ``"auto"``.

    ``"auto"`` is ECAPA when its files are already on disk (:func:`find_ecapa`), else Resemblyzer.
    Raises :class:`SpeakerEncoderUnavailableError` for ``"ecapa"`` without local files, ValueError for unknown names.
    """
    if name not in ENCODER_NAMES:
        raise ValueError(f"unknown speaker encoder {name!r}; choose one of {', '.join(ENCODER_NAMES)}")
    folder = find_ecapa() if name in ("ecapa", "auto") else None
    if name == "ecapa" or folder is not None:
        return EcapaEncoder(folder)
    return ResemblyzerEncoder()
