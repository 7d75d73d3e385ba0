"""The zero-shot pipeline's encoder on CPU: what a CPU user can do about its cost, with agreement kept.

For a CPU user the depth encoder is the whole cost of ``pipeline("zero-shot-point-cloud-classification")``
(rendering is ~1% of a ViT-B/32 tower). This runs the real pipeline (ViT-B/32 shapes, random weights) on
SHREC'16 test clouds once per option and reports, side by side in one process:

* clouds/s (median over batches of ``--batch-size`` clouds, the first batch excluded as warm-up),
* the share of the machine's CPU other processes used meanwhile (Linux ``/proc/stat``),
* the agreement of the predicted class (argmax over the 30 SHREC'16 prompts) with the float32, 10-view
  pipeline on the same clouds, and a finer measure of the same thing: the noise-to-signal ratio of the
  per-cloud log-scores (``||l - l_fp32|| / ||l_fp32 - mean over clouds of l_fp32||``, averaged over clouds,
  each ``l`` centred per cloud): below 1 the option's error is smaller than what tells the clouds apart.

Options: ``fp32`` (the default pipeline), ``bf16`` (the model in bfloat16, i.e. ``pipeline(...,
dtype=torch.bfloat16)``), ``compile`` (``torch.compile`` of the depth tower), ``int8`` (dynamic int8
quantization of every ``nn.Linear`` of the towers: ``torch.ao.quantization.quantize_dynamic``), ``views6`` /
``views4`` (fewer views: the reference's 6 zero-shot views, their first 4), and combinations (``int8+views6``).

Random weights: no pretrained CLIP can be had here. With CLIP's default initialisation a random tower's output
barely depends on its input (every cloud gets the same class, and agreement is trivially 100%), so the towers
are initialised with ``initializer_factor`` 5 (as the project's small random presets) and the number of
distinct predicted classes is reported: when it is small, the argmax agreement says little and the
noise-to-signal ratio is the number to read.

    python benchmarks/encoder.py --json encoder.json
    python benchmarks/encoder.py --options fp32 int8 --clouds 20   # quicker
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from clip2point_hf import CLIP2PointConfig, CLIP2PointFeatureExtractor, CLIP2PointModel, CLIP2PointProcessor
from clip2point_hf.pipeline_clip2point import ZeroShotPointCloudClassificationPipeline
from clip2point_hf.rendering_clip2point import VIEW_PRESETS
from clip2point_hf.testing_utils import make_tiny_tokenizer
from render import cpu_sample, machine

VIEWS = {
    "views10": "reference10",
    "views6": "reference6",
    "views4": [list(v) for v in VIEW_PRESETS["reference6"][:4]],
}


def vit_b32_config(
    tokenizer, num_views: int = 10, initializer_factor: float = 1.0, tiny: bool = False
) -> CLIP2PointConfig:
    """CLIP ViT-B/32 shapes (224 px, patch 32, width 768, 12 layers; text tower of width 512, 12 layers) with a
    text tower sized for ``tokenizer``; ``tiny``: 2-layer width-32 towers at 32 px, for dry runs."""
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    vision = {**tower, "image_size": 32, "patch_size": 8} if tiny else {"image_size": 224, "patch_size": 32}
    text = {
        **(tower if tiny else {}),
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 77,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "initializer_factor": initializer_factor,
    }
    return CLIP2PointConfig(
        vision_config={**vision, "initializer_factor": initializer_factor},
        text_config=text,
        projection_dim=16 if tiny else 512,
        num_views=num_views,
        initializer_factor=initializer_factor,
    )


def vit_b32_model(
    tokenizer, num_views: int = 10, initializer_factor: float = 1.0, tiny: bool = False, seed: int = 0
) -> CLIP2PointModel:
    """A seeded random :class:`CLIP2PointModel` of :func:`vit_b32_config`, in eval mode."""
    torch.manual_seed(seed)
    return CLIP2PointModel(vit_b32_config(tokenizer, num_views, initializer_factor, tiny)).eval()


def zero_shot_pipeline(model, tokenizer, views="reference10", device="cpu", image_size=None):
    processor = CLIP2PointProcessor(
        CLIP2PointFeatureExtractor(
            views=views, image_size=image_size or model.config.vision_config.image_size
        ),
        tokenizer,
    )
    return ZeroShotPointCloudClassificationPipeline(model=model, processor=processor, device=device)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_pipeline(pipe, clouds: list[np.ndarray], labels: list[str], batch_size: int) -> dict:
    """Run ``pipe`` over ``clouds`` in batches; per-batch times (first excluded) and predicted label indices."""
    times, predictions, log_scores = [], [], []
    cpu0 = cpu_sample()
    for i in range(0, len(clouds), batch_size):
        chunk = clouds[i : i + batch_size]
        _sync(pipe.device)
        t0 = time.perf_counter()
        out = pipe(chunk, candidate_labels=labels, batch_size=batch_size)
        _sync(pipe.device)
        times.append((time.perf_counter() - t0) / len(chunk))
        predictions += [labels.index(ranked[0]["label"]) for ranked in out]
        for ranked in out:
            scores = {r["label"]: r["score"] for r in ranked}
            log_scores.append(np.log(np.maximum([scores[label] for label in labels], 1e-30)))
    cpu1 = cpu_sample()
    total = cpu1[1] - cpu0[1]
    others = max(0.0, (cpu1[0] - cpu0[0]) - (cpu1[2] - cpu0[2])) / total if total > 0 else 0.0
    timed = times[1:] or times
    return {
        "clouds_per_s": 1.0 / statistics.median(timed),
        "batches_timed": len(timed),
        "predictions": predictions,
        "log_scores": np.stack(log_scores),
        "others_cpu_percent": 100.0 * others,
    }


def time_tower(model, pixel_values: torch.Tensor, repeats: int) -> float:
    """Median seconds of the bare depth tower + projection on ``(B, V, 3, S, S)`` pixels (one warm-up)."""
    flat = pixel_values.flatten(0, 1).to(model.dtype)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 1):
            _sync(flat.device)
            t0 = time.perf_counter()
            model.get_depth_features(flat)
            _sync(flat.device)
            if i:
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def noise_to_signal(log_scores: np.ndarray, reference: np.ndarray) -> float:
    """Mean per-cloud distance to the reference's (centred) log-scores over the reference's spread between clouds."""
    a = log_scores - log_scores.mean(axis=1, keepdims=True)
    r = reference - reference.mean(axis=1, keepdims=True)
    spread = np.linalg.norm(r - r.mean(axis=0), axis=1).mean()
    return float(np.linalg.norm(a - r, axis=1).mean() / max(spread, 1e-30))


def build_option(option: str, tokenizer, tiny: bool):
    """(pipeline, note) for an option name such as ``int8+views6``."""
    parts = option.split("+")
    views = next((VIEWS[p] for p in parts if p in VIEWS), "reference10")
    num_views = len(VIEW_PRESETS[views]) if isinstance(views, str) else len(views)
    model = vit_b32_model(tokenizer, num_views=num_views, initializer_factor=5.0, tiny=tiny)
    notes = []
    for part in parts:
        if part == "bf16":
            model = model.to(torch.bfloat16)
        elif part == "int8":
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
            notes.append("dynamic int8 nn.Linear")
        elif part == "compile":
            model.depth_model = torch.compile(model.depth_model)
            notes.append("torch.compile(depth tower)")
        elif part not in VIEWS and part != "fp32":
            raise ValueError(f"unknown option part {part!r} in {option!r}")
    return zero_shot_pipeline(model, tokenizer, views=views), ", ".join(notes)


def shrec_test_clouds(root: str, count: int) -> tuple[list[np.ndarray], list[str], list[int]]:
    """``count`` SHREC'16 test clouds (1024 points), spread evenly over the classes; prompt names; labels."""
    from clip2point_hf.data import load_mesh_folder

    test = load_mesh_folder(root, num_points=1024)["test"]
    names = [n.replace("_", " ") for n in test.features["label"].names]
    labels = np.asarray(test["label"])
    order = np.unique(np.linspace(0, len(labels) - 1, min(count, len(labels))).round().astype(int))
    points = np.asarray(test.select(order.tolist()).with_format("numpy")["points"], dtype=np.float32)
    return list(points), names, labels[order].tolist()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="../shared/data/shrec_16")
    parser.add_argument("--clouds", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument(
        "--options",
        nargs="+",
        default=["fp32", "bf16", "int8", "views6", "views4", "int8+views6", "compile"],
    )
    parser.add_argument("--tower-repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="tiny towers (a smoke test of this script)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine("cpu")
    tokenizer = make_tiny_tokenizer()
    clouds, names, _ = shrec_test_clouds(args.dataset, args.clouds)
    prompts = [f"image of a {n}" for n in names]
    options = args.options if "fp32" in args.options[:1] else ["fp32", *args.options]
    rows, reference, reference_scores = [], None, None
    for option in options:
        t0 = time.perf_counter()
        pipe, note = build_option(option, tokenizer, args.tiny)
        result = time_pipeline(pipe, clouds, prompts, args.batch_size)
        if option == "fp32":
            reference, reference_scores = result["predictions"], result["log_scores"]
            pixels = pipe.processor(clouds[: args.batch_size])["pixel_values"]
            tower = time_tower(pipe.model, pixels, args.tower_repeats)
            result["tower_clouds_per_s"] = args.batch_size / tower
            result["pipeline_percent_of_tower"] = (
                100.0 * result["clouds_per_s"] / result["tower_clouds_per_s"]
            )
        preds = result.pop("predictions")
        log_scores = result.pop("log_scores")
        row = {
            "option": option,
            "note": note,
            **result,
            "agreement_with_fp32": float(np.mean(np.asarray(preds) == np.asarray(reference))),
            "distinct_predicted_classes": len(set(preds)),
            "noise_to_signal": noise_to_signal(log_scores, reference_scores),
            "wall_s": time.perf_counter() - t0,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = rows[0]["clouds_per_s"]
    lines = [
        f"Machine: {info.get('cpu')} ({info['cpu_count']} cores, {info['threads']} torch threads), torch "
        f"{info['torch']}; {len(clouds)} SHREC'16 test clouds, batches of {args.batch_size}.",
        "",
        "| option | clouds/s | vs fp32 | agreement with fp32 | noise / signal | distinct classes predicted | "
        "other processes' CPU % |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['option']} | {r['clouds_per_s']:.2f} | {r['clouds_per_s'] / base:.2f}x | "
            f"{100 * r['agreement_with_fp32']:.0f}% | {r['noise_to_signal']:.3f} | {r['distinct_predicted_classes']} | "
            f"{r['others_cpu_percent']:.0f} |"
        )
    if "pipeline_percent_of_tower" in rows[0]:
        lines.append(
            f"\nfp32 pipeline: {rows[0]['pipeline_percent_of_tower']:.0f}% of the bare depth tower's clouds/s "
            f"({rows[0]['tower_clouds_per_s']:.2f}) on the same views."
        )
    report = "\n".join(lines)
    print(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "args": vars(args), "results": rows, "markdown": report}, f, indent=2)


if __name__ == "__main__":
    main()
