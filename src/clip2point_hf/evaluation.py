"""Zero-shot point-cloud classification with a CLIP2Point depth encoder (SPEC section 3).

Each cloud is rendered into depth views (on the accelerator device); each view is embedded and L2-normalised;
the logit of class k is the (optionally weighted) sum over views of the cosine with the class's text embedding.
Prompts: the reference's ``"image of a {}"`` or an ensemble (``--prompts ensemble``), or your own templates.

Outputs in ``--output_dir``: ``zero_shot_results.json`` (overall, mean-class and per-class accuracy, the confusion
matrix), ``confusion_matrix.png`` and ``predictions.csv``. Metrics come from the package's ``evaluate`` module,
loaded by path (offline). ``--save_model`` also saves the model and processor there (``--push_to_hub`` uploads
the folder, after saving it).

    python examples/zero_shot.py --model runs/pretrain --dataset path/ModelNet40 --views 6
    accelerate launch examples/zero_shot.py --model runs/pretrain --dataset path/ScanObjectNN --prompts ensemble
    python examples/zero_shot.py --model openai/clip-vit-base-patch32 --dataset ...   # untrained CLIP baseline
    clip2point evaluate --model runs/pretrain --dataset path/ModelNet40                # the same, installed

It lives in the package (not only in ``examples/``) so that the ``clip2point evaluate`` command has it.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .modeling_clip2point import CLIP2PointModel
from .rendering_clip2point import VIEW_PRESETS, resolve_views
from .training import (
    DATASET_FORMATS,
    BackboneArguments,
    KeyedDataset,
    PointCloudBatchTransform,
    args_to_dict,
    build_clip,
    class_prompt_names,
    classification_metrics,
    encode_class_prompts,
    keyed_seed,
    load_point_cloud_dataset,
    make_processor,
    parse_args,
    predict,
    push_to_hub,
    render_point_clouds,
    resolve_templates,
    resolve_trackers,
    save_confusion_matrix_image,
    start_trackers,
    write_json,
)


@dataclass
class ZeroShotArguments:
    model: str | None = field(
        default=None,
        metadata={
            "help": "A CLIP2Point folder (pretrain.py / finetune_gdpa.py output, or the Hub), or a CLIP "
            "(Hub id, folder, OpenAI .pt) for the untrained baseline. Or --clip_config for a random one."
        },
    )
    dataset: str | None = field(
        default=None, metadata={"help": "Dataset folder (any loader of clip2point_hf.data)."}
    )
    dataset_format: str = field(
        default="auto", metadata={"help": "Which loader.", "choices": list(DATASET_FORMATS)}
    )
    scanobjectnn_variant: str = field(
        default="PB_T50_RS", metadata={"help": "OBJ_BG, OBJ_ONLY or PB_T50_RS."}
    )
    on_missing: str = field(
        default="error",
        metadata={
            "help": "Files a split list names but are absent (partial download): error, or skip them.",
            "choices": ["error", "skip"],
        },
    )
    split: str = field(default="test", metadata={"help": "Split to score."})
    num_points: int = field(default=1024, metadata={"help": "Points per cloud."})
    up_axis: str | None = field(
        default=None, metadata={"help": "Up axis of the data (default: the loader's metadata)."}
    )
    views: str = field(
        default="reference6",
        metadata={
            "help": "A preset (reference6, reference10, upper10), a count (6 or 10), or a JSON list of "
            "[elevation, azimuth(, distance)]."
        },
    )
    view_weights: list[float] | None = field(default=None, metadata={"help": "Optional weight per view."})
    prompts: list[str] = field(
        default_factory=lambda: ["reference"],
        metadata={"help": 'reference ("image of a {}"), ensemble, or one or more templates containing {}.'},
    )
    point_radius: float = field(default=0.02, metadata={"help": "Renderer point radius (NDC units)."})
    depth_mode: str = field(
        default="parity", metadata={"help": "parity or minmax.", "choices": ["parity", "minmax"]}
    )
    batch_size: int = field(default=64, metadata={"help": "Clouds per process and batch."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Score at most N clouds (seeded subset)."}
    )
    output_dir: str = field(default="zero_shot_output", metadata={"help": "Where results go."})
    seed: int = field(default=0, metadata={"help": "Seed of the dataset sampling and of the subset."})
    mixed_precision: str | None = field(
        default=None,
        metadata={"help": "no, fp16 or bf16 (default: accelerate's).", "choices": ["no", "fp16", "bf16"]},
    )
    report_to: str = field(default="none", metadata={"help": "Trackers: none, tensorboard, wandb, all."})
    save_model: bool = field(
        default=False, metadata={"help": "Also save the model and processor in --output_dir."}
    )
    push_to_hub: bool = field(
        default=False, metadata={"help": "Upload --output_dir to the Hub (after saving it)."}
    )
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repo id."})
    hub_token: str | None = field(default=None, metadata={"help": "Hub token."})
    cache_dir: str | None = field(default=None, metadata={"help": "Dataset cache folder."})


def parse_views(spec: str):
    if spec in VIEW_PRESETS:
        return spec
    if spec.isdigit():
        by_count = {len(v): name for name, v in VIEW_PRESETS.items() if name.startswith("reference")}
        if int(spec) not in by_count:
            raise ValueError(f"--views {spec}: no preset has that many views ({sorted(by_count)})")
        return by_count[int(spec)]
    try:
        views = json.loads(spec)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"--views must be a preset {sorted(VIEW_PRESETS)}, a count, or a JSON list; got {spec!r}"
        ) from error
    resolve_views(views)  # validates
    return views


def load_model(model_spec: str | None, backbone: BackboneArguments, seed: int):
    """(CLIP2PointModel, tokenizer) from a CLIP2Point folder/id, a CLIP, or a random --clip_config."""
    from transformers import AutoConfig, AutoTokenizer

    from .training import load_tokenizer

    if model_spec is None and backbone.clip_config is None:
        raise ValueError("--model is required (or --clip_config for a random backbone)")
    if backbone.clip_config is not None:
        tokenizer = load_tokenizer(backbone)
        return CLIP2PointModel.from_clip(build_clip(backbone, tokenizer, seed)), tokenizer
    is_clip2point = False
    if not Path(model_spec).is_file():
        try:
            is_clip2point = AutoConfig.from_pretrained(model_spec).model_type == "clip2point"
        except (OSError, ValueError):
            is_clip2point = False
    if is_clip2point:
        model = CLIP2PointModel.from_pretrained(model_spec)
    else:
        model = CLIP2PointModel.from_clip(build_clip(BackboneArguments(clip=model_spec), None, seed))
    if backbone.tokenizer is not None:
        tokenizer = load_tokenizer(backbone)
    elif Path(model_spec).is_file():
        raise ValueError("--tokenizer is required with an OpenAI-layout .pt file")
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_spec)
        except (OSError, ValueError) as error:
            raise ValueError(f"{model_spec} holds no tokenizer: pass --tokenizer") from error
    return model, tokenizer


def main(argv=None) -> dict:
    from accelerate import Accelerator

    args, backbone = parse_args((ZeroShotArguments, BackboneArguments), argv)
    if not args.dataset:
        raise ValueError("--dataset is required")
    views = parse_views(args.views)
    templates = resolve_templates(args.prompts)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    kwargs = {} if args.mixed_precision is None else {"mixed_precision": args.mixed_precision}
    accelerator = Accelerator(
        log_with=resolve_trackers(args.report_to), project_dir=str(output_dir), **kwargs
    )

    with accelerator.main_process_first():
        dataset, meta = load_point_cloud_dataset(
            args.dataset,
            args.dataset_format,
            args.num_points,
            args.seed,
            variant=args.scanobjectnn_variant,
            cache_dir=args.cache_dir,
            on_missing=args.on_missing,
        )
    if args.split not in dataset:
        raise ValueError(f"{args.dataset} has no split {args.split!r} (it has {sorted(dataset)})")
    data = dataset[args.split]
    up_axis = args.up_axis or meta.get("up_axis", "y")
    class_names = data.features["label"].names
    prompt_names = class_prompt_names(class_names)
    indices = list(range(len(data)))
    if args.max_eval_samples is not None and args.max_eval_samples < len(indices):
        g = np.random.default_rng(keyed_seed(args.seed, "zero-shot subset"))
        indices = sorted(g.permutation(len(indices))[: args.max_eval_samples].tolist())
    data = data.select(indices)

    model, tokenizer = load_model(args.model, backbone, args.seed)
    model.to(accelerator.device).eval()
    num_views = len(VIEW_PRESETS[views]) if isinstance(views, str) else len(views)
    if args.view_weights is not None and len(args.view_weights) != num_views:
        raise ValueError(f"--view_weights has {len(args.view_weights)} values for {num_views} views")
    image_size = model.config.vision_config.image_size
    processor = make_processor(
        tokenizer, image_size, views, args.num_points, args.point_radius, args.depth_mode, up_axis
    )
    renderer = processor.renderer
    text_embeds = encode_class_prompts(model, tokenizer, prompt_names, templates)
    config = {
        **args_to_dict(args, backbone),
        "num_processes": accelerator.num_processes,
        "templates": templates,
    }
    start_trackers(accelerator, "clip2point_zero_shot", config)

    loader = KeyedDataset(data, PointCloudBatchTransform(up_axis=up_axis), args.seed, "zero-shot").loader(
        args.batch_size, shuffle=False, drop_last=False
    )
    loader = accelerator.prepare(loader)

    def logits_of(batch):
        with accelerator.autocast():
            pixels = render_point_clouds(renderer, batch["points"], views)
            features = model.get_point_cloud_features(pixels, view_weights=args.view_weights).pooler_output
        return features.float() @ text_embeds.T

    with torch.no_grad():
        result = predict(accelerator, loader, logits_of, desc="zero-shot")
    metrics = classification_metrics(result["predictions"], result["references"], class_names)
    summary = {
        "overall_accuracy": metrics["overall_accuracy"],
        "mean_class_accuracy": metrics["mean_class_accuracy"],
        "per_class_accuracy": metrics["per_class_accuracy_by_name"],
        "confusion_matrix": metrics["confusion_matrix"],
        "class_names": list(class_names),
        "prompt_names": prompt_names,
        "num_examples": metrics["num_examples"],
        "dataset": str(args.dataset),
        "dataset_name": meta.get("dataset"),
        "split": args.split,
        "views": views,
        "view_weights": args.view_weights,
        "templates": templates,
        "model": args.model or f"random CLIP ({backbone.clip_config})",
        "up_axis": up_axis,
        "num_points": args.num_points,
        "seed": args.seed,
    }
    accelerator.log(
        {
            "zero_shot/accuracy": summary["overall_accuracy"],
            "zero_shot/mean_class_accuracy": summary["mean_class_accuracy"],
        },
        step=0,
    )
    if accelerator.is_main_process:
        write_json(output_dir / "zero_shot_results.json", summary)
        names, paths = data["name"], data["path"]
        with open(output_dir / "predictions.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "name", "path", "label", "prediction", "label_name", "prediction_name"])
            for i, ref, pred in zip(result["indices"], result["references"], result["predictions"]):
                writer.writerow(
                    [indices[i], names[i], paths[i], int(ref), int(pred), class_names[ref], class_names[pred]]
                )
        save_confusion_matrix_image(
            metrics["confusion_matrix"],
            class_names,
            output_dir / "confusion_matrix.png",
            title=f"zero-shot {args.split}: OA {100 * summary['overall_accuracy']:.1f}%, "
            f"mAcc {100 * summary['mean_class_accuracy']:.1f}%",
        )
        if args.save_model or args.push_to_hub:
            model.save_pretrained(output_dir)
            processor.save_pretrained(output_dir)
        print(
            f"zero-shot {args.split} accuracy: {100 * summary['overall_accuracy']:.2f}% "
            f"(mean class {100 * summary['mean_class_accuracy']:.2f}%) on {summary['num_examples']} clouds"
        )
    accelerator.end_training()
    if args.push_to_hub and accelerator.is_main_process:
        from .training import HubPushError

        try:
            print(
                f"Pushed to {push_to_hub(output_dir, args.hub_model_id or output_dir.resolve().name, args.hub_token)}"
            )
        except HubPushError as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
    return summary
