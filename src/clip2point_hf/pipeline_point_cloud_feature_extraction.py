"""`pipeline("point-cloud-feature-extraction")`: from a point-cloud file or array to its embedding in CLIP's text space.

The embedding is the model's `point_cloud_embeds` (the view-weighted sum of the L2-normalised depth-view embeddings)
L2-normalised, so the cosine with a normalised CLIP text embedding is a plain dot product: what text-to-shape and
shape-to-shape search (`clip2point_apps.retrieval`) rank by. Inputs are read exactly as the zero-shot pipeline reads
them (every supported file type, arrays, lists of either; `batch_size`, `device`).
"""

from __future__ import annotations

import torch

from .pipeline_clip2point import PointCloudPipeline


class PointCloudFeatureExtractionPipeline(PointCloudPipeline):
    """L2-normalised point-cloud embeddings from a CLIP2Point model.

    Returns, per input, a list of `projection_dim` floats (or a `(projection_dim,)` float32 tensor with
    `return_tensors=True`).

    Example:
        >>> embed = pipeline("point-cloud-feature-extraction", model="org/clip2point")
        >>> vectors = embed(["a.ply", "b.off", array], batch_size=8)
    """

    def _sanitize_parameters(self, seed=None, up_axis=None, return_tensors=None, **kwargs):
        postprocess = {} if return_tensors is None else {"return_tensors": bool(return_tensors)}
        return self._reading_params(seed, up_axis), {}, postprocess

    def _forward(self, model_inputs: dict) -> dict:
        pixel_values = self._pixel_values(model_inputs)
        embeds = self.model.get_point_cloud_features(pixel_values).pooler_output.float()
        return {"embeds": torch.nn.functional.normalize(embeds, dim=-1)}

    def postprocess(self, model_outputs: dict, return_tensors: bool = False) -> list[float] | torch.Tensor:
        embeds = model_outputs["embeds"].reshape(-1).cpu()  # (1, D) unbatched, or (D,) from a batch
        return embeds if return_tensors else embeds.tolist()


__all__ = ["PointCloudFeatureExtractionPipeline"]
