"""``make demo``: the tiny checkpoint, a real photo, and GR00T N1.5 backbone features of it.

Runs on the CPU with the locally generated tiny checkpoint (same code path as the real 3B model).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from . import cli
from .tiny_checkpoint import write_tiny_checkpoint


def demo_photos(out: Path) -> list[Path]:
    """Two real photos shipped by scikit-image, written as PNG files (two 'cameras')."""
    from skimage import data

    paths = []
    for name in ("coffee", "chelsea"):
        path = out / f"{name}.png"
        if not path.exists():
            Image.fromarray(getattr(data, name)()).save(path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo_out", help="working folder (default: demo_out)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "tiny_checkpoint"
    write_tiny_checkpoint(checkpoint)  # a few seconds; rewritten so it always matches this code
    print(f"wrote the tiny checkpoint to {checkpoint}")
    photos = demo_photos(out)
    print(f"$ groot-sage features --checkpoint {checkpoint} --image {photos[0]} --image {photos[1]} "
          "--instruction 'pick up the coffee cup' --device cpu --dtype float32")
    return cli.main([
        "features", "--checkpoint", str(checkpoint), "--image", str(photos[0]), "--image", str(photos[1]),
        "--instruction", "pick up the coffee cup", "--device", "cpu", "--dtype", "float32",
    ])  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
