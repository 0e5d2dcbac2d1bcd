"""`python -m testbed bench`: the flags, and the run they start."""
import argparse
import json
from pathlib import Path

from .report import format_report, plot_report
from .run import benchmark
from .variants import MODELS, VARIANTS, Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Config()
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=list(MODELS), default=defaults.model,
                       help="architecture with random weights (default %(default)s)")
    model.add_argument("--full", action="store_true",
                       help="full-size UNet (SD1.5 859 M parameters, SDXL 2.6 G) instead of the tiny twin, which "
                            "keeps every block with narrow channels: quick, but its time is mostly attention")
    model.add_argument("--checkpoint", metavar="FILE.safetensors",
                       help="take the UNet weights from a single-file checkpoint (ldm/sgm keys "
                            "model.diffusion_model.*); the architecture is read from it and --model/--full ignored")
    run = parser.add_argument_group("sampling schedule")
    run.add_argument("--width", type=int, default=defaults.width, help="target width in pixels (default %(default)s)")
    run.add_argument("--height", type=int, default=defaults.height,
                     help="target height in pixels (default %(default)s)")
    run.add_argument("--batch", type=int, default=defaults.batch,
                     help="UNet batch; the webui batches cond+uncond, so 2 = one image with CFG (default %(default)s)")
    run.add_argument("--steps", type=int, default=defaults.steps,
                     help="executed sampling steps, one UNet call each; scale down from 20 keeping the phase "
                          "proportions (5 or 10 at T1 0.4) (default %(default)s)")
    run.add_argument("--t1", type=float, help="T1 ratio override (default: the official table for the size)")
    run.add_argument("--t2", type=float, help="T2 ratio override (default: the official table for the size)")
    run.add_argument("--strength", type=float, default=defaults.strength,
                     help="Hires. fix denoising strength: its second pass runs int(strength*steps)+1 steps "
                          "(default %(default)s)")
    run.add_argument("--hires-steps", type=int,
                     help="Hires. fix second-pass steps before the strength cut (default: --steps, as the webui)")
    measure = parser.add_argument_group("measurement")
    measure.add_argument("--variants", default=",".join(defaults.variants),
                         help="comma-separated subset of: " + "; ".join(f"{k} = {v}" for k, v in VARIANTS.items()))
    measure.add_argument("--repeats", type=int, default=defaults.repeats,
                         help="timed runs of each variant, interleaved call by call across variants, after one "
                              "untimed call per phase that measures its memory; medians are reported "
                              "(default %(default)s)")
    measure.add_argument("--steps-per-phase", type=int, metavar="N",
                         help="time only the first N steps of each phase and scale by its steps: for sizes where "
                              "a call takes minutes (default: every step)")
    measure.add_argument("--seed", type=int, default=defaults.seed,
                         help="seed of the weights, inputs and window shifts (default %(default)s)")
    measure.add_argument("--device", default=defaults.device,
                         help="auto (CUDA with fp16 when available, else CPU fp32), cpu, cuda or cuda:N "
                              "(default %(default)s)")
    measure.add_argument("--threads", type=int,
                         help="CPU threads (default: torch's choice, usually one per core)")
    measure.add_argument("--profile", action="store_true",
                         help="one more call per phase under torch.profiler: where its time goes by kind of op "
                              "(convolution, attention, our gathers, ...) and outside any op (CPU only)")
    output = parser.add_argument_group("output")
    output.add_argument("--json", metavar="FILE", help="write the full report as JSON")
    output.add_argument("--plot", metavar="FILE.png", help="bar chart of UNet time per variant and phase")
    output.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def config_from_args(args: argparse.Namespace) -> Config:
    names = set(Config.__dataclass_fields__) - {"variants"}
    config = Config(**{name: getattr(args, name) for name in names})
    config.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    return config


def main(args: argparse.Namespace) -> dict:
    report = benchmark(config_from_args(args), progress=not args.no_progress)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    if args.plot:
        plot_report(report, args.plot)
    return report
