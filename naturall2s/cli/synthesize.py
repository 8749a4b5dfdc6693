"""python -m naturall2s synthesize VIDEO -o out.wav [--model NAME] [--video-out dubbed.mp4]"""
HELP = "speech for a silent talking-face video (writes a wav, optionally a dubbed mp4)"


def add_arguments(parser):
    from naturall2s.landmarks import DETECTOR_NAMES
    from naturall2s.model import DEFAULT_SEED

    parser.add_argument("video", help="input video (any common container; its own sound, if any, is used only to check that the voice is like the training speaker's)")
    parser.add_argument("-o", "--output", default="out.wav", help="output wav, 16 kHz mono (default: %(default)s)")
    parser.add_argument("--model", default="naturall2s", metavar="NAME",
                        help="model name (python -m naturall2s models) or .safetensors path (default: %(default)s)")
    parser.add_argument("--video-out", default=None, metavar="MP4",
                        help="also write the video with the new audio as its sound track (default: no video)")
    parser.add_argument("--detector", default="auto", choices=DETECTOR_NAMES,
                        help="face landmark detector (default: %(default)s: FAN when its weights are on disk, "
                             "else MediaPipe)")
    parser.add_argument("--max-seconds", type=float, default=None, metavar="S",
                        help="refuse clips longer than S seconds (default: naturall2s.video.MAX_SECONDS, 60 s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="seed of the noise excitation: the same clip, model and seed give the same waveform "
                             "(default: %(default)s, as in the studio and the evaluation)")
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help="lipvoicer models: Euler steps of the flow (default: the model's, chosen on val)")
    parser.add_argument("--guidance", type=float, default=None, metavar="W",
                        help="lipvoicer models: scale of the content judge's guidance toward the lip-read words, 0 for "
                             "none (default: the model's, chosen on val)")
    parser.add_argument("--device", default="cpu", help="torch device to run the model on (default: %(default)s)")


def run(args) -> int:
    import sys

    from naturall2s import load_model
    from naturall2s.audio import save_audio
    from naturall2s.domain import assess
    from naturall2s.landmarks import get_detector
    from naturall2s.roi import extract_mouth

    model = load_model(args.model, device=args.device)
    model.sampling_options(args.steps, args.guidance)  # a bad value (or one for a model that does not sample): now
    kwargs = {"max_seconds": args.max_seconds} if args.max_seconds is not None else {}
    clip = extract_mouth(args.video, detector=get_detector(args.detector), **kwargs)
    result = model.synthesize(clip, seed=args.seed, steps=args.steps, guidance=args.guidance)
    save_audio(args.output, result.wav, result.sample_rate)
    duration = len(result.wav) / result.sample_rate
    print(f"{args.output}: {duration:.2f} s of speech from {model.name} in {result.seconds:.2f} s "
          f"(real-time factor {result.seconds / max(duration, 1e-9):.3f})")
    if result.text:
        print(f"lip-read text: {result.text}")
    report = assess(clip, model=model, synthesis=result)
    if not report.in_domain:
        print(f"warning: {report.message}", file=sys.stderr)
    if args.video_out:
        from naturall2s.video import mux_audio

        mux_audio(args.video, result.wav, result.sample_rate, args.video_out)
        print(f"{args.video_out}: dubbed video")
    return 0
