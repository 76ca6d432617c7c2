"""Look at and time the concept world.

    python -m immunobench.world sheet --out world.png [--size 64] [--n 8] [--concepts van-gogh,church]
    python -m immunobench.world speed [--size 64] [--n 4]
"""
from __future__ import annotations

import argparse
import sys
import time

from . import CONCEPTS, INSTANCES, OBJECTS, STYLES, contact_sheet, get_concept, render


def _speed(size: int, n: int) -> None:
    groups = {"styles": STYLES, "objects": OBJECTS, "instances": INSTANCES}
    total_images, total_time = 0, 0.0
    render(STYLES[0], 0, 0, size)  # warm caches
    for name, ids in groups.items():
        start = time.perf_counter()
        for cid in ids:
            for i in range(n):
                render(cid, i, 0, size)
        elapsed = time.perf_counter() - start
        total_images += len(ids) * n
        total_time += elapsed
        print(f"{name:9s} {len(ids) * n / elapsed:7.1f} images/s at {size} px")
    print(f"{'all':9s} {total_images / total_time:7.1f} images/s at {size} px (one process, one core)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m immunobench.world", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sheet = sub.add_parser("sheet", help="write a contact sheet PNG (one row per concept)")
    sheet.add_argument("--out", required=True)
    sheet.add_argument("--size", type=int, default=64)
    sheet.add_argument("--n", type=int, default=8, help="images per concept")
    sheet.add_argument("--seed", type=int, default=0)
    sheet.add_argument("--concepts", default="", help="comma-separated ids (default: every concept)")
    speed = sub.add_parser("speed", help="measure render throughput")
    speed.add_argument("--size", type=int, default=64)
    speed.add_argument("--n", type=int, default=4, help="images per concept")
    args = parser.parse_args(argv)
    if args.command == "sheet":
        ids = [get_concept(c.strip()).id for c in args.concepts.split(",") if c.strip()] or list(CONCEPTS)
        print(contact_sheet(ids, args.n, args.size, args.out, seed=args.seed))
    else:
        _speed(args.size, args.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
