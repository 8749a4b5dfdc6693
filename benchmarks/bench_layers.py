"""Training throughput (forward + backward) and parameter counts of the model's reusable layers on this machine.

    python benchmarks/bench_layers.py [--threads 2] [--repeats 5] [--batch 16] [--frames 75] [--only frontend,...]

Measures, for a batch of ``--batch`` clips of ``--frames`` video frames (75 = 3 s), the median wall time of
one forward + backward pass (synthetic inputs) and prints clips/s:
- ``frontend@HxW``: VisualFrontEnd (default widths) at in_size (32,48) and (48,72), plus CTCHead;
- ``heads``: FrameUpsampler + F0Head + ControlHead at 100 Hz;
- ``synth``: HarmonicPlusNoise on the controls (4·frames audio frames);
- ``generator``: ISTFTGenerator with the DDSP prior;
- ``disc-mpd``, ``disc-mrd``: HiFi-GAN's multi-period and UnivNet/Vocos's multi-resolution discriminators on 1 s
  crops, each as one adversarial step runs them (real, fake for the discriminator, fake for the generator).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
WARMUP = 3  # the first passes of a process pay for allocation and oneDNN kernel selection


def timed(step, repeats: int) -> float:
    """Median seconds of ``step()`` over ``repeats`` runs after ``WARMUP`` warm-up runs."""
    for _ in range(WARMUP):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def n_params(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def bench_frontend(size, args):
    from naturall2s.encoders import CTCHead, VisualFrontEnd

    enc = VisualFrontEnd(in_size=size)
    ctc = CTCHead(dim=enc.dim, vocab_size=52)
    enc.train()
    roi = torch.rand(args.batch, args.frames, *size)
    lips = torch.randn(args.batch, args.frames, 40)
    mask = torch.ones(args.batch, args.frames, dtype=torch.bool)

    def step():
        enc.zero_grad(set_to_none=True)
        ctc(enc(roi, lips, mask)).mean().backward()

    return n_params(enc, ctc), timed(step, args.repeats)


def bench_heads(args):
    from naturall2s.heads import ControlHead, F0Head, FrameUpsampler

    dim = 256
    up, f0h, ctl = FrameUpsampler(dim=dim), F0Head(in_dim=dim), ControlHead(in_dim=dim)
    x = torch.randn(args.batch, args.frames, dim, requires_grad=True)

    def step():
        h = up(x)
        out = f0h(h)
        c = ctl(h)
        (out["log_f0"].mean() + c["amplitude"].mean() + c["harmonic_distribution"].mean()
         + c["noise_magnitudes"].mean()).backward()

    return n_params(up, f0h, ctl), timed(step, args.repeats)


def bench_synth(args):
    from naturall2s.synths import HarmonicPlusNoise

    synth = HarmonicPlusNoise()
    f = 4 * args.frames
    f0 = torch.full((args.batch, f), 120.0, requires_grad=True)
    amp = torch.rand(args.batch, f, requires_grad=True)
    dist = torch.rand(args.batch, f, synth.n_harmonics, requires_grad=True)
    noise = (torch.rand(args.batch, f, synth.n_noise_bands) * 1e-2).requires_grad_(True)

    def step():
        synth(f0, amp, dist, noise)["signal"].square().mean().backward()

    return 0, timed(step, args.repeats)


def bench_generator(args):
    from naturall2s.generator import ISTFTGenerator

    gen = ISTFTGenerator(in_dim=256, use_prior=True)
    f = 4 * args.frames
    x = torch.randn(args.batch, f, 256)
    prior = torch.randn(args.batch, f * 160) * 0.1

    def step():
        gen.zero_grad(set_to_none=True)
        gen(x, prior).square().mean().backward()

    return n_params(gen), timed(step, args.repeats)


def bench_disc(kind: str, args):
    """One discriminator family (``mpd`` or ``mrd``, as ``train --disc`` builds it) on 1 s crops: the forward and
    backward passes of one adversarial training step (discriminator update on real + fake, generator pass on fake)."""
    from naturall2s.train import build_discriminators

    disc = build_discriminators(kind)
    real = torch.randn(args.batch, 16000)
    fake = torch.randn(args.batch, 16000, requires_grad=True)

    def step():
        disc.zero_grad(set_to_none=True)
        total = 0
        for wav in (real, fake.detach(), fake):
            for d in disc.values():
                logits, _ = d(wav)
                total = total + sum(x.mean() for x in logits)
        total.backward()

    return n_params(disc), timed(step, args.repeats)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frames", type=int, default=75)
    ap.add_argument("--only", default="frontend,heads,synth,generator,disc-mpd,disc-mrd")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    only = set(args.only.split(","))
    rows = []
    if "frontend" in only:
        for size in ((32, 48), (48, 72)):
            rows.append((f"frontend@{size[0]}x{size[1]}", *bench_frontend(size, args)))
    for name, fn in (("heads", bench_heads), ("synth", bench_synth), ("generator", bench_generator)):
        if name in only:
            rows.append((name, *fn(args)))
    for kind in ("mpd", "mrd"):
        if f"disc-{kind}" in only:
            rows.append((f"disc-{kind}", *bench_disc(kind, args)))
    print(f"batch {args.batch} x {args.frames} frames, {args.threads} threads, median of {args.repeats} "
          f"(forward + backward)")
    for name, params, sec in rows:
        print(f"{name:18s} params {params / 1e6:6.2f}M  {sec * 1000:8.0f} ms/batch  {args.batch / sec:7.1f} clips/s")


if __name__ == "__main__":
    main()
