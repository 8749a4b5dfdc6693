"""Is the speaker's own speech, retrieved by what the lips show, a better acoustic estimate than the mel head's?

The retrieval design of the intelligibility work, measured before any model is trained on it: every frame of the
training split is indexed by the cascade's (frozen) front-end features, with its frame word label (from the corpus's
``.align`` timings) and its 4 real log-mel frames. For each video frame of a held-out clip, the nearest training
frames come back, scored by feature distance plus the word head's surprise at their word (``word_weight * -log
p(word)``). Two read-outs:

- ``select``: unit selection, a Viterbi path through the ``top_k`` candidates of every frame that pays ``jump_cost``
  whenever it leaves a training clip's own frame order (so that whole syllables and words come back intact);
- ``average``: the mean (or softmax-weighted mean, temperature ``tau``) of the ``top_k`` candidates' mels (kNN regression).

Each retrieved mel, each one averaged with the model's own predicted mel, and the predicted mel alone go through the
cascade's vocoder (trained on *real* mels, so a retrieved real mel is its home ground) and are scored against the real
audio: ESTOI (pystoi) and the WER of the GRID-grammar ASR. Only ``train`` is indexed; scores are on ``--split``.

    python scripts/retrieval_probe.py --cache ../naturall2s-work/cache/grid --split val [--model mel-vocoder]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from naturall2s import load_model  # noqa: E402
from naturall2s.asr import get_asr  # noqa: E402
from naturall2s.data import CachedGrid  # noqa: E402
from naturall2s.metrics import estoi, mean_ci, wer  # noqa: E402
from naturall2s.retrieval import FrameIndex  # noqa: E402


@torch.no_grad()
def encode(model, clips: CachedGrid, desc: str) -> list[dict]:
    """Front-end features (T,dim), word log-posteriors (T,V) and the real data of every clip of a split."""
    rows = []
    for i in tqdm(range(len(clips)), desc=desc):
        c = clips[i]
        feats = model.encode(c["roi"][None], c["lips"][None])
        rows.append({"feats": feats[0], "word_lp": torch.log_softmax(model.word_head(feats), -1)[0], "mel": c["mel"],
                     "words": c["words"], "audio": c["audio"].numpy(), "text": c["text"]})
    return rows


def build_index(rows: list[dict]) -> FrameIndex:
    return FrameIndex.build([r["feats"] for r in rows], [r["words"] for r in rows], [r["mel"] for r in rows])


def select(index: FrameIndex, c: dict, **kw) -> torch.Tensor:
    """Unit selection (the retrieval prior's read-out) -> mel (n_mels, 4T)."""
    return index.mel_of(index.select(c["feats"], c["word_lp"], **kw))


def average(index: FrameIndex, c: dict, *, top_k: int = 32, tau: float = 0.0) -> torch.Tensor:
    """kNN regression: the (softmax(-cost/tau)-weighted, tau > 0) mean of the candidates' mels -> (n_mels, 4T)."""
    cost, idx = index.candidates(c["feats"], c["word_lp"], top_k=top_k)
    w = torch.softmax(-cost / tau, dim=1) if tau > 0 else torch.full_like(cost, 1.0 / top_k)
    return torch.einsum("tk,tkfm->tfm", w, index.mels[idx]).reshape(-1, index.mels.shape[-1]).T


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", required=True, help="prepared cache (python -m naturall2s prepare)")
    ap.add_argument("--split", default="val", help="the clips scored (never train: it is the index)")
    ap.add_argument("--model", default="mel-vocoder", help="a mel-vocoder model: its front end, word head, vocoder")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.split == "train":
        raise SystemExit("--split train is the index itself; score val or test")
    torch.set_num_threads(args.threads)
    model = load_model(args.model).float().eval()
    if model.config.variant != "mel-vocoder" or not model.config.word_head:
        raise SystemExit(f"{args.model}: needs a mel-vocoder model with a word head")
    index = build_index(encode(model, CachedGrid(args.cache, "train"), "indexing train"))
    clips = encode(model, CachedGrid(args.cache, args.split), args.split)
    asr = get_asr("auto", grammar="grid")
    readouts = {
        "predicted mel (the cascade)": lambda c, pm: pm,
        "select, word 0, jump 0 (frame kNN)": lambda c, pm: select(index, c, word_weight=0, jump_cost=0),
        "select, word 1, jump 0": lambda c, pm: select(index, c, jump_cost=0),
        "select, word 1, jump 1": lambda c, pm: select(index, c),
        "select, word 1, jump 3": lambda c, pm: select(index, c, jump_cost=3),
        "average, k 8": lambda c, pm: average(index, c, top_k=8),
        "average, k 32, tau 0.5": lambda c, pm: average(index, c, tau=0.5),
        "(average k 32 tau 0.5 + predicted) / 2": lambda c, pm: (average(index, c, tau=0.5) + pm) / 2,
        "(select + predicted) / 2": lambda c, pm: (select(index, c) + pm) / 2,
    }
    print(f"| read-out ({args.split}, {len(clips)} clips, vocoded by {args.model}) | ESTOI | WER |\n|---|---|---|")
    for name, readout in readouts.items():
        e, w = [], []
        for c in clips:
            with torch.no_grad():
                pm = model.decode(c["feats"][None])["mel"][0]
                wav = model.vocoder(readout(c, pm).T[None])[0].clamp(-1, 1).numpy()[: len(c["audio"])]
            e.append(estoi(c["audio"], wav))
            w.append(wer(c["text"], asr.transcribe(wav, model.config.sample_rate)))
        ce, cw = mean_ci(e), mean_ci(w)
        print(f"| {name} | {ce['mean']:.3f} ± {ce['ci95']:.3f} | {cw['mean']:.3f} ± {cw['ci95']:.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
