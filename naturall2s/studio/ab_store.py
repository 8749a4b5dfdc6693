"""Blind A/B listening votes in SQLite, and their statistics (win rates, mean opinion scores).

One row per vote: the clip, the system played as "A" and the one played as "B", the listener's
preference (``"A"``, ``"B"`` or ``"none"``) and optional 1-5 naturalness scores for each sample.
Every call opens its own connection (Gradio runs callbacks in threads); the database is in WAL mode
so readers never block the writer. Only parameterised queries.
"""
from __future__ import annotations

import csv
import io
import itertools
import math
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from naturall2s.studio.sqlite_store import SQLiteStore

PREFERENCES = ("A", "B", "none")
SCORE_MIN, SCORE_MAX = 1, 5
Z_95 = 1.959963984540054  # two-sided 95 % normal quantile
CSV_COLUMNS = ("id", "created", "clip", "system_a", "system_b", "preference", "score_a", "score_b", "session")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    clip TEXT NOT NULL,
    system_a TEXT NOT NULL,
    system_b TEXT NOT NULL,
    preference TEXT NOT NULL CHECK (preference IN ('A', 'B', 'none')),
    score_a INTEGER CHECK (score_a IS NULL OR score_a BETWEEN {SCORE_MIN} AND {SCORE_MAX}),
    score_b INTEGER CHECK (score_b IS NULL OR score_b BETWEEN {SCORE_MIN} AND {SCORE_MAX}),
    session TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS votes_pair ON votes (system_a, system_b);
"""


def default_votes_path() -> Path:
    """``$XDG_CACHE_HOME/naturall2s/ab_votes.sqlite`` (``~/.cache/...`` when unset): outside the package."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "naturall2s" / "ab_votes.sqlite"


@dataclass(frozen=True)
class Vote:
    """One stored vote; ``system_a`` is the system that was played as sample A."""

    id: int
    created: float  # unix seconds
    clip: str
    system_a: str
    system_b: str
    preference: str  # "A" | "B" | "none"
    score_a: int | None
    score_b: int | None
    session: str


@dataclass(frozen=True)
class PairResult:
    """Preference between two systems (``first`` < ``second`` alphabetically). Ties are not part of the win rate."""

    first: str
    second: str
    wins_first: int
    wins_second: int
    ties: int
    win_rate: float  # wins_first / (wins_first + wins_second); NaN when there are no decisive votes
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class MosResult:
    """Mean opinion score (1-5) of one system over every sample it got a score for."""

    system: str
    mean: float
    ci_low: float
    ci_high: float
    count: int


class VoteStore(SQLiteStore):
    """The votes database at ``path`` (created, with its schema, when missing)."""

    def __init__(self, path: str | Path):
        super().__init__(path, _SCHEMA)

    def add_vote(
        self,
        *,
        clip: str,
        system_a: str,
        system_b: str,
        preference: str,
        score_a: int | None = None,
        score_b: int | None = None,
        session: str = "",
    ) -> int:
        """Store one vote; returns its id. ``ValueError`` for a preference or score out of range."""
        if preference not in PREFERENCES:
            raise ValueError(f"preference must be one of {PREFERENCES}, got {preference!r}")
        if system_a == system_b:
            raise ValueError("an A/B vote needs two different systems")
        scores = [_check_score(score_a), _check_score(score_b)]
        con = self._connect()
        try:
            with con:
                cur = con.execute(
                    "INSERT INTO votes (created, clip, system_a, system_b, preference, score_a, score_b, session)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (time.time(), str(clip), system_a, system_b, preference, *scores, session),
                )
            return int(cur.lastrowid)
        finally:
            con.close()

    def votes(self) -> list[Vote]:
        """Every vote, oldest first."""
        con = self._connect()
        try:
            rows = con.execute(f"SELECT {', '.join(CSV_COLUMNS)} FROM votes ORDER BY id").fetchall()
        finally:
            con.close()
        return [Vote(**dict(r)) for r in rows]

    def pair_results(self) -> list[PairResult]:
        """Win rate with a 95 % Wilson interval for every pair of systems that met in a vote."""
        return pair_results(self.votes())

    def mos_results(self) -> list[MosResult]:
        """Mean naturalness score with a 95 % interval for every system that got a score."""
        return mos_results(self.votes())

    def export_csv(self, path: str | Path) -> Path:
        """Every vote as CSV (header ``CSV_COLUMNS``) → ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(votes_csv(self.votes()), encoding="utf-8")
        return path


def _check_score(score) -> int | None:
    if score is None:
        return None
    s = int(score)
    if s != score or not SCORE_MIN <= s <= SCORE_MAX:
        raise ValueError(f"a naturalness score must be an integer in {SCORE_MIN}..{SCORE_MAX}, got {score!r}")
    return s


def votes_csv(votes: list[Vote]) -> str:
    """The votes as CSV text with a header row."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for v in votes:
        w.writerow(["" if getattr(v, c) is None else getattr(v, c) for c in CSV_COLUMNS])
    return buf.getvalue()


def wilson_interval(successes: int, n: int, *, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; ``(nan, nan)`` when ``n == 0``."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: list[float], *, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval (:func:`naturall2s.metrics.mean_ci`); one value gives ``(x, nan, nan)``, none
    gives all NaN."""
    from naturall2s.metrics import mean_ci

    m = mean_ci(values, level=confidence)
    return m["mean"], m["mean"] - m["ci95"], m["mean"] + m["ci95"]


def pair_results(votes: list[Vote]) -> list[PairResult]:
    """Aggregate votes per unordered pair of systems (presentation order does not matter)."""
    tally: dict[tuple[str, str], list[int]] = {}
    for v in votes:
        first, second = sorted((v.system_a, v.system_b))
        t = tally.setdefault((first, second), [0, 0, 0])  # wins first, wins second, ties
        if v.preference == "none":
            t[2] += 1
            continue
        winner = v.system_a if v.preference == "A" else v.system_b
        t[0 if winner == first else 1] += 1
    out = []
    for (first, second), (w1, w2, ties) in sorted(tally.items()):
        n = w1 + w2
        lo, hi = wilson_interval(w1, n)
        out.append(PairResult(first, second, w1, w2, ties, w1 / n if n else math.nan, lo, hi))
    return out


def mos_results(votes: list[Vote]) -> list[MosResult]:
    """Mean opinion score per system, over both the A and the B position; the 95 % t interval clipped to the
    1-5 scale (two ratings of 1 and 5 would otherwise give -3.85 to 9.85)."""
    scores: dict[str, list[float]] = {}
    for v in votes:
        for system, score in ((v.system_a, v.score_a), (v.system_b, v.score_b)):
            if score is not None:
                scores.setdefault(system, []).append(float(score))
    out = []
    for system in sorted(scores):
        mean, lo, hi = mean_interval(scores[system])
        if not math.isnan(lo):  # one rating: no interval (NaN), else the t interval clipped to the scale
            lo, hi = max(float(SCORE_MIN), lo), min(float(SCORE_MAX), hi)
        out.append(MosResult(system, mean, lo, hi, len(scores[system])))
    return out


class PairRotation:
    """What "New pair" plays next: the pair of systems heard least so far (votes stored before, plus trials started
    here), on the clip that pair has been heard on least; ties broken at random. Over many trials every pair comes
    about equally often, and each pair goes round the clips. Systems may be added between calls."""

    def __init__(self, votes: list[Vote] | None = None, *, seed: int | None = None):
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._pairs: dict[tuple[str, str], int] = {}
        self._clips: dict[tuple[str, str, str], int] = {}
        for v in votes or []:
            self._count(tuple(sorted((v.system_a, v.system_b))), v.clip)

    def _count(self, pair: tuple[str, str], clip: str) -> None:
        self._pairs[pair] = self._pairs.get(pair, 0) + 1
        self._clips[(*pair, clip)] = self._clips.get((*pair, clip), 0) + 1

    def next(self, systems: list[str], clips: list[str]) -> tuple[str, str, str]:
        """(clip, system played as A, system played as B), the order of A and B random."""
        if len(systems) < 2 or not clips:
            raise ValueError("an A/B trial needs two systems and a clip")
        with self._lock:
            pairs = [tuple(sorted(p)) for p in itertools.combinations(dict.fromkeys(systems), 2)]
            fewest = min(self._pairs.get(p, 0) for p in pairs)
            pair = self._rng.choice([p for p in pairs if self._pairs.get(p, 0) == fewest])
            least = min(self._clips.get((*pair, c), 0) for c in clips)
            clip = self._rng.choice([c for c in clips if self._clips.get((*pair, c), 0) == least])
            self._count(pair, clip)
            a, b = self._rng.sample(pair, 2)
        return clip, a, b
