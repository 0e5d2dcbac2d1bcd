"""`python -m testbed bench ...`: see `python -m testbed bench --help`."""
import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed",
                                     description="HiDiffusion for ldm/sgm UNets: tools that need no webui.")
    commands = parser.add_subparsers(dest="command", required=True)
    from . import bench
    from .bench import cli
    bench_parser = commands.add_parser(
        "bench", help="measure speed and memory of HiDiffusion against vanilla, the official code and Hires. fix",
        description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_arguments(bench_parser)
    args = parser.parse_args(argv)
    if args.command == "bench":
        cli.main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
