"""The world: a street layout and the objects on it, in metres, built from a seed.

Longer than most modules for a reason: every builder here draws from the one random stream of
the world's seed in a fixed order, so the same seed gives the same street; split apart, that
order would be spread over files and easy to break.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .camera import BUILDING, PERSON, STYLES, VEG


@dataclass
class Obj:
    """One thing in the world: ``kind`` picks the drawing function; ``vz`` is its speed (m/s)."""

    kind: str
    x: float
    z: float
    params: dict
    vz: float = 0.0
    length: float = 0.0  # extent along Z, for draw order

    def z_at(self, t: float) -> float:
        return self.z + self.vz * t


@dataclass
class World:
    """A straight street with everything on it; ``frontage`` is drawn before ``objects``."""

    road_left: float
    road_right: float
    sidewalk_left: float
    sidewalk_right: float
    lane_width: float
    lane_centers: list[float]
    z_min: float
    z_max: float
    crossings: list[tuple[float, float]]
    style: str
    sun_side: int  # -1: sun from the left, +1: from the right
    frontage: list[Obj] = field(default_factory=list)
    objects: list[Obj] = field(default_factory=list)
    skyline: list[tuple[float, float, float, float, int]] = field(default_factory=list)
    parking_right: float = 0.0
    camera_height: float = 1.3
    horizon: float = 0.45
    ego_hood: float = 0.12
    light: tuple[float, float, float] = (1.0, 1.0, 1.0)
    look: dict = field(default_factory=dict)  # camera response, fixed for a whole drive
    crown_cache: dict = field(default_factory=dict)


def _palette(rng: np.random.Generator, base, spread: float) -> tuple[float, float, float]:
    c = np.asarray(base, dtype=np.float64) * rng.uniform(1 - spread, 1 + spread)
    c = c + rng.normal(0, spread * 0.25, 3)
    return tuple(np.clip(c, 0.02, 0.98))


FACADES = (
    (0.75, 0.68, 0.55),
    (0.55, 0.55, 0.55),
    (0.62, 0.38, 0.30),
    (0.85, 0.82, 0.75),
    (0.80, 0.70, 0.45),
    (0.45, 0.48, 0.52),
    (0.70, 0.60, 0.60),
)
CAR_PAINT = (
    (0.08, 0.08, 0.09),
    (0.85, 0.85, 0.85),
    (0.55, 0.56, 0.58),
    (0.6, 0.08, 0.08),
    (0.1, 0.2, 0.5),
    (0.2, 0.3, 0.25),
    (0.45, 0.4, 0.35),
    (0.9, 0.9, 0.92),
)
CLOTHES = (
    (0.1, 0.1, 0.12),
    (0.2, 0.25, 0.45),
    (0.6, 0.1, 0.1),
    (0.85, 0.85, 0.8),
    (0.35, 0.3, 0.25),
    (0.5, 0.5, 0.55),
    (0.15, 0.35, 0.2),
    (0.8, 0.6, 0.2),
)


def build_world(rng: np.random.Generator, length: float = 0.0, ego_speed: float = 10.0) -> World:
    """A random street long enough for a camera to drive ``length`` metres from z=0 at
    ``ego_speed`` m/s; with ``length`` 0 nothing moves (a single frame)."""
    lane_w = rng.uniform(3.0, 3.6)
    lanes_left = int(rng.integers(0, 4))
    lanes_right = int(rng.integers(0, 2))
    parking = rng.uniform(2.0, 2.5) if rng.random() < 0.5 else 0.0
    road_l = -lane_w * (0.5 + lanes_left)
    road_r = lane_w * (0.5 + lanes_right) + parking
    world = World(
        road_left=road_l,
        road_right=road_r,
        sidewalk_left=road_l - rng.uniform(2.0, 5.0),
        sidewalk_right=road_r + rng.uniform(2.0, 5.0),
        lane_width=lane_w,
        lane_centers=[lane_w * k for k in range(-lanes_left, lanes_right + 1)],
        z_min=-40.0,
        z_max=length + 260.0,
        crossings=[],
        style=STYLES[int(rng.integers(len(STYLES)))],
        sun_side=int(rng.choice([-1, 1])),
        parking_right=parking,
        camera_height=rng.uniform(1.15, 1.6),
        horizon=rng.uniform(0.40, 0.48),
        ego_hood=rng.uniform(0.07, 0.15),
    )
    world.light = {
        "sunny": (1.08, 1.0, 0.9),
        "overcast": (0.92, 0.95, 1.0),
        "dusk": (0.75, 0.55, 0.45),
        "hazy": (0.95, 0.97, 1.0),
        "rainy": (0.6, 0.65, 0.72),
    }[world.style]
    world.look = {
        "exposure": rng.uniform(0.85, 1.15),
        "gamma": rng.uniform(1.0, 1.3),
        "vignette": rng.uniform(0.1, 0.3),
        "blur": rng.uniform(0.3, 1.0),
        "noise": rng.uniform(0.5, 1.5),
        "haze": rng.uniform(60.0, 150.0),
        "jpeg": int(rng.integers(40, 95)) if rng.random() < 0.7 else 0,
        "texture_seed": int(rng.integers(2**31)),
    }
    z = rng.uniform(25.0, 90.0)
    while z < world.z_max:
        width = rng.uniform(10.0, 18.0)
        world.crossings.append((z, z + width))
        z += width + rng.uniform(60.0, 160.0)
    for side in (-1, 1):
        _build_frontage(world, rng, side)
        _build_sidewalk_objects(world, rng, side)
    _build_traffic(world, rng, length, ego_speed)
    _build_crossing_objects(world, rng)
    x = -400.0
    while x < 400.0:
        w = rng.uniform(10.0, 40.0)
        label = VEG if rng.random() < 0.3 else BUILDING
        world.skyline.append((x, x + w, rng.uniform(8.0, 45.0), rng.uniform(350.0, 500.0), label))
        x += w * rng.uniform(0.7, 1.1)
    return world


def _in_crossing(world: World, z0: float, z1: float) -> bool:
    return any(z0 < b and z1 > a for a, b in world.crossings)


def _segments(world: World, rng: np.random.Generator):
    """Pieces of street frontage between crossings: (z0, z1)."""
    z = world.z_min
    for a, b in [*world.crossings, (world.z_max, world.z_max)]:
        while z < a - 1.0:
            end = min(a, z + rng.uniform(8.0, 40.0))
            yield z, end
            z = end
        z = b


def _build_frontage(world: World, rng: np.random.Generator, side: int) -> None:
    edge = world.sidewalk_right if side > 0 else world.sidewalk_left
    for z0, z1 in _segments(world, rng):
        kind = rng.choice(["building", "trees", "wall", "fence"], p=[0.58, 0.17, 0.12, 0.13])
        setback = rng.uniform(1.0, 5.0) if kind == "building" and rng.random() < 0.3 else 0.0
        if kind != "building" or setback > 0:
            depth = setback if kind == "building" else rng.uniform(6.0, 15.0)
            world.frontage.append(
                Obj("terrain", edge, z0, {"side": side, "depth": depth}, length=z1 - z0)
            )
        if kind == "building" or (kind != "trees" and rng.random() < 0.6):
            x_face = edge + side * (setback if kind == "building" else rng.uniform(8.0, 16.0))
            world.frontage.append(_building(rng, x_face, side, z0, z1))
        if kind == "trees":
            for tz in np.arange(z0 + rng.uniform(1, 5), z1, rng.uniform(4.0, 9.0)):
                world.objects.append(_tree(rng, edge + side * rng.uniform(1.5, 6.0), float(tz)))
            if rng.random() < 0.5:
                world.frontage.append(
                    Obj("hedge", edge + side * 0.6, z0, _hedge(rng, z1 - z0), length=z1 - z0)
                )
        elif kind == "wall":
            world.frontage.append(
                Obj(
                    "wall",
                    edge + side * 0.2,
                    z0,
                    {
                        "side": side,
                        "height": rng.uniform(0.5, 2.6),
                        "color": _palette(rng, (0.6, 0.58, 0.55), 0.2),
                    },
                    length=z1 - z0,
                )
            )
        elif kind == "fence":
            world.frontage.append(
                Obj(
                    "fence",
                    edge + side * 0.2,
                    z0,
                    {
                        "height": rng.uniform(0.9, 2.0),
                        "gap": rng.uniform(0.1, 0.25),
                        "picket": rng.uniform(0.025, 0.06),
                        "style": rng.choice(["picket", "rails"]),
                        "color": _palette(rng, (0.5, 0.45, 0.4), 0.35),
                    },
                    length=z1 - z0,
                )
            )
    for a, b in world.crossings:  # buildings down the cross street, seen through the gap
        x = edge + side * rng.uniform(15.0, 30.0)
        world.frontage.append(_building(rng, x, side, a - 5.0, b + rng.uniform(5.0, 20.0)))


def _building(rng: np.random.Generator, x_face: float, side: int, z0: float, z1: float) -> Obj:
    floors = int(rng.integers(2, 8))
    floor_h = rng.uniform(2.9, 3.6)
    return Obj(
        "building",
        x_face,
        z0,
        {
            "side": side,
            "depth": rng.uniform(10.0, 20.0),
            "height": floors * floor_h + rng.uniform(0, 2),
            "floor": floor_h,
            "floors": floors,
            "color": _palette(rng, FACADES[rng.integers(len(FACADES))], 0.12),
            "win_w": rng.uniform(0.9, 1.6),
            "win_h": rng.uniform(1.2, 1.9),
            "pitch": rng.uniform(2.2, 3.6),
            "glass": _palette(rng, (0.25, 0.3, 0.35), 0.3),
            "shop": rng.random() < 0.5,
            "shop_color": _palette(rng, CAR_PAINT[rng.integers(len(CAR_PAINT))], 0.2),
        },
        length=z1 - z0,
    )


def _tree(rng: np.random.Generator, x: float, z: float) -> Obj:
    green = (0.25, 0.42, 0.12) if rng.random() < 0.8 else (0.55, 0.45, 0.12)
    return Obj(
        "tree",
        x,
        z,
        {
            "trunk_h": rng.uniform(1.8, 4.0),
            "trunk_w": rng.uniform(0.15, 0.4),
            "radius": rng.uniform(1.5, 3.8),
            "color": _palette(rng, green, 0.2),
            "trunk": _palette(rng, (0.3, 0.25, 0.2), 0.2),
            "seed": int(rng.integers(2**31)),
        },
    )


def _hedge(rng: np.random.Generator, length: float) -> dict:
    n = max(2, int(length / 0.15))
    tops = rng.uniform(0.7, 1.6) + np.cumsum(rng.normal(0, 0.03, n)) + rng.uniform(-0.12, 0.12, n)
    return {"tops": np.clip(tops, 0.3, 2.5), "color": _palette(rng, (0.2, 0.35, 0.12), 0.25)}


def _person(rng: np.random.Generator, x: float, z: float, vz: float) -> Obj:
    return Obj(
        "person",
        x,
        z,
        {
            "height": rng.uniform(1.5, 1.95),
            "shirt": _palette(rng, CLOTHES[rng.integers(len(CLOTHES))], 0.2),
            "pants": _palette(rng, CLOTHES[rng.integers(len(CLOTHES))], 0.2),
            "skin": _palette(rng, (0.75, 0.58, 0.45), 0.3),
            "phase": rng.uniform(0, 6.28),
            "label": PERSON,
        },
        vz=vz,
    )


def _bike(
    rng: np.random.Generator, x: float, z: float, vz: float, motor: bool, ridden: bool, facing: str
) -> Obj:
    return Obj(
        "bike",
        x,
        z,
        {
            "motor": motor,
            "facing": facing,
            "color": _palette(rng, CAR_PAINT[rng.integers(len(CAR_PAINT))], 0.2),
            "rider": _person(rng, x, z, vz) if ridden else None,
        },
        vz=vz,
        length=1.8,
    )


def _vehicle(
    rng: np.random.Generator, x: float, z: float, vz: float, kind: str, facing: int
) -> Obj:
    dims = {
        "car": (rng.uniform(1.7, 1.95), rng.uniform(3.9, 4.9), rng.uniform(1.35, 1.6)),
        "truck": (2.4, rng.uniform(6.0, 9.0), rng.uniform(2.8, 3.6)),
        "bus": (2.55, rng.uniform(11.0, 13.0), rng.uniform(2.9, 3.2)),
        "train": (2.4, rng.uniform(25.0, 35.0), 3.3),
    }[kind]
    paint = CAR_PAINT[rng.integers(len(CAR_PAINT))] if kind == "car" else (0.75, 0.75, 0.7)
    if kind in ("bus", "train") and rng.random() < 0.6:
        paint = ((0.8, 0.75, 0.2), (0.7, 0.15, 0.15), (0.2, 0.45, 0.7))[rng.integers(3)]
    return Obj(
        kind,
        x,
        z,
        {
            "w": dims[0],
            "l": dims[1],
            "h": dims[2],
            "color": _palette(rng, paint, 0.1),
            "facing": facing,
            "glass": _palette(rng, (0.12, 0.14, 0.17), 0.3),
        },
        vz=vz,
        length=dims[1],
    )


def _build_sidewalk_objects(world: World, rng: np.random.Generator, side: int) -> None:
    curb = world.road_right if side > 0 else world.road_left
    edge = world.sidewalk_right if side > 0 else world.sidewalk_left
    z = world.z_min + rng.uniform(0, 20)
    while z < world.z_max:  # street lamps near the curb
        if not _in_crossing(world, z - 1, z + 1):
            world.objects.append(
                Obj(
                    "lamp",
                    curb + side * 0.5,
                    z,
                    {"height": rng.uniform(6, 9), "side": side, "arm": rng.uniform(0.8, 2.2)},
                )
            )
        z += rng.uniform(18.0, 35.0)
    z = world.z_min + rng.uniform(0, 30)
    while z < world.z_max:  # traffic signs
        world.objects.append(Obj("sign", curb + side * rng.uniform(0.3, 0.8), z, _sign(rng)))
        z += rng.uniform(10.0, 40.0)
    z = world.z_min
    while z < world.z_max:  # pedestrians, in small groups
        z += rng.exponential(16.0)
        for _ in range(int(rng.integers(1, 4))):
            x = rng.uniform(curb, edge) if side > 0 else rng.uniform(edge, curb)
            vz = rng.choice([-1, 1]) * rng.uniform(0.0, 1.6)
            world.objects.append(_person(rng, float(x), z + rng.uniform(-1.5, 1.5), vz))
    z = world.z_min + rng.uniform(0, 40)
    while z < world.z_max:  # parked bicycles, bins
        if rng.random() < 0.6:
            for k in range(int(rng.integers(1, 5))):
                world.objects.append(
                    _bike(
                        rng,
                        edge - side * rng.uniform(0.5, 1.2),
                        z + 0.7 * k,
                        0.0,
                        rng.random() < 0.2,
                        False,
                        "side",
                    )
                )
        else:
            world.objects.append(
                Obj("bin", curb + side * 0.6, z, {"color": _palette(rng, (0.2, 0.3, 0.2), 0.4)})
            )
        z += rng.uniform(15.0, 45.0)
    if rng.random() < 0.35:  # trees along the curb too
        for tz in np.arange(world.z_min + rng.uniform(0, 10), world.z_max, rng.uniform(7.0, 14.0)):
            if not _in_crossing(world, tz - 2, tz + 2):
                world.objects.append(_tree(rng, curb + side * rng.uniform(0.8, 1.5), float(tz)))


def _sign(rng: np.random.Generator) -> dict:
    shape = rng.choice(["circle", "triangle", "rect", "diamond"])
    face = {
        "circle": (0.85, 0.1, 0.1),
        "triangle": (0.92, 0.92, 0.9),
        "rect": (0.1, 0.3, 0.7),
        "diamond": (0.95, 0.8, 0.1),
    }[shape]
    return {
        "shape": shape,
        "size": rng.uniform(0.45, 0.9),
        "height": rng.uniform(2.0, 3.2),
        "face": _palette(rng, face, 0.1),
        "second": rng.random() < 0.3,
    }


def _build_traffic(world: World, rng: np.random.Generator, length: float, ego_speed: float) -> None:
    for lane in world.lane_centers:
        oncoming = lane < -0.1 and rng.random() < 0.6
        z = world.z_min + rng.uniform(0, 20)
        while z < world.z_max:
            clearance = 8.0 if lane == 0.0 else 3.0  # keep the ego car's own spot free
            if -12.0 < z < clearance:
                z = clearance + rng.uniform(2.0, 15.0)
            kind = rng.choice(["car", "truck", "bus"], p=[0.85, 0.09, 0.06])
            speed = (-1 if oncoming else 1) * rng.uniform(6.0, 13.0)
            if length == 0:
                speed = 0.0
            elif lane == 0.0:  # the car ahead keeps its distance
                speed = ego_speed
            v = _vehicle(
                rng, lane + rng.uniform(-0.3, 0.3), z, speed, str(kind), -1 if oncoming else 1
            )
            world.objects.append(v)
            z += v.params["l"] + rng.uniform(6.0, 60.0)
    if world.parking_right:
        z = world.z_min
        while z < world.z_max:
            if not _in_crossing(world, z - 5, z + 6) and rng.random() < 0.75:
                v = _vehicle(rng, world.road_right - world.parking_right / 2, z, 0.0, "car", 1)
                world.objects.append(v)
            z += rng.uniform(5.2, 7.0)
    z = world.z_min + rng.uniform(0, 30)
    while z < world.z_max:  # riders near the right edge of the road
        motor = rng.random() < 0.4
        x = world.road_right - world.parking_right - rng.uniform(0.6, 1.2)
        speed = rng.uniform(3.0, 7.0) + (ego_speed * 0.6 if motor else 0.0)
        world.objects.append(_bike(rng, x, z, speed if length > 0 else 0.0, motor, True, "rear"))
        z += rng.uniform(20.0, 70.0)
    if rng.random() < 0.25:  # a tram in the middle of the road
        x = (
            world.road_left + rng.uniform(1.2, 2.0)
            if world.road_left < -2
            else world.lane_centers[-1]
        )
        world.objects.append(_vehicle(rng, x, rng.uniform(15.0, 120.0), 0.0, "train", -1))


def _build_crossing_objects(world: World, rng: np.random.Generator) -> None:
    for a, b in world.crossings:
        for x in (world.road_left - 0.5, world.road_right + 0.5):
            world.objects.append(
                Obj(
                    "traffic_light",
                    x,
                    a - 1.0,
                    {"height": rng.uniform(2.8, 3.8), "mast": 0.0, "lit": int(rng.integers(3))},
                )
            )
        if rng.random() < 0.7:
            world.objects.append(
                Obj(
                    "traffic_light",
                    world.road_right + 0.5,
                    b + 1.0,
                    {
                        "height": 5.5,
                        "mast": world.road_right - rng.uniform(1.0, 4.0),
                        "lit": int(rng.integers(3)),
                    },
                )
            )
        for _ in range(int(rng.integers(0, 6))):  # people on the crosswalk
            x = rng.uniform(world.sidewalk_left, world.sidewalk_right)
            world.objects.append(_person(rng, float(x), a - rng.uniform(1.5, 4.0), 0.0))
        if rng.random() < 0.5:
            world.objects.append(
                _bike(
                    rng,
                    rng.uniform(world.road_left, world.road_right),
                    (a + b) / 2,
                    0.0,
                    rng.random() < 0.4,
                    True,
                    "side",
                )
            )
