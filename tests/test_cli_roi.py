"""``python -m naturall2s roi``: writes a playable crop video; bad input -> ``error: ...``, exit 2, no traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from naturall2s.cli import main
from naturall2s.roi import ROI_HEIGHT, ROI_WIDTH
from naturall2s.video import read_video

REPO = Path(__file__).resolve().parents[1]


def test_writes_a_playable_roi_video(grid_clip, tmp_path, capsys):
    out = tmp_path / "roi.mp4"
    assert main(["roi", str(grid_clip), "-o", str(out), "--detector", "mediapipe", "--scale", "3"]) == 0
    printed = capsys.readouterr().out
    assert "75 frames" in printed and "face detected in" in printed and "time:" in printed
    video = read_video(out)  # decodes with ffmpeg: a real, playable mp4
    assert video.frames.shape == (75, ROI_HEIGHT * 3, ROI_WIDTH * 3, 3)
    assert video.frames.std() > 10  # a picture, not a blank
    assert [p.name for p in tmp_path.iterdir()] == ["roi.mp4"]


def test_too_long_clip_is_refused(grid_clip, tmp_path, capsys):
    out = tmp_path / "roi.mp4"
    assert main(["roi", str(grid_clip), "-o", str(out), "--max-seconds", "1"]) == 2
    assert "error:" in capsys.readouterr().err and not out.exists()


def test_bad_file_exits_2_with_a_clear_message(tmp_path):
    bad = tmp_path / "holiday.mp4"
    bad.write_text("not really a video")
    out = tmp_path / "roi.mp4"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "naturall2s", "roi", str(bad), "-o", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "holiday.mp4" in proc.stderr and "not a readable video" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_missing_file_exits_2(tmp_path, capsys):
    assert main(["roi", str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "roi.mp4")]) == 2
    assert "file not found" in capsys.readouterr().err
    assert not np.any([p.suffix == ".mp4" for p in tmp_path.iterdir()])
