"""Point-cloud geometry and a pure-PyTorch orthographic depth renderer for CLIP2Point.

Nothing here needs PyTorch3D or a compiled extension; everything runs on CPU and CUDA.
This module must import only ``torch``/``numpy`` and the standard library (it is copied flat into
Hub folders next to ``processing_clip2point.py``).
"""

from __future__ import annotations

import torch

__all__ = [
    "farthest_point_sample",
    "normalize_point_cloud",
]


def _check_points(points: torch.Tensor, name: str = "points") -> None:
    if not isinstance(points, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(points).__name__}")
    if points.dim() not in (2, 3):
        raise ValueError(f"`{name}` must have shape (N, 3) or (B, N, 3), got {tuple(points.shape)}")
    if points.shape[-1] != 3:
        raise ValueError(f"`{name}` must have a last dimension of 3, got {tuple(points.shape)}")
    if not points.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got {points.dtype}")


def farthest_point_sample(
    points: torch.Tensor,
    num_samples: int,
    *,
    start_index: int | torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.LongTensor:
    """Iterative farthest-point sampling, in pure PyTorch (CPU or CUDA, no host synchronisation).

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
    return out[0] if unbatched else out


def normalize_point_cloud(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centre each cloud on its centroid and divide by its largest point norm (SPEC section 1).

    Args:
        points: ``(N, 3)`` or ``(B, N, 3)`` floating-point coordinates.

    Returns:
        ``(normalized, centroid, scale)`` with ``normalized`` like ``points`` (inside the unit sphere,
        its farthest point on it), ``centroid`` ``(3,)`` / ``(B, 3)`` and ``scale`` ``()`` / ``(B,)``,
        such that ``normalized * scale + centroid`` gives back the input.

    Degenerate clouds: when all points coincide (the radius is zero, or below rounding noise of
    ``16 * eps * max|coordinate|``), the normalised cloud is all zeros and ``scale`` is 0 -- never NaN.
    No host synchronisation: the zero-radius case is handled with ``torch.where``.
    """
    _check_points(points)
    orig_dtype = points.dtype
    pts = points.float() if orig_dtype in (torch.float16, torch.bfloat16) else points
    centroid = pts.mean(dim=-2, keepdim=True)
    centred = pts - centroid
    scale = centred.norm(dim=-1).amax(dim=-1, keepdim=True)  # (..., 1)
    magnitude = pts.abs().amax(dim=(-2, -1)).unsqueeze(-1)
    tiny = torch.finfo(pts.dtype).tiny
    degenerate = scale <= 16 * torch.finfo(pts.dtype).eps * magnitude + tiny
    scale = torch.where(degenerate, torch.zeros_like(scale), scale)
    safe = torch.where(degenerate, torch.ones_like(scale), scale)
    normalized = torch.where(
        degenerate.unsqueeze(-1), torch.zeros_like(centred), centred / safe.unsqueeze(-1)
    )
    return (
        normalized.to(orig_dtype),
        centroid.squeeze(-2).to(orig_dtype),
        scale.squeeze(-1).to(orig_dtype),
    )
