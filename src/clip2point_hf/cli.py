"""`clip2point`: classify, render, evaluate, convert and publish from the command line.

User errors (a bad file, an unknown option value, a model folder missing files, an unreachable Hub) end
in one line on stderr and exit code 2, with no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .rendering_clip2point import UP_AXES

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError, KeyError, RuntimeError)


class CommandError(Exception):
    """A user-facing error: printed as one line."""


# --------------------------------------------------------------------------------------------------------- helpers


def _labels(text: str) -> list[str]:
    from .pipeline_clip2point import _check_labels

    return list(_check_labels(text))


def _views(text: str):
    """`10`, `6`, a preset name, or `elev,azim[,dist];...`."""
    aliases = {"10": "reference10", "6": "reference6"}
    if text in aliases or not any(c in text for c in ",;"):
        return aliases.get(text, text)
    try:
        return [[float(x) for x in view.split(",")] for view in text.split(";") if view.strip()]
    except ValueError as error:
        raise CommandError(f"--views: cannot parse {text!r} as 'elev,azim[,dist];...' ({error})") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def _load_pipeline(model: str, device: str | None):
    """The model's pipeline, chosen from its config: `point-cloud-classification` for a fine-tuned classifier,
    `zero-shot-point-cloud-classification` for the others."""
    from transformers import AutoConfig, pipeline

    import clip2point_hf  # noqa: F401  (registers the tasks)

    from .pipeline_clip2point import task_for_architecture

    if not (Path(model).is_dir() or "/" in model):
        raise CommandError(f"--model: {model!r} is neither a folder nor a Hub id (org/name)")
    try:
        config = AutoConfig.from_pretrained(model)
        task = task_for_architecture((config.architectures or [None])[0])
        return pipeline(task, model=model, device=device)
    except (OSError, ValueError) as error:
        raise CommandError(f"cannot load the model {model!r}: {_first_line(error)}") from None


# --------------------------------------------------------------------------------------------------------- commands


def cmd_classify(args: argparse.Namespace) -> None:
    from .pipeline_clip2point import CLASSIFICATION_TASK

    labels = _labels(args.labels) if args.labels is not None else None
    for path in args.files:
        if not Path(path).is_file():
            raise CommandError(f"{path}: file not found")
    classifier = _load_pipeline(args.model, args.device)
    if classifier.task == CLASSIFICATION_TASK:
        # A fine-tuned model answers with its own classes; --labels keeps some of them.
        known = list(classifier.model.config.id2label.values())
        unknown = [label for label in labels or () if label not in known]
        if unknown:
            raise CommandError(f"--labels: {unknown} are not classes of {args.model} ({', '.join(known)})")
        if args.template:
            raise CommandError("--template applies to zero-shot models; this one is a fine-tuned classifier")
        kwargs = {"top_k": len(known), "batch_size": args.batch_size}
    else:
        if labels is None:
            raise CommandError(f"--labels is required: {args.model} is a zero-shot model (it has no classes)")
        kwargs = {"candidate_labels": labels, "batch_size": args.batch_size}
        if args.template:
            kwargs["hypothesis_template"] = args.template
    results = classifier(list(args.files), **kwargs)
    if labels is not None:
        results = [[r for r in ranked if r["label"] in labels] for ranked in results]
    if args.json:
        print(json.dumps(dict(zip(args.files, results, strict=True)), indent=2))
        return
    for path, ranked in zip(args.files, results, strict=True):
        top = ", ".join(f"{r['label']} {r['score']:.3f}" for r in ranked[: args.top_k])
        print(f"{path}: {top}")


def cmd_render(args: argparse.Namespace) -> None:
    from .point_files import read_point_cloud
    from .processing_clip2point import CLIP2PointProcessor

    points = read_point_cloud(args.file, seed=args.seed)
    processor = CLIP2PointProcessor(
        num_points=args.num_points, up_axis=args.up_axis, views=_views(args.views), depth_mode=args.depth_mode
    )
    processor.save_views_image(points, args.output)
    print(f"wrote {args.output} ({processor.num_views} views of {args.file})")


def cmd_convert(args: argparse.Namespace) -> None:
    from .conversion_clip2point import convert_checkpoint, detect_layout, load_clip, load_state_dict_file

    state = load_state_dict_file(args.checkpoint)
    layout = args.layout
    if layout == "auto":
        layout = detect_layout(state, args.checkpoint)
        print(f"{args.checkpoint}: {layout} layout (detected from its keys)")
    else:
        print(f"{args.checkpoint}: {layout} layout (forced by --layout)")
    tokenizer = _tokenizer(args.tokenizer)
    if layout != "clip" and not args.clip:
        raise CommandError(f"--clip is required to convert a {layout} checkpoint (its text tower is CLIP's)")
    if layout == "dpa" and tokenizer is None:
        raise CommandError("--tokenizer (CLIP's) is required to embed the class names of a DPA checkpoint")
    conversion = convert_checkpoint(
        state,
        layout=layout,
        clip=None if layout == "clip" else load_clip(args.clip),
        class_names=_class_names(args.class_names) if layout == "dpa" else None,
        tokenizer=tokenizer,
        source_file=args.checkpoint,
    )
    for line in conversion.set_aside:
        print(f"set aside: {line}")
    conversion.save_pretrained(args.output, tokenizer)
    note = "" if tokenizer else " (no tokenizer given: the folder can render but not embed text)"
    print(f"wrote {type(conversion.model).__name__} ({layout} checkpoint) to {args.output}{note}")


def _tokenizer(spec: str | None):
    if not spec:
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(spec)
    except (OSError, ValueError) as error:
        raise CommandError(f"--tokenizer: cannot load {spec!r}: {_first_line(error)}") from None


def _class_names(spec: str) -> list[str]:
    from .data.names import MODELNET10_CLASSES, MODELNET40_CLASSES, SCANOBJECTNN_CLASSES
    from .prompts import prompt_names

    known = {
        "modelnet40": MODELNET40_CLASSES,
        "modelnet10": MODELNET10_CLASSES,
        "scanobjectnn": SCANOBJECTNN_CLASSES,
    }
    if spec.lower() in known:
        return prompt_names(known[spec.lower()])
    if Path(spec).is_file():
        return [line.strip() for line in Path(spec).read_text().splitlines() if line.strip()]
    return _labels(spec)


def cmd_push(args: argparse.Namespace) -> None:
    from .hub import export_hub_folder, push_to_hub, verify_hub_folder

    folder = Path(args.output or Path(args.model_dir) / "hub_export")
    export_hub_folder(args.model_dir, folder, args.results, repo_id=args.repo, base_model=args.base_model)
    verify_hub_folder(folder, reference_dir=args.model_dir)
    if args.dry_run:
        print(f"dry run: {folder} is complete and verified; nothing was uploaded")
        return
    print(f"pushed {folder} to {args.repo}: {push_to_hub(folder, args.repo, private=args.private)}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .evaluation import main as run_zero_shot

    argv = ["--model", args.model, "--dataset", args.dataset, "--prompts", *args.prompts]
    if args.views is not None:
        argv += ["--views", {"10": "reference10", "6": "reference6"}.get(args.views, args.views)]
    if args.seed is not None:
        argv += ["--seed", str(args.seed)]
    argv += ["--output_dir", args.output_dir, "--batch_size", str(args.batch_size), "--split", args.split]
    if args.on_missing_skip:
        argv += ["--on_missing", "skip"]
    if args.tokenizer:
        argv += ["--tokenizer", args.tokenizer]
    run_zero_shot(argv)
    print(
        f"results: {Path(args.output_dir) / 'zero_shot_results.json'}, {Path(args.output_dir) / 'confusion_matrix.png'}"
    )


# --------------------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clip2point", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("classify", help="classify point-cloud files (zero-shot or fine-tuned model)")
    p.add_argument("files", nargs="+", help=".ply .obj .off .stl .npy .npz .txt .xyz files")
    p.add_argument(
        "--labels",
        help="comma-separated candidate labels (required for a zero-shot model; for a fine-tuned one, "
        "only these of its classes are shown)",
    )
    p.add_argument("--model", required=True, help="a model folder or Hub id (zero-shot or fine-tuned)")
    p.add_argument("--template", help="prompt template with {} (default: the model's)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ...")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print all scores as JSON")
    p.set_defaults(func=cmd_classify)

    p = commands.add_parser("render", help="write a picture of a cloud's depth views")
    p.add_argument("file")
    p.add_argument("-o", "--output", default="views.png")
    p.add_argument("--views", default="10", help="10, 6, upper10 or 'elev,azim[,dist];...'")
    p.add_argument(
        "--up-axis", choices=UP_AXES, default="y", help="the file's up axis (z for ModelNet-style files)"
    )
    p.add_argument("--num-points", type=int, default=1024)
    p.add_argument("--depth-mode", choices=("parity", "minmax"), default="parity")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_render)

    p = commands.add_parser(
        "evaluate", help="accuracy on a dataset, zero-shot or fine-tuned (clip2point_hf.evaluation)"
    )
    p.add_argument("--dataset", required=True, help="a dataset folder (ModelNet, ScanObjectNN, mesh folder)")
    p.add_argument("--model", required=True, help="a CLIP2Point folder or Hub id (zero-shot or fine-tuned)")
    p.add_argument(
        "--views",
        help="6, 10, a preset name, or a JSON list of [elev, azim(, dist)] (default: 6 for a zero-shot model, "
        "the saved processor's views for a fine-tuned one)",
    )
    p.add_argument(
        "--prompts", nargs="+", default=["reference"], help="reference, ensemble, or templates with {}"
    )
    p.add_argument("--split", default="test")
    p.add_argument(
        "--seed",
        type=int,
        help="seed of the clouds sampled from the dataset (default: a fine-tuned model's run seed, else 0)",
    )
    p.add_argument("--output_dir", default="zero_shot_output")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--tokenizer", help="CLIP tokenizer, if the model folder has none")
    p.add_argument(
        "--on-missing-skip", action="store_true", help="skip files a split list names but are absent"
    )
    p.set_defaults(func=cmd_evaluate)

    p = commands.add_parser("convert", help="convert an original checkpoint into a model folder")
    p.add_argument("checkpoint", help="the authors' best_eval/best_val/best_test.pth, or an OpenAI CLIP .pt")
    p.add_argument("-o", "--output", required=True)
    p.add_argument(
        "--layout",
        choices=("auto", "clip", "pretraining", "dpa"),
        default="auto",
        help="checkpoint layout (default: detected from the keys; file names do not tell)",
    )
    p.add_argument("--clip", help="CLIP for the text tower: Hub id, folder or OpenAI .pt")
    p.add_argument("--tokenizer", help="CLIP tokenizer folder or Hub id (saved with the model)")
    p.add_argument("--class-names", default="modelnet40", help="DPA classes: modelnet40, a file, or a,b,c")
    p.set_defaults(func=cmd_convert)

    p = commands.add_parser("push", help="export, verify and upload a model folder to the Hub")
    p.add_argument("model_dir")
    p.add_argument("--repo", required=True, help="Hub repo id, org/name")
    p.add_argument("--results", nargs="*", default=[], help="zero-shot result JSON files for the card")
    p.add_argument("--output", help="where to write the upload folder (default: MODEL_DIR/hub_export)")
    p.add_argument("--base-model", help="the CLIP it was initialised from, for the card")
    p.add_argument("--private", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="write and verify the folder, upload nothing")
    p.set_defaults(func=cmd_push)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging

    disable_progress_bars()
    logging.disable_progress_bar()
    try:
        args.func(args)
    except CommandError as error:
        print(f"clip2point {args.command}: error: {error}", file=sys.stderr)
        return 2
    except USER_ERRORS as error:
        if os.environ.get("CLIP2POINT_DEBUG"):
            raise
        print(f"clip2point {args.command}: error: {_first_line(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
