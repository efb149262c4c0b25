"""Re-render a known-answer bench report (``<name>.md`` / ``.png`` / ``.json``) from its saved JSON.

    python benchmarks/motion_report.py benchmarks/results/motion.json            # rewrite next to it
    python benchmarks/motion_report.py runs/bench_motion_cpu/partial.json --out benchmarks/results --name motion

The second form reports a bench that was stopped early from the runs it finished (``partial.json`` is
rewritten after every run); the tables show how many seeds each row has.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from videomask.bench import write_motion_report  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("json", type=Path)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the JSON's folder)")
    p.add_argument("--name", default=None, help="file name stem (default: the JSON's stem)")
    args = p.parse_args(argv)
    result = json.loads(args.json.read_text())
    paths = write_motion_report(result, args.out or args.json.parent, args.name or args.json.stem)
    print(f"wrote {paths['md']}, {paths['json']}, {paths['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
