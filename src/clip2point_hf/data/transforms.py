"""On-the-fly randomness of training, never cached: sub-sampling and augmentation of point clouds, the
random view of an image-depth pair.

Two families, because they draw their randomness differently:

* :class:`PointCloudTransform` and :class:`RandomViewPairTransform` draw from one ``generator`` (or torch's
  global RNG) per batch: for ``ds.set_transform(...)`` or a ``DataLoader`` collate function (see
  :mod:`clip2point_hf.data.collate`). Randomness comes from ``generator`` when given, else from torch's global
  generator, which a ``DataLoader`` seeds differently in every worker (seed the loader with ``generator=`` for
  reproducible epochs). Do not share one ``torch.Generator`` object across workers: each worker gets a copy
  with the same state, hence the same draws.
* :class:`PointCloudBatchTransform` and :class:`PretrainingPairTransform` receive one generator per sample,
  keyed by ``(seed, stream, epoch, index)`` (:class:`clip2point_apps.training.KeyedDataset`): what the training
  scripts use, so that a resumed or multi-process run replays exactly the same draws. Their draw order is part
  of that contract, which is why they are not merged with the first family.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..points_clip2point import convert_up_axis, farthest_point_sample, normalize_point_cloud
from ..rendering_clip2point import CLIP_MEAN, CLIP_STD
from ._common import check_num_points
from .collate import _to_tensor, batch_to_tensors, collate_point_clouds

__all__ = [
    "PointCloudBatchTransform",
    "PointCloudTransform",
    "PretrainingPairTransform",
    "RandomViewPairTransform",
    "composite_on_white",
    "load_rgb_image",
]

_UP_INDEX = {"x": 0, "y": 1, "z": 2}


def composite_on_white(image):
    """A PIL image as RGB, its transparent pixels composited onto white (the renderings' background)."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image)
    return image.convert("RGB")


def load_rgb_image(image, image_size: int) -> torch.Tensor:
    """A stored image (``{"bytes", "path"}`` as ``datasets`` keeps it undecoded, or PIL) -> ``(3, S, S)`` float
    in ``[0, 1]``; transparent pixels are composited onto white, other sizes resized (bicubic)."""
    import io

    from PIL import Image

    if isinstance(image, Mapping):
        image = Image.open(io.BytesIO(image["bytes"])) if image.get("bytes") else Image.open(image["path"])
    image = composite_on_white(image)
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255.0)


class PointCloudTransform:
    """Random sub-sampling and augmentation of a batch of clouds (every call draws afresh).

    Args:
        num_points: points to keep per cloud (``None``: keep all).
        sampling: ``"random"`` (a random subset, random order; default), ``"first"`` or ``"fps"``
            (farthest-point sampling from a random start).
        scale: ``(low, high)``: multiply each cloud by a factor drawn uniformly in the range
            (per axis when ``anisotropic``), e.g. ``(2/3, 3/2)`` as in Point-BERT. ``None``: off.
        anisotropic: draw the scale per axis.
        translate: shift each cloud by a vector uniform in ``[-translate, translate]^3``. ``0``: off.
        rotate_up: rotate each cloud by a uniform random angle about ``up_axis``.
        up_axis: ``"x"``, ``"y"`` or ``"z"``, for ``rotate_up``.
        jitter: ``(sigma, clip)``: add clipped Gaussian noise to every point. ``None``: off.
        normalize: re-centre and re-scale into the unit sphere after sub-sampling (before augmenting).
        generator: a ``torch.Generator`` for the draws (else the global RNG).

    Columns: ``points`` (and ``normals``, sub-sampled and rotated alike) become float tensors
    ``(B, num_points, 3)``; ``label`` becomes a ``LongTensor``; other columns pass through.
    """

    def __init__(
        self,
        num_points: int | None = 1024,
        *,
        sampling: str = "random",
        scale: tuple[float, float] | None = None,
        anisotropic: bool = True,
        translate: float = 0.0,
        rotate_up: bool = False,
        up_axis: str = "y",
        jitter: tuple[float, float] | None = None,
        normalize: bool = False,
        generator: torch.Generator | None = None,
    ):
        if num_points is not None and (
            isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 1
        ):
            raise ValueError(f"`num_points` must be a positive int or None, got {num_points!r}")
        if sampling not in ("random", "first", "fps"):
            raise ValueError(f"`sampling` must be 'random', 'first' or 'fps', got {sampling!r}")
        if up_axis not in _UP_INDEX:
            raise ValueError(f"`up_axis` must be 'x', 'y' or 'z', got {up_axis!r}")
        if scale is not None and not (len(scale) == 2 and 0 < scale[0] <= scale[1]):
            raise ValueError(f"`scale` must be (low, high) with 0 < low <= high, got {scale!r}")
        if translate < 0:
            raise ValueError(f"`translate` must be >= 0, got {translate!r}")
        if jitter is not None and not (len(jitter) == 2 and jitter[0] >= 0 and jitter[1] >= 0):
            raise ValueError(f"`jitter` must be (sigma, clip) with both >= 0, got {jitter!r}")
        self.num_points = num_points
        self.sampling = sampling
        self.scale = scale
        self.anisotropic = anisotropic
        self.translate = float(translate)
        self.rotate_up = rotate_up
        self.up_axis = up_axis
        self.jitter = jitter
        self.normalize = normalize
        self.generator = generator

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "generator")
        return f"{type(self).__name__}({args})"

    def _rand(self, *shape) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator)

    def _indices(self, pts: torch.Tensor) -> torch.Tensor | None:
        b, n, _ = pts.shape
        k = self.num_points
        if k is None or (k == n and self.sampling != "random"):
            return None
        if k > n:
            raise ValueError(f"cannot take {k} points from clouds of {n}")
        if self.sampling == "first":
            return torch.arange(k).expand(b, k)
        if self.sampling == "random":
            return self._rand(b, n).argsort(dim=1)[:, :k]
        start = (self._rand(b) * n).long().clamp_(max=n - 1)
        return farthest_point_sample(pts, k, start_index=start)

    def augment(self, points: torch.Tensor, normals: torch.Tensor | None = None):
        """Sub-sample and augment ``(B, N, 3)`` clouds; returns ``(points, normals)``."""
        idx = self._indices(points)
        if idx is not None:
            points = torch.gather(points, 1, idx[..., None].expand(-1, -1, 3))
            if normals is not None:
                normals = torch.gather(normals, 1, idx[..., None].expand(-1, -1, 3))
        b = points.shape[0]
        if self.normalize:
            points = normalize_point_cloud(points)[0]
        if self.rotate_up:
            theta = self._rand(b) * (2 * math.pi)
            c, s = torch.cos(theta), torch.sin(theta)
            u = _UP_INDEX[self.up_axis]
            i, j = [a for a in range(3) if a != u]
            rot = torch.zeros(b, 3, 3)
            rot[:, u, u] = 1
            rot[:, i, i], rot[:, i, j], rot[:, j, i], rot[:, j, j] = c, -s, s, c
            points = points @ rot.transpose(1, 2)
            if normals is not None:
                normals = normals @ rot.transpose(1, 2)
        if self.scale is not None:
            lo, hi = self.scale
            factor = lo + (hi - lo) * self._rand(b, 1, 3 if self.anisotropic else 1)
            points = points * factor
            if normals is not None and self.anisotropic:
                normals = torch.nn.functional.normalize(normals / factor, dim=-1)
        if self.translate > 0:
            points = points + (self._rand(b, 1, 3) * 2 - 1) * self.translate
        if self.jitter is not None:
            sigma, clip = self.jitter
            noise = torch.randn(points.shape, generator=self.generator) * sigma
            points = points + noise.clamp_(-clip, clip)
        return points, normals

    def __call__(self, batch: Mapping) -> dict:
        """``datasets`` transform: a batch (dict of columns) in, a dict with tensors out."""
        out = (
            batch_to_tensors(batch) if any(isinstance(v, np.ndarray) for v in batch.values()) else dict(batch)
        )
        pts = _to_tensor(batch["points"])
        normals = _to_tensor(batch["normals"]) if "normals" in batch else None
        pts, normals = self.augment(pts, normals)
        out["points"] = pts
        if normals is not None:
            out["normals"] = normals
        if "label" in batch:
            out["label"] = torch.as_tensor(np.asarray(batch["label"], dtype=np.int64))
        return out

    def collate(self, examples: Sequence[Mapping]) -> dict:
        """``DataLoader`` collate function: a list of examples in, a dict of batched tensors out."""
        return self(collate_point_clouds(examples))


class RandomViewPairTransform:
    """The reference's pairing, on the fly: per object and step, one random view and random points.

    Use as ``pairs["train"].set_transform(RandomViewPairTransform())``. Each call draws a view index
    uniformly in ``[0, num_views)`` and ``num_points`` distinct random points, normalised into the unit
    sphere (SPEC section 2).

    Args:
        num_points: points per sample (``None``: all).
        image_size: output side; views of another size are resized (bicubic).
        clip_normalize: apply CLIP's mean/std to the image; otherwise (default) the image is float in
            ``[0, 1]``. Transparent pixels are composited onto white.
        normalize_points: re-normalise the subset into the unit sphere.
        generator: ``torch.Generator`` for the draws (else the global RNG, seeded per ``DataLoader`` worker).

    Returns a batch dict: ``points`` float ``(B, num_points, 3)``, ``image`` float ``(B, 3, S, S)``,
    ``view`` long ``(B,)``, ``label`` long ``(B,)``, ``name`` list of str.
    """

    def __init__(
        self,
        num_points: int | None = 1024,
        *,
        image_size: int = 224,
        clip_normalize: bool = False,
        normalize_points: bool = True,
        generator: torch.Generator | None = None,
    ):
        if num_points is not None:
            check_num_points(num_points)
        check_num_points(image_size, "image_size")
        self.num_points = num_points
        self.image_size = image_size
        self.clip_normalize = clip_normalize
        self.normalize_points = normalize_points
        self.generator = generator

    def _image(self, img) -> torch.Tensor:
        t = load_rgb_image(img, self.image_size)
        if self.clip_normalize:
            t = (t - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
        return t

    def __call__(self, batch: Mapping) -> dict:
        points, images, views = [], [], []
        for pts, imgs in zip(batch["points"], batch["images"]):
            pts = torch.as_tensor(np.asarray(pts, dtype=np.float32))
            n = pts.shape[0]
            k = n if self.num_points is None else self.num_points
            if k > n:
                raise ValueError(f"cannot take {k} points from a cloud of {n}")
            idx = torch.randperm(n, generator=self.generator)[:k]
            pts = pts[idx]
            if self.normalize_points:
                pts = normalize_point_cloud(pts)[0]
            v = int(torch.randint(len(imgs), (1,), generator=self.generator))
            points.append(pts)
            images.append(self._image(imgs[v]))
            views.append(v)
        out = {
            "points": torch.stack(points),
            "image": torch.stack(images),
            "view": torch.tensor(views, dtype=torch.long),
            "label": torch.as_tensor(np.asarray(batch["label"], dtype=np.int64)),
        }
        for key in ("name", "synset"):
            if key in batch:
                out[key] = list(batch[key])
        return out


class PointCloudBatchTransform:
    """Rows of a point-cloud dataset -> ``points`` (B, N, 3) y-up, ``label`` (B,), ``index`` (B,).

    Training augmentation (all drawn from each sample's keyed generator, in this order): a random subset of
    ``num_points`` points, an anisotropic scale in ``scale``, a rotation about the up axis, clipped Gaussian
    jitter. Clouds are re-normalised into the unit sphere when rendered.
    """

    def __init__(
        self,
        up_axis: str = "y",
        num_points: int | None = None,
        scale: tuple[float, float] | None = None,
        rotate: bool = False,
        jitter: float = 0.0,
    ):
        self.up_axis = up_axis
        self.num_points = num_points
        self.scale = scale
        self.rotate = rotate
        self.jitter = float(jitter)

    def __call__(self, rows: Mapping, indices: Sequence[int], generators: Sequence[torch.Generator]) -> dict:
        points = convert_up_axis(
            torch.from_numpy(np.ascontiguousarray(rows["points"], dtype=np.float32)), self.up_axis
        )
        out = []
        for cloud, g in zip(points, generators):
            n = cloud.shape[0]
            if self.num_points is not None and self.num_points < n:
                cloud = cloud[torch.randperm(n, generator=g)[: self.num_points]]
            if self.scale is not None:
                low, high = self.scale
                cloud = cloud * (low + (high - low) * torch.rand(3, generator=g))
            if self.rotate:
                theta = float(torch.rand((), generator=g)) * 2 * math.pi
                c, s = math.cos(theta), math.sin(theta)
                rot = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
                cloud = cloud @ rot.T
            if self.jitter > 0:
                cloud = cloud + (torch.randn(cloud.shape, generator=g) * self.jitter).clamp(
                    -3 * self.jitter, 3 * self.jitter
                )
            out.append(cloud)
        return {
            "points": torch.stack(out),
            "label": torch.as_tensor(np.asarray(rows["label"], dtype=np.int64)),
            "index": torch.as_tensor(indices, dtype=torch.long),
        }


class PretrainingPairTransform:
    """Rows of a pairs dataset (``load_shapenet_pairs``) -> one training pair per object (SPEC section 2).

    Per object, from its keyed generator: one of its RGB renderings, ``num_points`` random points, and two zoom
    distances ``d_j = 1 + (u_j - 0.5) * distance_jitter`` (``u_j ~ U[0, 1)``; 0.2 gives the reference's
    ``[0.9, 1.1)``). Returns ``points`` (B, N, 3), ``image`` (B, 3, S, S) CLIP-normalised, ``view_angles``
    (B, 2) (elevation, azimuth of the chosen rendering), ``distances`` (B, 2), ``label`` and ``index``.
    Depth maps are rendered later, on the accelerator device (:func:`pretraining_inputs`).
    """

    def __init__(
        self,
        view_angles: Sequence[Sequence[float]],
        image_size: int,
        num_points: int | None = 1024,
        distance_jitter: float = 0.2,
        image_mean: Sequence[float] = CLIP_MEAN,
        image_std: Sequence[float] = CLIP_STD,
    ):
        self.view_angles = torch.tensor(
            [[float(v[0]), float(v[1])] for v in view_angles], dtype=torch.float32
        )
        self.image_size = int(image_size)
        self.num_points = num_points
        self.distance_jitter = float(distance_jitter)
        self.image_mean = torch.tensor(image_mean, dtype=torch.float32).view(3, 1, 1)
        self.image_std = torch.tensor(image_std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, rows: Mapping, indices: Sequence[int], generators: Sequence[torch.Generator]) -> dict:
        clouds = torch.from_numpy(np.ascontiguousarray(rows["points"], dtype=np.float32))
        num_views = self.view_angles.shape[0]
        points, images, views, distances = [], [], [], []
        for cloud, rendered, g in zip(clouds, rows["images"], generators):
            if len(rendered) != num_views:
                raise ValueError(f"an object has {len(rendered)} renderings, the view list has {num_views}")
            view = int(torch.randint(num_views, (1,), generator=g))
            n = cloud.shape[0]
            if self.num_points is not None and self.num_points < n:
                cloud = cloud[torch.randperm(n, generator=g)[: self.num_points]]
            u = torch.rand(2, generator=g)
            points.append(cloud)
            images.append(load_rgb_image(rendered[view], self.image_size))
            views.append(view)
            distances.append(1.0 + (u - 0.5) * self.distance_jitter)
        image = (torch.stack(images) - self.image_mean) / self.image_std
        return {
            "points": torch.stack(points),
            "image": image,
            "view_angles": self.view_angles[torch.tensor(views)],
            "distances": torch.stack(distances),
            "label": torch.as_tensor(np.asarray(rows["label"], dtype=np.int64)),
            "index": torch.as_tensor(indices, dtype=torch.long),
        }
