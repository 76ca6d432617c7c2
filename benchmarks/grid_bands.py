"""What a personalization grid's generations keep of the references' background, by pixel statistics.

Reads PNGs written by ``personalization_lora.py --grids`` (world check's grid layout: the
references, then ``--per-checkpoint`` generations per checkpoint) and reports, per group of tiles, the
mean RGB of the top rows (sky) and bottom rows (ground), and the share of bottom-row pixels that are
green (G above R by 10 and above B). Judge-free, so it can tell whether a judge's verdict follows the
images: castle's references stand on green ground under a light sky.

    .venv/bin/python benchmarks/grid_bands.py benchmarks/results/world_check_n20/castle_grids/*.png \\
        --checkpoints 0 40 100 200 --out benchmarks/results/world_check_n20/castle_grids/bands.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from immunobench.world.check import GRID_PADDING as PAD, GRID_PER_ROW as PER_ROW


def tiles(path: Path, count: int) -> np.ndarray:
    """The first ``count`` tiles of a torchvision ``save_image`` grid, (count, tile, tile, 3) float."""
    grid = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    step = (grid.shape[1] - PAD) // PER_ROW  # a full row: PER_ROW tiles, each followed by its padding
    tile = step - PAD
    out = [grid[PAD + r * step : PAD + r * step + tile, PAD + c * step : PAD + c * step + tile]
           for r in range(grid.shape[0] // step) for c in range(PER_ROW)]
    if len(out) < count:
        raise ValueError(f"{path} holds {len(out)} tiles, fewer than the {count} expected; check --references, "
                         f"--per-checkpoint and --checkpoints")
    return np.stack(out[:count])


def bands(images: np.ndarray, top: int, bottom: int) -> dict:
    sky, ground = images[:, :top], images[:, -bottom:]
    r, g, b = (ground[..., i] for i in range(3))
    return {"top_rgb": [round(float(v), 1) for v in sky.mean((0, 1, 2))],
            "bottom_rgb": [round(float(v), 1) for v in ground.mean((0, 1, 2))],
            "bottom_green_share": round(float(((g > r + 10) & (g > b)).mean()), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("grids", nargs="+", type=Path)
    ap.add_argument("--checkpoints", type=int, nargs="+", required=True, help="the grid's checkpoints, in order")
    ap.add_argument("--references", type=int, default=6)
    ap.add_argument("--per-checkpoint", type=int, default=8, help="generations per checkpoint in the grid")
    ap.add_argument("--top", type=int, default=10, help="rows counted as sky")
    ap.add_argument("--bottom", type=int, default=7, help="rows counted as ground")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    result = {}
    for path in args.grids:
        n = args.per_checkpoint
        try:
            x = tiles(path, args.references + n * len(args.checkpoints))
        except (OSError, ValueError) as e:
            print(f"grid_bands: {e}", file=sys.stderr)
            sys.exit(2)
        groups = {"references": x[: args.references]}
        groups |= {f"step {s}": x[args.references + n * k : args.references + n * (k + 1)]
                   for k, s in enumerate(args.checkpoints)}
        result[path.name] = {name: bands(images, args.top, args.bottom) for name, images in groups.items()}
        for name, row in result[path.name].items():
            print(f"{path.name}  {name:10s}  {json.dumps(row)}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
