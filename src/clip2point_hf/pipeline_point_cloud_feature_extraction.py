"""`pipeline("point-cloud-feature-extraction")`: from a point-cloud file or array to its embedding in CLIP's text space.

The embedding is the model's `point_cloud_embeds` (the view-weighted sum of the L2-normalised depth-view embeddings)
L2-normalised, so the cosine with a normalised CLIP text embedding is a plain dot product: what text-to-shape and
shape-to-shape search (`clip2point_hf.retrieval`) rank by. Inputs are read exactly as the zero-shot pipeline reads
them (every supported file type, arrays, lists of either; `batch_size`, `device`).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from transformers import Pipeline

from .pipeline_clip2point import prepare_point_cloud_input


class PointCloudFeatureExtractionPipeline(Pipeline):
    """L2-normalised point-cloud embeddings from a CLIP2Point model.

    Returns, per input, a list of `projection_dim` floats (or a `(projection_dim,)` float32 tensor with
    `return_tensors=True`).

    Example:
        >>> embed = pipeline("point-cloud-feature-extraction", model="org/clip2point")
        >>> vectors = embed(["a.ply", "b.off", array], batch_size=8)
    """

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False

    def _sanitize_parameters(self, seed=None, return_tensors=None, **kwargs):
        preprocess = {} if seed is None else {"seed": seed}
        postprocess = {} if return_tensors is None else {"return_tensors": bool(return_tensors)}
        return preprocess, {}, postprocess

    def preprocess(self, inputs: str | os.PathLike | np.ndarray | torch.Tensor, seed: int = 0) -> dict:
        return prepare_point_cloud_input(self.processor, inputs, seed)

    def _forward(self, model_inputs: dict) -> dict:
        points = model_inputs["points"].to(self.device)
        pixel_values = self.processor.renderer.render(points, self.processor.views).to(self.model.dtype)
        embeds = self.model.get_point_cloud_features(pixel_values).float()
        return {"embeds": torch.nn.functional.normalize(embeds, dim=-1)}

    def postprocess(self, model_outputs: dict, return_tensors: bool = False) -> list[float] | torch.Tensor:
        embeds = model_outputs["embeds"].reshape(-1).cpu()  # (1, D) unbatched, or (D,) from a batch
        return embeds if return_tensors else embeds.tolist()


__all__ = ["PointCloudFeatureExtractionPipeline"]
