"""``CLIP2PointProcessor``: point clouds -> CLIP-ready depth views (and text -> tokens).

It samples every cloud to ``num_points`` (seeded random or farthest-point), normalises it into the
unit sphere, converts its up axis, and renders it with :class:`DepthRenderer` on the requested device.
The tokenizer (CLIP's) is optional: it is needed only when ``text`` is passed.

This file is copied flat into Hub folders: it imports only ``.points_clip2point`` and
``.rendering_clip2point`` (flat siblings) and third-party packages.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Unpack

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessingKwargs, ProcessorMixin
from transformers.utils import PROCESSOR_NAME, cached_file

from .points_clip2point import (
    UP_AXES,
    convert_up_axis,
    farthest_point_sample,
    normalize_point_cloud,
    random_point_sample,
)
from .rendering_clip2point import CLIP_MEAN, CLIP_STD, VIEW_PRESETS, DepthRenderer, resolve_views, view_name

__all__ = ["CLIP2PointProcessor", "CLIP2PointProcessorKwargs"]

_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "vocab.json")
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")
#: Names that processor_config.json files written before the rename used (read when loading, never written).
_RENAMED_SETTINGS = {"image_mean": "depth_mean", "image_std": "depth_std"}


class CLIP2PointProcessorKwargs(ProcessingKwargs, total=False):
    """Call-time options of :class:`CLIP2PointProcessor`, beyond the standard ones.

    The standard ones keep their transformers meaning: ``return_tensors`` (``"pt"`` by default, ``"np"``),
    ``device`` (where to sample and render; default: the input's device), and the tokenizer's ``padding``
    (``True`` by default), ``truncation``, ``max_length``...

    render_views: views for this call only (a preset name, a list of ``(elevation, azimuth[, distance])``, or a
        ``(B, V, 3)`` tensor of per-sample views); the saved ``views`` setting is the default.
    distances: ``(B, V)`` or ``(B,)`` per-sample zoom (e.g. pre-training's ``U[0.9, 1.1)``).
    generator: random generator for the sampling (default: a fresh one seeded with the ``seed`` setting).
    """

    render_views: str | Sequence | torch.Tensor | None
    distances: torch.Tensor | None
    generator: torch.Generator | None


def _views_to_config(views) -> str | list[list[float]]:
    """Validate ``views`` and keep it as the user wrote it: a preset name stays that name, a list stays that
    list (rows as lists, numbers unchanged), so ``to_json_string`` and ``save_pretrained`` reproduce it."""
    if isinstance(views, str):
        resolve_views(views)  # validates the preset name
        return views
    t = resolve_views(views)  # validates
    if t.dim() != 2:
        raise ValueError("`views` stored in a processor must be one list of views (V, 3), not per sample")
    if isinstance(views, (torch.Tensor, np.ndarray)):
        return views.tolist()
    return [[x.item() if isinstance(x, (np.generic, torch.Tensor)) else x for x in row] for row in views]


class CLIP2PointProcessor(ProcessorMixin):
    r"""Turns point clouds into the multi-view depth images CLIP2Point's encoders take, and text into
    CLIP tokens.

    ``CLIP2PointProcessor()`` renders exactly like the reference: 1024 points, the 10 reference views,
    224 x 224, point radius 0.02, the reference's ("parity") depth normalisation, CLIP mean/std.

    Args:
        tokenizer: a CLIP tokenizer (``CLIPTokenizer`` / ``CLIPTokenizerFast``), or ``None`` when the
            processor only renders.
        num_points: points per cloud after sampling. Larger clouds are sub-sampled; smaller clouds keep
            all their points and repeat some of them (duplicates do not change a depth render).
        sampling: ``"random"`` (uniform without replacement, seeded) or ``"fps"`` (farthest-point
            sampling starting at point 0, deterministic).
        seed: seed of the random sampling; each call starts a fresh generator from it, so the same
            input gives the same result. ``None`` uses torch's global generator instead. A call can
            also pass its own ``generator``.
        up_axis: the up axis of the input data, one of ``"x"``, ``"-x"``, ``"y"``, ``"-y"``, ``"z"``, ``"-z"``
            (:func:`convert_up_axis`): ``"y"`` (ShapeNet-55, ScanObjectNN: used as stored), ``"z"`` (ModelNet:
            mapped ``(x, y, z) -> (-y, z, -x)`` as in the reference).
        views: a preset name (``"reference10"``, ``"reference6"``, ``"upper10"``) or a list of
            ``(elevation_deg, azimuth_deg[, distance])``.
        image_size, point_radius, depth_mode, densify, clip_free_zoom: see :class:`DepthRenderer`.
        depth_mean, depth_std: per-channel normalisation of the 3-channel depth images (CLIP's by default).
            Named apart from transformers' image-processor kwargs ``image_mean``/``image_std``, which a processor
            call would route elsewhere; ``processor_config.json`` files that still carry the old names load
            into these.
        max_fps_points: with ``sampling="fps"``, clouds with more points are first reduced to this many
            by seeded random sampling (FPS costs ``num_points x N``).
        validate_values: check that coordinates are finite (raises ``ValueError`` naming the cloud).
            For inputs already on a GPU this check synchronises once; the renderer itself never does.

    Calling the processor returns a :class:`~transformers.BatchFeature` with ``pixel_values``
    ``(B, V, 3, S, S)`` (float32, on ``device`` or the input's device) and, when ``text`` is given,
    ``input_ids`` and ``attention_mask``. Call-time options follow transformers' processor rules
    (:class:`CLIP2PointProcessorKwargs`): the saved settings above are attributes only, so a call overrides the
    views with ``render_views=``, never with a second ``views``.
    """

    valid_processor_kwargs = CLIP2PointProcessorKwargs
    # Defaults of the tokenizer call, merged by `ProcessorMixin._merge_kwargs` (a call's kwargs win).
    text_kwargs = {"padding": True, "return_tensors": "pt"}

    def __init__(
        self,
        tokenizer=None,
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
        if tokenizer is not None:
            super().__init__(tokenizer, **kwargs)
        else:
            # ProcessorMixin insists on a tokenizer object; this processor renders without one.
            self.chat_template = kwargs.pop("chat_template", None)
            if kwargs:
                raise TypeError(f"Unexpected keyword argument(s) {sorted(kwargs)}")
            self.tokenizer = None
        if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 1:
            raise ValueError(f"`num_points` must be a positive int, got {num_points!r}")
        if sampling not in ("random", "fps"):
            raise ValueError(f'`sampling` must be "random" or "fps", got {sampling!r}')
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"`seed` must be an int or None, got {seed!r}")
        if up_axis not in UP_AXES:
            raise ValueError(f"`up_axis` must be one of {list(UP_AXES)}, got {up_axis!r}")
        if (
            isinstance(max_fps_points, bool)
            or not isinstance(max_fps_points, int)
            or max_fps_points < num_points
        ):
            raise ValueError(
                f"`max_fps_points` must be an int >= num_points ({num_points}), got {max_fps_points!r}"
            )
        self.num_points = num_points
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
        self.max_fps_points = max_fps_points
        self.validate_values = bool(validate_values)
        self.renderer = DepthRenderer(
            image_size=image_size,
            point_radius=point_radius,
            depth_mode=depth_mode,
            densify=densify,
            image_mean=self.depth_mean,
            image_std=self.depth_std,
            clip_free_zoom=clip_free_zoom,
        )

    # -- properties ---------------------------------------------------------------------------------

    @property
    def num_views(self) -> int:
        return len(VIEW_PRESETS[self.views]) if isinstance(self.views, str) else len(self.views)

    @property
    def model_input_names(self) -> list[str]:
        names = ["pixel_values"]
        if self.tokenizer is not None:
            names += [n for n in self.tokenizer.model_input_names if n not in names]
        return names

    # -- input handling -----------------------------------------------------------------------------

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
            if not bool(finite.all()):
                where = name if t.dim() == 2 else f"{name}[{int((~finite).nonzero()[0, 0])}]"
                raise ValueError(f"`{where}` contains NaN or Inf coordinates")
        return t

    def _generator(self, generator: torch.Generator | None) -> torch.Generator | None:
        if generator is not None:
            return generator
        if self.seed is None:
            return None
        return torch.Generator().manual_seed(self.seed)

    def _sample_one(self, cloud: torch.Tensor, generator) -> torch.Tensor:
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

    def prepare_point_clouds(
        self,
        point_clouds: Any,
        generator: torch.Generator | None = None,
        up_axis: str | None = None,
    ) -> torch.Tensor:
        """Sample, normalise and orient clouds: returns ``(B, num_points, 3)`` float32 (input's device).

        ``point_clouds``: a ``(B, N, C)`` array/tensor, a single ``(N, C)`` cloud (then ``B = 1``), or a
        list of ``(N_i, C)`` clouds of different sizes. ``C >= 3``; columns after x, y, z (normals,
        colours) are ignored. float16/32/64 are accepted; integer dtypes are rejected. ``up_axis``
        overrides the processor's for these clouds.
        """
        up_axis = self.up_axis if up_axis is None else up_axis
        if up_axis not in UP_AXES:
            raise ValueError(f"`up_axis` must be one of {list(UP_AXES)}, got {up_axis!r}")
        return convert_up_axis(self._sample_clouds(point_clouds, self._generator(generator)), up_axis)

    def _sample_clouds(self, point_clouds: Any, generator: torch.Generator | None) -> torch.Tensor:
        if isinstance(point_clouds, (np.ndarray, torch.Tensor)):
            t = (
                torch.from_numpy(np.ascontiguousarray(point_clouds))
                if isinstance(point_clouds, np.ndarray)
                else point_clouds
            )
            if t.dim() == 2:
                clouds = [self._check(t, "point_clouds")]
            elif t.dim() == 3:
                t = self._check(t, "point_clouds")
                return self._sample_batch(t, generator)
            else:
                raise ValueError(
                    f"`point_clouds` must have shape (B, N, C) or (N, C), or be a list of clouds; got {tuple(t.shape)}"
                )
        elif isinstance(point_clouds, (list, tuple)):
            if len(point_clouds) == 0:
                raise ValueError("`point_clouds` is an empty list")
            clouds = [self._as_cloud(c, f"point_clouds[{i}]") for i, c in enumerate(point_clouds)]
        else:
            raise TypeError(
                f"`point_clouds` must be an array, a tensor or a list of clouds, got {type(point_clouds).__name__}"
            )
        return torch.stack([self._sample_one(c, generator) for c in clouds])

    def _sample_batch(self, t: torch.Tensor, generator) -> torch.Tensor:
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

    # -- main entry point ---------------------------------------------------------------------------

    def __call__(
        self,
        point_clouds: Any = None,
        text: str | list[str] | None = None,
        **kwargs: Unpack[CLIP2PointProcessorKwargs],
    ) -> BatchFeature:
        """Render ``point_clouds`` and/or tokenize ``text``.

        Args:
            point_clouds: see :meth:`prepare_point_clouds`.
            text: prompts for the text tower (needs a tokenizer).
            kwargs: :class:`CLIP2PointProcessorKwargs` (``render_views``, ``distances``, ``generator``) and
                the standard ``return_tensors``, ``device``, and tokenizer options such as ``padding``.
        """
        if point_clouds is None and text is None:
            raise ValueError("give `point_clouds`, `text`, or both")
        options = self._merge_kwargs(
            CLIP2PointProcessorKwargs,
            tokenizer_init_kwargs=self.tokenizer.init_kwargs if self.tokenizer is not None else None,
            **kwargs,
        )
        text_options = options["text_kwargs"]
        return_tensors = options["images_kwargs"].get("return_tensors", text_options.get("return_tensors"))
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f'`return_tensors` must be "pt" or "np", got {return_tensors!r}')
        device = options["images_kwargs"].get("device")
        data: dict[str, Any] = {}
        if point_clouds is not None:
            points = self.prepare_point_clouds(point_clouds, generator=options.get("generator"))
            if device is not None:
                points = points.to(device)
            views = options.get("render_views")
            data["pixel_values"] = self.renderer.render(
                points, self.views if views is None else views, options.get("distances")
            )
        if text is not None:
            if self.tokenizer is None:
                raise ValueError(
                    "this processor has no tokenizer, so it cannot encode `text`; create it with "
                    "CLIP2PointProcessor(tokenizer=CLIPTokenizer.from_pretrained(...))"
                )
            text_options["return_tensors"] = "pt"  # converted below with the pixels
            encoded = self.tokenizer(text, **text_options)
            for key, value in encoded.items():
                data[key] = value.to(device) if device is not None else value
        if return_tensors == "np":
            data = {k: v.detach().cpu().numpy() for k, v in data.items()}
        return BatchFeature(data=data)

    # -- visualisation ------------------------------------------------------------------------------

    def save_views_image(
        self,
        point_cloud: Any,
        path: str | os.PathLike,
        views: str | Sequence | None = None,
        columns: int | None = None,
        labels: bool = True,
        title: str | None = None,
    ):
        """Write a PNG grid of the cloud's depth views (grey images before mean/std: near = dark,
        background = white), each titled with where its camera stands ("front", "top", ...: `view_name`). Returns
        the PIL image. ``title`` (e.g. the object and the answer) is written above the grid."""
        from PIL import Image, ImageDraw

        points = self.prepare_point_clouds([point_cloud] if not _is_batch(point_cloud) else point_cloud)
        views = self.views if views is None else views
        grey = self.renderer.render_intensity(points[:1], views)[0]  # (V, S, S)
        view_list = resolve_views(views).tolist()
        v, s = grey.shape[0], grey.shape[-1]
        cols = columns or min(v, 5)
        rows = -(-v // cols)
        label_h = 14 if labels else 0
        pad = 4
        top = 16 if title else 0
        sheet = Image.new("L", (cols * (s + pad) + pad, top + rows * (s + pad + label_h) + pad), color=160)
        draw = ImageDraw.Draw(sheet)
        if title:
            draw.text((pad + 2, 3), title, fill=0)
        cells = (grey.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        for idx in range(v):
            r, c = divmod(idx, cols)
            x0 = pad + c * (s + pad)
            y0 = top + pad + r * (s + pad + label_h)
            sheet.paste(Image.fromarray(cells[idx]), (x0, y0 + label_h))
            if labels:
                text = view_name(*view_list[idx])
                draw.text((x0 + 2, y0 + 1), text, fill=0)
        sheet.save(os.fspath(path))
        return sheet

    # -- saving and loading -------------------------------------------------------------------------

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """Save ``processor_config.json`` (the render settings) and the tokenizer files, if any."""
        if self.tokenizer is not None:
            return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        # Without a tokenizer, ProcessorMixin's saving (which saves each attribute) does not apply.
        from transformers.dynamic_module_utils import custom_object_save
        from transformers.utils.hub import hf_api

        os.makedirs(save_directory, exist_ok=True)
        if push_to_hub:
            commit_message = kwargs.pop("commit_message", None)
            repo_id = kwargs.pop("repo_id", str(save_directory).split(os.path.sep)[-1])
            repo_id = hf_api().create_repo(repo_id, exist_ok=True, **kwargs).repo_id
            files_timestamps = self._get_files_timestamps(save_directory)
        if self._auto_class is not None:
            custom_object_save(self, save_directory, config=self)
        output_file = os.path.join(save_directory, PROCESSOR_NAME)
        self.to_json_file(output_file)
        if push_to_hub:
            self._upload_modified_files(
                save_directory,
                repo_id,
                files_timestamps,
                commit_message=commit_message,
                token=kwargs.get("token"),
            )
        return [output_file]

    @classmethod
    def from_args_and_dict(cls, args, processor_dict: dict[str, Any], **kwargs):
        """Read settings saved under their old names (``image_mean``/``image_std``, before the rename to
        ``depth_mean``/``depth_std``), so that older ``processor_config.json`` files keep loading."""
        processor_dict = dict(processor_dict)
        for old, new in _RENAMED_SETTINGS.items():
            if old in processor_dict:
                value = processor_dict.pop(old)
                processor_dict.setdefault(new, value)
        return super().from_args_and_dict(args, processor_dict, **kwargs)

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        """Load the tokenizer only when the folder has one (a render-only processor has none)."""
        hub_kwargs = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
        has_tokenizer = any(
            cached_file(
                pretrained_model_name_or_path,
                name,
                _raise_exceptions_for_missing_entries=False,
                _raise_exceptions_for_connection_errors=False,
                **hub_kwargs,
            )
            is not None
            for name in _TOKENIZER_FILES
        )
        if has_tokenizer:
            return super()._get_arguments_from_pretrained(
                pretrained_model_name_or_path, processor_dict, **kwargs
            )
        if not processor_dict:
            raise OSError(
                f"{pretrained_model_name_or_path}: no {PROCESSOR_NAME} and no tokenizer files; "
                "is this a folder saved by CLIP2PointProcessor.save_pretrained?"
            )
        return [None]


def _is_batch(x: Any) -> bool:
    """A single cloud is 2-D; a batch is 3-D or a list of 2-D clouds."""
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return x.ndim == 3
    return False
