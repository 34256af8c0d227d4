"""``groot-sage make-bag``: ARC-AGI tasks or a photo folder -> a rosbag2 bag that ``ros2 bag play`` accepts."""

from __future__ import annotations

from pathlib import Path

from ..families.common.images import to_rgb_uint8
from ..output_folder import check_owned
from ..serving.images import read_image
from .arc import ARC_INSTRUCTION, arc_frames
from .bags import CameraFrame, write_camera_bag

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
DEFAULT_INSTRUCTION = "Perform the default behavior."


def folder_frames(folder: Path, hz: float, start_ns: int):
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"--images {folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    for k, path in enumerate(paths):
        yield CameraFrame(start_ns + int(k * 1e9 / hz), to_rgb_uint8(read_image(path), str(path)), f"photo/{path.name}")


def make_bag(args) -> dict:
    check_owned(Path(args.out), "bag")  # a user's folder is refused before any rendering
    start_ns = int(args.start * 1e9)
    if args.arc:
        frames = [frame for frame, _ in arc_frames(args.limit, args.hz, start_ns, args.arc_split)]
        instruction = args.instruction or ARC_INSTRUCTION
        # re-sent at every task's first frame, as an operator would
        task_starts = [f.stamp_ns for f in frames if f.frame_id.endswith("/0")]
        instructions = [(stamp, instruction) for stamp in task_starts]
    else:
        folder = Path(args.images)
        if not folder.is_dir():
            raise ValueError(f"--images {folder}: not a folder")
        frames = list(folder_frames(folder, args.hz, start_ns))
        instructions = [(start_ns, args.instruction or DEFAULT_INSTRUCTION)]
    bag = write_camera_bag(
        args.out,
        frames,
        instructions,
        camera_topic=args.camera_topic,
        instruction_topic=args.instruction_topic,
        compressed=args.compressed,
        storage=args.storage,
    )
    topic = args.camera_topic + (
        "/compressed" if args.compressed and not args.camera_topic.endswith("/compressed") else ""
    )
    return {
        "bag": str(bag),
        "frames": len(frames),
        "instructions": len(instructions),
        "camera_topic": topic,
        "instruction_topic": args.instruction_topic,
        "storage": args.storage,
    }
