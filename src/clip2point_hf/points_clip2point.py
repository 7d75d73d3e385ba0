"""Point-cloud preparation before rendering: sampling, normalisation and orientation of clouds.

A cloud reaches :class:`~clip2point_hf.rendering_clip2point.DepthRenderer` sub-sampled to a fixed size
(:func:`farthest_point_sample`, :func:`random_point_sample`), centred and scaled into the unit sphere
(:func:`normalize_point_cloud`, docs/design.md "Normalisation") and turned y-up (:func:`convert_up_axis`). These steps are
about the cloud, not the camera or the rasteriser, so they live apart from the renderer; the processor,
the data loaders, the pipelines and the CLI import them from here.

This module imports only ``torch`` and the standard library (and, lazily and optionally, ``fpsample``): it is
copied flat into Hub folders next to ``processing_clip2point.py``.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "FLOAT32_SHAPE_TOLERANCE",
    "UP_AXES",
    "convert_up_axis",
    "farthest_point_sample",
    "float32_shape_loss",
    "float32_shape_warning",
    "normalize_point_cloud",
    "random_point_sample",
]

#: float32 numbers spaced more than this fraction of a cloud's size apart where the cloud lies have lost its
#: shape: a 1 m object keeps it up to about 1.3e5 from the origin (spacing 0.0078 there) and loses it at map
#: coordinates (spacing 0.25 near 4e6, where it renders as a dot).
FLOAT32_SHAPE_TOLERANCE = 0.01


def _check_points(points: torch.Tensor, name: str = "points") -> None:
    if not isinstance(points, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(points).__name__}")
    if points.dim() not in (2, 3):
        raise ValueError(f"`{name}` must have shape (N, 3) or (B, N, 3), got {tuple(points.shape)}")
    if points.shape[-1] != 3:
        raise ValueError(f"`{name}` must have a last dimension of 3, got {tuple(points.shape)}")
    if not points.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got {points.dtype}")
    if points.shape[-2] == 0:
        raise ValueError(f"`{name}` is empty (N = 0): a point cloud needs at least one point")


def farthest_point_sample(
    points: torch.Tensor,
    num_samples: int,
    *,
    start_index: int | torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.LongTensor:
    """Iterative farthest-point sampling (CPU or CUDA; no host synchronisation on CUDA).

    On CPU, float32 (and half-precision) clouds go through the ``fpsample`` package when it is installed
    (``pip install fpsample``; 2.5-5x faster than the loop below on a 2-core CPU, see BENCHMARKS.md); it
    returns exactly the indices of the PyTorch loop, which runs otherwise (CUDA, float64, no ``fpsample``).

    Args:
        points: ``(N, 3)`` or ``(B, N, 3)`` floating-point coordinates.
        num_samples: number of indices to return, ``1 <= num_samples <= N``.
        start_index: index of the first selected point: an int (same for every cloud) or a long
            tensor of shape ``()`` or ``(B,)``. When ``None``, the start is drawn uniformly with
            ``generator`` if one is given, else it is ``0``.
        generator: random generator used only to draw the start when ``start_index`` is None.

    Returns:
        Long tensor of indices, ``(num_samples,)`` or ``(B, num_samples)``, on ``points.device``.
        The result is deterministic: ties in the farthest distance go to the smallest index.
    """
    _check_points(points)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int):
        raise TypeError(f"`num_samples` must be an int, got {type(num_samples).__name__}")
    unbatched = points.dim() == 2
    pts = points.unsqueeze(0) if unbatched else points
    b, n, _ = pts.shape
    if num_samples < 1 or num_samples > n:
        raise ValueError(f"`num_samples` must be between 1 and the number of points N={n}, got {num_samples}")
    device = pts.device
    if pts.dtype in (torch.float16, torch.bfloat16):
        pts = pts.float()

    if start_index is None:
        if generator is None:
            start = torch.zeros(b, dtype=torch.long, device=device)
        else:
            start = torch.randint(0, n, (b,), generator=generator, device=generator.device).to(device)
    elif isinstance(start_index, torch.Tensor):
        start = start_index.to(device=device, dtype=torch.long).reshape(-1).expand(b).clone()
    else:
        if not (-n <= int(start_index) < n):
            raise ValueError(f"`start_index` must be in [0, {n}), got {start_index}")
        start = torch.full((b,), int(start_index) % n, dtype=torch.long, device=device)

    on_cpu = device.type == "cpu" and pts.dtype == torch.float32 and not torch.compiler.is_compiling()
    if on_cpu and bool(torch.isfinite(pts).all()):  # NaN ordering is the torch loop's own
        fast = _fpsample_indices(pts, num_samples, start)
        if fast is not None:
            return fast[0] if unbatched else fast
    out = _farthest_point_sample_torch(pts, num_samples, start)
    return out[0] if unbatched else out


def _fpsample_indices(pts: torch.Tensor, num_samples: int, start: torch.Tensor) -> torch.Tensor | None:
    """``(B, N, 3)`` CPU float32 -> ``(B, num_samples)`` indices from ``fpsample``, or None if not installed.

    ``fpsample.fps_sampling`` computes the same float32 distances as our loop but breaks ties in the
    farthest distance towards the LARGEST index (ours: the smallest). On the reversed cloud its choice
    maps back to exactly ours, duplicated points and grids included (tests/test_rendering.py).
    """
    try:
        import fpsample
    except ImportError:
        return None
    n = pts.shape[1]
    flipped = pts.detach().flip(1).numpy()
    picked = [
        torch.from_numpy(fpsample.fps_sampling(cloud, num_samples, start_idx=n - 1 - s).astype("int64"))
        for cloud, s in zip(flipped, start.tolist())
    ]
    return (n - 1) - torch.stack(picked)


def _farthest_point_sample_torch(pts: torch.Tensor, num_samples: int, start: torch.Tensor) -> torch.Tensor:
    """The PyTorch loop: ``(B, N, 3)`` -> ``(B, num_samples)``; ties go to the smallest index."""
    b, n, _ = pts.shape
    device = pts.device
    out = torch.empty(b, num_samples, dtype=torch.long, device=device)
    out[:, 0] = start
    min_d2 = torch.full((b, n), float("inf"), dtype=pts.dtype, device=device)
    batch_ar = torch.arange(b, device=device)
    last = start
    for i in range(1, num_samples):
        centre = pts[batch_ar, last]  # (B, 3)
        d2 = (pts - centre[:, None, :]).square().sum(-1)
        min_d2 = torch.minimum(min_d2, d2)
        last = torch.argmax(min_d2, dim=1)  # first maximum -> smallest index on ties
        out[:, i] = last
    return out


def random_point_sample(
    num_points_in_cloud: int,
    num_samples: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.LongTensor:
    """Indices of ``num_samples`` points drawn uniformly without replacement from a cloud of ``N`` points.

    When the cloud has fewer than ``num_samples`` points, every point is kept once (in a random order)
    and the rest of the indices repeat points drawn uniformly *with* replacement: duplicated points
    do not change a depth render. Deterministic for a seeded ``generator`` (drawn on its device).
    """
    n = int(num_points_in_cloud)
    if n < 1:
        raise ValueError(f"cannot sample from an empty point cloud (N = {n})")
    if num_samples < 1:
        raise ValueError(f"`num_samples` must be >= 1, got {num_samples}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    perm = torch.randperm(n, generator=generator, device=gen_device)
    if n >= num_samples:
        idx = perm[:num_samples]
    else:
        extra = torch.randint(0, n, (num_samples - n,), generator=generator, device=gen_device)
        idx = torch.cat([perm, extra])
    return idx.to(device) if device is not None else idx


def normalize_point_cloud(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centre each cloud on its centroid and divide by its largest point norm (docs/design.md, "Normalisation").

    Args:
        points: ``(N, 3)`` or ``(B, N, 3)`` floating-point coordinates.

    Returns:
        ``(normalized, centroid, scale)`` with ``normalized`` like ``points`` (inside the unit sphere,
        its farthest point on it), ``centroid`` ``(3,)`` / ``(B, 3)`` and ``scale`` ``()`` / ``(B,)``,
        such that ``normalized * scale + centroid`` gives back the input.

    Degenerate clouds: when all points coincide (the radius is zero, or below rounding noise of
    ``16 * eps * max|coordinate|``), the normalised cloud is all zeros and ``scale`` is 0 -- never NaN.
    A single point is such a cloud. No host synchronisation: this case is handled with ``torch.where``.
    Non-finite coordinates are not checked here (they propagate); the processor rejects them.
    """
    _check_points(points)
    orig_dtype = points.dtype
    pts = points.float() if orig_dtype in (torch.float16, torch.bfloat16) else points
    # Work on the cloud divided by a power of two near its largest coordinate: exact (every operation below
    # commutes with it), and squaring a 1e20 coordinate can no longer overflow.
    magnitude = pts.abs().amax(dim=(-2, -1)).unsqueeze(-1)  # (..., 1)
    tiny = torch.finfo(pts.dtype).tiny
    unit = torch.where(
        magnitude > tiny, torch.exp2(torch.floor(torch.log2(magnitude))), torch.ones_like(magnitude)
    )
    pts = pts / unit.unsqueeze(-1)
    centroid = pts.mean(dim=-2, keepdim=True)
    centred = pts - centroid
    scale = centred.norm(dim=-1).amax(dim=-1, keepdim=True)  # (..., 1)
    degenerate = scale <= 16 * torch.finfo(pts.dtype).eps * (magnitude / unit) + tiny
    scale = torch.where(degenerate, torch.zeros_like(scale), scale)
    safe = torch.where(degenerate, torch.ones_like(scale), scale)
    normalized = torch.where(
        degenerate.unsqueeze(-1), torch.zeros_like(centred), centred / safe.unsqueeze(-1)
    )
    return (
        normalized.to(orig_dtype),
        (centroid * unit.unsqueeze(-1)).squeeze(-2).to(orig_dtype),
        (scale * unit).squeeze(-1).to(orig_dtype),
    )


def float32_shape_loss(points: torch.Tensor) -> torch.Tensor:
    """Per cloud (``(N, 3)`` -> ``()``, ``(B, N, 3)`` -> ``(B,)``): whether float32 coordinates cannot hold its
    shape, the spacing of float32 numbers at its largest coordinate being more than
    :data:`FLOAT32_SHAPE_TOLERANCE` of its size (the longest side of its bounding box).

    A cloud far from the origin must be centred in float64 before it is cast to float32; one that arrives as
    float32 and is flagged here has already lost its shape. Clouds of a single position are never flagged.
    """
    spacing, size = _float32_spacing_and_size(points)
    return (spacing > FLOAT32_SHAPE_TOLERANCE * size) & (size > 0)


def float32_shape_warning(points: torch.Tensor, name: str) -> str:
    """The one-line warning for (the first of) the clouds :func:`float32_shape_loss` flags; ``name`` says which
    input or file they came from."""
    k = int(float32_shape_loss(points).reshape(-1).long().argmax())
    cloud = points.reshape(-1, *points.shape[-2:])[k]
    spacing, size = (float(x) for x in _float32_spacing_and_size(cloud))
    return (
        f"{f'{name}[{k}]' if points.dim() == 3 else name}: float32 numbers near {float(cloud.abs().max()):.3g} "
        f"are {spacing:.3g} apart, {spacing / size:.0%} of the cloud's size {size:.3g}: its shape was lost when it "
        "was stored as float32 (keep map coordinates in float64, or centre the cloud on the origin first)"
    )


def _float32_spacing_and_size(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    magnitude = points.abs().amax(dim=(-2, -1)).float()
    spacing = torch.nextafter(magnitude, torch.full_like(magnitude, math.inf)) - magnitude
    return spacing, (points.amax(dim=-2) - points.amin(dim=-2)).amax(dim=-1).float()


#: Proper rotations taking each signed storage axis to the renderer's ``+y`` (up).
_UP_TO_Y = {
    "z": lambda x, y, z: (-y, z, -x),  # the reference's mapping for z-up ModelNet data
    "-z": lambda x, y, z: (x, -z, y),  # -90 deg about x
    "x": lambda x, y, z: (-y, x, z),  # -90 deg about z
    "-x": lambda x, y, z: (y, -x, z),  # +90 deg about z
    "-y": lambda x, y, z: (x, -y, -z),  # 180 deg about x
}
UP_AXES = ("x", "y", "z", "-x", "-y", "-z")


def convert_up_axis(points: torch.Tensor, up_axis: str) -> torch.Tensor:
    """Bring a cloud stored with ``up_axis`` up into the renderer's y-up world frame.

    ``up_axis`` is one of :data:`UP_AXES` (``"x"``, ``"-x"``, ``"y"``, ``"-y"``, ``"z"``, ``"-z"``); each maps
    by a proper rotation (no mirroring). ``"y"``: returned unchanged (ShapeNet-55, ScanObjectNN). ``"z"``:
    ``(x, y, z) -> (-y, z, -x)``, the reference's mapping for z-up ModelNet data. Works on any ``(..., 3)``
    tensor (points or normals).
    """
    if up_axis == "y":
        return points
    if up_axis not in _UP_TO_Y:
        raise ValueError(f"`up_axis` must be one of {list(UP_AXES)}, got {up_axis!r}")
    return torch.stack(_UP_TO_Y[up_axis](*points.unbind(-1)), dim=-1)
