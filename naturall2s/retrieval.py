"""The speaker's own speech as a prior: real log-mel frames of the training split, retrieved by what the lips show.

Every video frame of the indexed clips is one entry: its front-end features (the key, standardized), its word label
(from the corpus's ``.align`` timings) and its 4 real log-mel frames, with its clip and position so that runs of
consecutive frames can be told apart from jumps. A query (a clip's features and word head log-posteriors) brings back
a real mel by unit selection (:meth:`FrameIndex.select`): the ``top_k`` cheapest entries per frame (feature distance
plus ``word_weight`` times the word head's surprise at the entry's word), then the Viterbi path that pays
``jump_cost`` whenever it leaves a clip's own frame order, so whole syllables come back intact.

Tensors in, tensors out: the index is a module of buffers (saved inside a checkpoint with the model that reads it);
building it from a prepared cache is the training script's job. ``scripts/retrieval_probe.py`` measures the read-outs.
"""
from __future__ import annotations

import torch
from torch import nn

MEL_FRAMES = 4  # log-mel frames per video frame (audio.SAMPLES_PER_VIDEO_FRAME // audio.HOP_LENGTH)
TOP_K = 64  # candidates per frame
WORD_WEIGHT = 1.0  # weight of -log p(entry's word) against the mean squared standardized feature distance
JUMP_COST = 1.0  # cost of a path step that does not continue the previous entry's clip


class FrameIndex(nn.Module):
    """``n_entries`` video frames of real speech: keys (N,dim), words (N,), mels (N,4,n_mels), clip and frame (N,).

    Built empty at a given size (to load a checkpoint into) or filled by :meth:`build`.
    """

    def __init__(self, *, n_entries: int, dim: int, n_mels: int):
        super().__init__()
        self.register_buffer("key_mean", torch.zeros(dim))
        self.register_buffer("key_std", torch.ones(dim))
        self.register_buffer("keys", torch.zeros(n_entries, dim))
        self.register_buffer("words", torch.zeros(n_entries, dtype=torch.long))
        self.register_buffer("mels", torch.zeros(n_entries, MEL_FRAMES, n_mels))
        self.register_buffer("clip", torch.zeros(n_entries, dtype=torch.long))
        self.register_buffer("frame", torch.zeros(n_entries, dtype=torch.long))

    @classmethod
    def build(cls, feats: list[torch.Tensor], words: list[torch.Tensor], mels: list[torch.Tensor]) -> "FrameIndex":
        """Per clip: features (T,dim), word labels (T,), real log-mel (n_mels,4T) -> the index of all their frames."""
        keys = torch.cat([f.float() for f in feats])
        index = cls(n_entries=len(keys), dim=keys.shape[1], n_mels=mels[0].shape[0])
        index.key_mean.copy_(keys.mean(0))
        index.key_std.copy_(keys.std(0) + 1e-5)
        index.keys.copy_((keys - index.key_mean) / index.key_std)
        index.words.copy_(torch.cat([w.long() for w in words]))
        index.mels.copy_(torch.cat([m.float().T.reshape(-1, MEL_FRAMES, m.shape[0]) for m in mels]))
        index.clip.copy_(torch.cat([torch.full((len(f),), i) for i, f in enumerate(feats)]))
        index.frame.copy_(torch.cat([torch.arange(len(f)) for f in feats]))
        return index

    def candidates(self, feats: torch.Tensor, word_log_probs: torch.Tensor, *, top_k: int = TOP_K,
                   word_weight: float = WORD_WEIGHT, exclude_clip: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (T,dim), word_log_probs (T,V) -> costs (T,k) and entry rows (T,k), cheapest first. Entries of clip
        ``exclude_clip`` never come back (a training clip retrieving for itself: leave its own frames out)."""
        q = (feats.float() - self.key_mean) / self.key_std
        cost = torch.cdist(q, self.keys.float()).pow(2) / q.shape[1]
        cost = cost - word_weight * word_log_probs.float()[:, self.words.clamp(max=word_log_probs.shape[1] - 1)]
        if exclude_clip >= 0:
            cost[:, self.clip == exclude_clip] = float("inf")
        return cost.topk(min(top_k, cost.shape[1]), dim=1, largest=False)

    def select(self, feats: torch.Tensor, word_log_probs: torch.Tensor, *, top_k: int = TOP_K,
               word_weight: float = WORD_WEIGHT, jump_cost: float = JUMP_COST,
               exclude_clip: int = -1) -> torch.Tensor:
        """Unit selection for one clip: feats (T,dim), word_log_probs (T,V) -> entry rows (T,) of the Viterbi path of
        least (target cost + ``jump_cost`` per jump)."""
        cost, rows = self.candidates(feats, word_log_probs, top_k=top_k, word_weight=word_weight,
                                     exclude_clip=exclude_clip)
        total, back = cost[0].clone(), []
        for t in range(1, len(rows)):
            prev, cur = rows[t - 1], rows[t]
            follows = (self.clip[cur][None] == self.clip[prev][:, None]) & (
                self.frame[cur][None] == self.frame[prev][:, None] + 1)
            best, arg = (total[:, None] + jump_cost * (~follows).to(total.dtype)).min(0)
            total = best + cost[t]
            back.append(arg)
        j = int(total.argmin())
        path = [j]
        for arg in reversed(back):
            j = int(arg[j])
            path.append(j)
        return rows[torch.arange(len(rows)), torch.tensor(path[::-1], device=rows.device)]

    def mel_of(self, rows: torch.Tensor) -> torch.Tensor:
        """Entry rows (T,) -> their real log-mel frames, joined (n_mels, 4T)."""
        return self.mels[rows].reshape(-1, self.mels.shape[-1]).T

    def jump_rate(self, rows: torch.Tensor) -> float:
        """The share of path steps (T-1) that leave the previous entry's clip order."""
        if len(rows) < 2:
            return 0.0
        follows = (self.clip[rows[1:]] == self.clip[rows[:-1]]) & (self.frame[rows[1:]] == self.frame[rows[:-1]] + 1)
        return 1.0 - float(follows.float().mean())

    @torch.no_grad()
    def retrieve(self, feats: torch.Tensor, word_log_probs: torch.Tensor, **kw) -> torch.Tensor:
        """A batch: feats (B,T,dim), word_log_probs (B,T,V) -> retrieved real log-mel (B, n_mels, 4T)."""
        return torch.stack([self.mel_of(self.select(f, w, **kw)) for f, w in zip(feats, word_log_probs)])
