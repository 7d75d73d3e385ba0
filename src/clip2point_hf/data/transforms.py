"""On-the-fly randomness of training, never cached: sub-sampling and augmentation of point clouds, the random
view and zoom of an image-depth pair.

Every transform here is called as ``transform(rows, indices, generators)``: the rows of a batch (a dict of
columns), their dataset indices and one ``torch.Generator`` per row, keyed by ``(seed, stream, epoch, index)``.
:class:`~clip2point_hf.data.KeyedDataset` supplies them, so a resumed or multi-process run replays exactly the
same draws (see docs/design.md, "Seeded and keyed randomness"). The order of the draws inside a transform is
part of that contract.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..points_clip2point import UP_AXES, convert_up_axis, farthest_point_sample, normalize_point_cloud
from ..rendering_clip2point import CLIP_MEAN, CLIP_STD
from ._common import check_choice, check_num_points

__all__ = ["PointCloudBatchTransform", "PretrainingPairTransform", "composite_on_white", "load_rgb_image"]


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


def _column(rows: Mapping, name: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rows[name], dtype=np.float32))


class PointCloudBatchTransform:
    """Rows of a point-cloud dataset -> ``points`` (B, N, 3) y-up, ``label`` (B,), ``index`` (B,), and
    ``normals`` (B, N, 3) when the rows have them (sub-sampled, turned and scaled with their points).

    The steps, each drawn from the row's own generator, in this order:

    1. ``num_points``: a random subset (``sampling="random"``) or farthest-point sampling from a random start
       (``"fps"``); a cloud of exactly ``num_points`` is kept whole;
    2. ``normalize``: re-centre and re-scale into the unit sphere;
    3. ``scale=(low, high)``: multiply by a factor drawn in the range, per axis unless ``anisotropic=False``;
    4. ``rotate``: turn about the up axis by a uniform angle;
    5. ``translate``: shift by a vector uniform in ``[-translate, translate]^3``;
    6. ``jitter``: add Gaussian noise of that standard deviation, clipped at three of them.

    Args:
        up_axis: the stored clouds' up axis, one of :data:`~clip2point_hf.points_clip2point.UP_AXES`
            (``"x"``, ``"-x"``, ..., ``"-z"``); every cloud comes out y-up, the renderer's frame.

    The renderer re-normalises clouds into the unit sphere anyway; ``normalize`` matters for what comes after it
    (a scale or shift relative to the unit sphere).
    """

    def __init__(
        self,
        *,
        up_axis: str = "y",
        num_points: int | None = None,
        sampling: str = "random",
        normalize: bool = False,
        scale: tuple[float, float] | None = None,
        anisotropic: bool = True,
        rotate: bool = False,
        translate: float = 0.0,
        jitter: float = 0.0,
    ):
        self.up_axis = check_choice(up_axis, UP_AXES, "up_axis")
        self.num_points = None if num_points is None else check_num_points(num_points)
        self.sampling = check_choice(sampling, ("random", "fps"), "sampling")
        if scale is not None and not (len(scale) == 2 and 0 < scale[0] <= scale[1]):
            raise ValueError(f"`scale` must be (low, high) with 0 < low <= high, got {scale!r}")
        if translate < 0:
            raise ValueError(f"`translate` must be >= 0, got {translate!r}")
        if jitter < 0:
            raise ValueError(f"`jitter` must be >= 0, got {jitter!r}")
        self.normalize = normalize
        self.scale = scale
        self.anisotropic = anisotropic
        self.rotate = rotate
        self.translate = float(translate)
        self.jitter = float(jitter)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    def _subset(self, cloud: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        n, k = cloud.shape[0], self.num_points
        if k is None or k == n:
            return None
        if k > n:
            raise ValueError(f"`num_points` is {k}, but a cloud has only {n} points")
        if self.sampling == "random":
            return torch.randperm(n, generator=generator)[:k]
        start = torch.randint(n, (), generator=generator)
        return farthest_point_sample(cloud, k, start_index=start)

    def augment(
        self, cloud: torch.Tensor, generator: torch.Generator, normals: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One stored ``(N, 3)`` cloud (and its normals) -> y-up, sub-sampled and augmented, drawing from
        ``generator``."""
        cloud = convert_up_axis(cloud, self.up_axis)
        if normals is not None:
            normals = convert_up_axis(normals, self.up_axis)
        keep = self._subset(cloud, generator)
        if keep is not None:
            cloud = cloud[keep]
            normals = None if normals is None else normals[keep]
        if self.normalize:
            cloud = normalize_point_cloud(cloud)[0]
        if self.scale is not None:
            low, high = self.scale
            factor = low + (high - low) * torch.rand(3 if self.anisotropic else 1, generator=generator)
            cloud = cloud * factor
            if normals is not None and self.anisotropic:
                normals = torch.nn.functional.normalize(normals / factor, dim=-1)
        if self.rotate:
            theta = float(torch.rand((), generator=generator)) * 2 * math.pi
            c, s = math.cos(theta), math.sin(theta)
            rotation = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
            cloud = cloud @ rotation.T
            normals = None if normals is None else normals @ rotation.T
        if self.translate > 0:
            cloud = cloud + (torch.rand(3, generator=generator) * 2 - 1) * self.translate
        if self.jitter > 0:
            noise = torch.randn(cloud.shape, generator=generator) * self.jitter
            cloud = cloud + noise.clamp(-3 * self.jitter, 3 * self.jitter)
        return cloud, normals

    def __call__(self, rows: Mapping, indices: Sequence[int], generators: Sequence[torch.Generator]) -> dict:
        clouds = _column(rows, "points")
        normals = _column(rows, "normals") if "normals" in rows else [None] * len(clouds)
        out_points, out_normals = [], []
        for cloud, cloud_normals, generator in zip(clouds, normals, generators, strict=True):
            cloud, cloud_normals = self.augment(cloud, generator, cloud_normals)
            out_points.append(cloud)
            out_normals.append(cloud_normals)
        out = {"points": torch.stack(out_points)}
        if "normals" in rows:
            out["normals"] = torch.stack(out_normals)
        if "label" in rows:
            out["label"] = torch.as_tensor(np.asarray(rows["label"], dtype=np.int64))
        out["index"] = torch.as_tensor(indices, dtype=torch.long)
        return out


class PretrainingPairTransform:
    """Rows of a pairs dataset (``load_shapenet_pairs``) -> one training pair per object, as pre-training draws
    them (see docs/design.md, "Image-depth pre-training").

    Per object, from its generator, in this order: one of its RGB renderings (uniformly), ``num_points`` random
    points, and two zoom distances ``d_j = 1 + (u_j - 0.5) * distance_jitter`` (``u_j ~ U[0, 1)``; 0.2 gives the
    reference's ``[0.9, 1.1)``). Returns ``points`` (B, N, 3), ``image`` (B, 3, S, S) normalised with
    ``image_mean``/``image_std`` (CLIP's by default; zeros and ones give ``[0, 1]``), ``view`` (B,) (which
    rendering), ``view_angles`` (B, 2) (its elevation and azimuth), ``distances`` (B, 2), ``label`` and
    ``index``. Depth maps are rendered later, on the accelerator device.
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
        self.image_size = check_num_points(image_size, "image_size")
        self.points = PointCloudBatchTransform(num_points=num_points)
        self.distance_jitter = float(distance_jitter)
        self.image_mean = torch.tensor(image_mean, dtype=torch.float32).view(3, 1, 1)
        self.image_std = torch.tensor(image_std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, rows: Mapping, indices: Sequence[int], generators: Sequence[torch.Generator]) -> dict:
        clouds = _column(rows, "points")
        num_views = self.view_angles.shape[0]
        points, images, views, distances = [], [], [], []
        for cloud, rendered, generator in zip(clouds, rows["images"], generators, strict=True):
            if len(rendered) != num_views:
                raise ValueError(f"an object has {len(rendered)} renderings, the view list has {num_views}")
            view = int(torch.randint(num_views, (1,), generator=generator))
            points.append(self.points.augment(cloud, generator)[0])
            u = torch.rand(2, generator=generator)
            images.append(load_rgb_image(rendered[view], self.image_size))
            views.append(view)
            distances.append(1.0 + (u - 0.5) * self.distance_jitter)
        image = (torch.stack(images) - self.image_mean) / self.image_std
        view_index = torch.tensor(views, dtype=torch.long)
        return {
            "points": torch.stack(points),
            "image": image,
            "view": view_index,
            "view_angles": self.view_angles[view_index],
            "distances": torch.stack(distances),
            "label": torch.as_tensor(np.asarray(rows["label"], dtype=np.int64)),
            "index": torch.as_tensor(indices, dtype=torch.long),
        }
