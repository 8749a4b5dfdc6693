"""A/B vote store: round trip, persistence, statistics on known counts, CSV export, thread use."""
from __future__ import annotations

import csv
import math
import sqlite3
import threading

import pytest

from naturall2s.studio.ab_store import (
    CSV_COLUMNS,
    VoteStore,
    mean_interval,
    pair_results,
    wilson_interval,
)


@pytest.fixture
def store(tmp_path):
    return VoteStore(tmp_path / "sub" / "votes.sqlite")


def test_votes_round_trip(store):
    i = store.add_vote(clip="bbaf2n.mp4", system_a="mel-gl", system_b="naturall2s", preference="B", score_a=2, score_b=4)
    j = store.add_vote(clip="x.mp4", system_a="naturall2s", system_b="mel-gl", preference="none", session="s1")
    votes = store.votes()
    assert [v.id for v in votes] == [i, j]
    v = votes[0]
    assert (v.clip, v.system_a, v.system_b, v.preference, v.score_a, v.score_b) == (
        "bbaf2n.mp4", "mel-gl", "naturall2s", "B", 2, 4)
    assert votes[1].score_a is None and votes[1].session == "s1"


def test_votes_survive_reopen_and_wal(tmp_path):
    path = tmp_path / "votes.sqlite"
    VoteStore(path).add_vote(clip="c", system_a="a", system_b="b", preference="A")
    again = VoteStore(path)  # schema creation must not wipe existing rows
    assert len(again.votes()) == 1
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        con.close()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(preference="maybe"),
        dict(preference="A", score_a=0),
        dict(preference="A", score_b=6),
        dict(preference="A", score_a=2.5),
        dict(preference="A", system_b="a"),
    ],
)
def test_rejects_bad_votes(store, kwargs):
    args = dict(clip="c", system_a="a", system_b="b") | kwargs
    with pytest.raises(ValueError):
        store.add_vote(**args)
    assert store.votes() == []


def test_hostile_strings_are_stored_verbatim(store):
    name = "x'); DROP TABLE votes; --"
    store.add_vote(clip=name, system_a="a", system_b="b", preference="A")
    assert store.votes()[0].clip == name


def test_wilson_interval_known_values():
    # 8 successes of 10: the textbook Wilson 95 % interval is (0.4902, 0.9433)
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4)
    assert hi == pytest.approx(0.9433, abs=1e-4)
    lo, hi = wilson_interval(0, 5)
    assert lo == 0.0 and hi == pytest.approx(0.4345, abs=1e-4)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_mean_interval_known_values():
    mean, lo, hi = mean_interval([1, 2, 3, 4, 5])
    # sd = 1.5811, t(0.975, 4) = 2.7764 → half width 1.9632
    assert mean == 3.0
    assert lo == pytest.approx(3 - 1.9632, abs=1e-3) and hi == pytest.approx(3 + 1.9632, abs=1e-3)
    m, lo, hi = mean_interval([4.0])
    assert m == 4.0 and math.isnan(lo) and math.isnan(hi)


def test_pair_and_mos_results(store):
    # naturall2s beats mel-gl 8 times out of 10 decisive votes, in both presentation orders, plus 2 ties
    for k in range(8):
        a, b, pref = ("naturall2s", "mel-gl", "A") if k % 2 else ("mel-gl", "naturall2s", "B")
        store.add_vote(clip=f"c{k}", system_a=a, system_b=b, preference=pref, score_a=4 if a == "naturall2s" else 2,
                       score_b=4 if b == "naturall2s" else 2)
    for k in range(2):
        store.add_vote(clip="d", system_a="naturall2s", system_b="mel-gl", preference="B")
    for k in range(2):
        store.add_vote(clip="e", system_a="mel-gl", system_b="naturall2s", preference="none")
    (pair,) = store.pair_results()
    assert (pair.first, pair.second) == ("mel-gl", "naturall2s")
    assert (pair.wins_first, pair.wins_second, pair.ties) == (2, 8, 2)
    assert pair.win_rate == pytest.approx(0.2)
    assert pair.ci_low == pytest.approx(1 - 0.9433, abs=1e-4) and pair.ci_high == pytest.approx(1 - 0.4902, abs=1e-4)
    mos = {m.system: m for m in store.mos_results()}
    assert mos["naturall2s"].count == 8 and mos["naturall2s"].mean == 4.0
    assert mos["mel-gl"].mean == 2.0


def test_mos_intervals_stay_on_the_1_to_5_scale(store):
    store.add_vote(clip="c", system_a="a", system_b="b", preference="A", score_a=1, score_b=3)
    store.add_vote(clip="c", system_a="a", system_b="b", preference="B", score_a=5, score_b=3)
    store.add_vote(clip="c", system_a="b", system_b="c", preference="B", score_a=None, score_b=4)
    mos = {m.system: m for m in store.mos_results()}
    assert mos["a"].mean == 3.0 and (mos["a"].ci_low, mos["a"].ci_high) == (1.0, 5.0)  # t interval: -22.4 to 28.4
    assert mos["b"].ci_low == mos["b"].ci_high == 3.0  # no spread, nothing to clip
    assert mos["c"].count == 1 and math.isnan(mos["c"].ci_low) and math.isnan(mos["c"].ci_high)


def test_pair_results_without_decisive_votes():
    from naturall2s.studio.ab_store import Vote

    (p,) = pair_results([Vote(1, 0.0, "c", "b", "a", "none", None, None, "")])
    assert (p.first, p.second, p.ties) == ("a", "b", 1) and math.isnan(p.win_rate)


def test_csv_export(store, tmp_path):
    store.add_vote(clip="c,1", system_a="a", system_b="b", preference="A", score_a=5)
    out = store.export_csv(tmp_path / "out" / "votes.csv")
    rows = list(csv.reader(out.open()))
    assert tuple(rows[0]) == CSV_COLUMNS
    row = dict(zip(rows[0], rows[1]))
    assert row["clip"] == "c,1" and row["score_a"] == "5" and row["score_b"] == "" and row["preference"] == "A"


def test_concurrent_writers(store):
    def vote(k):
        for _ in range(10):
            store.add_vote(clip=f"t{k}", system_a="a", system_b="b", preference="A")

    threads = [threading.Thread(target=vote, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.votes()) == 40
