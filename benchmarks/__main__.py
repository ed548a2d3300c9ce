"""Run benchmarks: ``python -m benchmarks [NAME …]`` (each prints its figures and ratios).

With no name every benchmark runs in turn. The Kafka benchmarks each start and stop a private
broker and stack; ``python -m benchmarks.<name> --help`` lists one benchmark's own options.
"""

from __future__ import annotations

import argparse
import runpy
import sys

BENCHMARKS: dict[str, str] = {
    "core": "pure evaluation (authority + policy + trace) against cedarpy, no Kafka",
    "codec": "encode + decode of decision traces (compiled and generic paths), no Kafka",
    "replay": "folding 1,000,000 governance events to a point in time, no Kafka",
    "handler": "the evaluator's work per request by stage, warm and evicted caches, no Kafka",
    "roundtrip": "SDK -> Kafka -> evaluator -> Kafka -> SDK latency at fixed request rates",
    "throughput": "sustained decisions/s of one evaluator worker, CPU per decision per process",
    "rollback": "rollback accepted -> first decision under the restored version",
    "audit": "DuckDB over 10,000,000 exported decisions; export throughput from Kafka",
}


def _parser() -> argparse.ArgumentParser:
    listing = "\n".join(f"  {name:<11} {what}" for name, what in BENCHMARKS.items())
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run Decision Ledger benchmarks (DESIGN §11); each prints its figures and "
        "the ratio to its target.",
        epilog=f"benchmarks:\n{listing}\n\nOne benchmark's options: python -m benchmarks.NAME --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="benchmarks to run, in order (default: all)",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list:
        for name, what in BENCHMARKS.items():
            print(f"{name:<11} {what}")
        return 0
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)} (one of: {', '.join(BENCHMARKS)})")
    failed = []
    for name in args.names or list(BENCHMARKS):
        print(f"\n== benchmarks.{name}", flush=True)
        sys.argv = [f"benchmarks.{name}"]
        try:
            runpy.run_module(f"benchmarks.{name}", run_name="__main__")
        except SystemExit as exc:
            if exc.code not in (None, 0):
                print(f"benchmarks.{name} failed: {exc.code}", file=sys.stderr)
                failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
