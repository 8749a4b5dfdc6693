"""The one module that reads and writes weight files.

Shipped models: ``checkpoints/<name>.safetensors``; the user's own (adapted) models:
``<models dir>/<name>.safetensors`` (:func:`user_models_dir`: ``$NATURALL2S_MODELS``, else ``~/.cache/naturall2s/models``),
found by name like shipped ones (a shipped name wins). (fp16 weights; the :class:`ModelConfig` and training facts in the
safetensors metadata, so a file is self-describing and loading never unpickles anything). Training state (optimizer,
step) is a ``torch.save`` dict of tensors and plain types, read back with ``weights_only=True``. A shipped model's
adversarial discriminators (to continue its adversarial training, e.g. when ``adapt`` fine-tunes it):
``checkpoints/discriminators/<name>.safetensors`` (:func:`discriminator_path`; fp16, their kind in the metadata).

Shipped files share weights: the variants start from the same front end and vocoder, and a live student is its
model with a new front end. :func:`pack` stores a tensor that is byte-identical to one an earlier file holds as a
reference in the metadata (``"shared"``: the owner's file relative to this one, its tensor name and the SHA-256 of the
bytes), and :func:`load_tensors` reads it back from the owner, checking the hash. A file written by :func:`save_model`
(``train --export``, ``adapt``) holds all its weights; only the shipped set is packed (``scripts/pack_checkpoints.py``).
:func:`quantize_file` stores a file's own large weight matrices as int8 with one fp16 scale per output channel (the
tensor ``<name>`` + ``<name>`` :data:`QUANT_SUFFIX`), halving its size; :func:`load_tensors` gives them back as fp16.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from naturall2s.errors import CheckpointError
from naturall2s.files import atomic_path

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT_DIR = Path(os.environ.get("NATURALL2S_CHECKPOINTS", REPO / "checkpoints"))
FORMAT = "naturall2s/1"
DISC_FORMAT = "naturall2s-discriminator/1"  # a model's discriminators: their kind ("mrd", "mpd+mrd") in the metadata
DISC_FOLDER = "discriminators"  # beside the model files: <folder>/discriminators/<model name>.safetensors
MODELS_ENV = "NATURALL2S_MODELS"  # overrides the user models folder
DEFAULT_USER_MODELS = Path("~/.cache/naturall2s/models")
SHARED_KEY = "shared"  # metadata: {tensor name: [owner file relative to this one, owner tensor name, sha256 of bytes]}
QUANT_SUFFIX = ":int8_scale"  # beside an int8 tensor: its per-output-channel fp16 scales (quantize_file)
QUANT_MIN_NUMEL = 4096  # smaller tensors (biases, norms, small kernels) stay fp16


def user_models_dir() -> Path:
    """The folder of the user's own models (``adapt`` writes there): ``$NATURALL2S_MODELS`` or
    ``~/.cache/naturall2s/models``. Read at every call, so setting the variable takes effect at once."""
    return Path(os.environ.get(MODELS_ENV) or DEFAULT_USER_MODELS).expanduser()


def model_dirs() -> list[Path]:
    """Where models are found by name, in order: the shipped checkpoints, then the user models folder."""
    return [CHECKPOINT_DIR, user_models_dir()]


def save_model(model, path: str | Path, *, dtype: torch.dtype = torch.float16, info: dict | None = None) -> Path:
    """Write ``model`` (a :class:`~naturall2s.model.LipToSpeech`) as safetensors with its config inside; atomic."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if v.is_floating_point():
            v = v.to(dtype)
        state[k] = v.contiguous().clone()
    metadata = {"format": FORMAT, "config": json.dumps(model.config.to_dict()), "info": json.dumps(info or {})}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return path


def read_metadata(path: str | Path) -> dict:
    """The config and info stored in a checkpoint, without loading the weights."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises several types for a damaged header
        raise CheckpointError(f"{path} is not a readable checkpoint ({e})") from None
    if meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(f"{path} is not a NaturalL2S checkpoint (format {meta.get('format')!r})")
    return {"config": json.loads(meta["config"]), "info": json.loads(meta.get("info", "{}"))}


def resolve(name_or_path: str | Path) -> Path:
    """A model name (shipped, or in the user models folder) or a path → the checkpoint file; CheckpointError if
    missing."""
    p = Path(name_or_path)
    if p.suffix == ".safetensors" or p.is_file():  # a name like "naturall2s" may also be a folder in the cwd
        if not p.is_file():
            raise CheckpointError(f"checkpoint not found: {p}")
        return p
    for folder in model_dirs():
        p = folder / f"{name_or_path}.safetensors"
        if p.is_file():
            return p
    have = ", ".join(available_models()) or "none"
    where = " or ".join(str(d) for d in model_dirs())
    raise CheckpointError(f"no model named {name_or_path!r} in {where} (available: {have})")


def load_tensors(name_or_path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint (fp16 as stored; int8 ones of :func:`quantize_file` dequantized), e.g. to
    initialise part of another model; tensors the file shares with another shipped file (:func:`pack`) are read from
    it and checked against their stored hash."""
    return dequantize(_stored_tensors(resolve(name_or_path)))


def _stored_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors as stored (int8 ones with their scales), shared ones read from their owners."""
    from safetensors.torch import load_file

    read_metadata(path)  # refuses files that are not ours
    try:
        state = load_file(str(path))
    except Exception as e:
        raise CheckpointError(f"{path} is corrupt ({e})") from None
    state.update(_shared_tensors(path))
    return state


def quantize_int8(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: ``t`` (out, ...) float -> (int8 of t's shape, fp16 scales (out, 1, ...)),
    ``t ≈ q * scale`` (each channel's largest magnitude maps to 127)."""
    w = t.float()
    scale = w.reshape(w.shape[0], -1).abs().amax(1).clamp(min=1e-12) / 127.0
    scale = scale.to(torch.float16).float().reshape(-1, *([1] * (w.dim() - 1)))  # the scale as stored
    q = torch.round(w / scale).clamp(-127, 127).to(torch.int8)
    return q, scale.to(torch.float16)


def dequantize(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stored tensors -> fp16 ones: each int8 tensor with a ``QUANT_SUFFIX`` scale becomes ``q * scale``."""
    out = dict(state)
    for key in [k for k in state if k.endswith(QUANT_SUFFIX)]:
        name = key[: -len(QUANT_SUFFIX)]
        if name not in out or out[name].dtype != torch.int8:
            raise CheckpointError(f"the int8 scale {key} has no int8 tensor {name} beside it")
        out[name] = (out[name].float() * out.pop(key).float()).to(torch.float16)
    return out


def quantize_file(path: str | Path, *, others: list[str | Path] = ()) -> tuple[int, int]:
    """Store the file's own float tensors of at least ``QUANT_MIN_NUMEL`` values and 2 dimensions as int8
    (:func:`quantize_int8`), in place; its shared references and metadata are kept. ``others``: the files that might
    share from this one; CheckpointError if one does (its references would no longer match). -> (bytes before,
    after); a file already quantized is not rewritten."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    p = Path(path)
    for other in map(Path, others):
        if other.resolve() != p.resolve() and any(
                (other.parent / rel).resolve() == p.resolve() for rel, _, _ in _shared_refs(other).values()):
            raise CheckpointError(f"{other} shares weights with {p}: quantizing {p} would break it")
    read_metadata(p)
    with safe_open(str(p), framework="pt") as f:
        meta = dict(f.metadata() or {})
        own = {k: f.get_tensor(k) for k in f.keys()}
    before = p.stat().st_size
    out = {}
    for name, t in own.items():
        if (t.is_floating_point() and t.dim() >= 2 and t.numel() >= QUANT_MIN_NUMEL
                and name + QUANT_SUFFIX not in own and not name.endswith(QUANT_SUFFIX)):
            out[name], out[name + QUANT_SUFFIX] = quantize_int8(t)
        else:
            out[name] = t.contiguous()
    if out.keys() != own.keys():
        with atomic_path(p) as tmp:
            save_file(out, str(tmp), metadata=meta)
    return before, p.stat().st_size


def _tensor_digest(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes: equal digests mean the same stored tensor."""
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _shared_refs(path: Path) -> dict[str, list[str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {}).get(SHARED_KEY, "{}"))


def _owner_path(path: Path, rel: str) -> Path:
    """The owner file of a shared tensor: a .safetensors file in this file's folder or the one above (a live student
    shares with its model), never elsewhere."""
    owner = (path.parent / rel).resolve()
    allowed = {path.parent.resolve(), path.parent.resolve().parent}
    if owner.suffix != ".safetensors" or owner.parent not in allowed:
        raise CheckpointError(f"{path} shares weights with {rel!r}, outside its checkpoints folder")
    if not owner.is_file():
        raise CheckpointError(f"{path} shares weights with {rel}, which is missing: restore the checkpoints folder "
                              f"as shipped (git checkout checkpoints)")
    return owner


def _shared_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    refs = _shared_refs(path)
    by_owner: dict[str, list[tuple[str, str, str]]] = {}
    for name, (rel, owner_name, digest) in refs.items():
        by_owner.setdefault(rel, []).append((name, owner_name, digest))
    out = {}
    for rel, items in by_owner.items():
        owner = _owner_path(path, rel)
        with safe_open(str(owner), framework="pt") as f:
            for name, owner_name, digest in items:
                if owner_name not in f.keys():
                    raise CheckpointError(f"{path}: its shared tensor {name} is not in {rel} any more")
                t = f.get_tensor(owner_name)
                if _tensor_digest(t) != digest:
                    raise CheckpointError(f"{path}: its shared tensor {name} changed in {rel} (the two files are "
                                          f"from different versions; restore both as shipped)")
                out[name] = t
    return out


def pack(paths: list[str | Path]) -> dict[str, tuple[int, int]]:
    """Rewrite shipped checkpoints so that each tensor is stored once: in ``paths`` order, a tensor byte-identical
    to one an earlier file stores becomes a reference to it (metadata ``"shared"``). A file whose content would not
    change is not rewritten (the shipped files' history only grows). Returns {path: (bytes before, bytes after)}."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    stored: dict[str, tuple[Path, str]] = {}  # digest -> (file, name) of a tensor held in a file's own bytes
    sizes = {}
    for p in map(Path, paths):
        state = _stored_tensors(p)  # already-shared tensors resolved (int8 ones kept), so packing twice is a no-op
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
        old_refs = json.loads(meta.get(SHARED_KEY, "{}"))
        own, refs = {}, {}
        for name in sorted(state):
            t, digest = state[name], _tensor_digest(state[name])
            if digest in stored:
                owner, owner_name = stored[digest]
                refs[name] = [os.path.relpath(owner, p.resolve().parent), owner_name, digest]
            else:
                own[name] = t.contiguous()
        before = p.stat().st_size
        if refs != old_refs:
            meta.pop(SHARED_KEY, None)
            if refs:
                meta[SHARED_KEY] = json.dumps(refs, sort_keys=True)
            with atomic_path(p) as tmp:
                save_file(own, str(tmp), metadata=meta)
        for name, t in own.items():
            stored.setdefault(_tensor_digest(t), (p.resolve(), name))
        sizes[str(p)] = (before, p.stat().st_size)
    return sizes


def load_model(name_or_path: str | Path, *, device: str | torch.device = "cpu"):
    """Load a model by shipped name or path; float32 on ``device``, eval mode. Sets ``model.name`` (the shipped
    name, else the variant), ``model.info`` (the training facts of the metadata) and ``model.path`` (the file)."""
    from naturall2s.model import LipToSpeech, ModelConfig

    path = resolve(name_or_path)
    model, meta = load_module(path, ModelConfig, LipToSpeech, bad_config="its model config does not match this code")
    model.name = Path(path).stem if Path(path).parent in model_dirs() else model.config.variant
    model.info = meta["info"]
    model.path = str(path)
    return model.to(device).eval()


def load_module(path: str | Path, config_cls, module_cls, *, bad_config: str):
    """``module_cls(config_cls.from_dict(stored config))`` with the stored weights (float32, strict) -> (module,
    metadata). CheckpointError ``"{path}: {bad_config} (...)"`` when the stored config is not a ``config_cls``, and
    one naming the architecture when the weights do not fit it."""
    path = resolve(path)
    meta = read_metadata(path)
    try:
        config = config_cls.from_dict(meta["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: {bad_config} ({e})") from None
    module = module_cls(config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_tensors(path).items()}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0:3]
        kind = getattr(config, "variant", None) or getattr(config, "kind", module_cls.__name__)
        raise CheckpointError(f"{path} does not match the {kind} architecture: {' '.join(first)}") from None
    return module, meta


def available_models() -> list[str]:
    """Names of the shipped checkpoints (in the order of the variants table), then the user's own models (sorted);
    a user model named like a shipped one is shadowed by it and not listed twice."""
    from naturall2s.model import VARIANTS

    shipped = [p.stem for p in CHECKPOINT_DIR.glob("*.safetensors") if not p.name.startswith(".")]
    order = {v: i for i, v in enumerate(VARIANTS)}
    shipped = sorted(shipped, key=lambda n: (order.get(n, len(order)), n))
    user = user_models_dir()
    own = sorted(p.stem for p in user.glob("*.safetensors")  # dot files: writes in flight
                 if p.stem not in shipped and not p.name.startswith(".")) if user.is_dir() else []
    return shipped + own


def discriminator_path(model_path: str | Path) -> Path | None:
    """The discriminators file of a model file (``<its folder>/discriminators/<its name>.safetensors``), or None when
    it has none (only the shipped adversarially trained models have one)."""
    model_path = Path(model_path)
    path = model_path.parent / DISC_FOLDER / f"{model_path.stem}.safetensors"
    return path if path.is_file() else None


def save_discriminator(state: dict[str, torch.Tensor], path: str | Path, *, kind: str, info: dict | None = None,
                       dtype: torch.dtype = torch.float16) -> Path:
    """Write discriminator weights (the state dict of train.build_discriminators(kind)) as safetensors, with their
    ``kind`` and ``info`` (where they come from) in the metadata; atomic."""
    from safetensors.torch import save_file

    tensors = {k: (v.detach().cpu().to(dtype) if v.is_floating_point() else v.detach().cpu()).contiguous().clone()
               for k, v in state.items()}
    metadata = {"format": DISC_FORMAT, "kind": kind, "info": json.dumps(info or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def load_discriminator(path: str | Path) -> tuple[str, dict[str, torch.Tensor], dict]:
    """-> (kind, float32 state dict, info) of a file written by :func:`save_discriminator`; CheckpointError when it
    is missing, not one, or corrupt."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"discriminator file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except Exception as e:  # safetensors raises several types for a damaged file
        raise CheckpointError(f"{path} is not a readable discriminator file ({e})") from None
    if meta.get("format") != DISC_FORMAT or not meta.get("kind"):
        raise CheckpointError(f"{path} is not a NaturalL2S discriminator file (format {meta.get('format')!r})")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return meta["kind"], state, json.loads(meta.get("info", "{}"))


def save_state(state: dict, path: str | Path) -> None:
    """Training state (model/optimizer state dicts, step, config dicts) → ``path``, atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: str | Path, *, map_location="cpu") -> dict:
    """Read training state saved by :func:`save_state` (``weights_only=True``: no arbitrary unpickling)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"training state not found: {path}") from None
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable training state ({e})") from None
