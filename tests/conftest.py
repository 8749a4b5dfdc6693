"""Shared fixtures. Real data lives in ../shared/data (never committed).

Tests that need it skip with a reason when it is absent, except under CI=true, where its absence fails.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

# One intra-op thread: on a loaded 2-core machine OpenMP spin-waiting makes multi-threaded tiny ops 10-100x slower.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NATURALL2S_SHARED_DATA", REPO.parent / "shared" / "data"))
IN_CI = os.environ.get("CI", "").lower() == "true"


def _require(path: Path) -> Path:
    if path.exists():
        return path
    msg = f"real data not found at {path} (set NATURALL2S_SHARED_DATA or place GRID there; see README)"
    if IN_CI:
        pytest.fail("CI=true but " + msg)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def grid_root() -> Path:
    """GRID layout root: s1/*.mp4, align/s1/*.align, splits.json."""
    return _require(SHARED_DATA / "grid")


@pytest.fixture(scope="session")
def grid_test_names(grid_root) -> list[str]:
    return json.loads((grid_root / "splits.json").read_text())["s1"]["test"]


@pytest.fixture(scope="session")
def grid_clip(grid_root, grid_test_names) -> Path:
    """One real GRID test clip (3 s, 25 fps, with audio)."""
    return grid_root / "s1" / f"{grid_test_names[0]}.mp4"


@pytest.fixture(scope="session")
def wild_clips() -> list[Path]:
    root = _require(SHARED_DATA / "wild")
    return sorted(root.glob("*.mp4"))


@pytest.fixture(scope="session")
def grid_mouth(grid_clip):
    """The mouth crops (and audio) of ``grid_clip``, extracted once per session (MediaPipe)."""
    from naturall2s.landmarks import get_detector
    from naturall2s.roi import extract_mouth

    return extract_mouth(grid_clip, detector=get_detector("mediapipe"))
