"""Painting a frame's objects far to near, their cast shadows, and the ego car's hood."""

from __future__ import annotations

import math

import numpy as np

from .camera import (
    EGO,
    Canvas,
)
from .drawing import DRAW_STATIC
from .road_users import DRAW_MOVING
from .world import Obj, World


def _draw_objects(canvas: Canvas, world: World, objects: list[Obj], t: float, view: float) -> None:
    cam = canvas.cam
    visible = []
    for o in objects:
        z0 = o.z_at(t) if o.vz else o.z
        near = z0 - cam.z
        if near + o.length < -2.0 or near > view:
            continue
        # Draw order: farthest first, by the object's nearest point (Euclidean in the ground plane).
        dz = max(0.0, near) if near > 0 else min(0.0, near + o.length)
        visible.append((math.hypot(o.x - cam.x, dz), o))
    for _, o in sorted(visible, key=lambda item: -item[0]):
        if o.kind in DRAW_MOVING:
            DRAW_MOVING[o.kind](canvas, world, o, t)
        else:
            DRAW_STATIC[o.kind](canvas, world, o)


def _sun_shadows(canvas: Canvas, world: World) -> None:
    """Buildings on the sun's side shade the street; trees drop dappled shade."""
    if world.style != "sunny":
        return
    polys = []
    for o in world.frontage:
        if o.kind == "building" and o.params["side"] == world.sun_side:
            reach = -world.sun_side * o.params["height"] * 0.6
            polys.append(
                np.array(
                    [
                        [o.x, 0.0, o.z],
                        [o.x, 0.0, o.z + o.length],
                        [o.x + reach, 0.0, o.z + o.length + 4.0],
                        [o.x + reach, 0.0, o.z + 4.0],
                    ]
                )
            )
    canvas.ground_shadow(polys, 200)


def _draw_hood(canvas: Canvas, world: World) -> None:
    h, w = canvas.h, canvas.w
    top = h * (1.0 - world.ego_hood)
    xs = np.linspace(0, w, 33)
    ys = top + (h * world.ego_hood * 0.5) * ((xs - w / 2) / (w / 2)) ** 2
    pts = np.concatenate([np.stack([xs, ys], 1), [[w, h], [0, h]]])
    canvas.fill_px([pts], canvas.part(EGO, (0.15, 0.15, 0.17), "metal", 1.0))
