#!/usr/bin/env python
"""GDPA training with Accelerate (docs/design.md, "Gated Dual-Path Adapter"): K-shot for any K, or full supervision.

Both frozen vision towers (CLIP2Point's depth encoder and the original CLIP vision tower) see the same depth views
of a cloud, rendered on the accelerator device inside the step; only the two aggregators, the fusion and the
classifier's logit scale train (``--train_backbone`` also trains both towers: for randomly initialised backbones
only, it is not GDPA any more). Classes are scored by cosine similarity with their CLIP text embeddings.

Splits: ``--shots K`` draws K training examples per class (seeded; the ids are written to
``<output_dir>/data_splits.json``), ``--shots all`` trains on the whole train split. Validation is a held-out,
stratified part of the TRAIN split (``--validation_split_percentage``; or ``--validation_split`` names a split of
the dataset) and selects the model; the test split is scored once, at the end, with the selected model.

    accelerate launch examples/finetune_gdpa.py --dataset path/ModelNet40 --shots 16 \\
        --clip2point runs/pretrain --clip openai/clip-vit-base-patch32 --output_dir runs/gdpa16
    accelerate launch examples/finetune_gdpa.py --dataset path/ModelNet40 --shots all ...   # supervised
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np
import torch

from clip2point_apps.arguments import BackboneArguments, PointCloudDataArguments, args_to_dict, parse_args
from clip2point_apps.backbone import build_clip, load_tokenizer, make_processor
from clip2point_apps.console import configure_console
from clip2point_apps.metrics import classification_metrics
from clip2point_apps.prediction import predict, render_point_clouds
from clip2point_apps.tracking import write_json
from clip2point_apps.training import TrainingRun, TrainingRunArguments, best_metric_line, build_optimizer
from clip2point_apps.visualization import save_confusion_matrix_image
from clip2point_hf import CLIP2PointForPointCloudClassification
from clip2point_hf.data import (
    KeyedDataset,
    PointCloudBatchTransform,
    random_subset,
    sample_k_shot,
    stratified_split,
)
from clip2point_hf.errors import run_script
from clip2point_hf.loading import resolve_model
from clip2point_hf.prompts import prompt_names, resolve_templates
from clip2point_hf.rendering_clip2point import resolve_views


@dataclass
class FinetuneDataArguments(PointCloudDataArguments):
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    test_split: str = field(default="test", metadata={"help": "Split scored once at the end."})
    validation_split: str | None = field(
        default=None,
        metadata={"help": "A split of the dataset to validate on (default: held out from the train split)."},
    )
    validation_split_percentage: float = field(
        default=10.0,
        metadata={"help": "Percentage of each class of the train split held out for validation."},
    )
    shots: str = field(
        default="all", metadata={"help": "Examples per class to train on: an int K, or 'all'."}
    )
    views: str = field(
        default="reference10", metadata={"help": "Depth views: a preset name (its length = adapter views)."}
    )
    point_radius: float = field(default=0.02, metadata={"help": "Renderer point radius (NDC units)."})
    depth_mode: str = field(
        default="parity", metadata={"help": "parity or minmax.", "choices": ["parity", "minmax"]}
    )
    augment_scale: float = field(
        default=0.0, metadata={"help": "Random anisotropic scale in [1-a, 1+a] (0: off)."}
    )
    augment_rotate: bool = field(default=False, metadata={"help": "Random rotation about the up axis."})
    augment_jitter: float = field(default=0.0, metadata={"help": "Gaussian point jitter sigma (0: off)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on at most N examples."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Validate/test on at most N examples."}
    )

    def num_shots(self) -> int | None:
        if self.shots == "all":
            return None
        if not str(self.shots).isdigit() or int(self.shots) < 1:
            raise ValueError(f"--shots must be a positive int or 'all', got {self.shots!r}")
        return int(self.shots)

    def validate(self) -> None:
        if not self.dataset:
            raise ValueError("--dataset is required")
        self.num_shots()
        if self.validation_split is None and not 0 < self.validation_split_percentage < 100:
            raise ValueError(
                f"--validation_split_percentage must be in (0, 100), got {self.validation_split_percentage}"
            )
        if not 0 <= self.augment_scale < 1:
            raise ValueError(f"--augment_scale must be in [0, 1), got {self.augment_scale}")


@dataclass
class GDPAArguments:
    clip2point: str | None = field(
        default=None,
        metadata={
            "help": "Pre-trained CLIP2Point folder (examples/pretrain.py output) for the first path; default: "
            "that path starts from --clip's vision tower."
        },
    )
    fusion: str = field(
        default="gated",
        metadata={
            "help": "gated, scalar or mean (the reference's DPA).",
            "choices": ["gated", "scalar", "mean"],
        },
    )
    prompts: str = field(
        default="reference", metadata={"help": "Class prompts: reference, ensemble, or a template with {}."}
    )
    adapter_dropout: float = field(default=0.075, metadata={"help": "Dropout of the aggregators."})
    train_backbone: bool = field(
        default=False,
        metadata={
            "help": "Also train both vision towers (meant for randomly initialised backbones; no longer GDPA)."
        },
    )
    backbone_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the towers with --train_backbone (default: --learning_rate / 10)."
        },
    )


@dataclass
class FinetuneRunArguments(TrainingRunArguments):
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Clouds per process and step."})
    learning_rate: float = field(
        default=1e-3, metadata={"help": "AdamW learning rate (the reference: 1e-3)."}
    )
    weight_decay: float = field(default=1e-4, metadata={"help": "Weight decay (the reference: 1e-4)."})
    num_train_epochs: int = field(default=100, metadata={"help": "Epochs (the reference: 100)."})


def _describe(ds, indices) -> list[dict]:
    names, paths, labels = ds["name"], ds["path"], ds["label"]
    return [{"index": int(i), "name": names[i], "path": paths[i], "label": int(labels[i])} for i in indices]


def main(argv=None) -> dict:
    backbone, data_args, gdpa, args = parse_args(
        (BackboneArguments, FinetuneDataArguments, GDPAArguments, FinetuneRunArguments), argv
    )
    configure_console(verbose=args.verbose)
    args.validate()
    data_args.validate()
    shots = data_args.num_shots()
    run = TrainingRun(args)  # accelerator, trackers, JSON log; nothing is written before `record_config`
    accelerator, output_dir = run.accelerator, run.output_dir

    # ---- data: K-shot (or all) from the train split; validation held out from it; test scored once at the end
    splits = (data_args.train_split, data_args.test_split, data_args.validation_split)
    dataset, _, up_axis = data_args.load(args.seed, accelerator, splits)
    train_full = dataset[data_args.train_split]
    class_names = train_full.features["label"].names
    prompts = prompt_names(class_names, distinct=True)
    labels = np.asarray(train_full["label"])
    if data_args.validation_split is not None:
        pool, val_source = list(range(len(train_full))), dataset[data_args.validation_split]
        val_idx = list(range(len(val_source)))
    else:
        pool, val_idx = stratified_split(labels, data_args.validation_split_percentage / 100, args.seed)
        val_source = train_full
    short = {}
    train_idx = pool if shots is None else None
    if shots is not None:
        train_idx, short = sample_k_shot(labels, pool, shots, args.seed)
        if short:
            accelerator.print(
                f"warning: {len(short)} classes have fewer than {shots} training examples: they keep all"
            )
    train_idx = random_subset(train_idx, data_args.max_train_samples, args.seed, "limit", "train")
    val_idx = random_subset(val_idx, data_args.max_eval_samples, args.seed, "limit", "validation")
    test_ds = dataset[data_args.test_split]
    test_idx = random_subset(
        list(range(len(test_ds))), data_args.max_eval_samples, args.seed, "limit", "test"
    )

    # ---- model: seeded adapters on frozen towers
    tokenizer = load_tokenizer(backbone)
    clip = build_clip(backbone, tokenizer, seed=args.seed)
    templates = resolve_templates(gdpa.prompts)
    num_views = resolve_views(data_args.views).shape[0]
    config_kwargs = {"num_views": num_views, "fusion": gdpa.fusion, "adapter_dropout": gdpa.adapter_dropout}
    torch.manual_seed(args.seed)
    if gdpa.clip2point is not None:
        model = CLIP2PointForPointCloudClassification.from_pretrained_models(
            resolve_model(gdpa.clip2point, "CLIP2Point"),
            clip,
            prompts,
            tokenizer,
            prompt_templates=templates,
            **config_kwargs,
        )
    else:
        model = CLIP2PointForPointCloudClassification.from_clip(clip, **config_kwargs)
        model.set_class_names(prompts, tokenizer, templates)
    del clip
    image_size = model.config.vision_config.image_size
    processor = make_processor(
        tokenizer,
        image_size,
        data_args.views,
        data_args.num_points,
        data_args.point_radius,
        data_args.depth_mode,
        up_axis,
    )
    renderer = processor.feature_extractor.renderer

    # GDPA trains the adapters only (both aggregators, the fusion, the classifier's logit scale).
    model.freeze_for_training()
    adapter_params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = None
    if gdpa.train_backbone:  # beyond the method: both vision towers train too, at a lower rate
        towers = [
            model.clip2point.depth_model,
            model.clip2point.depth_projection,
            model.clip_model,
            model.clip_projection,
        ]
        tower_params = [p for t in towers for p in t.parameters()]
        for tower in towers:
            tower.requires_grad_(True)
        backbone_lr = gdpa.backbone_learning_rate or args.learning_rate / 10
        decay = [p for n, p in adapter_params if p.ndim >= 2]
        rest = [p for n, p in adapter_params if p.ndim < 2]
        groups = [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": rest, "weight_decay": 0.0},
            {"params": tower_params, "weight_decay": args.weight_decay, "lr": backbone_lr},
        ]
    optimizer = build_optimizer(model, args, groups if groups is not None else adapter_params)

    augment = PointCloudBatchTransform(
        up_axis=up_axis,
        scale=(1 - data_args.augment_scale, 1 + data_args.augment_scale) if data_args.augment_scale else None,
        rotate=data_args.augment_rotate,
        jitter=data_args.augment_jitter,
    )
    plain = PointCloudBatchTransform(up_axis=up_axis)
    train_set = KeyedDataset(train_full.select(train_idx), augment, args.seed, "gdpa-train")
    val_set = KeyedDataset(val_source.select(val_idx), plain, args.seed, "validation")
    test_set = KeyedDataset(test_ds.select(test_idx), plain, args.seed, "test")
    # BatchNorm needs two or more clouds per batch: small K-shot sets get a smaller batch, never a batch of one.
    per_device = min(args.per_device_train_batch_size, len(train_set) // accelerator.num_processes)
    if per_device < 2:
        raise ValueError(
            f"{len(train_set)} training examples are too few for {accelerator.num_processes} processes"
        )
    if per_device != args.per_device_train_batch_size:
        accelerator.print(f"using a per-device batch of {per_device} ({len(train_set)} training examples)")
    train_loader = train_set.loader(
        per_device, shuffle=True, drop_last=True, num_workers=args.dataloader_num_workers
    )
    val_loader = val_set.loader(
        args.per_device_eval_batch_size,
        shuffle=False,
        drop_last=False,
        num_workers=args.dataloader_num_workers,
    )
    test_loader = test_set.loader(
        args.per_device_eval_batch_size,
        shuffle=False,
        drop_last=False,
        num_workers=args.dataloader_num_workers,
    )
    train_loader, val_loader, test_loader = accelerator.prepare(train_loader, val_loader, test_loader)
    training = run.prepare(model, optimizer, train_loader, per_device_batch_size=per_device)
    model = training.model
    config = {
        **args_to_dict(backbone, data_args, gdpa, args),
        "num_processes": accelerator.num_processes,
        "num_train_examples": len(train_set),
        "num_validation_examples": len(val_set),
    }
    # The run's first files, once the backbone, the data and every setting have been checked: a run that fails
    # before this point leaves --output_dir as it found it, so the corrected command runs into the same folder.
    run.record_config("clip2point_gdpa", config)
    if accelerator.is_main_process:
        write_json(
            output_dir / "data_splits.json",
            {
                "dataset": str(data_args.dataset),
                "seed": args.seed,
                "shots": data_args.shots,
                "train_split": data_args.train_split,
                "validation_source": data_args.validation_split or f"{data_args.train_split} (held out)",
                "classes_with_fewer_shots": {class_names[c]: n for c, n in short.items()},
                "train": _describe(train_full, train_idx),
                "validation": _describe(val_source, val_idx),
            },
        )

    def logits_of(batch):
        pixels = render_point_clouds(renderer, batch["points"], data_args.views)
        return model(pixel_values=pixels).logits

    def compute_loss(batch):
        pixels = render_point_clouds(renderer, batch["points"], data_args.views)
        return model(pixel_values=pixels, labels=batch["label"]).loss, {}

    def evaluate():
        result = predict(accelerator, val_loader, logits_of, desc="validation")
        metrics = classification_metrics(result["predictions"], result["references"], class_names)
        return metrics["overall_accuracy"], {
            "eval/accuracy": metrics["overall_accuracy"],
            "eval/mean_class_accuracy": metrics["mean_class_accuracy"],
        }

    def on_best():
        run.save_best(accelerator.unwrap_model(model))

    progress = training.train(compute_loss, evaluate=evaluate, on_best=on_best)

    # ---- the selected model, scored once on the test split
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    if run.best_model_dir() is not None:
        best = CLIP2PointForPointCloudClassification.from_pretrained(run.best_model_dir())
        unwrapped.load_state_dict(best.state_dict())
        del best
    model.eval()
    result = predict(accelerator, test_loader, logits_of, desc="test")
    test = classification_metrics(result["predictions"], result["references"], class_names)
    results = {
        "test_accuracy": test["overall_accuracy"],
        "test_mean_class_accuracy": test["mean_class_accuracy"],
        "best_eval_accuracy": progress.best_metric,
        "best_step": progress.best_step,
        "completed_steps": progress.completed_steps,
        "saved": "best" if args.load_best_model_at_end else "last",
        "shots": data_args.shots,
        "num_train_examples": len(train_set),
        "num_test_examples": test["num_examples"],
        "chance": 1.0 / len(class_names),
        "up_axis": up_axis,
    }
    run.log(
        {"test/accuracy": test["overall_accuracy"], "test/mean_class_accuracy": test["mean_class_accuracy"]},
        progress.completed_steps,
    )
    if accelerator.is_main_process:
        unwrapped.save_pretrained(output_dir)
        processor.save_pretrained(output_dir)
        write_json(output_dir / "test_results.json", {**test, "class_names": list(class_names)})
        write_json(output_dir / "all_results.json", results)
        save_confusion_matrix_image(
            test["confusion_matrix"],
            class_names,
            output_dir / "confusion_matrix_test.png",
            title=f"GDPA test: OA {100 * test['overall_accuracy']:.1f}%",
        )
        accelerator.print(
            f"test accuracy {100 * results['test_accuracy']:.2f}% "
            f"(mean class {100 * results['test_mean_class_accuracy']:.2f}%)"
        )
    run.finish(
        [
            best_metric_line("accuracy", progress),
            f"test accuracy of the saved model: {100 * results['test_accuracy']:.2f}% "
            f"(mean class {100 * results['test_mean_class_accuracy']:.2f}%, {results['num_test_examples']} objects)",
            f"model ({results['saved']}) and processor saved in {output_dir} (numbers: all_results.json)",
            f"use it: CLIP2PointForPointCloudClassification.from_pretrained({str(output_dir)!r})",
        ]
    )
    return results


if __name__ == "__main__":
    run_script(main, sys.argv[1:])
