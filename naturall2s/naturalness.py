"""MOS predictors: predicted naturalness (mean opinion score, 1..5, higher is better) of speech, no reference needed.

:func:`get_mos_predictor` picks one; each has ``name`` and a batched ``score(wavs, sample_rate) -> (B,)`` float64.
Models are loaded once per process. Nothing is downloaded:

- :class:`DistillMOS` — DistillMOS (Stahl & Gamper 2025; the ``distillmos`` package, MIT, weights ship in its
  wheel): a small CNN + transformer distilled from an XLS-R speech-quality model. The offline default.
- :class:`UTMOS` — UTMOS22 strong learner (Saeki et al. 2022), the VoiceMOS 2022 winner, run by the fairseq-free
  ``utmos-pytorch`` package, used when its converted weights (``utmos_state_dict.pt``) are already in
  :data:`UTMOS_LOCAL_DIR` or the local Hugging Face cache of :data:`UTMOS_REPO_ID`.

A predictor is a judge only: no training loss or checkpoint selection uses it.
"""
from __future__ import annotations

import contextlib
import functools
import io
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from naturall2s import audio
from naturall2s.errors import NaturalL2SError

REPO = Path(__file__).resolve().parents[1]
PREDICTOR_NAMES = ("auto", "distillmos", "utmos")
MOS_RATE = 16000  # Hz: both predictors take 16 kHz mono
MOS_THREADS = 1  # torch intra-op threads while scoring (benchmarks/bench_mos.py: one thread was fastest on 2 cores)
DISTILLMOS_BATCH = 1  # clips per forward pass (benchmarks/bench_mos.py: batching was not faster on CPU)
UTMOS_REPO_ID = "Blinorot/UTMOS-PyTorch"
UTMOS_FILE = "utmos_state_dict.pt"
UTMOS_LOCAL_DIR = REPO / "pretrained_models" / "utmos"  # repo-relative, beside the ECAPA folder


class MOSPredictor(Protocol):
    """Predicts a MOS (about 1..5) for each waveform of a batch."""

    name: str

    def score(self, wavs: Sequence[np.ndarray], sample_rate: int) -> np.ndarray: ...


class MOSPredictorUnavailableError(NaturalL2SError):
    """The requested MOS predictor's package or weights are not on this machine."""


def _mono16k(wav, sample_rate: int) -> np.ndarray:
    """(N,) float audio at ``sample_rate`` -> (M,) float32 at MOS_RATE (empty stays empty)."""
    x = np.asarray(wav, np.float32).reshape(-1)
    return audio.resample(x, int(sample_rate), MOS_RATE) if x.size else x


@contextlib.contextmanager
def _torch_threads(n: int):
    """Run the block with ``n`` torch intra-op threads, restoring the previous count after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _batched(predict, wavs: Sequence[np.ndarray], sample_rate: int, *, batch_size: int, length: int | None) -> np.ndarray:
    """Score every waveform with ``predict((B, L) float32 tensor) -> (B,)``, grouping clips into batches.

    Clips of at most ``length`` samples (at MOS_RATE) are zero-padded to ``length`` and batched, ``batch_size`` at a
    time (the model pads every shorter clip to that length itself, so batching changes no score beyond float
    rounding); longer clips, and every clip when ``length`` is None, go one at a time. Empty clips score nan.
    """
    import torch

    x = [_mono16k(w, sample_rate) for w in wavs]
    out = np.full(len(x), np.nan)
    short = [i for i, w in enumerate(x) if w.size and length is not None and w.size <= length]
    single = [i for i, w in enumerate(x) if w.size and not (length is not None and w.size <= length)]
    groups = [short[i: i + batch_size] for i in range(0, len(short), batch_size)] + [[i] for i in single]
    with _torch_threads(MOS_THREADS), torch.inference_mode():
        for group in groups:
            size = length if length is not None and group[0] in short else x[group[0]].size
            batch = np.zeros((len(group), size), np.float32)
            for row, i in enumerate(group):
                batch[row, : x[i].size] = x[i]
            out[group] = predict(torch.from_numpy(batch)).reshape(-1).double().numpy()
    return out


# ---------------------------------------------------------------------------------------- distillmos
class DistillMOS:
    """DistillMOS (``distillmos.ConvTransformerSQAModel``, 4.1 M parameters) on CPU.

    The model pads a clip to 7.68 s (longer clips: overlapping 7.68 s windows, scores averaged) and peak-normalises
    it, so the input level does not matter.
    """

    name = "distillmos"

    def __init__(self, *, batch_size: int = DISTILLMOS_BATCH):
        self._model = _distillmos_model()
        self.batch_size = max(1, int(batch_size))

    def score(self, wavs: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
        """(B,) float64 MOS (about 1..5) of a list of (N_i,) float waveforms at ``sample_rate``; nan for empty ones."""
        from distillmos.sqa import SEQ_LEN

        return _batched(self._model, wavs, sample_rate, batch_size=self.batch_size, length=SEQ_LEN)


@functools.lru_cache(maxsize=None)
def _distillmos_model():
    """The DistillMOS model in eval mode (weights from the distillmos wheel), once per process."""
    try:
        import distillmos
    except ImportError as e:
        raise MOSPredictorUnavailableError(f"the distillmos package is not installed ({e}); pip install distillmos") from e
    with contextlib.redirect_stdout(io.StringIO()):  # it prints where it loaded its weights from
        model = distillmos.ConvTransformerSQAModel()
    return model.eval()


# --------------------------------------------------------------------------------------------- utmos
def find_utmos() -> Path | None:
    """The UTMOS weights file on disk (UTMOS_LOCAL_DIR, then the Hugging Face cache), or None. Never downloads."""
    candidates = [UTMOS_LOCAL_DIR / UTMOS_FILE]
    try:
        from huggingface_hub import hf_hub_download

        candidates.append(Path(hf_hub_download(UTMOS_REPO_ID, UTMOS_FILE, local_files_only=True)))
    except Exception:  # not cached (LocalEntryNotFoundError), or no hub client: nothing on disk
        pass
    return next((p for p in candidates if p.is_file()), None)


class UTMOS:
    """UTMOS22 strong learner (wav2vec 2.0 base + listener-conditioned BLSTM, ~95 M parameters) on CPU, from local
    weights only, one clip per forward pass (its authors advise batch size 1: padding shifts the score)."""

    name = "utmos"

    def __init__(self, weights: str | Path | None = None):
        weights = Path(weights) if weights is not None else find_utmos()
        if weights is None or not weights.is_file():
            raise MOSPredictorUnavailableError(
                f"UTMOS weights not found (looked for {UTMOS_FILE} in {UTMOS_LOCAL_DIR} and the Hugging Face cache of "
                f"{UTMOS_REPO_ID}); nothing is downloaded automatically"
            )
        self._model = _utmos_model(str(weights))

    def score(self, wavs: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
        """(B,) float64 MOS (about 1..5) of a list of (N_i,) float waveforms at ``sample_rate``; nan for empty ones."""
        return _batched(self._model.score, wavs, sample_rate, batch_size=1, length=None)


@functools.lru_cache(maxsize=None)
def _utmos_model(weights: str):
    """utmos-pytorch's UTMOSScoreTorch loaded from a local state dict (``torch.load(weights_only=True)``), once."""
    try:
        from utmos_pytorch import UTMOSScoreTorch
    except ImportError as e:
        raise MOSPredictorUnavailableError(f"the utmos-pytorch package is not installed ({e})") from e
    return UTMOSScoreTorch(ckpt_path=weights, device="cpu")


# ------------------------------------------------------------------------------------------- factory
def get_mos_predictor(name: str = "auto") -> MOSPredictor:
    """A MOS predictor by name: ``"distillmos"``, ``"utmos"`` or ``"auto"``.

    ``"auto"`` is UTMOS when its weights are already on disk (:func:`find_utmos`) and its package is installed, else
    DistillMOS. Raises :class:`MOSPredictorUnavailableError` when the named one cannot run here, ValueError for
    unknown names.
    """
    if name not in PREDICTOR_NAMES:
        raise ValueError(f"unknown MOS predictor {name!r}; choose one of {', '.join(PREDICTOR_NAMES)}")
    if name == "utmos":
        return UTMOS()
    if name == "auto":
        weights = find_utmos()
        if weights is not None:
            try:
                return UTMOS(weights)
            except MOSPredictorUnavailableError:  # weights without the package: fall back to the default
                pass
    return DistillMOS()


def mos_key(predictor_name: str) -> str:
    """The result field of a predictor's scores: ``"distillmos"`` -> ``"mos_distillmos"``."""
    return f"mos_{predictor_name}"
