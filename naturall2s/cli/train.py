"""python -m naturall2s train --variant NAME --stage STAGE [--key value ...]"""
HELP = ("train a variant (stages: lipreader, vocoder, synth), the content judge or a live student; CPU, one GPU, "
        "or torchrun DDP")
DESCRIPTION = """Train one stage of one variant; every field of naturall2s.train.TrainConfig is a flag.
Resumable: rerun the same command and it continues from <run-dir>/state.pt.
The full CPU recipe (README, "Training") is: lipreader (mel-gl) -> vocoder (mel-vocoder) and synth
(naturall2s-noddsp, naturall2s) initialised from the lip reader; --stage judge trains the content judge whose
word loss (--judge PATH, weight content/ce) supervises generated speech; --stage live trains the live student of a
finished model (--init) for streaming. Under torchrun, one process per GPU/CPU share."""


def add_arguments(parser):
    from naturall2s.train import add_config_arguments

    add_config_arguments(parser)


def run(args) -> int:
    from naturall2s.train import config_from_args, train

    result = train(config_from_args(args))
    print(f"done: step {result['step']}, best validation score {result['best']:.4f}, run folder {result['run_dir']}")
    return 0
