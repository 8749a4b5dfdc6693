"""The evaluation loop (naturall2s.evaluate) on a small synthetic GRID layout + prepared cache, with test-double
systems that implement the model contract (``name``, ``synthesize(MouthClip) -> Synthesis``); plus the
reference floor on two real GRID clips."""
from __future__ import annotations

import argparse
import csv
import json
import math

import numpy as np
import torch
import pytest

from naturall2s import evaluate as ev
from naturall2s.audio import SAMPLE_RATE, resample
from naturall2s.data import clip_features, save_npz_atomic
from naturall2s.model import Synthesis
from naturall2s.roi import MouthClip

SR = SAMPLE_RATE
FRAMES = 50  # 2 s clips
NAMES = ["bbaf2n", "lgwg2n", "sriu5s"]
TEXTS = ["bin blue at f two now", "lay green with g two now", "set red in u five soon"]


def synthetic_speech(seed: int) -> np.ndarray:
    """(640 * FRAMES,) float32: a gliding harmonic voice with a syllable envelope (a stand-in for a recording)."""
    t = np.arange(FRAMES * 640) / SR
    f0 = 110 + 20 * seed + 15 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 25))
    envelope = 0.2 + 0.4 * (1 - np.cos(2 * np.pi * 3.0 * t))
    return (0.15 * x * envelope).astype(np.float32)


class NoisyCopy:
    """Test double: 'speaks' the clip's own audio plus white noise, trimmed by ``trim`` samples, at ``rate``."""

    def __init__(self, name: str, *, noise: float, trim: int = 0, rate: int = SR):
        self.name, self.noise, self.trim, self.rate = name, noise, trim, rate
        self.calls = 0

    def synthesize(self, clip: MouthClip) -> Synthesis:
        assert isinstance(clip, MouthClip) and clip.roi.shape == (FRAMES, 48, 72)
        self.calls += 1
        rng = np.random.default_rng(self.calls)
        wav = clip.audio + self.noise * rng.standard_normal(clip.audio.shape).astype(np.float32)
        wav = resample(wav[: len(wav) - self.trim], SR, self.rate)
        return Synthesis(wav=wav.astype(np.float32), sample_rate=self.rate, mel=np.zeros((80, 4 * FRAMES)),
                         text="bin blue", seconds=0.5)


class Silent:
    """Test double: digital silence of the right length (the ASR should hear nothing: WER 1)."""

    name = "silent"

    def synthesize(self, clip: MouthClip) -> Synthesis:
        return Synthesis(wav=np.zeros(FRAMES * 640, np.float32), sample_rate=SR, mel=np.zeros((80, 4 * FRAMES)),
                         text="", seconds=0.1)


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """A GRID root (splits.json + .align files, no videos) and a prepared cache holding the test clips."""
    root = tmp_path_factory.mktemp("grid")
    cache = tmp_path_factory.mktemp("cache")
    (root / "splits.json").write_text(json.dumps({"s7": {"train": [], "val": [], "test": NAMES}}))
    (root / "align" / "s7").mkdir(parents=True)
    (cache / "clips").mkdir()
    for i, (name, text) in enumerate(zip(NAMES, TEXTS)):
        lines = ["0 5000 sil"] + [f"{5000 + 6000 * k} {11000 + 6000 * k} {w}" for k, w in enumerate(text.split())]
        (root / "align" / "s7" / f"{name}.align").write_text("\n".join(lines + ["41000 50000 sil"]) + "\n")
        rec = clip_features(np.zeros((FRAMES, 48, 72), np.uint8), np.zeros((FRAMES, 40), np.float32),
                            np.ones(FRAMES, bool), synthetic_speech(i), text)
        save_npz_atomic(cache / "clips" / f"{name}.npz", rec)
    return root, cache


@pytest.fixture(scope="module")
def results(layout, tmp_path_factory):
    root, cache = layout
    systems = [NoisyCopy("light-noise", noise=0.003, trim=100), NoisyCopy("heavy-noise", noise=0.1, rate=22050),
               Silent()]
    out = tmp_path_factory.mktemp("out")
    res = ev.evaluate(systems, data_root=root, cache=cache, reference=True, out_dir=out, progress=False)
    return res, out


def test_clips_come_from_every_speaker_in_splits_json(layout):
    root, _ = layout
    clips = ev.split_clips(root, "test")
    assert [c.name for c in clips] == NAMES and {c.speaker for c in clips} == {"s7"}
    assert clips[0].video == root / "s7" / "bbaf2n.mp4"
    assert ev.clip_text(clips[1]) == TEXTS[1]
    assert len(ev.split_clips(root, "test", limit=2)) == 2
    from naturall2s.errors import DataError

    with pytest.raises(DataError):
        ev.split_clips(root, "dev")


def test_one_row_per_clip_and_system(results):
    res, _ = results
    rows = res["clips"]
    assert len(rows) == len(NAMES) * 4
    assert list(res["summary"]) == ["reference", "light-noise", "heavy-noise", "silent"]
    assert res["skipped"] == []
    assert {r["text"] for r in rows} == set(TEXTS)


def test_reference_is_the_floor(results):
    ref = results[0]["summary"]["reference"]
    assert ref["stoi"]["mean"] == pytest.approx(1.0, abs=1e-6)
    assert ref["mcd"]["mean"] == pytest.approx(0.0, abs=1e-9)
    assert ref["speaker_similarity"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert ref["f0_rmse_cents"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert ref["voicing_error"]["mean"] == 0.0
    assert ref["rtf"]["n"] == 0 and math.isnan(ref["rtf"]["mean"])


def test_scores_order_the_systems(results):
    s = results[0]["summary"]
    light, heavy = s["light-noise"], s["heavy-noise"]
    assert 1.0 > light["stoi"]["mean"] > heavy["stoi"]["mean"]
    assert 0.0 < light["mcd"]["mean"] < heavy["mcd"]["mean"]
    assert light["pesq_wb"]["mean"] > heavy["pesq_wb"]["mean"]
    assert light["rtf"]["mean"] == pytest.approx(0.5 / (FRAMES * 640 - 100) * SR)
    assert heavy["rtf"]["mean"] == pytest.approx(0.5 / (FRAMES * 640 / SR), rel=1e-3)  # 22.05 kHz output
    assert s["silent"]["wer"]["mean"] == pytest.approx(1.0)  # the ASR hears nothing in silence
    # the lip-read WER scores each system's own text ("bin blue" on every clip; silent reads nothing)
    assert light["lipread_wer"]["mean"] == pytest.approx(np.mean([ev.metrics.wer(t, "bin blue") for t in TEXTS]))
    assert s["silent"]["lipread_wer"]["mean"] == 1.0
    assert s["reference"]["lipread_wer"]["n"] == 0
    assert all(r["asr_text"] == "" for r in results[0]["clips"] if r["system"] == "silent")
    # predicted naturalness, in the field named after the predictor, for every system and the reference (its
    # ordering is tested on real speech in test_naturalness.py: these synthetic tones are not speech to it)
    assert results[0]["settings"]["mos_predictor"] == "distillmos"
    assert all(1.0 <= v["mos_distillmos"]["mean"] <= 5.0 and v["mos_distillmos"]["n"] == 3 for v in s.values())
    # pause buzz in the .align pauses: finite for every clip; digital silence holds no comb
    assert s["reference"]["comb_db"]["n"] == 3 and s["silent"]["comb_db"]["mean"] == pytest.approx(0.0)


def test_result_files(results):
    res, out = results
    md = (out / "results.md").read_text()
    assert md.startswith("| system | n | STOI ↑")
    assert "| PESQ-wb ↑ | MOS (distillmos) ↑ | comb dB ↓ | Loud frames ↓ | MCD dB ↓ |" in md and "Δ MOS (distillmos)" in md
    assert "| light-noise | 3 |" in md and "pocketsphinx+grid" in md and res["settings"]["speaker_encoder"] in md
    with (out / "summary.csv").open() as f:
        summary = {r["system"]: r for r in csv.DictReader(f)}
    assert float(summary["reference"]["stoi_mean"]) == pytest.approx(1.0, abs=1e-6)
    assert int(summary["heavy-noise"]["wer_n"]) == 3
    assert float(summary["reference"]["mos_distillmos_mean"]) == pytest.approx(
        res["summary"]["reference"]["mos_distillmos"]["mean"])
    assert int(summary["reference"]["comb_db_n"]) == 3
    with (out / "clips.csv").open() as f:
        clip_rows = list(csv.DictReader(f))
    assert len(clip_rows) == 12 and clip_rows[1]["lipread_text"] == "bin blue"
    assert all(float(r["mos_distillmos"]) > 0 and r["comb_db"] != "" for r in clip_rows)
    data = json.loads((out / "results.json").read_text())  # strict JSON: nan written as null
    assert data["summary"]["reference"]["rtf"]["mean"] is None
    assert data["settings"]["asr"] == "pocketsphinx+grid" and data["settings"]["mos_predictor"] == "distillmos"
    assert set(data["paired"]["vs"]["light-noise"]) >= {"mos_distillmos", "comb_db"}
    assert "Word error rate by position in the GRID sentence" in md and "| silent | 1.00 (1.00) |" in md
    assert data["slots"]["silent"]["asr"]["letter"] == {"errors": 3, "n": 3, "rate": 1.0}


def test_paired_differences_focus_on_the_last_model(results):
    res, out = results
    paired = res["paired"]
    assert paired["focus"] == "silent" and list(paired["vs"]) == ["light-noise", "heavy-noise"]
    rows = {(r["system"], r["clip"]): r for r in res["clips"]}
    for other in ("light-noise", "heavy-noise"):
        diffs = [rows[("silent", c)]["wer"] - rows[(other, c)]["wer"] for c in NAMES]
        assert paired["vs"][other]["wer"] == ev.mean_ci(diffs)  # the per-clip differences, paired by clip
    assert "rtf" not in paired["vs"]["light-noise"]
    md = (out / "results.md").read_text()
    assert "Paired differences, `silent` minus each system" in md and "| light-noise | 3 | Δ" not in md
    assert md.count("| heavy-noise | 3 |") == 2  # once in the table, once in the paired section


def test_paired_differences_known_answer():
    rows = [{"system": s, "speaker": "s1", "clip": c, **{m: v for m in ev.METRICS}}
            for s, c, v in [("a", "x", 1.0), ("a", "y", 3.0), ("b", "x", 0.5), ("b", "y", 1.5), ("b", "z", 9.0)]]
    d = ev.paired_differences(rows, "a", ["b"])["b"]["stoi"]
    assert d["n"] == 2 and d["mean"] == pytest.approx(1.0)  # (0.5 + 1.5) / 2 over the clips both have
    assert d["ci95"] == pytest.approx(12.706 * 0.5 / 2 ** 0.5 * 2 ** 0.5, rel=1e-3)  # t(0.975, 1) · s / √n, s = √0.5


def test_slot_errors_known_answer():
    def row(system, text, asr, lipread, lipread_wer):
        return {"system": system, "clip": "x", "speaker": "s1", "text": text, "asr_text": asr,
                "lipread_text": lipread, "lipread_wer": lipread_wer}

    rows = [row("m", "bin blue at f two now", "bin blue in s two now", "bin blue at f two now", 0.0),
            row("m", "set red by u five soon", "set red by u five", "set red by e five soon", 1 / 6),
            row("m", "not a grid sentence", "", "", 1.0),  # not six words: not counted
            row("reference", "bin blue at f two now", "bin blue at f two now", "", float("nan"))]
    slots = ev.slot_errors(rows, ["reference", "m"])
    m = slots["m"]
    assert m["asr"]["preposition"] == {"errors": 1, "n": 2, "rate": 0.5}
    assert m["asr"]["letter"]["rate"] == 0.5 and m["asr"]["adverb"]["rate"] == 0.5  # deleted "soon"
    assert m["asr"]["command"]["rate"] == 0.0 and m["lipread"]["letter"] == {"errors": 1, "n": 2, "rate": 0.5}
    assert "lipread" not in slots["reference"] and slots["reference"]["asr"]["letter"]["rate"] == 0.0
    assert ev.slot_errors(rows[2:3], ["m"]) is None
    md = ev.markdown_table({"settings": {"split": "val", "data_root": "d", "n_clips": 2, "asr": "a",
                                         "speaker_encoder": "e", "ci": "ci"},
                            "summary": {}, "slots": slots,
                            "skipped": [], "seconds": 1.0})
    assert "| m | 0.00 (0.00) | 0.00 (0.00) | 0.50 (0.00) | 0.50 (0.50) | 0.00 (0.00) | 0.50 (0.00) |" in md
    assert "| reference | 0.00 | 0.00 | 0.00 | 0.00 | 0.00 | 0.00 |" in md


class RandomNoise:
    """Test double: torch-random noise (like the DDSP noise excitation or Griffin-Lim's random initial phase)."""

    name = "random"

    def synthesize(self, clip: MouthClip) -> Synthesis:
        wav = 0.05 * torch.randn(FRAMES * 640)
        return Synthesis(wav=wav.numpy(), sample_rate=SR, mel=np.zeros((80, 4 * FRAMES)), text="", seconds=0.1)


def test_reruns_reproduce_every_number(layout):
    root, cache = layout
    runs = [ev.evaluate([RandomNoise()], data_root=root, cache=cache, limit=2, progress=False, mos=None)
            for _ in range(2)]
    first, second = ([r["mcd"] for r in run["clips"]] for run in runs)
    assert first == second


def test_unknown_focus_is_refused(layout):
    root, cache = layout
    with pytest.raises(ev.NaturalL2SError, match="--focus"):
        ev.evaluate([Silent(), NoisyCopy("n", noise=0.1)], data_root=root, cache=cache, limit=1, progress=False,
                    focus="nope")


def test_clip_missing_from_the_cache_is_skipped_with_a_reason(layout, tmp_path):
    root, cache = layout
    (tmp_path / "grid").mkdir()
    splits = {"s7": {"test": NAMES[:1] + ["pwwx9a"]}}
    (tmp_path / "grid" / "splits.json").write_text(json.dumps(splits))
    res = ev.evaluate([], data_root=tmp_path / "grid", cache=cache, reference=True, limit=None, progress=False,
                      mos=None)
    assert [s["clip"] for s in res["skipped"]] == ["pwwx9a"] and "prepare" in res["skipped"][0]["reason"]
    assert len(res["clips"]) == 1 and "mos_distillmos" not in res["summary"]["reference"]
    # no .align: pauses are the output's frames 30 dB below its loudest, and this voice never drops that far
    assert math.isnan(res["clips"][0]["comb_db"])
    assert res["clips"][0]["text"] == TEXTS[0]  # no .align there: the cached text is used


def test_mean_ci_is_a_student_t_interval():
    r = ev.mean_ci([1.0, 2.0, 3.0, float("nan")])
    assert r["n"] == 3 and r["mean"] == pytest.approx(2.0)
    assert r["ci95"] == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-5)
    assert math.isnan(ev.mean_ci([5.0])["ci95"]) and ev.mean_ci([])["n"] == 0


def test_system_names_must_be_unique(layout):
    from naturall2s.errors import NaturalL2SError

    root, cache = layout
    with pytest.raises(NaturalL2SError):
        ev.evaluate([Silent(), Silent()], data_root=root, cache=cache, progress=False)
    with pytest.raises(NaturalL2SError):
        ev.evaluate([], data_root=root, cache=cache, progress=False)


def test_cli_scores_the_reference(layout, tmp_path, capsys):
    from naturall2s.cli import evaluate as cmd

    root, cache = layout
    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    args = parser.parse_args(["--reference", "--data-root", str(root), "--cache", str(cache), "--limit", "1",
                              "--out", str(tmp_path / "res")])
    assert cmd.run(args) == 0
    printed = capsys.readouterr().out
    assert "| reference | 1 | 1.000" in printed
    assert (tmp_path / "res" / "results.json").is_file()


def test_reference_floor_on_real_grid_clips(grid_root, tmp_path):
    """Real audio scored against itself: STOI 1, and the ASR's own error on real speech stays small; real speech
    sounds natural (DistillMOS above 3) and its .align pauses hold no 100 Hz comb."""
    res = ev.evaluate([], data_root=grid_root, reference=True, limit=2, progress=False)
    ref = res["summary"]["reference"]
    assert ref["stoi"]["n"] == 2 and ref["stoi"]["mean"] == pytest.approx(1.0, abs=1e-6)
    assert ref["wer"]["mean"] <= 0.25
    assert ref["mos_distillmos"]["n"] == 2 and ref["mos_distillmos"]["mean"] > 3.0
    assert ref["comb_db"]["n"] == 2 and abs(ref["comb_db"]["mean"]) < 2.0


def test_an_ltbs_model_is_scored_and_its_post_net_ablated(layout, tmp_path):
    """An ltbs checkpoint, given by path, is scored like any system; scripts/postnet_ablation.py scores the one file
    without its post-net and with it at each temperature (one system each) and names the best ESTOI; a model without
    a post-net and a bad temperature are refused."""
    import subprocess
    import sys
    from pathlib import Path

    from naturall2s.checkpoints import save_model
    from naturall2s.model import build

    root, cache = layout
    torch.manual_seed(0)
    tiny = dict(dim=32, n_layers=1, n_heads=2, head_hidden=32, gen_dim=32, gen_intermediate_dim=64, gen_layers=1)
    path = save_model(build("ltbs", **tiny, word_head=True, ltbs={"decoder_layers": 1, "postnet_steps": 1}),
                      tmp_path / "tiny-ltbs.safetensors")
    res = ev.evaluate([str(path)], data_root=root, cache=cache, limit=1, progress=False, mos=None)
    rows = [r for r in res["clips"] if r["system"] == "tiny-ltbs"]
    assert len(rows) == 1 and math.isfinite(rows[0]["estoi"])

    script = [sys.executable, str(Path(ev.__file__).resolve().parents[1] / "scripts" / "postnet_ablation.py")]
    common = ["--split", "test", "--cache", str(cache), "--data-root", str(root), "--limit", "1"]
    res = subprocess.run([*script, str(path), *common, "--temperatures", "0", "0.5", "--out",
                          str(tmp_path / "ablation")], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [line.split(" | ")[0] for line in res.stdout.splitlines() if line.startswith(("| no post-net", "| post-"))]
    assert rows[:3] == ["| no post-net", "| post-net T=0", "| post-net T=0.5"]
    assert "best ESTOI on test: post-net T=" in res.stdout and (tmp_path / "ablation" / "results.json").is_file()
    bad = subprocess.run([*script, str(path), *common, "--temperatures", "-1"], capture_output=True, text=True,
                         timeout=600)
    assert bad.returncode == 2 and "temperature must be a finite number of at least 0, got -1.0" in bad.stderr
    plain = save_model(build("mel-vocoder", **tiny), tmp_path / "plain.safetensors")
    bad = subprocess.run([*script, str(plain), *common], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "no post-net to ablate" in bad.stderr


def test_a_units_model_file_is_scored_like_any_system(layout, tmp_path):
    """A units-variant checkpoint, given by path, is loaded, synthesized and scored (its column named by the file)."""
    from naturall2s.checkpoints import save_model
    from naturall2s.model import build

    root, cache = layout
    torch.manual_seed(0)
    path = save_model(build("units", dim=32, n_layers=1, n_heads=2, head_hidden=32, gen_dim=32,
                            gen_intermediate_dim=64, gen_layers=1, n_units=8), tmp_path / "tiny-units.safetensors")
    res = ev.evaluate([str(path)], data_root=root, cache=cache, limit=1, progress=False, mos=None)
    rows = [r for r in res["clips"] if r["system"] == "tiny-units"]
    assert len(rows) == 1 and math.isfinite(rows[0]["estoi"]) and "lipread_wer" in rows[0]


def test_a_lipvoicer_model_is_scored_and_its_sampling_ablated(layout, tmp_path):
    """A lipvoicer checkpoint is scored by evaluate like any system; scripts/sampling_ablation.py scores it at every
    (steps, guidance) pair as one system each and tables them with the judge's log-probability; a model that does
    not sample and a bad setting are refused."""
    import subprocess
    import sys
    from pathlib import Path

    from naturall2s.checkpoints import save_model
    from naturall2s.model import build

    root, cache = layout
    torch.manual_seed(0)
    tiny = dict(dim=32, n_layers=1, n_heads=2, head_hidden=32, gen_dim=32, gen_intermediate_dim=64, gen_layers=1)
    path = save_model(build("lipvoicer", **tiny, flow_dim=16, flow_intermediate_dim=32, flow_layers=1,
                            judge={"dim": 16, "dilations": [1]}), tmp_path / "tiny-lipvoicer.safetensors")
    res = ev.evaluate([str(path)], data_root=root, cache=cache, limit=1, progress=False, mos=None)
    rows = [r for r in res["clips"] if r["system"] == "tiny-lipvoicer"]
    assert len(rows) == 1 and math.isfinite(rows[0]["estoi"])

    script = [sys.executable, str(Path(ev.__file__).resolve().parents[1] / "scripts" / "sampling_ablation.py")]
    common = ["--split", "test", "--cache", str(cache), "--data-root", str(root), "--limit", "1"]
    res = subprocess.run([*script, str(path), *common, "--steps", "1", "3", "--guidance", "0", "0.5", "--out",
                          str(tmp_path / "ablation")], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [line for line in res.stdout.splitlines() if line.startswith("| 1 |") or line.startswith("| 3 |")]
    assert [r.split(" | ")[:2] for r in rows] == [["| 1", "0"], ["| 1", "0.5"], ["| 3", "0"], ["| 3", "0.5"]]
    assert (tmp_path / "ablation" / "results.json").is_file()
    bad = subprocess.run([*script, str(path), *common, "--steps", "0"], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "sampling steps must be a whole number of at least 1, got 0" in bad.stderr
    plain = save_model(build("mel-vocoder", **tiny), tmp_path / "plain.safetensors")
    bad = subprocess.run([*script, str(plain), *common], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "no sampling to ablate" in bad.stderr
