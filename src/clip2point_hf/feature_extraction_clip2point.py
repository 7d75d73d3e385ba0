"""``CLIP2PointFeatureExtractor``: point clouds -> the depth views CLIP2Point's encoders take.

The point-cloud front end, as an audio or image front end is in transformers: saved alone in
``preprocessor_config.json``, loaded alone through ``AutoFeatureExtractor`` (or ``AutoProcessor`` on a folder
without a tokenizer), and usable without any tokenizer. ``CLIP2PointProcessor`` adds CLIP's tokenizer to it.
Rendering follows ``docs/design.md`` ("Depth rendering").

This file is copied flat into Hub folders: it imports only flat siblings and third-party packages.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature, FeatureExtractionMixin

from .points_clip2point import (
    UP_AXES,
    convert_up_axis,
    farthest_point_sample,
    float32_shape_loss,
    float32_shape_warning,
    normalize_point_cloud,
    random_point_sample,
)
from .rendering_clip2point import CLIP_MEAN, CLIP_STD, DepthRenderer, resolve_views

__all__ = ["CLIP2PointFeatureExtractor"]

#: The settings that shape the renderer; a change of any of them builds a new one.
RENDER_SETTINGS = (
    "image_size",
    "point_radius",
    "depth_mode",
    "densify",
    "clip_free_zoom",
    "depth_mean",
    "depth_std",
)

#: Keys transformers itself writes into a saved feature extractor's dict (accepted, and kept by it).
SAVED_BY_TRANSFORMERS = {"feature_extractor_type", "processor_class", "auto_map"}


def _views_to_config(views: Any) -> str | list[list[float]]:
    """Validate ``views`` and keep it as the user wrote it: a preset name stays that name, a list stays that
    list (rows as lists of numbers), so ``to_json_string`` and ``save_pretrained`` reproduce it."""
    if isinstance(views, str):
        resolve_views(views)  # validates the preset name
        return views
    t = resolve_views(views)  # validates
    if t.dim() != 2:
        raise ValueError(
            "`views` stored in a feature extractor must be one list of views (V, 3), not per sample"
        )
    if isinstance(views, (torch.Tensor, np.ndarray)):
        return views.tolist()
    return [[x.item() if isinstance(x, (np.generic, torch.Tensor)) else x for x in row] for row in views]


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}")
    return value


class CLIP2PointFeatureExtractor(FeatureExtractionMixin):
    r"""Samples, normalises, orients and renders point clouds into multi-view depth images.

    ``CLIP2PointFeatureExtractor()`` renders exactly like the reference: 1024 points, the 10 reference views,
    224 x 224, point radius 0.02, the reference's ("parity") depth normalisation, CLIP mean/std.

    Args:
        num_points: points per cloud after sampling. Larger clouds are sub-sampled; smaller clouds keep all their
            points and repeat some of them (duplicates do not change a depth render).
        sampling: ``"random"`` (uniform without replacement, seeded) or ``"fps"`` (farthest-point sampling
            starting at point 0, deterministic).
        seed: seed of the random sampling; each call starts a fresh generator from it, so the same input gives
            the same result. ``None`` uses torch's global generator instead. A call can pass its own ``generator``.
        up_axis: the up axis of the input data, one of ``"x"``, ``"-x"``, ``"y"``, ``"-y"``, ``"z"``, ``"-z"``
            (:func:`convert_up_axis`): ``"y"`` (ShapeNet-55, ScanObjectNN: used as stored), ``"z"`` (ModelNet:
            mapped ``(x, y, z) -> (-y, z, -x)`` as in the reference).
        views: a preset name (``"reference10"``, ``"reference6"``, ``"upper10"``) or a list of
            ``(elevation_deg, azimuth_deg[, distance])``.
        image_size, point_radius, depth_mode, densify, clip_free_zoom: see :class:`DepthRenderer`.
        depth_mean, depth_std: per-channel normalisation of the 3-channel depth images (CLIP's by default).
        max_fps_points: with ``sampling="fps"``, clouds with more points are first reduced to this many by seeded
            random sampling (FPS costs ``num_points x N``).
        validate_values: check that coordinates are finite (raises ``ValueError`` naming the cloud), and warn once
            when float32 coordinates far from the origin have already lost a cloud's shape. For inputs already on
            a GPU this check synchronises once; the renderer itself never does.

    Calling it returns a :class:`~transformers.BatchFeature` with ``pixel_values`` ``(B, V, 3, S, S)`` (float32,
    on ``device`` or the input's device). Call-time options override the saved settings for that call only, as
    an image processor's do: ``views``, ``distances``, ``generator``, ``up_axis``, ``device``, ``return_tensors``.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        num_points: int = 1024,
        sampling: str = "random",
        seed: int | None = 0,
        up_axis: str = "y",
        views: str | Sequence = "reference10",
        image_size: int = 224,
        point_radius: float = 0.02,
        depth_mode: str = "parity",
        densify: bool = False,
        clip_free_zoom: bool = True,
        depth_mean: Sequence[float] | None = None,
        depth_std: Sequence[float] | None = None,
        max_fps_points: int = 16384,
        validate_values: bool = True,
        **kwargs,
    ) -> None:
        unknown = sorted(set(kwargs) - SAVED_BY_TRANSFORMERS)
        if unknown:
            raise TypeError(f"CLIP2PointFeatureExtractor got unexpected setting(s) {unknown}")
        super().__init__(**kwargs)
        self.num_points = _positive_int(num_points, "num_points")
        if sampling not in ("random", "fps"):
            raise ValueError(f'`sampling` must be "random" or "fps", got {sampling!r}')
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"`seed` must be an int or None, got {seed!r}")
        if up_axis not in UP_AXES:
            raise ValueError(f"`up_axis` must be one of {list(UP_AXES)}, got {up_axis!r}")
        self.max_fps_points = _positive_int(max_fps_points, "max_fps_points", minimum=num_points)
        self.sampling = sampling
        self.seed = seed
        self.up_axis = up_axis
        self.views = _views_to_config(views)
        self.image_size = image_size
        self.point_radius = point_radius
        self.depth_mode = depth_mode
        self.densify = bool(densify)
        self.clip_free_zoom = bool(clip_free_zoom)
        self.depth_mean = [float(x) for x in (depth_mean if depth_mean is not None else CLIP_MEAN)]
        self.depth_std = [float(x) for x in (depth_std if depth_std is not None else CLIP_STD)]
        self.validate_values = bool(validate_values)
        self.renderer  # noqa: B018 -- builds the renderer now, so bad render settings fail at construction

    # -- the renderer these settings describe ------------------------------------------------------------

    @property
    def renderer(self) -> DepthRenderer:
        """The :class:`DepthRenderer` of the current settings (rebuilt when a render setting changes)."""
        key = tuple(repr(getattr(self, name)) for name in RENDER_SETTINGS)
        cached = self.__dict__.get("_renderer")
        if cached is None or cached[0] != key:
            renderer = DepthRenderer(
                image_size=self.image_size,
                point_radius=self.point_radius,
                depth_mode=self.depth_mode,
                densify=self.densify,
                image_mean=self.depth_mean,
                image_std=self.depth_std,
                clip_free_zoom=self.clip_free_zoom,
            )
            self.__dict__["_renderer"] = cached = (key, renderer)
        return cached[1]

    @property
    def num_views(self) -> int:
        return len(resolve_views(self.views))

    def to_dict(self) -> dict[str, Any]:
        """The settings only: the cached renderer (and its GPU buffers) is neither copied nor saved; it is
        rebuilt from the settings, as Whisper's feature extractor leaves out its mel filters."""
        cached = self.__dict__.pop("_renderer", None)
        try:
            return super().to_dict()
        finally:
            if cached is not None:
                self.__dict__["_renderer"] = cached

    # -- input handling -----------------------------------------------------------------------------------

    def _as_cloud(self, cloud: Any, name: str) -> torch.Tensor:
        """One cloud -> ``(N, 3)`` floating tensor (extra columns dropped), with clear errors."""
        if isinstance(cloud, np.ndarray):
            if cloud.dtype == object:
                raise TypeError(f"`{name}` is a numpy object array; give a numeric (N, 3) array")
            t = torch.from_numpy(np.ascontiguousarray(cloud))
        elif isinstance(cloud, torch.Tensor):
            t = cloud
        elif isinstance(cloud, (list, tuple)):
            try:
                t = torch.as_tensor(np.asarray(cloud, dtype=np.float64))
            except (TypeError, ValueError) as err:
                raise ValueError(f"`{name}` could not be read as an (N, 3) array of numbers") from err
        else:
            raise TypeError(
                f"`{name}` must be an array, a tensor or a list of points, got {type(cloud).__name__}"
            )
        if t.dim() != 2:
            raise ValueError(f"`{name}` must have shape (N, C) with C >= 3, got {tuple(t.shape)}")
        return self._check(t, name)

    def _check(self, t: torch.Tensor, name: str) -> torch.Tensor:
        """Checks shared by single clouds ``(N, C)`` and batches ``(B, N, C)``; returns ``[..., :3]``."""
        if not t.is_floating_point():
            raise TypeError(
                f"`{name}` has dtype {t.dtype}; point coordinates must be floating point (float16/32/64)"
            )
        if t.shape[-1] < 3:
            raise ValueError(f"`{name}` has {t.shape[-1]} columns; each point needs at least x, y, z")
        if t.shape[-2] == 0:
            raise ValueError(f"`{name}` is empty (0 points)")
        t = t[..., :3]
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()  # normalise in float32 (float64 input stays float64 until the render)
        if self.validate_values:
            finite = torch.isfinite(t).all(dim=-1).all(dim=-1)
            coarse = float32_shape_loss(t) if t.dtype == torch.float32 else torch.zeros_like(finite)
            all_finite, any_coarse = torch.stack([finite.all(), coarse.any()]).tolist()  # one synchronisation
            if not all_finite:
                where = name if t.dim() == 2 else f"{name}[{int((~finite).nonzero()[0, 0])}]"
                raise ValueError(f"`{where}` contains NaN or Inf coordinates")
            if any_coarse:
                warnings.warn(float32_shape_warning(t, name), stacklevel=2)
        if t.dtype == torch.float64:
            # Centred while still float64: every later step (farthest-point sampling, the render) may work in
            # float32, which keeps a 1 m object's shape only up to about 1e5 from the origin.
            t = t - t.mean(dim=-2, keepdim=True)
        return t

    def _generator(self, generator: torch.Generator | None) -> torch.Generator | None:
        if generator is not None:
            return generator
        if self.seed is None:
            return None
        return torch.Generator().manual_seed(self.seed)

    def _sample_one(self, cloud: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``(N, 3)`` -> ``(num_points, 3)`` normalised (float32)."""
        n, k = cloud.shape[0], self.num_points
        if n < k:  # normalise the real points, then pad with repeats of them
            normed = normalize_point_cloud(cloud)[0]
            idx = random_point_sample(n, k, generator=generator, device=cloud.device)
            return normed[idx].float()
        if n > k:
            if self.sampling == "random":
                cloud = cloud[random_point_sample(n, k, generator=generator, device=cloud.device)]
            else:
                if n > self.max_fps_points:
                    pre = random_point_sample(
                        n, self.max_fps_points, generator=generator, device=cloud.device
                    )
                    cloud = cloud[pre]
                cloud = cloud[farthest_point_sample(cloud.float(), k, start_index=0)]
        return normalize_point_cloud(cloud)[0].float()

    def _sample_batch(self, t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        b, n, _ = t.shape
        k = self.num_points
        if n > k and self.sampling == "fps" and n <= self.max_fps_points:
            idx = farthest_point_sample(t.float(), k, start_index=0)
            t = torch.gather(t, 1, idx[..., None].expand(b, k, 3))
        elif n > k and self.sampling == "random":
            idx = torch.stack([random_point_sample(n, k, generator=generator) for _ in range(b)]).to(t.device)
            t = torch.gather(t, 1, idx[..., None].expand(b, k, 3))
        elif n != k:
            return torch.stack([self._sample_one(c, generator) for c in t])
        return normalize_point_cloud(t)[0].float()

    def _sample_clouds(self, point_clouds: Any, generator: torch.Generator | None) -> torch.Tensor:
        if isinstance(point_clouds, (np.ndarray, torch.Tensor)):
            t = (
                torch.from_numpy(np.ascontiguousarray(point_clouds))
                if isinstance(point_clouds, np.ndarray)
                else point_clouds
            )
            if t.dim() == 3:
                return self._sample_batch(self._check(t, "point_clouds"), generator)
            if t.dim() != 2:
                raise ValueError(
                    f"`point_clouds` must have shape (B, N, C) or (N, C), or be a list of clouds; got {tuple(t.shape)}"
                )
            clouds = [self._check(t, "point_clouds")]
        elif isinstance(point_clouds, (list, tuple)):
            if len(point_clouds) == 0:
                raise ValueError("`point_clouds` is an empty list")
            clouds = [self._as_cloud(c, f"point_clouds[{i}]") for i, c in enumerate(point_clouds)]
        else:
            raise TypeError(
                f"`point_clouds` must be an array, a tensor or a list of clouds, got {type(point_clouds).__name__}"
            )
        return torch.stack([self._sample_one(c, generator) for c in clouds])

    def prepare_point_clouds(
        self,
        point_clouds: Any,
        generator: torch.Generator | None = None,
        up_axis: str | None = None,
    ) -> torch.Tensor:
        """Sample, normalise and orient clouds: returns ``(B, num_points, 3)`` float32 (input's device).

        ``point_clouds``: a ``(B, N, C)`` array/tensor, a single ``(N, C)`` cloud (then ``B = 1``), or a list of
        ``(N_i, C)`` clouds of different sizes. ``C >= 3``; columns after x, y, z (normals, colours) are ignored.
        float16/32/64 are accepted; integer dtypes are rejected. ``up_axis`` overrides the saved one.
        """
        up_axis = self.up_axis if up_axis is None else up_axis
        if up_axis not in UP_AXES:
            raise ValueError(f"`up_axis` must be one of {list(UP_AXES)}, got {up_axis!r}")
        return convert_up_axis(self._sample_clouds(point_clouds, self._generator(generator)), up_axis)

    # -- main entry point ---------------------------------------------------------------------------------

    def __call__(
        self,
        point_clouds: Any = None,
        *,
        views: str | Sequence | torch.Tensor | None = None,
        distances: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        up_axis: str | None = None,
        device: torch.device | str | None = None,
        return_tensors: str | None = "pt",
    ) -> BatchFeature:
        """Render ``point_clouds`` (see :meth:`prepare_point_clouds`) into ``pixel_values``.

        Args:
            views: views for this call (a preset name, a list of ``(elevation, azimuth[, distance])``, or a
                ``(B, V, 3)`` tensor of per-sample views); default: the saved ``views``.
            distances: ``(B, V)`` or ``(B,)`` per-sample zoom (e.g. pre-training's ``U[0.9, 1.1)``).
            generator: random generator for the sampling (default: a fresh one seeded with ``seed``).
            up_axis: the clouds' up axis for this call; default: the saved ``up_axis``.
            device: where to sample and render (default: the input's device).
            return_tensors: ``"pt"`` (default) or ``"np"``.
        """
        if point_clouds is None:
            raise ValueError(
                "`point_clouds` is required: an (N, C) cloud, a (B, N, C) batch or a list of clouds"
            )
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f'`return_tensors` must be "pt" or "np", got {return_tensors!r}')
        points = self.prepare_point_clouds(point_clouds, generator=generator, up_axis=up_axis)
        if device is not None:
            points = points.to(device)
        pixels = self.renderer.render(points, self.views if views is None else views, distances)
        if return_tensors == "np":
            pixels = pixels.detach().cpu().numpy()
        return BatchFeature(data={"pixel_values": pixels})
