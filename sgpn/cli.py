"""The ``sgpn`` console command."""

from __future__ import annotations

import argparse
import json
import sys


def _bench(args: argparse.Namespace) -> int:
    from sgpn.bench import BENCHMARKS

    for name in args.names:
        print(json.dumps({"bench": name, **BENCHMARKS[name]()}), flush=True)
    return 0


def _figures(args: argparse.Namespace) -> int:
    from sgpn.figures import make_figures

    for path in make_figures(args.out, args.names or None):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from sgpn.bench import BENCHMARKS

    parser = argparse.ArgumentParser(prog="sgpn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="run benchmarks; each prints one JSON line")
    bench.add_argument("names", nargs="+", choices=sorted(BENCHMARKS), metavar="NAME",
                       help=f"one or more of: {', '.join(sorted(BENCHMARKS))}")
    bench.set_defaults(func=_bench)
    figures = sub.add_parser("figures", help="regenerate the kit's figures headless")
    figures.add_argument("names", nargs="*", help="figure names (default: all)")
    figures.add_argument("--out", default="figures", help="output folder")
    figures.set_defaults(func=_figures)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
