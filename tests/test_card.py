"""Model cards: training facts from the checkpoint, held-out scores from its metadata or the shipped results."""
from __future__ import annotations

import json

import pytest

from naturall2s import load_model
from naturall2s.card import SHIPPED_RESULTS, model_card
from naturall2s.checkpoints import save_model
from naturall2s.model import build


@pytest.fixture(scope="module")
def shipped():
    return load_model("naturall2s")


def test_shipped_card_has_steps_and_test_scores(shipped):
    card = model_card(shipped)
    results = json.loads(SHIPPED_RESULTS.read_text())["summary"]["naturall2s"]
    assert card.steps == shipped.info["step"] and card.stage == "synth"
    assert card.scores["estoi"] == pytest.approx(results["estoi"]["mean"])
    assert card.speakers == ["s1"] and card.vocabulary_size == 51
    md = card.markdown()
    assert f"step {shipped.info['step']}" in md
    assert f"{results['estoi']['mean']:.3f}" in md and f"{results['wer']['mean']:.3f}" in md
    assert "results/grid_s1_test/results.json" in md  # says where the scores came from
    assert f"{results['mos_distillmos']['mean']:.3f}" in md and "predicted naturalness" in md
    assert card.adversarial == shipped.info["train_config"]["disc"] and "adversarial" in md  # v5: the stage that made it
    assert card.summary() == "one GRID speaker (s1), 51 words"


def test_metadata_scores_win_and_unshipped_models_get_no_shipped_scores(tmp_path):
    model = build("naturall2s-noddsp", dim=32, n_layers=1, head_hidden=32, gen_dim=32, gen_intermediate_dim=64,
                  gen_layers=1)
    plain = load_model(save_model(model, tmp_path / "naturall2s.safetensors", info={"step": 7, "stage": "synth"}))
    card = model_card(plain)  # named like a shipped model, but not the shipped file
    assert card.scores == {} and "No held-out scores" in card.markdown() and card.speakers == []
    info = {"step": 12, "stage": "adapt", "speakers": ["s4"], "vocabulary": ["bin", "blue"],
            "scores": {"wer": 0.25, "estoi": 0.4}, "scores_on": "GRID s4 held-out, 5 clips"}
    adapted = load_model(save_model(model, tmp_path / "adapted.safetensors", info=info))
    card = model_card(adapted)
    assert card.scores == {"wer": 0.25, "estoi": 0.4} and card.speakers == ["s4"] and card.steps == 12
    md = card.markdown()
    assert "GRID s4 held-out, 5 clips" in md and "0.250" in md and "checkpoint metadata" in md


def test_adapted_model_card_reads_its_adapt_provenance(tmp_path):
    model = build("naturall2s-noddsp", dim=32, n_layers=1, head_hidden=32, gen_dim=32, gen_intermediate_dim=64,
                  gen_layers=1)
    adapt = {"base": "naturall2s", "steps": 40, "best_step": 30,
             "clips": [{"file": "a.mp4", "role": "train"}, {"file": "b.mp4", "role": "train"},
                       {"file": "c.mp4", "role": "held-out"}],
             "heldout": {"n": 1, "before": {"wer": 0.8}, "after": {"wer": 0.5, "estoi": 0.3}}}
    loaded = load_model(save_model(model, tmp_path / "mine.safetensors", info={"step": 30, "stage": "synth",
                                                                              "adapt": adapt}))
    card = model_card(loaded)
    assert card.scores == {"wer": 0.5, "estoi": 0.3} and "1 held-out clips" in card.scores_on
    assert card.speakers == ["s1", "a new speaker (2 clips)"] and card.vocabulary_size == 51
    assert "adapted from `naturall2s` on 2 clips" in card.markdown()
    assert "optimistic" in card.scores_on  # scored on the clips that also selected it
    adapt = {**adapt, "steps_planned": 200, "heldout": {**adapt["heldout"], "part": "test"}}
    tested = load_model(save_model(model, tmp_path / "tested.safetensors", info={"step": 30, "adapt": adapt}))
    card = model_card(tested)
    assert "1 test clips (they neither trained nor selected it)" in card.scores_on
    assert "40 of 200 planned steps" in card.markdown()


def test_units_card_names_its_paper_and_what_differs(tmp_path):
    model = build("units", dim=32, n_layers=1, head_hidden=32, gen_dim=32, gen_intermediate_dim=64, gen_layers=1,
                  n_units=8)
    loaded = load_model(save_model(model, tmp_path / "units.safetensors",
                                   info={"step": 5, "stage": "lipreader", "val": {"score": 0.6, "unit/acc": 0.31}}))
    md = model_card(loaded).markdown()
    assert "Intelligible Lip-to-Speech Synthesis with Speech Units" in md and "Interspeech 2023" in md
    assert "MFCC" in md and "HuBERT" in md and "GRID" in md and "vocoder" in md
    assert "unit accuracy 0.310" in md
    plain = model_card(load_model(save_model(build("mel-gl", dim=32, n_layers=1, head_hidden=32),
                                             tmp_path / "plain.safetensors", info={"step": 1, "stage": "lipreader"})))
    assert "**Method**" not in plain.markdown()


def test_ltbs_card_names_its_paper_and_what_differs(tmp_path):
    model = build("ltbs", dim=32, n_layers=1, head_hidden=32, gen_dim=32, gen_intermediate_dim=64, gen_layers=1,
                  word_head=True, ltbs={"decoder_layers": 1, "postnet_steps": 1})
    loaded = load_model(save_model(model, tmp_path / "ltbs.safetensors",
                                   info={"step": 5, "stage": "synth", "val": {"score": 0.6, "estoi": 0.31}}))
    md = model_card(loaded).markdown()
    assert "Let There Be Sound" in md and "AAAI 2024" in md
    assert "word head" in md and "ASR" in md and "GRID" in md and "vocoder" in md and "post-net" in md
    assert "ESTOI 0.310" in md


def test_lipvoicer_card_names_its_paper_what_differs_and_its_sampling(tmp_path):
    model = build("lipvoicer", dim=32, n_layers=1, head_hidden=32, gen_dim=32, gen_intermediate_dim=64, gen_layers=1,
                  flow_dim=16, flow_intermediate_dim=32, flow_layers=1, sampling_steps=6, guidance_scale=0.4,
                  judge={"dim": 16, "dilations": [1]})
    loaded = load_model(save_model(model, tmp_path / "lipvoicer.safetensors",
                                   info={"step": 5, "stage": "flow", "val": {"score": 0.7, "flow/mse": 0.9}}))
    md = model_card(loaded).markdown()
    assert "LipVoicer" in md and "ICLR 2024" in md
    for fact in ("GRID s1", "rectified flow", "DDPM", "content judge", "word head", "vocoder"):
        assert fact in md, fact
    assert "6 Euler steps" in md and "classifier guidance 0.4" in md and "flow-matching MSE 0.900" in md
