"""Write generated scenes and drives in Cityscapes' layout, in parallel, with a progress bar.

Layout (what :func:`~sparserefine_ros.data.cityscapes.find_samples` and real Cityscapes share)::

    <out>/leftImg8bit/<split>/<city>/<city>_<seq:06d>_<frame:06d>_leftImg8bit.png
    <out>/gtFine/<split>/<city>/<city>_<seq:06d>_<frame:06d>_gtFine_labelTrainIds.png
    <out>/gtFine/<split>/<city>/<city>_<seq:06d>_<frame:06d>_gtFine_labelIds.png

Seeds: image ``i`` of a split is rendered from ``[seed, SPLIT_IDS[split], i]``, so the three
splits never share a scene and any image can be regenerated alone.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
from tqdm import tqdm

from sparserefine_ros.data.scenes import Drive, Frame, generate_scene

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
CITY = "synth"
DRIVE_CITY = "drive"


def scene_seed(seed: int, split: str, index: int) -> list[int]:
    """The seed of image ``index`` of ``split``; distinct splits give disjoint seeds."""
    if split not in SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_IDS)}")
    return [seed, SPLIT_IDS[split], index]


def sample_paths(out: Path, split: str, city: str, seq: int, frame: int) -> tuple[Path, Path, Path]:
    """(image, labelTrainIds, labelIds) paths of one sample."""
    name = f"{city}_{seq:06d}_{frame:06d}"
    gt = out / "gtFine" / split / city
    return (
        out / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png",
        gt / f"{name}_gtFine_labelTrainIds.png",
        gt / f"{name}_gtFine_labelIds.png",
    )


def write_frame(frame: Frame, paths: tuple[Path, Path, Path]) -> None:
    image_path, train_path, ids_path = paths
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
    ok = cv2.imwrite(str(image_path), cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
    ok &= cv2.imwrite(str(train_path), frame.train_ids)
    ok &= cv2.imwrite(str(ids_path), frame.label_ids)
    if not ok:
        raise OSError(f"could not write {image_path.name} and its labels")


def _run(
    tasks: Iterable, job: Callable, count: int, workers: int, desc: str, init=None, initargs=()
):
    # One OpenCV thread per worker: the workers are the parallelism, oversubscription only slows.
    cv2.setNumThreads(1)
    if workers <= 1:
        if init is not None:
            init(*initargs)
        for _ in tqdm(map(job, tasks), total=count, desc=desc, unit="img"):
            pass
        return
    ctx = mp.get_context("spawn")  # no fork: torch or ROS may already hold threads in the parent
    with ctx.Pool(workers, initializer=init, initargs=initargs) as pool:
        for _ in tqdm(pool.imap_unordered(job, tasks), total=count, desc=desc, unit="img"):
            pass


def _write_scene(task: tuple[str, str, int, int, tuple[int, int]]) -> None:
    out, split, seed, index, size = task
    cv2.setNumThreads(1)
    frame = generate_scene(scene_seed(seed, split, index), size)
    write_frame(frame, sample_paths(Path(out), split, CITY, index, 0))


def write_split(
    out: str | Path,
    split: str,
    count: int,
    seed: int = 0,
    size: tuple[int, int] = (2048, 1024),
    workers: int = 2,
    start: int = 0,
) -> None:
    """Render images ``start .. start+count-1`` of ``split`` into ``out`` (Cityscapes layout)."""
    scene_seed(seed, split, 0)  # validates the split name before any work starts
    tasks = [(str(out), split, seed, i, size) for i in range(start, start + count)]
    _run(tasks, _write_scene, count, workers, f"{split} scenes")


_DRIVE: Drive | None = None


def _init_drive(seed: int, frames: int, fps: float, size: tuple[int, int], speed: float) -> None:
    global _DRIVE
    _DRIVE = Drive(seed, frames, fps, size, speed)


def _write_drive_frame(task: tuple[str, str, int, int]) -> None:
    out, split, seq, index = task
    cv2.setNumThreads(1)
    write_frame(_DRIVE.frame(index), sample_paths(Path(out), split, DRIVE_CITY, seq, index))


def write_drive(
    out: str | Path,
    frames: int,
    fps: float = 15.0,
    seed: int = 0,
    size: tuple[int, int] = (2048, 1024),
    speed: float = 10.0,
    split: str = "sequence",
    workers: int = 2,
) -> Path:
    """Render one drive as consecutive frames (sequence number = seed) plus ``sequence.json``
    (fps, size, frame names and timestamps), which the rosbag and camera tools read."""
    out = Path(out)
    Drive(seed, frames, fps, size, speed)  # validates the arguments before starting workers
    tasks = [(str(out), split, seed, i) for i in range(frames)]
    _run(
        tasks,
        _write_drive_frame,
        frames,
        workers,
        "drive frames",
        _init_drive,
        (seed, frames, fps, size, speed),
    )
    meta = {
        "split": split,
        "city": DRIVE_CITY,
        "seed": seed,
        "fps": fps,
        "speed_mps": speed,
        "size": list(size),
        "frames": [
            {"name": sample_paths(out, split, DRIVE_CITY, seq=seed, frame=i)[0].name, "t": i / fps}
            for i in range(frames)
        ],
    }
    path = out / "leftImg8bit" / split / DRIVE_CITY / f"sequence_{seed:06d}.json"
    path.write_text(json.dumps(meta, indent=1))
    return path
