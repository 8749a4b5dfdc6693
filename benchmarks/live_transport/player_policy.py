"""Replay the chunk arrivals a take's page player recorded (``bench.py run`` keeps them: ``player.arrivals``, [audio
clock s, chunk s, queue ahead s] per chunk) through the player's scheduling (naturall2s/studio/live.py, PLAYER_JS)
with other settings: the share of audio dropped and the delay of each chunk's last sample.

    python benchmarks/live_transport/player_policy.py results/live/transport/player/gradio_4.json
"""
from __future__ import annotations

import json
import sys

import numpy as np


def replay(arrivals, jitter=0.1, max_lag=0.4, catch_up=0.15, speed_up=1.1) -> dict:
    """The player's rules, in Python (catch_up=None: never faster)."""
    nxt, dropped, played, under, lags, queue = 0.0, 0.0, 0.0, 0, [], []  # queue: (start, end, audio s)
    for now, dur, _ in arrivals:
        queue = [q for q in queue if q[1] > now]
        if nxt < now:
            nxt, under = now + jitter, under + 1
        elif nxt - now > max_lag:
            for q in queue:
                if q[0] > now:
                    dropped, played = dropped + q[2], played - q[2]
            queue = [q for q in queue if q[0] <= now]
            nxt = max(now + jitter, queue[-1][1] if queue else 0.0)
        r = speed_up if catch_up is not None and nxt - now > catch_up else 1.0
        skip = max(0.0, nxt + dur / r - now - max_lag - jitter) * r
        if skip >= dur:
            dropped += dur
            continue
        d = (dur - skip) / r
        dropped, played = dropped + skip, played + dur - skip
        queue.append((nxt, nxt + d, dur - skip))
        lags.append(nxt + d - now)
        nxt += d
    lags = np.array(lags)
    return {"dropped": dropped / (dropped + played), "underruns": under, "delay_median": float(np.median(lags)),
            "delay_p95": float(np.percentile(lags, 95))}


def main() -> None:
    for path in sys.argv[1:]:
        arrivals = json.load(open(path))["player"]["arrivals"]
        print(f"{path}: {len(arrivals)} chunks")
        for kw in [dict(max_lag=0.3, catch_up=None), dict(max_lag=0.4, catch_up=None), dict(max_lag=0.5, catch_up=None),
                   dict(max_lag=0.3), dict(max_lag=0.4), dict(max_lag=0.5)]:
            r = replay(arrivals, **kw)
            print(f"  {kw}: dropped {100 * r['dropped']:.1f}%, underruns {r['underruns']}, delay of a chunk's end "
                  f"median {1000 * r['delay_median']:.0f} ms, p95 {1000 * r['delay_p95']:.0f} ms")


if __name__ == "__main__":
    main()
