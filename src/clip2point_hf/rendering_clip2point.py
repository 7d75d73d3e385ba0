"""Cameras and a pure-PyTorch orthographic depth renderer for CLIP2Point.

Clouds arrive here already sampled, normalised and y-up (``points_clip2point.py``); this module turns
them into CLIP-ready depth images.

Nothing here needs PyTorch3D or a compiled extension; everything runs on CPU and CUDA, batched, with
fixed shapes and no host synchronisation inside the render (so it works under ``torch.compile`` and
CUDA graphs). The geometry (docs/design.md, "Depth rendering"):

* camera basis for a view (elevation ``e``, azimuth ``a``, distance ``d``, degrees):
  ``C = d * (cos e sin a, sin e, cos e cos a)``, ``z_cam = normalize(-C)``,
  ``x_cam = normalize(+Y x z_cam)``, ``y_cam = z_cam x x_cam``; view ``+x`` is image LEFT, ``+y`` image UP;
* the cloud is scaled by ``1/d`` (a pure zoom: nothing is clipped) and a point ``p`` has view
  coordinates ``((p/d - C).x_cam, (p/d - C).y_cam, (p/d - C).z_cam)``; points with view depth ``z < 0``
  are dropped;
* a point covers pixel (row ``i``, column ``j``) when
  ``(x_ndc(j) - x)^2 + (y_ndc(i) - y)^2 < r^2`` with ``x_ndc(j) = 1 - (2j + 1)/S`` and
  ``y_ndc(i) = 1 - (2i + 1)/S``; each pixel keeps the nearest covering point (ties: smallest index).

How it is fast without testing every pixel against every point: a point of radius ``r`` (NDC) covers
pixels only within ``h = ceil(r*S/2 + 1/2) - 1`` pixels of the pixel nearest its centre, so every point
emits a fixed ``(2h+1)^2`` stencil of candidate pixels (``5 x 5`` for ``r = 0.02`` at ``S = 224``). Each
candidate is tested with the exact coverage rule above; the per-pixel nearest is taken with
``scatter_reduce(..., "amin")`` on a flat buffer. For the winning point's index the depth's float32 bit
pattern (monotonic for ``z >= 0``) is packed with the index into one int64 key, so a single ``amin``
gives the nearest depth and, on ties, the smallest index.

This module imports only ``torch`` and the standard library: it is copied flat into Hub folders next to
``processing_clip2point.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "MAX_IMAGE_SIZE",
    "VIEW_PRESETS",
    "CameraBasis",
    "DepthRenderer",
    "RasterOutput",
    "camera_basis",
    "resolve_views",
    "view_name",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: Named view sets, each a list of ``(elevation_deg, azimuth_deg, distance)``.
#:
#: * ``"reference10"``: the reference's 10 views (pre-training, few-shot). All four diagonal views look
#:   from below the object (elevations 225 and 315).
#: * ``"reference6"``: the reference's 6 zero-shot views.
#: * ``"upper10"``: ``reference10`` with the four diagonal cameras mirrored above the object
#:   (elevation 225 -> 135, 315 -> 45: same horizontal position, camera at ``+y`` instead of ``-y``).
VIEW_PRESETS: dict[str, list[tuple[float, float, float]]] = {
    "reference10": [
        (0.0, 0.0, 1.0),
        (90.0, 0.0, 1.0),
        (180.0, 0.0, 1.0),
        (270.0, 0.0, 1.0),
        (225.0, -45.0, 1.0),
        (225.0, 45.0, 1.0),
        (315.0, -45.0, 1.0),
        (315.0, 45.0, 1.0),
        (0.0, -90.0, 1.0),
        (0.0, 90.0, 1.0),
    ],
    "reference6": [
        (0.0, 0.0, 1.0),
        (0.0, 90.0, 1.0),
        (0.0, 180.0, 1.0),
        (0.0, 270.0, 1.0),
        (90.0, 0.0, 1.0),
        (-90.0, 180.0, 1.0),
    ],
    "upper10": [
        (0.0, 0.0, 1.0),
        (90.0, 0.0, 1.0),
        (180.0, 0.0, 1.0),
        (270.0, 0.0, 1.0),
        (135.0, -45.0, 1.0),
        (135.0, 45.0, 1.0),
        (45.0, -45.0, 1.0),
        (45.0, 45.0, 1.0),
        (0.0, -90.0, 1.0),
        (0.0, 90.0, 1.0),
    ],
}

_INT64_MAX = torch.iinfo(torch.int64).max
_LOW32 = 0xFFFFFFFF


# --------------------------------------------------------------------------------------------------
# Cameras
# --------------------------------------------------------------------------------------------------


class CameraBasis(NamedTuple):
    """World-space camera centre and axes, each ``(..., 3)``: ``x_axis`` is image LEFT, ``y_axis``
    image UP, ``z_axis`` the viewing direction."""

    centre: torch.Tensor
    x_axis: torch.Tensor
    y_axis: torch.Tensor
    z_axis: torch.Tensor


def _normalize(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp(min=1e-30)


def view_name(elevation: float, azimuth: float, distance: float = 1.0) -> str:
    """Where the camera of a view stands, in words, for picture titles: ``"front"`` (+z), ``"back"``, ``"top"``
    (+y, the up axis after :func:`~clip2point_hf.points_clip2point.convert_up_axis`), ``"bottom"``,
    ``"right"`` (+x), ``"left"``, or a combination such as ``"bottom-back-right"``; ``" x1.2"`` when the view
    zooms out (distance != 1)."""
    e, a = math.radians(elevation), math.radians(azimuth)
    centre = (math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a))
    words = [("top", "bottom"), ("front", "back"), ("right", "left")]
    parts = [
        pos if value > 0 else neg
        for value, (pos, neg) in zip((centre[1], centre[2], centre[0]), words, strict=True)
        if abs(value) > 0.3
    ]
    return "-".join(parts) + (f" x{distance:g}" if distance != 1 else "")


def camera_basis(
    elevation: float | torch.Tensor,
    azimuth: float | torch.Tensor,
    distance: float | torch.Tensor = 1.0,
    *,
    device: torch.device | str | None = None,
) -> CameraBasis:
    """Camera centre and axes of the look-at camera (world up ``+Y``, looking at the origin; design.md, "Camera basis").

    Angles are in degrees and broadcast together. Everything is computed in float32, like the
    reference: this is what makes the near-vertical views (elevation 90, 270, -90) come out with the
    bases of the design notes' table, since e.g. ``cos(deg2rad(90))`` is ``-4.4e-8`` in float32, not 0.
    Only when ``+Y x z_cam`` is exactly zero (which float32 angles do not produce) the x axis falls
    back to ``normalize(y_ref x z_cam)`` with ``y_ref = (sin a, 0, cos a)``, which agrees with the
    table's 90 and 270 rows.
    """

    if device is None:  # numbers go where the tensors are (a CPU scalar cannot broadcast with CUDA angles)
        device = next((v.device for v in (elevation, azimuth, distance) if isinstance(v, torch.Tensor)), None)

    def as_tensor(v):
        if isinstance(v, torch.Tensor):
            return v.to(device=device, dtype=torch.float32)
        return torch.full((), float(v), dtype=torch.float32, device=device)  # no host-to-device copy

    e, a, d = torch.broadcast_tensors(as_tensor(elevation), as_tensor(azimuth), as_tensor(distance))
    e = torch.deg2rad(e)
    a = torch.deg2rad(a)
    cos_e = torch.cos(e)
    centre = torch.stack((d * cos_e * torch.sin(a), d * torch.sin(e), d * cos_e * torch.cos(a)), dim=-1)
    z_axis = _normalize(-centre)
    up = torch.zeros_like(z_axis)
    up[..., 1] = 1.0
    x_raw = torch.linalg.cross(up, z_axis)
    y_ref = torch.stack((torch.sin(a), torch.zeros_like(a), torch.cos(a)), dim=-1)
    x_fallback = torch.linalg.cross(y_ref, z_axis)
    degenerate = x_raw.norm(dim=-1, keepdim=True) <= 1e-30
    x_axis = _normalize(torch.where(degenerate, x_fallback, x_raw))
    y_axis = torch.linalg.cross(z_axis, x_axis)
    return CameraBasis(centre, x_axis, y_axis, z_axis)


def resolve_views(views: str | Sequence | torch.Tensor, name: str = "views") -> torch.Tensor:
    """Turn a preset name, a list of ``(elevation, azimuth[, distance])`` or a tensor into views.

    Returns a float32 tensor ``(V, 3)`` (or ``(B, V, 3)`` for a 3-D tensor input) of
    ``(elevation_deg, azimuth_deg, distance)``; a missing distance is 1. Python and CPU inputs are
    checked (finite values, distance > 0); device tensors are trusted (checking them would synchronise).
    """
    if isinstance(views, str):
        if views not in VIEW_PRESETS:
            raise ValueError(f"unknown `{name}` preset {views!r}; choose one of {sorted(VIEW_PRESETS)}")
        return torch.tensor(VIEW_PRESETS[views], dtype=torch.float32)
    if isinstance(views, torch.Tensor):
        t = views
    else:
        try:
            rows = [tuple(float(x) for x in v) for v in views]
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"`{name}` must be a preset name, a list of (elevation, azimuth[, distance]) or a tensor"
            ) from err
        if len(rows) == 0:
            raise ValueError(f"`{name}` is empty: give at least one view")
        if any(len(r) not in (2, 3) for r in rows):
            raise ValueError(
                f"each entry of `{name}` must be (elevation, azimuth) or (elevation, azimuth, distance)"
            )
        t = torch.tensor([r if len(r) == 3 else (*r, 1.0) for r in rows], dtype=torch.float32)
    if t.dim() not in (2, 3) or t.shape[-1] not in (2, 3) or t.shape[-2] == 0:
        raise ValueError(f"`{name}` must have shape (V, 3) or (B, V, 3), got {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.float()
    if t.shape[-1] == 2:
        t = torch.cat([t, torch.ones_like(t[..., :1])], dim=-1)
    if t.device.type == "cpu" and not torch.compiler.is_compiling():
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"`{name}` contains NaN or Inf")
        if not bool((t[..., 2] > 0).all()):
            raise ValueError(f"every distance in `{name}` must be > 0")
    return t


# --------------------------------------------------------------------------------------------------
# Renderer
# --------------------------------------------------------------------------------------------------


class _Workspace:
    """Scratch buffers for a call that needs no autograd (so in-place arithmetic is allowed).

    On CPU (``reuse=True``) the buffers are reused across the chunks of one call: fresh large CPU
    allocations are returned to the OS on free and page-faulted again on the next use, which on a small
    CPU costs more than the arithmetic. On CUDA (``reuse=False``) every request is a fresh tensor from
    the caching allocator. Created per call, so a renderer stays safe to share between threads.
    """

    def __init__(self, device: torch.device, reuse: bool = True) -> None:
        self.device = device
        self.reuse = reuse
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        numel = math.prod(shape)
        if not self.reuse:
            return torch.empty(shape, dtype=dtype, device=self.device)
        key = f"{name}:{dtype}"
        buf = self.buffers.get(key)
        if buf is None or buf.numel() < numel:
            buf = torch.empty(numel, dtype=dtype, device=self.device)
            self.buffers[key] = buf
        return buf[:numel].view(shape)


def _scratch(
    ws: _Workspace | None, name: str, shape: tuple[int, ...], dtype: torch.dtype
) -> torch.Tensor | None:
    return None if ws is None else ws.get(name, tuple(shape), dtype)


class RasterOutput(NamedTuple):
    """Result of :meth:`DepthRenderer.rasterize`.

    ``depth``: ``(B, V, S, S)`` float32 view depth of the nearest covering point, ``0`` for background
    (a point at view depth exactly 0 also gives 0: ``point_index`` tells them apart).
    ``point_index``: ``(B, V, S, S)`` long index (into the cloud's ``N`` points) of that point, ``-1`` for
    background. Ties in depth go to the smallest index.
    """

    depth: torch.Tensor
    point_index: torch.Tensor


#: Largest view side the renderer accepts: 4096^2 float32 pixels are 64 MiB per view; a typo such as 100000 would
#: ask for tens of GB at the first call, so it is refused when the renderer (and the processor) is built.
MAX_IMAGE_SIZE = 4096


class DepthRenderer:
    """Batched orthographic point-cloud depth renderer (docs/design.md, "Depth rendering"), CPU or CUDA, no PyTorch3D.

    Args:
        image_size: output side ``S`` in pixels (224 in the reference).
        point_radius: point radius ``r`` in NDC units (0.02 in the reference, about 2.2 px at 224).
        depth_mode: ``"parity"`` (the reference's ``(z - z_min) / z_max * 200/255``, with ``z_min`` the
            minimum over the view after setting background to 1: ``min(min foreground depth, 1)``, or the
            plain foreground minimum when the foreground covers every pixel) or ``"minmax"`` (``(z - z_min) / (z_max - z_min) *
            200/255`` with the true foreground minimum; a view of constant depth maps to 0).
            Background is 1.0 in both; near points are dark.
        densify: optional PointCLIP V2-style post-processing of the intensity image (not the default,
            not in the reference): background pixels next to foreground take the nearest neighbouring
            depth (3 x 3 min-pool), then the grey image is smoothed with a 3 x 3 Gaussian (sigma 0.8).
        image_mean, image_std: per-channel normalisation of the 3-channel image (CLIP's by default).
        clip_free_zoom: how a view distance ``d`` zooms. The cloud is always scaled by ``1/d`` (so ``d``
            is a pure zoom of the image). With ``False`` the camera sits at ``d`` as in the reference,
            which for ``d < 1`` puts part of a unit-sphere cloud behind the camera (dropped: the near
            side is clipped). With ``True`` (default) the camera sits at ``max(d, 1/d)``: identical to
            the reference for ``d >= 1`` (so for all preset views), and nothing is clipped for ``d < 1``.
        chunk_size: clouds rendered per pass. ``None`` chooses by device: on CPU a few clouds at a time
            (the working set stays in cache and memory is reused), on CUDA the whole batch unless that
            exceeds ~2^27 candidate pixels. Results do not depend on it.
        point_chunk_size: points of one chunk of clouds projected and scattered per pass. ``None`` splits a
            chunk's points into passes of the same candidate budget (~2^21 on CPU, ~2^27 on CUDA), so that a
            large cloud (100k-1M points) renders in bounded memory. Each pass takes the per-pixel minimum into
            the same z-buffer, so results do not depend on it. A call that needs gradients takes all points
            in one pass.

    The renderer works in the y-up world frame (docs/design.md, "Up axis") on clouds that are already normalised (see
    :func:`~clip2point_hf.points_clip2point.normalize_point_cloud` and
    :func:`~clip2point_hf.points_clip2point.convert_up_axis`). It computes in float32 whatever the input
    floating dtype. Values are never checked (that would synchronise): a point with a NaN or
    infinite coordinate simply covers no pixel.
    """

    def __init__(
        self,
        image_size: int = 224,
        point_radius: float = 0.02,
        depth_mode: str = "parity",
        densify: bool = False,
        image_mean: Sequence[float] = CLIP_MEAN,
        image_std: Sequence[float] = CLIP_STD,
        clip_free_zoom: bool = True,
        chunk_size: int | None = None,
        point_chunk_size: int | None = None,
    ) -> None:
        if (
            isinstance(image_size, bool)
            or not isinstance(image_size, int)
            or not 1 <= image_size <= MAX_IMAGE_SIZE
        ):
            raise ValueError(
                f"`image_size` must be an int in [1, {MAX_IMAGE_SIZE}] (pixels per side of a view), got {image_size!r}"
            )
        if not (
            isinstance(point_radius, (int, float)) and math.isfinite(point_radius) and 0 < point_radius <= 1
        ):
            raise ValueError(f"`point_radius` must be in (0, 1] (NDC units), got {point_radius!r}")
        if depth_mode not in ("parity", "minmax"):
            raise ValueError(f'`depth_mode` must be "parity" or "minmax", got {depth_mode!r}')
        if len(image_mean) != 3 or len(image_std) != 3:
            raise ValueError("`image_mean` and `image_std` must have 3 values (one per channel)")
        if any(not (float(s) > 0) for s in image_std):
            raise ValueError(f"`image_std` values must be > 0, got {list(image_std)}")
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"`chunk_size` must be a positive int or None, got {chunk_size!r}")
        if point_chunk_size is not None and (not isinstance(point_chunk_size, int) or point_chunk_size < 1):
            raise ValueError(f"`point_chunk_size` must be a positive int or None, got {point_chunk_size!r}")
        self.image_size = int(image_size)
        self.point_radius = float(point_radius)
        self.depth_mode = depth_mode
        self.densify = bool(densify)
        self.image_mean = tuple(float(m) for m in image_mean)
        self.image_std = tuple(float(s) for s in image_std)
        self.clip_free_zoom = bool(clip_free_zoom)
        self.chunk_size = chunk_size
        self.point_chunk_size = point_chunk_size
        # Stencil half-width: any covered pixel j satisfies |j - round(u)| < r_px + 1/2.
        r_px = self.point_radius * self.image_size / 2
        self.stencil_half = max(0, math.ceil(r_px + 0.5 + 1e-4) - 1)
        self._basis_cache: dict = {}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(image_size={self.image_size}, point_radius={self.point_radius}, "
            f"depth_mode={self.depth_mode!r}, densify={self.densify}, clip_free_zoom={self.clip_free_zoom}, stencil={2 * self.stencil_half + 1})"
        )

    # -- cameras ------------------------------------------------------------------------------------

    def _camera(self, views, distances, batch: int, device: torch.device):
        """Rotation rows ``(b|1, V, 3, 3)``, camera centre in view coordinates ``(b|1, V, 3)``, and
        distances ``(b|1, V)``, all float32 on ``device``."""
        cacheable = not isinstance(views, torch.Tensor)
        key = None
        if cacheable:
            key = (
                views if isinstance(views, str) else tuple(tuple(float(x) for x in v) for v in views),
                str(device),
            )
        if key is not None and key in self._basis_cache:
            rot, dirs, dist = self._basis_cache[key]
        else:
            v = (
                resolve_views(views)
                if not isinstance(views, torch.Tensor) or views.device.type == "cpu"
                else views
            )
            if v.dim() not in (2, 3) or v.shape[-1] not in (2, 3):
                raise ValueError(f"`views` must have shape (V, 3) or (B, V, 3), got {tuple(v.shape)}")
            if v.shape[-1] == 2:
                v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
            v = v.to(device=device, dtype=torch.float32)
            basis = camera_basis(v[..., 0], v[..., 1], 1.0)
            rot = torch.stack((basis.x_axis, basis.y_axis, basis.z_axis), dim=-2)  # (..., V, 3, 3)
            dirs = basis.centre  # unit camera direction, (..., V, 3)
            dist = v[..., 2]
            if rot.dim() == 3:
                rot, dirs, dist = rot.unsqueeze(0), dirs.unsqueeze(0), dist.unsqueeze(0)
            if key is not None:
                self._basis_cache[key] = (rot, dirs, dist)
        if rot.shape[0] not in (1, batch):
            raise ValueError(f"`views` has batch size {rot.shape[0]} but the points have {batch}")
        if distances is not None:
            if not isinstance(distances, torch.Tensor):
                distances = torch.as_tensor(distances, dtype=torch.float32)
            checkable = distances.device.type == "cpu" and not torch.compiler.is_compiling()
            if checkable and not bool((torch.isfinite(distances) & (distances > 0)).all()):
                raise ValueError("every value of `distances` must be finite and > 0")
            distances = distances.to(device=device, dtype=torch.float32)
            v_count = rot.shape[1]
            if distances.dim() == 1 and distances.shape[0] == batch:
                distances = distances[:, None]
            if (
                distances.dim() != 2
                or distances.shape[1] not in (1, v_count)
                or distances.shape[0] not in (1, batch)
            ):
                raise ValueError(
                    f"`distances` must have shape (B, V) or (B,) (or broadcast to (B, V)) with B={batch}, "
                    f"V={v_count}; got {tuple(distances.shape)}"
                )
            dist = distances.expand(distances.shape[0], v_count)
        # The cloud is scaled by 1/d. The camera sits at d (the reference) or, clip-free, at max(d, 1/d):
        # the same for d >= 1, and for d < 1 far enough that no point of the unit sphere is behind it.
        cam_dist = torch.maximum(dist, 1.0 / dist) if self.clip_free_zoom else dist
        centre_view = torch.einsum("bvij,bvj->bvi", rot, dirs) * cam_dist[..., None]
        return rot, centre_view, dist

    # -- core ---------------------------------------------------------------------------------------

    def _candidates(self, pts, rot, centre_view, dist, ws: _Workspace | None):
        """Project a chunk of clouds and build their stencil candidates.

        Returns ``z (bV, N)`` (view depth, differentiable), ``cover (bV, K, K, N)`` bool (the pixel
        coverage rule) and ``pix (bV, K, K, N)`` long (pixel index within its view), ``K = 2h + 1``.
        """
        b, n, _ = pts.shape
        s, h = self.image_size, self.stencil_half
        k = 2 * h + 1
        rows = b * rot.shape[1]
        # (p / d - C) in view coordinates = rot @ (p / d) - rot @ C, laid out (b, V, 3, N).
        scaled = pts.transpose(1, 2).unsqueeze(1) / dist[..., None, None]
        view = (torch.matmul(rot, scaled) - centre_view[..., None]).reshape(rows, 3, 1, n)
        z = view[:, 2]
        visible = z >= 0  # NaN -> False
        z = torch.where(z > 0, z, torch.zeros_like(z)).reshape(rows, n)  # -0.0 -> +0.0 (key packing)
        x = view[:, 0].detach()  # coverage is a boolean decision: no gradient through x, y
        y = view[:, 1].detach()
        offsets = torch.arange(-h, h + 1, device=pts.device).view(k, 1)
        lim = float(2 * s)

        def axis(c, name, extra_invalid=None):
            # nearest pixel index along one axis (NaN / Inf made harmless), then the stencil's indices
            u = torch.nan_to_num((1.0 - c) * (s / 2) - 0.5, nan=-lim, posinf=lim, neginf=-lim).clamp_(
                -lim, lim
            )
            idx = torch.add(torch.round(u).long(), offsets, out=_scratch(ws, name, (rows, k, n), torch.long))
            # squared NDC distance to the pixel centres, x_ndc(j) = 1 - (2j + 1) / S (design.md, "Projection and the pixel rule")
            d2 = _scratch(ws, name + "_d2", (rows, k, n), torch.float32)
            d2 = d2.copy_(idx) if d2 is not None else idx.to(torch.float32)
            d2.mul_(2.0).add_(1.0).div_(s).neg_().add_(1.0).sub_(c).square_()
            invalid = (idx < 0) | (idx >= s)
            if extra_invalid is not None:
                invalid |= extra_invalid
            d2.masked_fill_(invalid, float("inf"))
            return idx.clamp_(0, s - 1), d2

        col, dx2 = axis(x, "col")
        row, dy2 = axis(y, "row", ~visible)
        d2 = torch.add(
            dy2.unsqueeze(2), dx2.unsqueeze(1), out=_scratch(ws, "d2", (rows, k, k, n), torch.float32)
        )
        cover = torch.lt(d2, self.point_radius**2, out=_scratch(ws, "cover", (rows, k, k, n), torch.bool))
        pix = torch.add(
            row.mul_(s).unsqueeze(2), col.unsqueeze(1), out=_scratch(ws, "pix", (rows, k, k, n), torch.long)
        )
        return z, cover, pix, d2

    def _zbuffer_float(self, pts, rot, centre_view, dist, ws, step: int) -> torch.Tensor:
        """Nearest covering depth per pixel, ``(bV, S*S)``, ``+inf`` for background (fast path).
        ``step`` points are projected and scattered per pass (bounded memory for large clouds)."""
        n = pts.shape[1]
        rows = pts.shape[0] * rot.shape[1]
        buf = _scratch(ws, "zbuf", (rows, self.image_size**2), torch.float32)
        if buf is None:
            buf = torch.empty((rows, self.image_size**2), device=pts.device)
        buf.fill_(float("inf"))
        inf = torch.full((), float("inf"), device=pts.device)
        for p0 in range(0, n, step):
            z, cover, pix, spare = self._candidates(pts[:, p0 : p0 + step], rot, centre_view, dist, ws)
            # `spare` (the candidates' squared distances) is dead once `cover` exists: reuse its memory.
            val = torch.where(cover, z[:, None, None, :], inf, out=spare if ws is not None else None)
            buf.scatter_reduce_(1, pix.view(rows, -1), val.view(rows, -1), "amin", include_self=True)
        return buf

    def _zbuffer_index(self, pts, rot, centre_view, dist, ws, step: int, depth_out=None, index_out=None):
        """``(depth, point_index)`` of the nearest covering point, each ``(bV, S*S)``; 0 / -1 background."""
        n = pts.shape[1]
        rows = pts.shape[0] * rot.shape[1]
        npix = self.image_size**2
        sentinel = torch.full((), _INT64_MAX, dtype=torch.long, device=pts.device)
        buf = _scratch(ws, "kbuf", (rows, npix), torch.long)
        buf = (
            buf.fill_(_INT64_MAX)
            if buf is not None
            else torch.full((rows, npix), _INT64_MAX, dtype=torch.long, device=pts.device)
        )
        for p0 in range(0, n, step):
            z, cover, pix, _ = self._candidates(pts[:, p0 : p0 + step], rot, centre_view, dist, ws)
            bits = z.detach().view(torch.int32).to(torch.int64)  # monotonic in z for z >= +0.0
            key = (bits << 32) | torch.arange(p0, p0 + z.shape[1], device=z.device)
            val = torch.where(
                cover, key[:, None, None, :], sentinel, out=_scratch(ws, "key", pix.shape, torch.long)
            )
            buf.scatter_reduce_(1, pix.view(rows, -1), val.view(rows, -1), "amin", include_self=True)
        background = torch.eq(buf, _INT64_MAX, out=_scratch(ws, "mask", (rows, npix), torch.bool))
        index = torch.bitwise_and(buf, _LOW32, out=index_out).masked_fill_(background, -1)
        if z.requires_grad:  # `_plan` never splits a differentiable call: `z` holds every point
            depth = torch.gather(z, 1, index.clamp(min=0)).masked_fill(background, 0.0)
            if depth_out is not None:
                depth = depth_out.copy_(depth)
            return depth, index
        high = torch.bitwise_right_shift(buf, 32, out=_scratch(ws, "key", (rows, npix), torch.long))
        as_int = _scratch(ws, "bits32", (rows, npix), torch.int32)
        as_int = as_int.copy_(high) if as_int is not None else high.to(torch.int32)
        depth = as_int.view(torch.float32)
        depth = (
            depth_out.copy_(depth)
            if depth_out is not None
            else depth.clone()
            if ws is not None and ws.reuse
            else depth
        )
        return depth.masked_fill_(background, 0.0), index

    # -- depth -> image -----------------------------------------------------------------------------

    def _intensity(
        self, near: torch.Tensor, z_max: torch.Tensor, ws: _Workspace | None = None
    ) -> torch.Tensor:
        """Grey image in [0, 1] from ``near`` (foreground depth, ``+inf`` elsewhere) and the per-view
        foreground maximum ``z_max``; the last dimension is the flattened pixels."""
        z_min = near.amin(dim=-1, keepdim=True)
        if self.depth_mode == "parity":
            # The reference's `Renderer.norm` sets background to 1 before taking the minimum: min(fg min, 1)
            # when the view has background (an infinite `near`), the plain fg min when none.
            has_background = near.amax(dim=-1, keepdim=True) == float("inf")
            z_min = torch.where(has_background, z_min.clamp(max=1.0), z_min)
            scale = (200.0 / 255.0) / z_max.clamp(min=1e-30)
        else:
            z_min = torch.minimum(z_min, z_max)  # an empty view has z_min = inf
            scale = (200.0 / 255.0) / (z_max - z_min).clamp(min=1e-30)
        # background: (inf - z_min) * scale = inf -> clamped to 1.0; foreground stays below 200/255.
        if ws is None:  # may be differentiated: keep infinities out of the arithmetic
            foreground = torch.isfinite(near)
            finite = torch.where(foreground, near, z_min)
            return torch.where(foreground, ((finite - z_min) * scale).clamp(max=1.0), 1.0)
        return torch.sub(near, z_min, out=ws.get("grey", near.shape, near.dtype)).mul_(scale).clamp_(max=1.0)

    def _densify(self, near: torch.Tensor) -> torch.Tensor:
        s = self.image_size
        img = near.reshape(-1, 1, s, s)
        filled = -F.max_pool2d(-img, kernel_size=3, stride=1, padding=1)
        return torch.where(torch.isinf(img), filled, img).reshape(near.shape)

    def _smooth(self, grey: torch.Tensor) -> torch.Tensor:
        s = self.image_size
        g = torch.exp(-(torch.arange(-1, 2, dtype=grey.dtype, device=grey.device) ** 2) / (2 * 0.8**2))
        kernel = (g[:, None] * g[None, :]) / (g.sum() ** 2)
        img = F.pad(grey.reshape(-1, 1, s, s), (1, 1, 1, 1), mode="replicate")
        return F.conv2d(img, kernel.view(1, 1, 3, 3)).reshape(grey.shape).clamp(0.0, 1.0)

    def _grey_from_near(self, near: torch.Tensor, z_max: torch.Tensor, ws: _Workspace | None = None):
        if not self.densify:
            return self._intensity(near, z_max, ws)
        near = self._densify(near)
        z_max = torch.where(torch.isinf(near), torch.zeros_like(near), near).amax(dim=-1, keepdim=True)
        return self._smooth(self._intensity(near, z_max))

    def _normalise_channels(self, grey: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``(b, V, S, S)`` grey -> ``(b, V, 3, S, S)`` mean/std-normalised pixels."""
        key = ("channels", str(grey.device))
        if key not in self._basis_cache:  # one host-to-device copy per device, then cached
            mean = torch.tensor(self.image_mean, dtype=torch.float32).view(3, 1, 1)
            inv_std = 1.0 / torch.tensor(self.image_std, dtype=torch.float32).view(3, 1, 1)
            self._basis_cache[key] = ((-mean * inv_std).to(grey.device), inv_std.to(grey.device))
        shift, scale = self._basis_cache[key]
        return torch.addcmul(shift, grey.unsqueeze(2), scale, out=out)

    def depth_to_intensity(self, depth: torch.Tensor) -> torch.Tensor:
        """``(..., S, S)`` depth (0 = background) -> grey image in [0, 1] (background 1.0, before mean/std)."""
        if not isinstance(depth, torch.Tensor) or depth.dim() < 2:
            raise ValueError("`depth` must be a tensor of shape (..., S, S)")
        if depth.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"`depth` must end with ({self.image_size}, {self.image_size}), got {tuple(depth.shape)}"
            )
        flat = depth.float().reshape(*depth.shape[:-2], -1)
        foreground = flat > 0
        near = torch.where(foreground, flat, torch.full((), float("inf"), device=depth.device))
        z_max = torch.where(foreground, flat, torch.zeros_like(flat)).amax(dim=-1, keepdim=True)
        return self._grey_from_near(near, z_max).reshape(depth.shape)

    def depth_to_image(self, depth: torch.Tensor) -> torch.Tensor:
        """``(B, V, S, S)`` depth (0 = background) -> ``(B, V, 3, S, S)`` normalised pixel values.

        docs/design.md, "Depth to intensity": foreground is ``depth > 0``; ``z_max`` and ``z_min`` are taken per view;
        background is 1.0 before the mean/std normalisation.
        """
        if not isinstance(depth, torch.Tensor) or depth.dim() != 4:
            raise ValueError("`depth` must be a tensor of shape (B, V, S, S)")
        return self._normalise_channels(self.depth_to_intensity(depth))

    # -- public API ---------------------------------------------------------------------------------

    def _prepare(self, points: torch.Tensor, name: str = "points") -> torch.Tensor:
        if not isinstance(points, torch.Tensor):
            raise TypeError(
                f"`{name}` must be a torch.Tensor of shape (B, N, 3), got {type(points).__name__}"
            )
        if points.dim() != 3 or points.shape[-1] != 3:
            raise ValueError(f"`{name}` must have shape (B, N, 3), got {tuple(points.shape)}")
        if not points.is_floating_point():
            raise TypeError(f"`{name}` must be floating point, got {points.dtype}")
        if points.shape[1] == 0:
            raise ValueError(f"`{name}` has no points (N = 0)")
        if points.shape[1] >= 2**31:
            raise ValueError(f"`{name}` has too many points ({points.shape[1]}) for 32-bit point indices")
        return points.float()

    def _plan(self, pts: torch.Tensor, v: int) -> tuple[int, int, _Workspace | None]:
        """Clouds per chunk, points per pass, and a scratch workspace (CPU without autograd only)."""
        b, n, _ = pts.shape
        k2 = (2 * self.stencil_half + 1) ** 2
        if pts.device.type == "cuda":
            budget_candidates, budget_pixels = 2**27, 2**27
        else:
            budget_candidates, budget_pixels = 2**21, 2**22
        if self.chunk_size is not None:
            chunk = min(self.chunk_size, b)
        else:
            chunk = min(b, budget_candidates // max(v * n * k2, 1), budget_pixels // (v * self.image_size**2))
            chunk = max(1, chunk)
        needs_grad = torch.is_grad_enabled() and pts.requires_grad
        if needs_grad:
            step = n
        elif self.point_chunk_size is not None:
            step = min(n, self.point_chunk_size)
        else:
            step = min(n, max(1, budget_candidates // (chunk * v * k2)))
        if needs_grad or torch.compiler.is_compiling():  # out-of-place ops only
            return chunk, step, None
        ws = _Workspace(pts.device, reuse=pts.device.type == "cpu")
        return chunk, step, ws

    @staticmethod
    def _slice(t: torch.Tensor, c0: int, c1: int) -> torch.Tensor:
        return t if t.shape[0] == 1 else t[c0:c1]

    def rasterize(
        self,
        points: torch.Tensor,
        views: str | Sequence | torch.Tensor = "reference10",
        distances: torch.Tensor | None = None,
    ) -> RasterOutput:
        """Z-buffer of normalised clouds.

        Args:
            points: ``(B, N, 3)`` float, already normalised and y-up.
            views: a preset name, a list of ``(elevation, azimuth[, distance])``, or a tensor ``(V, 3)``
                or ``(B, V, 3)`` (per-sample views).
            distances: optional ``(B, V)`` or ``(B,)`` override of the views' distances, e.g. the
                pre-training zoom ``d ~ U[0.9, 1.1)``. The cloud is scaled by ``1/d``: nothing is clipped.

        Returns:
            :class:`RasterOutput` with ``depth`` and ``point_index``, each ``(B, V, S, S)``. ``depth`` is
            differentiable with respect to ``points`` (through the winning point's view depth).
        """
        pts = self._prepare(points)
        b = pts.shape[0]
        rot, centre_view, dist = self._camera(views, distances, b, pts.device)
        v, s = rot.shape[1], self.image_size
        chunk, step, ws = self._plan(pts, v)
        if chunk >= b:
            depth, index = self._zbuffer_index(pts, rot, centre_view, dist, ws, step)
            return RasterOutput(depth.view(b, v, s, s), index.view(b, v, s, s))
        depth = torch.empty(b, v, s, s, device=pts.device)
        index = torch.empty(b, v, s, s, dtype=torch.long, device=pts.device)
        for c0 in range(0, b, chunk):
            c1 = min(b, c0 + chunk)
            rows = (c1 - c0) * v
            d, i = self._zbuffer_index(
                pts[c0:c1],
                self._slice(rot, c0, c1),
                self._slice(centre_view, c0, c1),
                self._slice(dist, c0, c1),
                ws,
                step,
                depth_out=None if ws is None else depth[c0:c1].view(rows, s * s),
                index_out=None if ws is None else index[c0:c1].view(rows, s * s),
            )
            if ws is None:
                depth[c0:c1] = d.view(c1 - c0, v, s, s)
                index[c0:c1] = i.view(c1 - c0, v, s, s)
        return RasterOutput(depth, index)

    def _render_chunk(self, pts, rot, centre_view, dist, ws, step: int, normalise: bool, out=None):
        b = pts.shape[0]
        v, s = rot.shape[1], self.image_size
        buf = self._zbuffer_float(pts, rot, centre_view, dist, ws, step)  # (bV, S*S), inf background
        rows = buf.shape[0]
        inf = torch.full((), float("inf"), device=buf.device)
        # foreground is depth > 0 (design.md, "Depth to intensity"), so a pixel won by a point at depth exactly 0 is background.
        foreground = torch.gt(buf, 0.0, out=_scratch(ws, "mask", (rows, s * s), torch.bool))
        near = torch.where(foreground, buf, inf, out=_scratch(ws, "near", (rows, s * s), torch.float32))
        z_max = torch.nan_to_num(buf, posinf=0.0, out=_scratch(ws, "grey", (rows, s * s), torch.float32))
        z_max = z_max.amax(dim=-1, keepdim=True)
        grey = self._grey_from_near(near, z_max, ws).view(b, v, s, s)
        if not normalise:
            return grey if out is None else out.copy_(grey)
        return self._normalise_channels(grey, out=out)

    def _render(self, points, views, distances, normalise: bool) -> torch.Tensor:
        pts = self._prepare(points)
        b = pts.shape[0]
        rot, centre_view, dist = self._camera(views, distances, b, pts.device)
        v, s = rot.shape[1], self.image_size
        chunk, step, ws = self._plan(pts, v)
        if chunk >= b:
            return self._render_chunk(pts, rot, centre_view, dist, ws, step, normalise)
        out = torch.empty((b, v, 3, s, s) if normalise else (b, v, s, s), device=pts.device)
        for c0 in range(0, b, chunk):
            c1 = min(b, c0 + chunk)
            args = (
                pts[c0:c1],
                self._slice(rot, c0, c1),
                self._slice(centre_view, c0, c1),
                self._slice(dist, c0, c1),
            )
            if ws is not None:
                self._render_chunk(*args, ws, step, normalise, out=out[c0:c1])
            else:
                out[c0:c1] = self._render_chunk(*args, None, step, normalise)
        return out

    def render(
        self,
        points: torch.Tensor,
        views: str | Sequence | torch.Tensor = "reference10",
        distances: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Normalised clouds ``(B, N, 3)`` -> CLIP pixel values ``(B, V, 3, S, S)``.

        Same result as ``depth_to_image(rasterize(points, views, distances).depth)``, faster (no point
        index is tracked). Differentiable with respect to the points (through the visible depths).
        """
        return self._render(points, views, distances, normalise=True)

    def render_intensity(
        self,
        points: torch.Tensor,
        views: str | Sequence | torch.Tensor = "reference10",
        distances: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Like :meth:`render` but returns the grey image ``(B, V, S, S)`` in [0, 1] before mean/std."""
        return self._render(points, views, distances, normalise=False)

    __call__ = render
