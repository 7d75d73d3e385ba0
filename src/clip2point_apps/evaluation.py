"""Zero-shot classification with a CLIP2Point depth encoder (docs/design.md, "Zero-shot classification"); the same scoring of a
fine-tuned classifier (``CLIP2PointForPointCloudClassification``, e.g. ``examples/finetune_gdpa.py`` output) over its
own classes, rendered with the processor saved beside it.

Each cloud is rendered into depth views (on the accelerator device); each view is embedded and L2-normalised;
class k scores the (optionally weighted) sum over views of the cosine with the class's text embedding -- the
reference's rule. The model's CLIP-scaled ``logits_per_point_cloud`` (that sum over the total view weight, times
CLIP's logit scale) rank the classes identically; they are what is computed here.
Prompts: the reference's ``"image of a {}"`` or an ensemble (``--prompts ensemble``), or your own templates.

Outputs in ``--output_dir``: ``zero_shot_results.json`` (``eval_results.json`` for a fine-tuned classifier: overall,
mean-class and per-class accuracy, the confusion matrix), ``confusion_matrix.png`` and ``predictions.csv``. Metrics come from the package's ``evaluate`` module,
loaded by path (offline). ``--save_model`` also saves the model and processor there (``--push_to_hub`` uploads
the folder, after saving it).

    python examples/zero_shot.py --model runs/pretrain --dataset path/ModelNet40 --views 6
    accelerate launch examples/zero_shot.py --model runs/pretrain --dataset path/ScanObjectNN --prompts ensemble
    python examples/zero_shot.py --model openai/clip-vit-base-patch32 --dataset ...   # untrained CLIP baseline
    clip2point evaluate --model runs/pretrain --dataset path/ModelNet40                # the same, installed

It lives in the package (not only in ``examples/``) so that the ``clip2point evaluate`` command has it, with these
same options (:func:`parse_evaluation_arguments`). :func:`main` and :func:`run_evaluation` leave the console as they
find it; the command-line entry points quiet it (:func:`clip2point_apps.console.configure_console`).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from clip2point_hf.data import KeyedDataset, PointCloudBatchTransform, random_subset
from clip2point_hf.loading import resolve_model
from clip2point_hf.modeling_clip2point import CLIP2PointForPointCloudClassification, CLIP2PointModel
from clip2point_hf.pipeline_clip2point import CLASSIFICATION_TASK, task_for_architecture
from clip2point_hf.processing_clip2point import point_cloud_front_end
from clip2point_hf.prompts import PROMPT_NAMINGS, encode_class_prompts, prompt_names, resolve_templates
from clip2point_hf.rendering_clip2point import VIEW_PRESETS, resolve_views

from .arguments import RUN_ARGS_FILE, BackboneArguments, PointCloudDataArguments, args_to_dict, parse_args
from .backbone import build_clip, load_tokenizer, make_processor
from .metrics import classification_metrics
from .prediction import predict, render_point_clouds
from .tracking import resolve_trackers, start_trackers, write_json
from .visualization import save_confusion_matrix_image

#: The authors' zero-shot protocol (their ``zeroshot.py`` and ``datasets/``), what ``--protocol reference`` sets
#: wherever a flag is not given: 6 views, "image of a {}", their class spellings, their depth-to-intensity
#: mapping, 1024 points at radius 0.02, ScanObjectNN's main split with background (``test_objectdataset.h5``,
#: farthest-point sampled to 1024, the loader's default sampling).
REFERENCE_PROTOCOL: dict[str, Any] = {
    "views": "reference6",
    "prompts": ["reference"],
    "prompt_naming": "reference",
    "depth_mode": "parity",
    "num_points": 1024,
    "point_radius": 0.02,
    "scanobjectnn_variant": "OBJ_BG",
}
#: The reference's up axis per dataset format: ModelNet is always rotated (x, y, z) -> (-y, z, -x) (``rot=True``,
#: i.e. z-up), ScanObjectNN never; other folders keep their loader's metadata.
REFERENCE_UP_AXIS = {"modelnet": "z", "scanobjectnn": "y"}
#: This package's defaults, for the settings a protocol may set.
DEFAULT_PROTOCOL: dict[str, Any] = {
    **REFERENCE_PROTOCOL,
    "prompt_naming": "ours",
    "scanobjectnn_variant": "PB_T50_RS",
}
PROTOCOLS = {"default": DEFAULT_PROTOCOL, "reference": REFERENCE_PROTOCOL}
#: The results file of each kind of evaluation (`RESULTS_FILES[summary["classifier"]]`), which the model card reads.
RESULTS_FILES = {"zero-shot": "zero_shot_results.json", "fine-tuned": "eval_results.json"}


def results_file_name(summary: dict) -> str:
    """Where `run_evaluation` wrote ``summary``: ``zero_shot_results.json``, or ``eval_results.json`` for a
    fine-tuned classifier."""
    return RESULTS_FILES[summary["classifier"]]


@dataclass
class ZeroShotArguments(PointCloudDataArguments):
    model: str | None = field(
        default=None,
        metadata={
            "help": "A CLIP2Point folder (pretrain.py / finetune_gdpa.py output, or the Hub), or a CLIP "
            "(Hub id, folder, OpenAI .pt) for the untrained baseline. Or --clip_config for a random one."
        },
    )
    protocol: str = field(
        default="default",
        metadata={
            "help": "default, or reference: the authors' zero-shot protocol (6 views, 'image of a {}', their "
            "class spellings, parity depth, 1024 points, ModelNet rotated z-up, ScanObjectNN OBJ_BG; README, "
            "'Zero-shot protocol'). Flags given explicitly override it.",
            "choices": list(PROTOCOLS),
        },
    )
    split: str = field(default="test", metadata={"help": "Split to score."})
    views: str | None = field(
        default=None,
        metadata={
            "help": "A preset (reference6, reference10, upper10), a count (6 or 10), or a JSON list of "
            "[elevation, azimuth(, distance)]. Default: reference6 for a zero-shot model; for a fine-tuned "
            "classifier, the views of the processor saved with it (those it was trained on)."
        },
    )
    view_weights: list[float] | None = field(default=None, metadata={"help": "Optional weight per view."})
    prompts: list[str] | None = field(
        default=None,
        metadata={
            "help": 'reference ("image of a {}", the default), ensemble, or one or more templates containing {}.'
        },
    )
    prompt_naming: str | None = field(
        default=None,
        metadata={
            "help": "Class spellings: ours (default: trash bin, cellphone, ...) or reference (the authors': "
            "ashcan, cellular telephone, ...).",
            "choices": list(PROMPT_NAMINGS),
        },
    )
    point_radius: float | None = field(
        default=None, metadata={"help": "Renderer point radius (NDC units). Default: 0.02."}
    )
    depth_mode: str | None = field(
        default=None, metadata={"help": "parity (default) or minmax.", "choices": ["parity", "minmax"]}
    )
    num_points: int | None = field(default=None, metadata={"help": "Points per cloud. Default: 1024."})
    scanobjectnn_variant: str | None = field(
        default=None,
        metadata={"help": "OBJ_BG, OBJ_ONLY or PB_T50_RS. Default: PB_T50_RS (reference protocol: OBJ_BG)."},
    )
    batch_size: int = field(default=64, metadata={"help": "Clouds per process and batch."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Score at most N clouds (seeded subset)."}
    )
    output_dir: str = field(default="zero_shot_output", metadata={"help": "Where results go."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace the results already in --output_dir (else an error)."}
    )
    seed: int | None = field(
        default=None,
        metadata={
            "help": "Seed of the dataset sampling and of the subset. Default: for a fine-tuned classifier, its "
            "training run's seed (run_args.json beside it), so that its test clouds are the ones the run scored; "
            "else 0."
        },
    )
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
    verbose: bool = field(
        default=False,
        metadata={"help": "Show the libraries' progress bars (loading, saving, dataset casts)."},
    )


def apply_protocol(args: ZeroShotArguments) -> dict[str, Any]:
    """Fill every setting not given explicitly from ``args.protocol`` (in place); returns the settings used.

    The reference protocol also sets the up axis from the dataset's format (:data:`REFERENCE_UP_AXIS`) unless
    ``--up_axis`` is given (:func:`up_axis_source` says which set it).
    """
    preset = PROTOCOLS[args.protocol]
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, list(value) if isinstance(value, list) else value)
    if args.protocol == "reference" and args.up_axis is None and args.dataset:
        from clip2point_hf.data.formats import detect_dataset_format

        fmt = args.dataset_format if args.dataset_format != "auto" else detect_dataset_format(args.dataset)
        args.up_axis = REFERENCE_UP_AXIS.get(fmt)
    return {name: getattr(args, name) for name in [*preset, "up_axis"]}


def up_axis_source(given: str | None, args: ZeroShotArguments, loader: str) -> str:
    """Where the up axis of an evaluation comes from, for the line that states it: ``given`` is ``--up_axis`` as
    typed (None when absent), ``args`` the arguments after :func:`apply_protocol`, ``loader`` the dataset's name."""
    if given is not None:
        return "--up_axis"
    if args.up_axis is not None:
        return f"the {args.protocol} protocol's for {loader}; --up_axis to change"
    return f"the {loader} loader's default; --up_axis to change"


def parse_views(spec: str | int):
    spec = str(spec)
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


# ---------------------------------------------------------------------------------------------------------
# The zero-shot evaluation


def load_model(model_spec: str | None, backbone: BackboneArguments, seed: int):
    """(model, tokenizer) from a CLIP2Point folder/id, a CLIP, or a random --clip_config. The model is a
    `CLIP2PointForPointCloudClassification` when the folder holds a fine-tuned classifier (scored over its own
    classes; the tokenizer is then not needed and may be None), else a zero-shot `CLIP2PointModel`."""
    from transformers import AutoConfig, AutoTokenizer

    if model_spec is None and backbone.clip_config is None:
        raise ValueError("--model is required (or --clip_config for a random backbone)")
    if backbone.clip_config is not None:
        tokenizer = load_tokenizer(backbone)
        return CLIP2PointModel.from_clip(build_clip(backbone, tokenizer, seed)), tokenizer
    config = None
    if not Path(model_spec).is_file():
        model_spec = resolve_model(model_spec)
        try:
            config = AutoConfig.from_pretrained(model_spec)
        except (OSError, ValueError):
            config = None
    is_clip2point = config is not None and config.model_type == "clip2point"
    if is_clip2point and is_classifier(config):
        return CLIP2PointForPointCloudClassification.from_pretrained(model_spec), None
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


def run_seed(model_spec: str | None) -> int:
    """The seed of the training run that wrote a model folder (its `run_args.json`), else 0."""
    path = Path(model_spec or "") / RUN_ARGS_FILE
    if model_spec and path.is_file():
        seed = json.loads(path.read_text()).get("seed")
        if isinstance(seed, int):
            return seed
    return 0


def saved_classifier(model_spec: str | None) -> bool:
    """Whether ``model_spec`` is a saved fine-tuned classifier; False when its config cannot be read here
    (`load_model` then says why, after the dataset has been checked)."""
    from transformers import AutoConfig

    if not model_spec or Path(model_spec).is_file():
        return False
    try:
        return is_classifier(AutoConfig.from_pretrained(resolve_model(model_spec)))
    except (OSError, ValueError):  # ModelLoadError is an OSError
        return False


def is_classifier(config) -> bool:
    """Whether a saved config is a fine-tuned classifier (its own classes) rather than a zero-shot model."""
    return task_for_architecture((config.architectures or [None])[0]) == CLASSIFICATION_TASK


def _check_classifier_classes(model, prompts: Sequence[str], model_spec: str) -> None:
    """A classifier scores its own classes: they must be the dataset's, in the same order."""
    own = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if own != list(prompts):
        raise ValueError(
            f"{model_spec}: the fine-tuned classes {own} are not the dataset's classes {list(prompts)} "
            "(same names in the same order)"
        )


def parse_evaluation_arguments(
    argv: Sequence[str] | None = None, *, prog: str | None = None
) -> tuple[ZeroShotArguments, BackboneArguments]:
    """The evaluation's options, from the command line (``argv``) or a JSON/YAML file; ``prog`` names the command
    in ``--help`` and errors (``clip2point evaluate``)."""
    return parse_args((ZeroShotArguments, BackboneArguments), argv, prog=prog)


def main(argv: Sequence[str] | None = None) -> dict:
    """Parse ``argv`` and :func:`run_evaluation`; returns the summary written to its results file
    (:func:`results_file_name`).
    It leaves the console as it finds it: the command-line entry points set it up
    (:func:`clip2point_apps.console.configure_console`)."""
    return run_evaluation(*parse_evaluation_arguments(argv))


def run_evaluation(args: ZeroShotArguments, backbone: BackboneArguments) -> dict:
    """Score ``args.model`` on ``args.dataset`` and write the results into ``args.output_dir``."""
    from accelerate import Accelerator

    if not args.dataset:
        raise ValueError("--dataset is required")
    trackers = resolve_trackers(args.report_to)
    views_given = args.views is not None  # a fine-tuned classifier keeps its own views unless told
    up_axis_given = args.up_axis
    apply_protocol(args)
    templates = resolve_templates(args.prompts)
    output_dir = Path(args.output_dir)
    classifier = saved_classifier(args.model)
    kind = "fine-tuned" if classifier else "zero-shot"
    results_file = output_dir / RESULTS_FILES[kind]
    if results_file.exists() and not args.overwrite_output_dir:
        raise ValueError(
            f"--output_dir {output_dir} already holds {results_file.name}: choose another folder, "
            "or pass --overwrite_output_dir to replace it"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    kwargs = {} if args.mixed_precision is None else {"mixed_precision": args.mixed_precision}
    accelerator = Accelerator(log_with=trackers, project_dir=str(output_dir), **kwargs)

    if args.seed is None:
        args.seed = run_seed(args.model)
    if classifier:
        # Scored as it was trained: the front end saved with it gives the number of points, the render settings
        # and (unless --views is given) the views. A classifier needs no tokenizer, so the front end is read alone.
        from transformers import AutoFeatureExtractor

        processor = AutoFeatureExtractor.from_pretrained(args.model)
        args.num_points = processor.num_points
        views = parse_views(args.views) if views_given else processor.views
        templates = None

    dataset, meta, up_axis = args.load(args.seed, accelerator, [args.split])  # checked before the model loads
    model, tokenizer = load_model(args.model, backbone, args.seed)
    model.to(accelerator.device).eval()
    data = dataset[args.split]
    class_names = data.features["label"].names
    accelerator.print(
        f"up axis: {up_axis} ({up_axis_source(up_axis_given, args, meta.get('dataset', 'dataset'))})"
    )
    prompts = prompt_names(class_names, distinct=True, naming=args.prompt_naming)
    indices = list(range(len(data)))
    indices = random_subset(indices, args.max_eval_samples, args.seed, "zero-shot subset")
    data = data.select(indices)

    if classifier:
        _check_classifier_classes(model, prompts, args.model)
    else:
        views = parse_views(args.views)
    num_views = len(VIEW_PRESETS[views]) if isinstance(views, str) else len(views)
    if args.view_weights is not None and len(args.view_weights) != num_views:
        raise ValueError(f"--view_weights has {len(args.view_weights)} values for {num_views} views")
    if classifier and args.view_weights is not None:
        raise ValueError(
            "--view_weights applies to zero-shot models; a fine-tuned classifier weighs its views itself"
        )
    if classifier and num_views != model.config.num_views:
        raise ValueError(
            f"--views has {num_views} views; {args.model} was fine-tuned on {model.config.num_views}"
        )
    if not classifier:
        image_size = model.config.vision_config.image_size
        processor = make_processor(
            tokenizer, image_size, views, args.num_points, args.point_radius, args.depth_mode, up_axis
        )
        text_embeds = encode_class_prompts(model, tokenizer, prompts, templates)
    renderer = point_cloud_front_end(processor).renderer
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
            if classifier:
                return model(pixel_values=pixels).logits.float()
            outputs = model(pixel_values=pixels, text_embeds=text_embeds, view_weights=args.view_weights)
        return outputs.logits_per_point_cloud.float()

    with torch.no_grad():
        result = predict(accelerator, loader, logits_of, desc=kind)
    metrics = classification_metrics(result["predictions"], result["references"], class_names)
    summary = {
        "overall_accuracy": metrics["overall_accuracy"],
        "mean_class_accuracy": metrics["mean_class_accuracy"],
        "per_class_accuracy": metrics["per_class_accuracy_by_name"],
        "confusion_matrix": metrics["confusion_matrix"],
        "class_names": list(class_names),
        "prompt_names": prompts,
        "num_examples": metrics["num_examples"],
        "dataset": str(args.dataset),
        "dataset_name": meta.get("dataset"),
        "split": args.split,
        "views": views,
        "view_weights": args.view_weights,
        "templates": templates,
        "protocol": args.protocol,
        "prompt_naming": args.prompt_naming,
        "depth_mode": args.depth_mode,
        "classifier": kind,
        "model": args.model or f"random CLIP ({backbone.clip_config})",
        "up_axis": up_axis,
        "num_points": args.num_points,
        "seed": args.seed,
    }
    prefix = "eval" if classifier else "zero_shot"
    accelerator.log(
        {
            f"{prefix}/accuracy": summary["overall_accuracy"],
            f"{prefix}/mean_class_accuracy": summary["mean_class_accuracy"],
        },
        step=0,
    )
    if accelerator.is_main_process:
        write_json(results_file, summary)
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
            title=f"{kind} {args.split}: OA {100 * summary['overall_accuracy']:.1f}%, "
            f"mAcc {100 * summary['mean_class_accuracy']:.1f}%",
        )
        if args.save_model or args.push_to_hub:
            model.save_pretrained(output_dir)
            processor.save_pretrained(output_dir)
        print(
            f"{kind} {args.split} accuracy: {100 * summary['overall_accuracy']:.2f}% "
            f"(mean class {100 * summary['mean_class_accuracy']:.2f}%) on {summary['num_examples']} clouds"
        )
    accelerator.end_training()
    if args.push_to_hub and accelerator.is_main_process:
        from .hub import HubPushError, push_to_hub

        try:
            print(
                f"Pushed to {push_to_hub(output_dir, args.hub_model_id or output_dir.resolve().name, args.hub_token)}"
            )
        except HubPushError as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
    return summary
