"""data.py: GRID transcripts and vocabulary, the npz cache, CachedGrid + collate, and prepare on real clips."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from naturall2s import data, grid
from naturall2s.audio import N_MELS, SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME
from naturall2s.data import CachedGrid, collate
from naturall2s.grid import GRID_VOCAB
from naturall2s.errors import DataError

ALIGN = "0 23750 sil\n23750 29500 bin\n29500 34000 blue\n34000 35500 at\n35500 41000 f\n" \
        "41000 47250 two\n47250 50000 sp\n50000 53000 now\n53000 74500 sil\n"


# ------------------------------------------------------------------------------ transcripts / vocab
def test_read_align_in_seconds(tmp_path):
    path = tmp_path / "bbaf2n.align"
    path.write_text(ALIGN)
    words = data.read_align(path)
    assert words[0] == (0.0, 0.95, "sil")
    assert words[1] == pytest.approx((0.95, 1.18, "bin"))
    assert words[-1][1] == pytest.approx(2.98)
    assert data.align_transcript(path) == "bin blue at f two now"


def test_read_align_rejects_garbage(tmp_path):
    path = tmp_path / "bad.align"
    path.write_text("0 100\n")
    with pytest.raises(DataError):
        data.read_align(path)
    with pytest.raises(DataError):
        data.read_align(tmp_path / "missing.align")


def test_word_frames_label_each_video_frame():
    words = [(0.0, 0.5, "sil"), (0.5, 0.74, "bin"), (0.74, 0.9, "blue"), (0.9, 1.0, "sp"), (1.0, 1.2, "at")]
    labels = data.word_frames(words, 40)  # 25 fps: frame t is centred at (t + 0.5) / 25 s
    tok = {w: grid.text_to_tokens(w)[0] for w in ("bin", "blue", "at")}
    assert labels.dtype == np.uint8 and labels.shape == (40,)
    assert labels[:12].tolist() == [0] * 12  # centres 0.02 .. 0.46 s: silence
    assert labels[12:18].tolist() == [tok["bin"]] * 6  # 0.50 .. 0.70 s
    assert labels[18:22].tolist() == [tok["blue"]] * 4  # 0.74 .. 0.86 s
    assert labels[22:25].tolist() == [0] * 3  # sp
    assert labels[25:30].tolist() == [tok["at"]] * 5 and labels[30:].sum() == 0
    with pytest.raises(DataError, match="not in the GRID vocabulary"):
        data.word_frames([(0.0, 1.0, "hello")], 10)


def test_pause_masks_from_timings_and_from_labels():
    words = [(0.0, 0.5, "sil"), (0.5, 0.74, "bin"), (0.74, 0.9, "sp"), (0.9, 1.0, "blue")]
    pauses = data.align_pauses(words, 120)  # 100 Hz: frame k is centred at (k + 0.5) / 100 s
    assert pauses.dtype == bool and pauses.shape == (120,)
    assert pauses[:50].all() and not pauses[50:74].any() and pauses[74:90].all()
    assert not pauses[90:100].any() and pauses[100:].all()
    labels = data.word_frames(words, 30)
    from_labels = data.label_pauses(labels)
    assert from_labels.shape == (120,) and from_labels[:48].all() and not from_labels[52:72].any()
    with pytest.raises(DataError, match="no word labels"):
        data.label_pauses(data.unknown_words(5))


def test_name_transcript():
    assert grid.name_transcript("bbaf2n") == "bin blue at f two now"
    assert grid.name_transcript("sgwxzs.mp4") == "set green with x zero soon"
    assert grid.name_transcript("lrbk9p") == "lay red by k nine please"
    for bad in ("bbaw2n", "bbaf2", "xbaf2n"):  # w is no GRID letter; too short; no command x
        with pytest.raises(DataError):
            grid.name_transcript(bad)


def test_vocab_and_tokens_round_trip():
    assert len(GRID_VOCAB) == 51 and len(set(GRID_VOCAB)) == 51
    assert "w" not in GRID_VOCAB and "zero" in GRID_VOCAB
    text = "place white in z zero again"
    tokens = grid.text_to_tokens(text)
    assert min(tokens) >= 1 and max(tokens) <= 51
    assert grid.tokens_to_text(tokens) == text
    assert grid.tokens_to_text(torch.tensor([0] + tokens + [0])) == text  # blanks are skipped
    assert GRID_VOCAB[tokens[0] - 1] == "place"
    with pytest.raises(DataError):
        grid.text_to_tokens("bin blue hello")


def test_load_splits_merges_speakers(tmp_path):
    (tmp_path / "splits.json").write_text(json.dumps({"s1": {"train": ["a1"], "test": ["a2"]},
                                                      "s2": {"train": ["b1"]}}))
    assert data.load_splits(tmp_path) == {"train": ["a1", "b1"], "test": ["a2"]}
    with pytest.raises(DataError, match="splits.json"):
        data.load_splits(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------ cache format
def fake_record(n_frames: int, text: str, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames * SAMPLES_PER_VIDEO_FRAME + 123) / SAMPLE_RATE  # ragged: must be fitted to 640T
    wav = (0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32)
    return data.clip_features(rng.integers(0, 255, (n_frames, 48, 72), dtype=np.uint8),
                              rng.normal(size=(n_frames, 40)).astype(np.float32),
                              np.ones(n_frames, bool), wav, text)


def check_record(rec: dict, n_frames: int | None = None) -> int:
    """Every npz key with its dtype and the length convention; returns T."""
    t = rec["roi"].shape[0] if n_frames is None else n_frames
    assert set(rec) == set(data.NPZ_KEYS)
    expected = {"roi": ((t, 48, 72), np.uint8), "lips": ((t, 40), np.float16), "mel": ((N_MELS, 4 * t), np.float16),
                "f0": ((4 * t,), np.float32), "voiced": ((4 * t,), np.bool_), "loudness": ((4 * t,), np.float16),
                "detected": ((t,), np.bool_), "words": ((t,), np.uint8)}
    for key, (shape, dtype) in expected.items():
        assert rec[key].shape == shape and rec[key].dtype == dtype, key
    assert rec["audio"].shape == (SAMPLES_PER_VIDEO_FRAME * t,)
    assert isinstance(rec["text"], str)
    return t


def test_clip_features_and_atomic_npz(tmp_path):
    rec = fake_record(10, "bin blue at f two now")
    assert rec["audio"].dtype == np.int16 and rec["audio"].shape == (6400,)
    data.save_npz_atomic(tmp_path / "x.npz", rec)
    assert [p.name for p in tmp_path.iterdir()] == ["x.npz"]
    back = data.load_cached(tmp_path / "x.npz")
    check_record(back, 10)
    assert back["audio"].dtype == np.float32 and np.abs(back["audio"]).max() <= 1.0
    assert np.median(back["f0"][back["voiced"]]) == pytest.approx(150, abs=3)
    assert back["text"] == "bin blue at f two now"


def test_load_cached_rejects_incomplete(tmp_path):
    np.savez(tmp_path / "partial.npz", roi=np.zeros((2, 48, 72), np.uint8))
    with pytest.raises(DataError, match="lacks keys"):
        data.load_cached(tmp_path / "partial.npz")


@pytest.fixture
def fake_cache(tmp_path) -> Path:
    texts = {"bbaf2n": (30, "bin blue at f two now"), "lrbk9p": (20, "lay red by k nine please"),
             "sgwxzs": (25, "set green with x zero soon")}
    (tmp_path / "clips").mkdir()
    for i, (name, (n, text)) in enumerate(texts.items()):
        data.save_npz_atomic(tmp_path / "clips" / f"{name}.npz", fake_record(n, text, seed=i))
    (tmp_path / "splits.json").write_text(json.dumps({"s1": {"train": list(texts) + ["absent"], "val": []}}))
    return tmp_path


def test_cached_grid_items_and_collate(fake_cache):
    ds = CachedGrid(fake_cache, "train")
    assert len(ds) == 3 and ds.missing == ["absent"]
    item = ds[1]
    assert item["name"] == "lrbk9p" and item["roi"].dtype == torch.uint8 and item["roi"].shape == (20, 48, 72)
    assert item["audio"].shape == (20 * 640,) and item["mel"].shape == (80, 80) and item["f0"].shape == (80,)
    assert grid.tokens_to_text(item["tokens"]) == "lay red by k nine please"
    batch = collate([ds[0], ds[1]])
    assert batch["frames"].tolist() == [30, 20] and batch["token_lengths"].tolist() == [6, 6]
    assert batch["roi"].shape == (2, 30, 48, 72) and batch["lips"].shape == (2, 30, 40)
    assert batch["audio"].shape == (2, 30 * 640) and batch["mel"].shape == (2, 80, 120)
    for key in ("f0", "voiced", "loudness"):
        assert batch[key].shape == (2, 120), key
    assert batch["tokens"].dtype == torch.long and batch["name"] == ["bbaf2n", "lrbk9p"]
    assert batch["audio"][1, 20 * 640:].abs().sum() == 0  # padding is silence
    assert torch.all(batch["mel"][1, :, 80:] == float(np.log(1e-5)))
    torch.testing.assert_close(batch["mel"][1, :, :80], ds[1]["mel"])
    assert batch["words"].shape == (2, 30) and torch.all(batch["words"][1, 20:] == data.UNKNOWN_WORD)


def test_prepare_adds_word_labels_to_an_older_cache(tmp_path):
    """A version-1 record (no ``words``) is upgraded in place from its .align file; nothing else changes."""
    root, out = tmp_path / "grid", tmp_path / "cache"
    (root / "align" / "s1").mkdir(parents=True)
    (root / "splits.json").write_text(json.dumps({"s1": {"train": ["bbaf2n"]}}))
    (root / "align" / "s1" / "bbaf2n.align").write_text(
        "0 12500 sil\n12500 20000 bin\n20000 30000 blue\n30000 40000 at\n40000 50000 f\n50000 60000 two\n"
        "60000 70000 now\n70000 75000 sil\n")
    rec = fake_record(75, "bin blue at f two now")
    old = {k: v for k, v in rec.items() if k != "words"}
    (out / "clips").mkdir(parents=True)
    data.save_npz_atomic(out / "clips" / "bbaf2n.npz", old)
    with pytest.raises(DataError, match="re-run"):
        data.load_cached(out / "clips" / "bbaf2n.npz")
    summary = data.prepare(root, out, workers=1, progress=False)
    assert summary["prepared"] == 0 and summary["skipped"] == 1 and summary["upgraded"] == 1
    back = data.load_cached(out / "clips" / "bbaf2n.npz")
    check_record(back, 75)
    assert np.array_equal(back["roi"], rec["roi"]) and np.array_equal(back["mel"], rec["mel"])
    spoken = [int(w) for i, w in enumerate(back["words"]) if w and (i == 0 or back["words"][i - 1] != w)]
    assert grid.tokens_to_text(spoken) == "bin blue at f two now"
    assert back["words"][:12].sum() == 0 and back["words"][12] == grid.text_to_tokens("bin")[0]
    assert data.prepare(root, out, workers=1, progress=False)["upgraded"] == 0  # already complete


def test_cached_grid_random_crops_stay_aligned(fake_cache):
    full = CachedGrid(fake_cache, "train")[0]
    ds = CachedGrid(fake_cache, "train", segment_frames=8, train=True)
    torch.manual_seed(0)
    starts = set()
    for _ in range(20):
        crop = ds[0]
        assert crop["roi"].shape[0] == 8 and crop["audio"].shape == (8 * 640,) and crop["mel"].shape == (80, 32)
        matches = [t for t in range(23) if torch.equal(full["roi"][t:t + 8], crop["roi"])]
        assert len(matches) == 1
        t0 = matches[0]
        starts.add(t0)
        torch.testing.assert_close(crop["audio"], full["audio"][640 * t0:640 * (t0 + 8)])
        torch.testing.assert_close(crop["mel"], full["mel"][:, 4 * t0:4 * (t0 + 8)])
        torch.testing.assert_close(crop["f0"], full["f0"][4 * t0:4 * (t0 + 8)])
        assert torch.equal(crop["tokens"], full["tokens"])  # the whole sentence
    assert len(starts) > 1
    val = CachedGrid(fake_cache, "train", segment_frames=8)  # not train: deterministic start
    assert torch.equal(val[0]["roi"], full["roi"][:8])
    short = CachedGrid(fake_cache, "train", segment_frames=100, train=True)[0]  # shorter clips stay whole
    assert short["roi"].shape[0] == 30


def test_cached_grid_errors(fake_cache, tmp_path_factory):
    with pytest.raises(DataError):
        CachedGrid(tmp_path_factory.mktemp("empty"), "train")
    with pytest.raises(DataError, match="split 'test'"):
        CachedGrid(fake_cache, "test")
    with pytest.raises(DataError, match="no cached clips"):
        CachedGrid(fake_cache, "val")


def test_prepare_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        data.prepare(tmp_path / "nope", tmp_path / "out")
    with pytest.raises(DataError, match="splits.json"):
        data.prepare(tmp_path, tmp_path / "out")


def test_cli_arguments_and_missing_data_root(tmp_path):
    import argparse

    from naturall2s.cli import prepare as cli_prepare

    parser = argparse.ArgumentParser()
    cli_prepare.add_arguments(parser)
    args = parser.parse_args(["--data-root", str(tmp_path / "nope"), "--out", str(tmp_path / "c"), "--limit", "3",
                              "--splits", "val", "test"])
    assert args.workers == 2 and args.detector == "auto" and args.limit == 3 and args.splits == ["val", "test"]
    with pytest.raises(DataError, match="GRID data root not found"):
        cli_prepare.run(args)


# --------------------------------------------------------------------------------- real GRID clips
def test_prepare_two_real_clips(grid_root, grid_test_names, tmp_path):
    out = tmp_path / "cache"
    summary = data.prepare(grid_root, out, workers=2, limit=2, splits=("test",), progress=False)  # spawn pool
    assert summary["prepared"] == 2 and summary["failed"] == 0, summary["failures"]
    names = grid_test_names[:2]
    assert sorted(p.stem for p in (out / "clips").iterdir()) == sorted(names)
    for name in names:
        rec = data.load_cached(out / "clips" / f"{name}.npz")
        t = check_record(rec)
        assert 70 <= t <= 76  # 3 s at 25 fps
        assert rec["text"] == data.align_transcript(grid_root / "align" / "s1" / f"{name}.align")
        assert rec["text"] == grid.name_transcript(name)
        assert rec["detected"].mean() > 0.9
        spoken = [int(w) for i, w in enumerate(rec["words"]) if w and (i == 0 or rec["words"][i - 1] != w)]
        assert grid.tokens_to_text(spoken) == rec["text"]  # frame labels spell the sentence, in order
        assert np.abs(rec["audio"]).max() > 0.05 and rec["voiced"].mean() > 0.1  # real speech came through
        assert 80 < np.median(rec["f0"][rec["voiced"]]) < 250
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sample_rate"] == SAMPLE_RATE and manifest["roi_height"] == 48
    assert manifest["counts"]["test"]["cached"] == 2 and manifest["detector"]
    assert json.loads((out / "splits.json").read_text()) == json.loads((grid_root / "splits.json").read_text())

    assert sorted(p.name for p in out.iterdir()) == ["clips", "manifest.json", "splits.json"]  # no temp files
    again = data.prepare(grid_root, out, workers=1, limit=3, splits=("test",), progress=False)  # in-process
    assert again["prepared"] == 1 and again["skipped"] == 2
    assert json.loads((out / "manifest.json").read_text())["counts"]["test"]["cached"] == 3

    ds = CachedGrid(out, "test")
    assert len(ds) == 3 and ds.names == grid_test_names[:3]
    batch = collate([ds[0], ds[1]])
    t_max = int(batch["frames"].max())
    assert batch["roi"].shape == (2, t_max, 48, 72) and batch["audio"].shape == (2, 640 * t_max)
    assert batch["mel"].shape == (2, 80, 4 * t_max) and batch["tokens"].shape == (2, 6)
    assert [grid.tokens_to_text(t) for t in batch["tokens"]] == batch["text"]
