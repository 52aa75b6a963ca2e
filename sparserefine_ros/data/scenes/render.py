"""Frames, scenes and drives: the public API of the generator."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sparserefine_ros.labels import ID_TO_TRAIN_ID

from .camera import Camera, Canvas
from .compose import compose
from .drawing import draw_ground, draw_skyline
from .painting import _draw_hood, _draw_objects, _sun_shadows
from .world import World, build_world


@dataclass
class Frame:
    """One rendered frame: RGB image (H, W, 3) uint8 and labels as Cityscapes label ids (H, W)."""

    image: np.ndarray
    label_ids: np.ndarray

    @property
    def train_ids(self) -> np.ndarray:
        return ID_TO_TRAIN_ID[self.label_ids]


def make_camera(
    world: World, size: tuple[int, int], x: float = 0.0, z: float = 0.0, yaw: float = 0.0
) -> Camera:
    """Camera of a Cityscapes-like rig scaled to ``size`` = (width, height): focal 1.1 x width."""
    width, height = size
    return Camera(
        width,
        height,
        1.1 * width,
        width / 2.0,
        world.horizon * height,
        x,
        world.camera_height,
        z,
        yaw,
    )


def render(world: World, camera: Camera, t: float, rng: np.random.Generator) -> Frame:
    """Paint the world seen by ``camera`` at time ``t`` (seconds; moving objects move)."""
    canvas = Canvas(camera)
    draw_skyline(canvas, world)
    draw_ground(canvas, world)
    _sun_shadows(canvas, world)
    _draw_objects(canvas, world, world.frontage, t, view=400.0)
    _draw_objects(canvas, world, world.objects, t, view=250.0)
    _draw_hood(canvas, world)
    image = compose(canvas, world, rng)
    return Frame(image, np.array(canvas.labels, dtype=np.uint8)[canvas.parts])


def generate_scene(seed, size: tuple[int, int] = (2048, 1024)) -> Frame:
    """One independent street scene; ``seed`` is anything ``numpy.random.default_rng`` takes."""
    rng = np.random.default_rng(seed)
    world = build_world(rng)
    camera = make_camera(world, size, x=rng.uniform(-0.4, 0.4), yaw=rng.normal(0.0, 0.04))
    return render(world, camera, 0.0, rng)


class Drive:
    """Consecutive frames of one drive: the camera moves at ``speed`` m/s, sampled at ``fps``.

    The world, lighting style and traffic come from ``seed``; frame i is rendered at
    t = i / fps with its own nuisance seed, so any frame can be rendered alone (parallel workers).
    """

    def __init__(
        self, seed: int, frames: int, fps: float = 15.0, size=(2048, 1024), speed: float = 10.0
    ):
        if fps <= 0 or frames <= 0:
            raise ValueError("frames and fps must be positive")
        self.seed, self.frames, self.fps, self.size, self.speed = seed, frames, fps, size, speed
        rng = np.random.default_rng([seed, 1])
        self.world = build_world(rng, length=speed * frames / fps, ego_speed=speed)
        self.sway = rng.uniform(0.0, 6.28)

    def camera(self, index: int) -> Camera:
        t = index / self.fps
        x = 0.25 * math.sin(0.3 * t + self.sway)  # gentle lane wobble and matching heading
        yaw = 0.25 * 0.3 * math.cos(0.3 * t + self.sway) / max(self.speed, 1e-3)
        return make_camera(self.world, self.size, x=x, z=self.speed * t, yaw=yaw)

    def frame(self, index: int) -> Frame:
        if not 0 <= index < self.frames:
            raise IndexError(f"frame {index} outside 0..{self.frames - 1}")
        return render(
            self.world,
            self.camera(index),
            index / self.fps,
            np.random.default_rng([self.seed, 2, index]),
        )
