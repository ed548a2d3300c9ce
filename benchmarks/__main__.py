"""Every benchmark in turn: ``python -m benchmarks`` (each prints its figures and ratios).

The Kafka benchmarks each start and stop a private broker and stack; run one alone with
``python -m benchmarks.<name> --help`` to see its options.
"""

from __future__ import annotations

import runpy
import sys

BENCHMARKS = ("core", "replay", "roundtrip", "throughput", "rollback")


def main() -> None:
    for name in BENCHMARKS:
        print(f"\n== benchmarks.{name}", flush=True)
        sys.argv = [f"benchmarks.{name}"]
        try:
            runpy.run_module(f"benchmarks.{name}", run_name="__main__")
        except SystemExit as exc:
            if exc.code not in (None, 0):
                print(f"benchmarks.{name} failed: {exc.code}", file=sys.stderr)


if __name__ == "__main__":
    main()
