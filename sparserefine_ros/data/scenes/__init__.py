"""Procedural high-resolution street scenes seen from a car, labelled with Cityscapes' classes.

Why it looks the way it does: SparseRefine only pays off where resolution matters, so the scenes
have what makes real 2-megapixel driving images hard at half resolution -- a pinhole camera over a
ground plane (objects shrink toward the horizon), thin structures (poles, fence pickets, bicycle
frames, curbs), small distant objects, ragged vegetation with sky showing through -- and nuisances
(lighting styles, cast shadows, haze, noise, blur, JPEG) so colour alone does not give the class.

How: a world (street layout and objects in metres, X right, Y up, Z forward) is built from a seed;
a frame is rendered from a camera pose by painting parts far to near into an integer part map with
cv2 (each part has a Cityscapes label id, an albedo and a material), then the picture is composed
from that map with vectorised per-material textures. Labels come out exact, as label ids (0..33);
:data:`~sparserefine_ros.labels.ID_TO_TRAIN_ID` gives train ids.

A :class:`World` is long enough for a drive: :class:`Drive` renders consecutive frames of a
camera moving along it while cars, riders and pedestrians move too.

Modules, in import order: ``camera`` (labels, materials, camera, canvas), ``world`` (layout and
objects), ``drawing`` (primitives, ground, static parts), ``road_users`` (people, bikes,
vehicles), ``painting`` (objects far to near, shadows, hood), ``compose`` (textures, lighting,
nuisances), ``render`` (frames, scenes, drives).
"""

from .render import Drive, Frame, generate_scene, make_camera, render

__all__ = ["Drive", "Frame", "generate_scene", "make_camera", "render"]
