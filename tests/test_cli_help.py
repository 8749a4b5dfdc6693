"""Every option of the CLI commands (train has its own test) and of app.py has help that states its default."""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from naturall2s.cli import COMMANDS, build_parser


def _options(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "train"])
def test_every_option_has_help_with_its_default(command):
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices.get(command)
    if parser is None:
        pytest.skip(f"command {command} is not installed")
    for action in _options(parser):
        assert action.help, f"{command} {action.option_strings[0]} has no help"
        assert "default" in action.help, f"{command} {action.option_strings[0]}: help does not state its default"
    for action in parser._actions:  # the %(default)s placeholders must render
        if action.help:
            parser._get_formatter()._expand_help(action)


def test_app_options_have_help_with_their_default():
    import app

    parser_holder = {}
    real = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        parser_holder["p"] = self
        return real(self, [], namespace)

    argparse.ArgumentParser.parse_args = capture
    try:
        app.parse_args([])
    finally:
        argparse.ArgumentParser.parse_args = real
    for action in _options(parser_holder["p"]):
        assert action.help and "default" in action.help, action.option_strings


def test_models_lists_every_checkpoint_with_its_step():
    from naturall2s.checkpoints import available_models

    out = subprocess.run([sys.executable, "-m", "naturall2s", "models"], capture_output=True, text=True,
                         check=True).stdout
    lines = {line.split()[0]: line.split() for line in out.splitlines()[1:] if not line.startswith("your models")}
    assert set(lines) == set(available_models())
    for name, cols in lines.items():
        assert cols[4].isdigit(), f"{name} shows no step: {cols}"


def test_synthesize_refuses_sampling_options_a_model_does_not_have_before_reading_the_video(tmp_path):
    """--steps / --guidance belong to lipvoicer models: for another model, or with a bad value, the command says so
    (exit 2, no traceback) before it looks at the video."""
    from naturall2s.checkpoints import save_model
    from naturall2s.model import build

    plain = save_model(build("mel-gl", dim=32, n_layers=1, n_heads=2, head_hidden=32), tmp_path / "plain.safetensors")
    tiny = save_model(build("lipvoicer", dim=32, n_layers=1, n_heads=2, head_hidden=32, gen_dim=32,
                            gen_intermediate_dim=64, gen_layers=1, flow_dim=16, flow_intermediate_dim=32, flow_layers=1,
                            judge={"dim": 16, "dilations": [1]}), tmp_path / "tiny.safetensors")
    for model, flags, message in ((plain, ["--steps", "4"], "a mel-gl model has none"),
                                  (tiny, ["--guidance", "-1"], "guidance scale must be a finite number of at least 0")):
        res = subprocess.run([sys.executable, "-m", "naturall2s", "synthesize", str(tmp_path / "missing.mp4"),
                              "--model", str(model), *flags], capture_output=True, text=True, timeout=300)
        assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr
