"""Scoring a model over a data loader, and rendering a batch of clouds on the accelerator device: what evaluation
and the training scripts' validation share."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from clip2point_hf.points_clip2point import normalize_point_cloud

__all__ = ["predict", "render_point_clouds"]


def render_point_clouds(
    renderer, points: torch.Tensor, views, distances: torch.Tensor | None = None
) -> torch.Tensor:
    """Normalise ``points`` (B, N, 3) into the unit sphere and render ``views`` on their device, outside autocast."""
    device_type = points.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        return renderer.render(normalize_point_cloud(points.float())[0], views, distances)


@torch.no_grad()
def predict(accelerator, loader, logits_fn: Callable, desc: str | None = None) -> dict:
    """Run ``logits_fn(batch) -> (B, K)`` over ``loader``; gathered ``predictions``, ``references``, ``indices``
    and ``logits`` as numpy arrays (duplicates added to even out the last batch are dropped)."""
    from tqdm.auto import tqdm

    preds, refs, indices, logits_all = [], [], [], []
    for batch in tqdm(loader, desc=desc, disable=not accelerator.is_local_main_process, leave=False):
        logits = logits_fn(batch).float()
        gathered = accelerator.gather_for_metrics(
            (
                logits.argmax(dim=-1),
                batch["label"].to(logits.device),
                batch["index"].to(logits.device),
                logits,
            )
        )
        for store, value in zip((preds, refs, indices, logits_all), gathered):
            store.append(value.cpu().numpy())
    return {
        "predictions": np.concatenate(preds),
        "references": np.concatenate(refs),
        "indices": np.concatenate(indices),
        "logits": np.concatenate(logits_all),
    }
