"""NaturalL2S Studio: speech from silent talking-face video.

    >>> import naturall2s
    >>> naturall2s.available_models()
    ['mel-gl', 'mel-vocoder', 'naturall2s-noddsp', 'naturall2s']
    >>> model = naturall2s.load_model("naturall2s")
    >>> result = model.synthesize("clip.mp4")     # result.wav, result.sample_rate, result.f0, result.text, ...
"""
__version__ = "0.1.0"

__all__ = ["load_model", "available_models", "__version__"]


def load_model(name_or_path, *, device="cpu"):
    """A shipped model by name (see :func:`available_models`) or a ``.safetensors`` path."""
    from naturall2s.checkpoints import load_model as _load

    return _load(name_or_path, device=device)


def available_models() -> list[str]:
    """Names of the models shipped in ``checkpoints/``."""
    from naturall2s.checkpoints import available_models as _available

    return _available()
