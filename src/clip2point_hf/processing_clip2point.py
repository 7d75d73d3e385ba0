"""``CLIP2PointProcessor``: the point-cloud front end and CLIP's tokenizer in one object, as ``CLIPProcessor``
is an image processor and a tokenizer.

Rendering lives in :class:`CLIP2PointFeatureExtractor` (usable, saved and loaded alone); this class only routes
each input to its component. This file is copied flat into Hub folders: it imports only flat siblings.
"""

from __future__ import annotations

from typing import Any

from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .feature_extraction_clip2point import CLIP2PointFeatureExtractor

__all__ = ["CLIP2PointProcessor", "point_cloud_front_end"]

#: Call-time options that go to the feature extractor; every other keyword goes to the tokenizer.
RENDER_OPTIONS = ("views", "distances", "generator", "up_axis")


class CLIP2PointProcessor(ProcessorMixin):
    r"""A :class:`CLIP2PointFeatureExtractor` (point clouds -> depth views) and a CLIP tokenizer (text -> tokens).

    Args:
        feature_extractor: the point-cloud front end.
        tokenizer: a CLIP tokenizer (``CLIPTokenizer`` / ``CLIPTokenizerFast``). A front end without a tokenizer is
            the feature extractor itself: save and load that (``AutoProcessor`` returns it for such a folder).

    Calling it returns a :class:`~transformers.BatchFeature` with ``pixel_values`` ``(B, V, 3, S, S)`` when
    ``point_clouds`` are given and ``input_ids``/``attention_mask`` when ``text`` is given. The feature extractor's
    call-time options (``views``, ``distances``, ``generator``, ``up_axis``) go to it; ``device`` and
    ``return_tensors`` apply to both; every other keyword (``padding``, ``truncation``, ...) goes to the tokenizer,
    which pads by default.
    """

    def __init__(self, feature_extractor: CLIP2PointFeatureExtractor, tokenizer: Any) -> None:
        super().__init__(feature_extractor, tokenizer)

    def __call__(
        self,
        point_clouds: Any = None,
        text: str | list[str] | None = None,
        *,
        device: Any = None,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """Render ``point_clouds`` and/or tokenize ``text`` (see the class docstring for the options)."""
        if point_clouds is None and text is None:
            raise ValueError("give `point_clouds`, `text`, or both")
        render_options = {key: kwargs.pop(key) for key in RENDER_OPTIONS if key in kwargs}
        data: dict[str, Any] = {}
        if point_clouds is not None:
            features = self.feature_extractor(
                point_clouds, device=device, return_tensors=return_tensors, **render_options
            )
            data.update(features)
        elif render_options:
            raise ValueError(f"{sorted(render_options)} apply to `point_clouds`, and none were given")
        if text is not None:
            encoded = self.tokenizer(text, **{"padding": True, **kwargs}, return_tensors="pt")
            for key, value in encoded.items():
                value = value.to(device) if device is not None else value
                data[key] = value.numpy() if return_tensors == "np" else value
        return BatchFeature(data=data)

    @property
    def model_input_names(self) -> list[str]:
        return ["pixel_values", *self.tokenizer.model_input_names]


def point_cloud_front_end(
    processor: CLIP2PointProcessor | CLIP2PointFeatureExtractor,
) -> CLIP2PointFeatureExtractor:
    """The point-cloud front end of what ``AutoProcessor`` loads: a processor's feature extractor, or the feature
    extractor itself (``AutoProcessor``'s answer for a folder without tokenizer files)."""
    if isinstance(processor, CLIP2PointFeatureExtractor):
        return processor
    return processor.feature_extractor
