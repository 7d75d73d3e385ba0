#!/usr/bin/env python
"""CLIP2Point image-depth pre-training with Accelerate (docs/design.md, "Image-depth pre-training"), from one CPU to many GPUs.

Every object of the pairs folder (Point-BERT's ShapeNet-55 + renderings, or ``build_render_pairs`` output)
contributes, per step, one of its RGB renderings (frozen CLIP image encoder) and two depth maps of ``num_points``
random points rendered from that rendering's view at zooms ``d ~ U[0.9, 1.1)`` (trained depth encoder, a copy of
CLIP's vision tower). Loss: ``L_cross + L_intra / w^2 + log(1 + w)``, NT-Xent at temperature 0.07 with negatives
from the GLOBAL batch (all processes). Depth maps are rendered on the accelerator device inside the step.

Model selection: zero-shot accuracy on a held-out part of the TRAIN split (``--validation_split_percentage``);
the test split is never read. The output folder holds the selected ``CLIP2PointModel`` (depth encoder + CLIP's
text tower) and the processor; ``AutoModel.from_pretrained(output_dir)`` and ``examples/zero_shot.py`` read it.
``image_encoder/`` holds the frozen CLIP image tower the depth encoder was aligned with, and CLIP's image processor:
what a photo query of ``clip2point search --image`` goes through.

    accelerate launch examples/pretrain.py --pairs_dir out/pairs --clip openai/clip-vit-base-patch32 \\
        --output_dir runs/pretrain --mixed_precision bf16 --per_device_train_batch_size 32
    python examples/pretrain.py run.yaml            # every argument from a file (JSON or YAML)
    accelerate launch examples/pretrain.py ... --resume_from_checkpoint   # the latest checkpoint

Optimiser: AdamW with cosine warm restarts every 2 epochs stepped per update (the reference uses LAMB,
lr 6e-3; ``--optimizer lamb`` uses timm's LAMB when installed). A random CLIP (``--clip_config small``) lets the
script run without any pretrained weights (tests, CPU learning runs).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from clip2point_apps.arguments import BackboneArguments, args_to_dict, parse_args
from clip2point_apps.backbone import build_clip, load_tokenizer, make_processor
from clip2point_apps.console import configure_console
from clip2point_apps.metrics import classification_metrics
from clip2point_apps.prediction import predict, render_point_clouds
from clip2point_apps.retrieval import IMAGE_ENCODER_DIR, PhotoEncoder
from clip2point_apps.tracking import write_json
from clip2point_apps.training import (
    TrainingRun,
    TrainingRunArguments,
    best_metric_line,
    build_optimizer,
    pretraining_inputs,
)
from clip2point_hf import CLIP2PointForPreTraining, CLIP2PointModel
from clip2point_hf.data import (
    KeyedDataset,
    PointCloudBatchTransform,
    PretrainingPairTransform,
    dataset_metadata,
    load_shapenet_pairs,
    random_subset,
    stratified_split,
)
from clip2point_hf.data.shapenet import PAIRS_META_FILE
from clip2point_hf.errors import run_script
from clip2point_hf.prompts import encode_class_prompts, prompt_names, resolve_templates
from clip2point_hf.rendering_clip2point import VIEW_PRESETS


@dataclass
class PretrainDataArguments:
    pairs_dir: str | None = field(
        default=None,
        metadata={
            "help": "Point clouds + split lists: Point-BERT's ShapeNet55 folder, or build_render_pairs output."
        },
    )
    render_dir: str | None = field(
        default=None,
        metadata={
            "help": "The RGB renderings (<id>/{0..9}.png, or a folder holding rendering/). Default: --pairs_dir."
        },
    )
    num_points: int = field(default=1024, metadata={"help": "Random points per object and step."})
    distance_jitter: float = field(
        default=0.2, metadata={"help": "Zoom d = 1 + (u - 0.5) * jitter, u ~ U[0, 1)."}
    )
    render_views: str | None = field(
        default=None,
        metadata={
            "help": "View angles of the RGB renderings, in file order: a preset name. Default: the pairs' "
            "metadata, else reference10 (ShapeNet renderings)."
        },
    )
    validation_split_percentage: float = field(
        default=5.0, metadata={"help": "Percentage of each class of the train split held out for validation."}
    )
    eval_views: str = field(
        default="reference6", metadata={"help": "Views of the zero-shot validation (a preset)."}
    )
    prompts: str = field(
        default="reference", metadata={"help": "reference, ensemble, or a template with {}."}
    )
    prompt_naming: str = field(
        default="reference",
        metadata={
            "help": "Class spellings of the validation prompts: reference (the authors': ashcan, cellular "
            "telephone, ...; their pretraining.py selects on these) or ours (trash bin, cellphone, ...).",
            "choices": ["reference", "ours"],
        },
    )
    point_radius: float = field(default=0.02, metadata={"help": "Renderer point radius (NDC units)."})
    depth_mode: str = field(
        default="parity", metadata={"help": "parity or minmax.", "choices": ["parity", "minmax"]}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most N training objects."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Validate on at most N objects."})
    eval_before_training: bool = field(
        default=True, metadata={"help": "Validate the initial model (step 0)."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Dataset cache folder."})

    def validate(self) -> None:
        if not self.pairs_dir:
            raise ValueError("--pairs_dir is required")
        if not 0 < self.validation_split_percentage < 100:
            raise ValueError(
                f"--validation_split_percentage must be in (0, 100), got {self.validation_split_percentage}"
            )
        if self.num_points < 1:
            raise ValueError(f"--num_points must be >= 1, got {self.num_points}")


@dataclass
class PretrainRunArguments(TrainingRunArguments):
    per_device_train_batch_size: int = field(
        default=32,
        metadata={
            "help": "Objects per process and step. The global batch (x processes) must be at least 2: each "
            "object's negatives are the others."
        },
    )
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak AdamW learning rate."})
    min_learning_rate: float = field(default=1e-6, metadata={"help": "Floor of the warm-restart cosine."})
    weight_decay: float = field(default=1e-4, metadata={"help": "Weight decay."})
    num_train_epochs: int = field(default=100, metadata={"help": "Epochs (the reference: 100)."})
    lr_scheduler_type: str = field(
        default="cosine_restarts",
        metadata={
            "help": "constant, linear, cosine, or cosine_restarts.",
            "choices": ["constant", "linear", "cosine", "cosine_restarts"],
        },
    )


def _view_angles(data_args: PretrainDataArguments) -> list:
    if data_args.render_views is not None:
        return VIEW_PRESETS[data_args.render_views]
    meta_file = Path(data_args.pairs_dir) / PAIRS_META_FILE
    if meta_file.is_file():
        angles = json.loads(meta_file.read_text()).get("view_angles")
        if angles:
            return angles
    return VIEW_PRESETS["reference10"]


def main(argv=None) -> dict:
    backbone, data_args, args = parse_args(
        (BackboneArguments, PretrainDataArguments, PretrainRunArguments), argv
    )
    configure_console(verbose=args.verbose)
    args.validate()
    data_args.validate()
    run = TrainingRun(args)  # accelerator, trackers, JSON log; nothing is written before `record_config`
    accelerator, output_dir = run.accelerator, run.output_dir
    if args.per_device_train_batch_size * accelerator.num_processes < 2:
        raise ValueError(
            f"--per_device_train_batch_size {args.per_device_train_batch_size} x {accelerator.num_processes} "
            "process(es): the global batch must be at least 2 (each object's negatives are the others)"
        )

    # ---- backbone and model (every process builds the same seeded model)
    tokenizer = load_tokenizer(backbone)
    clip = build_clip(backbone, tokenizer, seed=args.seed)
    torch.manual_seed(args.seed)
    model = CLIP2PointForPreTraining.from_clip(clip)
    model.freeze_for_training()  # the method trains the depth encoder and `w` only
    del clip
    image_size = model.config.vision_config.image_size
    processor = make_processor(
        tokenizer,
        image_size,
        data_args.eval_views,
        data_args.num_points,
        data_args.point_radius,
        data_args.depth_mode,
    )
    renderer = processor.feature_extractor.renderer

    # ---- data: the train split, minus a stratified validation part; the test split is never used
    with accelerator.main_process_first():
        pairs = load_shapenet_pairs(
            data_args.pairs_dir, data_args.render_dir or data_args.pairs_dir, cache_dir=data_args.cache_dir
        )
    meta = dataset_metadata(pairs)
    class_names = pairs["train"].features["label"].names
    prompts = prompt_names(class_names, distinct=True, naming=data_args.prompt_naming)
    from datasets import Image, List

    train_full = pairs["train"].cast_column("images", List(Image(decode=False)))
    labels = np.asarray(train_full["label"])
    train_idx, val_idx = stratified_split(labels, data_args.validation_split_percentage / 100, args.seed)
    train_idx = random_subset(train_idx, data_args.max_train_samples, args.seed, "subset", "train")
    val_idx = random_subset(val_idx, data_args.max_eval_samples, args.seed, "subset", "validation")
    if len(train_idx) < 2 or not val_idx:
        raise ValueError(
            f"{data_args.pairs_dir}: too few objects ({len(train_idx)} train, {len(val_idx)} validation)"
        )
    view_angles = _view_angles(data_args)
    pair_transform = PretrainingPairTransform(
        view_angles, image_size, data_args.num_points, data_args.distance_jitter
    )
    train_set = KeyedDataset(train_full.select(train_idx), pair_transform, args.seed, "pretrain")
    val_clouds = KeyedDataset(
        train_full.select(val_idx),
        PointCloudBatchTransform(num_points=data_args.num_points),
        args.seed,
        "validation",
    )
    val_pairs = KeyedDataset(train_full.select(val_idx), pair_transform, args.seed, "validation-pairs")
    total_batch = args.per_device_train_batch_size * accelerator.num_processes
    if total_batch > len(train_set):
        raise ValueError(
            f"the global batch ({total_batch}) is larger than the {len(train_set)} training objects"
        )
    train_loader = train_set.loader(
        args.per_device_train_batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.dataloader_num_workers,
    )
    eval_bs = min(args.per_device_eval_batch_size, max(2, len(val_pairs) // accelerator.num_processes))
    val_loader = val_clouds.loader(
        args.per_device_eval_batch_size,
        shuffle=False,
        drop_last=False,
        num_workers=args.dataloader_num_workers,
    )
    val_pair_loader = val_pairs.loader(
        eval_bs, shuffle=False, drop_last=True, num_workers=args.dataloader_num_workers
    )

    train_loader, val_loader, val_pair_loader = accelerator.prepare(train_loader, val_loader, val_pair_loader)
    # ---- optimiser, schedule, accelerate, resume
    optimizer = build_optimizer(model, args)
    training = run.prepare(
        model, optimizer, train_loader, per_device_batch_size=args.per_device_train_batch_size
    )
    model, progress = training.model, training.progress
    config = {**args_to_dict(backbone, data_args, args), "num_processes": accelerator.num_processes}
    # The run's first files, once the backbone, the data and every setting have been checked: a run that fails
    # before this point leaves --output_dir as it found it.
    run.record_config("clip2point_pretrain", config)
    if accelerator.is_main_process:
        names = train_full["name"]
        write_json(
            output_dir / "data_splits.json",
            {
                "pairs_dir": str(data_args.pairs_dir),
                "seed": args.seed,
                "validation_split_percentage": data_args.validation_split_percentage,
                "train": [names[i] for i in train_idx],
                "validation": [names[i] for i in val_idx],
            },
        )

    templates = resolve_templates(data_args.prompts)
    unwrapped = accelerator.unwrap_model(model)
    text_embeds = encode_class_prompts(unwrapped.clip2point, tokenizer, prompts, templates)

    def compute_loss(batch):
        out = model(**pretraining_inputs(renderer, batch))
        return out.loss, {
            "loss_cross": out.loss_cross,
            "loss_intra": out.loss_intra,
            "balance_weight": out.balance_weight,
        }

    def evaluate():
        base = accelerator.unwrap_model(model).clip2point

        def logits(batch):
            with accelerator.autocast():
                pixels = render_point_clouds(renderer, batch["points"], data_args.eval_views)
                return base(pixel_values=pixels, text_embeds=text_embeds).logits_per_point_cloud

        result = predict(accelerator, val_loader, logits, desc="zero-shot validation")
        metrics = classification_metrics(result["predictions"], result["references"], prompts)
        losses = []
        # The loss needs negatives: a global validation batch of 2 or more (every batch is full: drop_last).
        if eval_bs * accelerator.num_processes >= 2:
            with torch.no_grad(), accelerator.autocast():
                for batch in val_pair_loader:
                    out = model(**pretraining_inputs(renderer, batch), return_loss=True)
                    losses.append(float(out.loss))
        values = {
            "eval/zero_shot_accuracy": metrics["overall_accuracy"],
            "eval/zero_shot_mean_class_accuracy": metrics["mean_class_accuracy"],
        }
        if losses:
            values["eval/loss"] = float(np.mean(losses))
        return metrics["overall_accuracy"], values

    def on_best():
        run.save_best(accelerator.unwrap_model(model).clip2point)

    if training.resumed is None and progress.completed_steps == 0 and data_args.eval_before_training:
        model.eval()
        value, values = evaluate()
        model.train()
        run.log(values, 0)
        progress.best_metric, progress.best_step = float(value), 0
        on_best()
        initial = values
    else:
        initial = None

    training.train(compute_loss, evaluate=evaluate, on_best=on_best)

    # ---- final save: the selected CLIP2PointModel and the processor
    accelerator.wait_for_everyone()
    final = accelerator.unwrap_model(model).clip2point
    if run.best_model_dir() is not None:
        final = CLIP2PointModel.from_pretrained(run.best_model_dir())
    results = {
        "best_eval_zero_shot_accuracy": progress.best_metric,
        "best_step": progress.best_step,
        "completed_steps": progress.completed_steps,
        "initial_eval": initial,
        "saved": "best" if args.load_best_model_at_end else "last",
        "num_classes": len(class_names),
        "dataset": meta.get("dataset"),
        # The pairs' clouds are stored y-up (build_render_pairs turns them), matching their RGB views.
        "up_axis": meta.get("up_axis", "y"),
    }
    if accelerator.is_main_process:
        final.save_pretrained(output_dir)
        processor.save_pretrained(output_dir)
        PhotoEncoder.from_model(accelerator.unwrap_model(model)).save_pretrained(
            output_dir / IMAGE_ENCODER_DIR
        )
        write_json(output_dir / "all_results.json", results)
    run.finish(
        [
            best_metric_line("zero-shot accuracy", progress),
            f"model ({results['saved']}) and processor saved in {output_dir} (numbers: all_results.json)",
            f"use it: clip2point classify FILE --labels chair,table --model {output_dir}",
            f"        clip2point evaluate --dataset DATASET_FOLDER --model {output_dir}",
        ]
    )
    return results


if __name__ == "__main__":
    run_script(main, sys.argv[1:])
