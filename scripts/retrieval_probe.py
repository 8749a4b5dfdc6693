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

MEL_FRAMES = 4  # log-mel frames per video frame


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


class FrameIndex:
    """The training split's frames: standardized keys (N,dim), word labels (N,), real mels (N,4,n_mels) and each
    frame's clip and position (N,), for continuity."""

    def __init__(self, rows: list[dict]):
        keys = torch.cat([r["feats"] for r in rows])
        self.mean, self.std = keys.mean(0), keys.std(0) + 1e-5
        self.keys = (keys - self.mean) / self.std
        self.words = torch.cat([r["words"] for r in rows])
        self.mels = torch.cat([r["mel"].T.reshape(-1, MEL_FRAMES, r["mel"].shape[0]) for r in rows])
        self.clip = torch.cat([torch.full((len(r["feats"]),), i) for i, r in enumerate(rows)])
        self.frame = torch.cat([torch.arange(len(r["feats"])) for r in rows])

    def candidates(self, feats: torch.Tensor, word_lp: torch.Tensor, *, top_k: int,
                   word_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (T,dim), word_lp (T,V) -> costs (T,top_k) and index rows (T,top_k), cheapest first."""
        q = (feats - self.mean) / self.std
        cost = torch.cdist(q, self.keys).pow(2) / q.shape[1]
        cost = cost - word_weight * word_lp[:, self.words.clamp(max=word_lp.shape[1] - 1)]
        return cost.topk(top_k, dim=1, largest=False)

    def select(self, feats, word_lp, *, top_k: int = 64, word_weight: float = 1.0, jump_cost: float = 1.0):
        """Unit selection: the Viterbi path of least (target cost + jump cost) -> mel (n_mels, 4T), jump rate."""
        cost, idx = self.candidates(feats, word_lp, top_k=top_k, word_weight=word_weight)
        acc, back = cost[0].clone(), []
        for t in range(1, len(idx)):
            prev, cur = idx[t - 1], idx[t]
            follows = (self.clip[cur][None] == self.clip[prev][:, None]) & (
                self.frame[cur][None] == self.frame[prev][:, None] + 1)
            best, arg = (acc[:, None] + jump_cost * (~follows).float()).min(0)
            acc = best + cost[t]
            back.append(arg)
        j = int(acc.argmin())
        path = [j]
        for arg in reversed(back):
            j = int(arg[j])
            path.append(j)
        rows = idx[torch.arange(len(idx)), torch.tensor(path[::-1])]
        jumps = 1.0 - float(((self.clip[rows[1:]] == self.clip[rows[:-1]])
                             & (self.frame[rows[1:]] == self.frame[rows[:-1]] + 1)).float().mean())
        return self.mels[rows].reshape(-1, self.mels.shape[-1]).T, jumps

    def average(self, feats, word_lp, *, top_k: int = 32, word_weight: float = 1.0, tau: float = 0.0):
        """kNN regression: the (softmax(-cost/tau)-weighted, tau > 0) mean of the candidates' mels -> (n_mels, 4T)."""
        cost, idx = self.candidates(feats, word_lp, top_k=top_k, word_weight=word_weight)
        w = torch.softmax(-cost / tau, dim=1) if tau > 0 else torch.full_like(cost, 1.0 / top_k)
        return torch.einsum("tk,tkfm->tfm", w, self.mels[idx]).reshape(-1, self.mels.shape[-1]).T


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
    index = FrameIndex(encode(model, CachedGrid(args.cache, "train"), "indexing train"))
    clips = encode(model, CachedGrid(args.cache, args.split), args.split)
    asr = get_asr("auto", grammar="grid")
    readouts = {
        "predicted mel (the cascade)": lambda c, pm: pm,
        "select, word 0, jump 0 (frame kNN)": lambda c, pm: index.select(c["feats"], c["word_lp"], word_weight=0,
                                                                        jump_cost=0)[0],
        "select, word 1, jump 0": lambda c, pm: index.select(c["feats"], c["word_lp"], jump_cost=0)[0],
        "select, word 1, jump 1": lambda c, pm: index.select(c["feats"], c["word_lp"])[0],
        "select, word 1, jump 3": lambda c, pm: index.select(c["feats"], c["word_lp"], jump_cost=3)[0],
        "average, k 8": lambda c, pm: index.average(c["feats"], c["word_lp"], top_k=8),
        "average, k 32, tau 0.5": lambda c, pm: index.average(c["feats"], c["word_lp"], tau=0.5),
        "(average k 32 tau 0.5 + predicted) / 2": lambda c, pm: (index.average(c["feats"], c["word_lp"], tau=0.5)
                                                                 + pm) / 2,
        "(select + predicted) / 2": lambda c, pm: (index.select(c["feats"], c["word_lp"])[0] + pm) / 2,
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
