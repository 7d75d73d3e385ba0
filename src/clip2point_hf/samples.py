"""Sample objects built from geometric primitives, so the demo and tests need no third-party 3D data.

Each object is a union of primitive surfaces (boxes, cylinders, frustums, discs, spheres, a torus arc);
points are drawn from them in proportion to surface area with a seeded generator. Objects are y-up and
roughly unit-sized; pass them to the processor with `up_axis="y"`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Sampler = Callable[[np.random.Generator, int], np.ndarray]
Surface = tuple[float, Sampler]  # (area, sampler)


def _box(center, size) -> list[Surface]:
    """The six faces of an axis-aligned box."""
    center, size = np.asarray(center, float), np.asarray(size, float)
    faces = []
    for axis in range(3):
        u, v = [a for a in range(3) if a != axis]
        for sign in (-1.0, 1.0):

            def sample(rng, n, axis=axis, u=u, v=v, sign=sign):
                p = np.empty((n, 3))
                p[:, axis] = center[axis] + sign * size[axis] / 2
                p[:, u] = center[u] + (rng.random(n) - 0.5) * size[u]
                p[:, v] = center[v] + (rng.random(n) - 0.5) * size[v]
                return p

            faces.append((size[u] * size[v], sample))
    return faces


def _frustum(base, r0, r1, height) -> list[Surface]:
    """The side of a y-axis frustum (a cylinder when r0 == r1, a cone when r1 == 0) standing on `base`."""
    base = np.asarray(base, float)
    slant = float(np.hypot(height, r1 - r0))

    def sample(rng, n):
        # The side's area density grows linearly with the radius: invert that CDF along the height.
        u = rng.random(n)
        if abs(r1 - r0) < 1e-12:
            t = u
        else:
            t = (np.sqrt(r0**2 + u * (r1**2 - r0**2)) - r0) / (r1 - r0)
        radius = r0 + (r1 - r0) * t
        angle = rng.random(n) * 2 * np.pi
        return base + np.stack([radius * np.cos(angle), t * height, radius * np.sin(angle)], axis=1)

    return [(np.pi * (r0 + r1) * slant, sample)]


def _disc(center, radius) -> list[Surface]:
    """A horizontal disc (normal +-y)."""
    center = np.asarray(center, float)

    def sample(rng, n):
        r = radius * np.sqrt(rng.random(n))
        angle = rng.random(n) * 2 * np.pi
        return center + np.stack([r * np.cos(angle), np.zeros(n), r * np.sin(angle)], axis=1)

    return [(np.pi * radius**2, sample)]


def _sphere(center, radius, lower_half_only: bool = False) -> list[Surface]:
    center = np.asarray(center, float)

    def sample(rng, n):
        d = rng.normal(size=(n, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        if lower_half_only:
            d[:, 1] = -np.abs(d[:, 1])
        return center + radius * d

    area = 4 * np.pi * radius**2
    return [(area / 2 if lower_half_only else area, sample)]


def _horizontal_cylinder(center, radius, length, axis: int) -> list[Surface]:
    """A capped cylinder along the x (0) or z (2) axis."""
    center = np.asarray(center, float)
    other = 2 if axis == 0 else 0

    def side(rng, n):
        angle = rng.random(n) * 2 * np.pi
        p = np.repeat(center[None], n, axis=0)
        p[:, axis] += (rng.random(n) - 0.5) * length
        p[:, 1] += radius * np.cos(angle)
        p[:, other] += radius * np.sin(angle)
        return p

    return [(2 * np.pi * radius * length, side)]


def _handle(center, radius, tube) -> list[Surface]:
    """Half a torus in the x-y plane, opening towards -x (a cup's handle)."""
    center = np.asarray(center, float)

    def sample(rng, n):
        u = (rng.random(n) - 0.5) * np.pi  # the outer half circle
        v = rng.random(n) * 2 * np.pi
        ring = radius + tube * np.cos(v)
        return center + np.stack([ring * np.cos(u), ring * np.sin(u), tube * np.sin(v)], axis=1)

    return [(np.pi * radius * 2 * np.pi * tube, sample)]


def _legs(half_x: float, half_z: float, height: float, width: float) -> list[Surface]:
    return [
        s
        for x in (-half_x, half_x)
        for z in (-half_z, half_z)
        for s in _box((x, height / 2, z), (width, height, width))
    ]


SAMPLE_OBJECTS: dict[str, Callable[[], list[Surface]]] = {
    "chair": lambda: [
        *_legs(0.22, 0.22, 0.45, 0.05),
        *_box((0, 0.47, 0), (0.5, 0.05, 0.5)),
        *_box((0, 0.8, -0.23), (0.5, 0.6, 0.05)),
    ],
    "table": lambda: [*_legs(0.55, 0.3, 0.7, 0.06), *_box((0, 0.72, 0), (1.3, 0.05, 0.75))],
    "cup": lambda: [
        *_frustum((0, 0, 0), 0.25, 0.3, 0.6),
        *_disc((0, 0, 0), 0.25),
        *_handle((0.29, 0.3, 0), 0.15, 0.03),
    ],
    "cone": lambda: [*_frustum((0, 0, 0), 0.4, 0.0, 0.9), *_disc((0, 0, 0), 0.4)],
    "lamp": lambda: [
        *_frustum((0, 0, 0), 0.22, 0.22, 0.04),
        *_disc((0, 0.04, 0), 0.22),
        *_frustum((0, 0.04, 0), 0.02, 0.02, 0.8),
        *_frustum((0, 0.7, 0), 0.3, 0.14, 0.35),
    ],
    "airplane": lambda: [
        *_horizontal_cylinder((0, 0, 0), 0.09, 1.6, axis=2),
        *_sphere((0, 0, 0.8), 0.09),
        *_box((0, 0, 0.05), (1.6, 0.03, 0.3)),
        *_box((0, 0.18, -0.7), (0.03, 0.3, 0.2)),
        *_box((0, 0.03, -0.72), (0.55, 0.02, 0.15)),
    ],
    "bottle": lambda: [
        *_frustum((0, 0, 0), 0.18, 0.18, 0.6),
        *_disc((0, 0, 0), 0.18),
        *_frustum((0, 0.6, 0), 0.18, 0.06, 0.15),
        *_frustum((0, 0.75, 0), 0.06, 0.06, 0.2),
    ],
    "bowl": lambda: [*_sphere((0, 0.35, 0), 0.4, lower_half_only=True)],
}


def make_sample_point_cloud(name: str, num_points: int = 2048, seed: int = 0) -> np.ndarray:
    """(num_points, 3) float32 points on the surface of the named sample object (y-up)."""
    if name not in SAMPLE_OBJECTS:
        raise ValueError(f"unknown sample object {name!r}; choose from {sorted(SAMPLE_OBJECTS)}")
    if num_points < 1:
        raise ValueError(f"`num_points` must be >= 1, got {num_points}")
    surfaces = SAMPLE_OBJECTS[name]()
    areas = np.array([area for area, _ in surfaces])
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(num_points, areas / areas.sum())
    points = np.concatenate([sample(rng, int(n)) for (_, sample), n in zip(surfaces, counts, strict=True)])
    return points.astype(np.float32)


__all__ = ["SAMPLE_OBJECTS", "make_sample_point_cloud"]
