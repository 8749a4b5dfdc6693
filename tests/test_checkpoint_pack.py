"""Shipped checkpoints store a shared tensor once (checkpoints.pack) and load it back exactly, or refuse clearly."""
from __future__ import annotations

import json

import pytest
import torch

from naturall2s.checkpoints import CHECKPOINT_DIR, load_model, load_tensors, pack, save_model
from naturall2s.errors import CheckpointError
from naturall2s.model import build

TINY = dict(dim=32, n_layers=1, n_heads=2, head_hidden=32, gen_dim=32, gen_intermediate_dim=64, gen_layers=1,
            n_harmonics=16, dropout=0.0)


def _pair(tmp_path):
    """Two tiny models whose front ends are the same tensors (as variants started from one lip reader are)."""
    torch.manual_seed(0)
    a, b = build("mel-gl", **TINY), build("mel-vocoder", **TINY)
    shared = {k: v for k, v in a.state_dict().items() if k in b.state_dict() and v.shape == b.state_dict()[k].shape}
    b.load_state_dict(shared, strict=False)
    pa, pb = save_model(a, tmp_path / "a.safetensors"), save_model(b, tmp_path / "b.safetensors")
    return pa, pb, len(shared)


def test_pack_stores_each_tensor_once_and_loads_the_same(tmp_path):
    pa, pb, n_shared = _pair(tmp_path)
    assert n_shared > 0
    before = {p: load_tensors(p) for p in (pa, pb)}
    a_bytes = pa.read_bytes()
    sizes = pack([pa, pb])
    assert pa.read_bytes() == a_bytes  # the owner does not change
    assert sizes[str(pb)][1] < sizes[str(pb)][0]
    for p in (pa, pb):
        after = load_tensors(p)
        assert after.keys() == before[p].keys()
        assert all(after[k].equal(before[p][k]) for k in after)
    from safetensors import safe_open
    with safe_open(str(pb), framework="pt") as f:
        refs = json.loads(f.metadata()["shared"])
        # (>=: small tensors equal by value, e.g. a fresh norm's ones, are shared too)
        assert len(refs) >= n_shared and not set(refs) & set(f.keys())
    b_bytes = pb.read_bytes()
    pack([pa, pb])  # packing again changes nothing
    assert pb.read_bytes() == b_bytes
    load_model(pb)  # and the model loads strict


def test_int8_per_channel_round_trip():
    from naturall2s.checkpoints import quantize_int8

    torch.manual_seed(0)
    w = torch.randn(16, 8, 3) * torch.logspace(-3, 0, 16)[:, None, None]  # channels of very different scales
    q, scale = quantize_int8(w)
    assert q.dtype == torch.int8 and scale.dtype == torch.float16 and scale.shape == (16, 1, 1)
    err = (q.float() * scale.float() - w).abs()
    assert (err <= scale.float() / 2 + 1e-6).all()  # at most half a step of its own channel
    assert (q.abs().amax(dim=(1, 2)) == 127).all()


def test_quantize_file_halves_a_model_that_still_loads_and_speaks(tmp_path, monkeypatch):
    from safetensors import safe_open

    from naturall2s import checkpoints

    monkeypatch.setattr(checkpoints, "QUANT_MIN_NUMEL", 256)  # TINY has no 4096-value matrix
    pa, pb, _ = _pair(tmp_path)
    torch.manual_seed(0)
    roi, lips = torch.randint(0, 256, (1, 12, 32, 48), dtype=torch.uint8), torch.randn(1, 12, 40)
    with torch.no_grad():
        ref = load_model(pb)(roi, lips)["mel"]
    pack([pa, pb])
    with pytest.raises(CheckpointError, match="shares weights with"):  # b shares from a: a stays fp16
        checkpoints.quantize_file(pa, others=[pa, pb])
    b0, b1 = checkpoints.quantize_file(pb, others=[pa, pb])
    assert b1 < 0.75 * b0
    with safe_open(str(pb), framework="pt") as f:
        stored = set(f.keys())
        assert any(f.get_tensor(k).dtype == torch.int8 for k in stored)
    assert checkpoints.quantize_file(pb, others=[pa, pb]) == (b1, b1)  # already int8: not rewritten
    pack([pa, pb])  # packing keeps the int8 tensors and the references
    with safe_open(str(pb), framework="pt") as f:
        assert set(f.keys()) == stored
    with torch.no_grad():
        out = load_model(pb)(roi, lips)["mel"]
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


def test_a_changed_or_missing_owner_is_refused(tmp_path):
    pa, pb, _ = _pair(tmp_path)
    pack([pa, pb])
    torch.manual_seed(1)
    save_model(build("mel-gl", **TINY), pa)  # the owner replaced by another version
    with pytest.raises(CheckpointError, match="changed in a.safetensors"):
        load_tensors(pb)
    pa.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_model(pb)


def test_a_reference_outside_the_folder_is_refused(tmp_path):
    pa, pb, _ = _pair(tmp_path)
    pack([pa, pb])
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(pb), framework="pt") as f:
        meta = dict(f.metadata())
        own = {k: f.get_tensor(k) for k in f.keys()}
    refs = json.loads(meta["shared"])
    (tmp_path / "x" / "y").mkdir(parents=True)
    evil = {k: ["../../../etc/a.safetensors", *v[1:]] for k, v in refs.items()}
    save_file(own, str(tmp_path / "x" / "y" / "b.safetensors"), metadata={**meta, "shared": json.dumps(evil)})
    with pytest.raises(CheckpointError, match="outside its checkpoints folder"):
        load_tensors(tmp_path / "x" / "y" / "b.safetensors")


def test_shipped_checkpoints_load_whole():
    """Every shipped file, packed or not, gives a full model (its shared tensors found and their hashes right)."""
    files = sorted(CHECKPOINT_DIR.glob("[!.]*.safetensors")) + sorted((CHECKPOINT_DIR / "live").glob("*.safetensors"))
    if not files:
        pytest.skip("no shipped checkpoints in this checkout")
    for p in files:
        load_model(p)
