"""`clip2point`: classify, render, evaluate, convert, publish and search from the command line.

User errors (a bad file, an unknown option value, a model folder missing files, an unreachable Hub) end
in one line on stderr and exit code 2, with no traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

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
    from transformers import pipeline

    import clip2point_hf  # noqa: F401  (registers the task)

    if not (Path(model).is_dir() or "/" in model):
        raise CommandError(f"--model: {model!r} is neither a folder nor a Hub id (org/name)")
    try:
        return pipeline("zero-shot-point-cloud-classification", model=model, device=device)
    except (OSError, ValueError) as error:
        raise CommandError(f"cannot load the model {model!r}: {_first_line(error)}") from None


# --------------------------------------------------------------------------------------------------------- commands


def cmd_classify(args: argparse.Namespace) -> None:
    labels = _labels(args.labels)
    for path in args.files:
        if not Path(path).is_file():
            raise CommandError(f"{path}: file not found")
    classifier = _load_pipeline(args.model, args.device)
    kwargs = {"candidate_labels": labels, "batch_size": args.batch_size}
    if args.template:
        kwargs["hypothesis_template"] = args.template
    results = classifier(list(args.files), **kwargs)
    if args.json:
        print(json.dumps(dict(zip(args.files, results, strict=True)), indent=2))
        return
    for path, ranked in zip(args.files, results, strict=True):
        top = ", ".join(f"{r['label']} {r['score']:.3f}" for r in ranked[: args.top_k])
        print(f"{path}: {top}")


def cmd_render(args: argparse.Namespace) -> None:
    from .data.point_files import read_point_cloud
    from .processing_clip2point import CLIP2PointProcessor

    points = read_point_cloud(args.file, seed=args.seed)
    processor = CLIP2PointProcessor(
        num_points=args.num_points, up_axis=args.up_axis, views=_views(args.views), depth_mode=args.depth_mode
    )
    processor.save_views_image(points, args.output)
    print(f"wrote {args.output} ({processor.num_views} views of {args.file})")


def cmd_convert(args: argparse.Namespace) -> None:
    from .conversion_clip2point import (
        convert_dpa_checkpoint,
        convert_pretraining_checkpoint,
        load_clip,
        load_openai_clip,
        load_state_dict_file,
    )
    from .modeling_clip2point import CLIP2PointModel
    from .processing_clip2point import CLIP2PointProcessor

    state = load_state_dict_file(args.checkpoint)
    kind = args.kind
    if kind == "auto":
        prefixes = {key.split(".")[0] for key in state}
        kind = "dpa" if "adapter1" in prefixes else "pretraining" if "point_model" in prefixes else "clip"
    tokenizer = _tokenizer(args.tokenizer)
    if kind == "clip":
        model = CLIP2PointModel.from_clip(load_openai_clip(state))
    else:
        if not args.clip:
            raise CommandError(
                f"--clip is required to convert a {kind} checkpoint (its text tower is CLIP's)"
            )
        clip = load_clip(args.clip)
        if kind == "pretraining":
            model = convert_pretraining_checkpoint(state, clip)
        else:
            if tokenizer is None:
                raise CommandError(
                    "--tokenizer (CLIP's) is required to embed the class names of a DPA checkpoint"
                )
            model = convert_dpa_checkpoint(state, clip, _class_names(args.class_names), tokenizer)
    model.save_pretrained(args.output)
    image_size = model.config.vision_config.image_size
    CLIP2PointProcessor(tokenizer=tokenizer, image_size=image_size).save_pretrained(args.output)
    note = "" if tokenizer else " (no tokenizer given: the folder can render but not embed text)"
    print(f"wrote {type(model).__name__} ({kind} checkpoint) to {args.output}{note}")


def _tokenizer(spec: str | None):
    if not spec:
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(spec)
    except (OSError, ValueError) as error:
        raise CommandError(f"--tokenizer: cannot load {spec!r}: {_first_line(error)}") from None


def _class_names(spec: str) -> list[str]:
    from .data.names import MODELNET10_CLASSES, MODELNET40_CLASSES, SCANOBJECTNN_CLASSES, prompt_names

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

    views = {"10": "reference10", "6": "reference6"}.get(args.views, args.views)
    argv = ["--model", args.model, "--dataset", args.dataset, "--views", views, "--prompts", *args.prompts]
    argv += ["--output_dir", args.output_dir, "--batch_size", str(args.batch_size), "--split", args.split]
    if args.on_missing_skip:
        argv += ["--on_missing", "skip"]
    if args.tokenizer:
        argv += ["--tokenizer", args.tokenizer]
    run_zero_shot(argv)
    print(
        f"results: {Path(args.output_dir) / 'zero_shot_results.json'}, {Path(args.output_dir) / 'confusion_matrix.png'}"
    )


def cmd_embed(args: argparse.Namespace) -> None:
    if not Path(args.source).is_dir():
        raise CommandError(f"{args.source}: not a folder (a folder of shapes or a saved dataset)")
    _check_model(args.model)
    from .retrieval import ShapeIndex

    try:
        index = ShapeIndex.build(
            args.source,
            args.model,
            args.output,
            split=args.split,
            up_axis=args.up_axis,
            num_shards=args.num_shards,
            shard_index=args.shard_index,
            chunk_size=args.chunk_size,
            batch_size=args.batch_size,
            device=args.device,
            on_error="skip" if args.skip_unreadable else "raise",
            faiss=args.faiss,
        )
    except ImportError as error:
        raise CommandError(_first_line(error)) from None
    if index is None:
        print(
            f"shard {args.shard_index}/{args.num_shards} done in {args.output}; once every shard is done, run the "
            "same command without --shard_index to merge"
        )
    else:
        print(f"wrote {args.output}: {index}")


def cmd_search(args: argparse.Namespace) -> None:
    if (args.text is None) == (args.like is None):
        raise CommandError("give either a query text or --like FILE (not both)")
    if args.like is not None and not Path(args.like).is_file():
        raise CommandError(f"--like {args.like}: file not found")
    if args.model:
        _check_model(args.model)
    from .retrieval import ShapeIndex, load_embedder, save_hits_image

    index = ShapeIndex.load(args.index)
    if args.model or args.device or args.up_axis:
        model = args.model or index.config.get("model")
        index.embedder = load_embedder(model, args.device, args.up_axis or index.config.get("up_axis"))
    try:
        if args.text is not None:
            hits = index.search_text(args.text, k=args.k, template=args.template, exact=args.exact or None)
        else:
            hits = index.search_shape(args.like, k=args.k, exact=args.exact or None)
    except ImportError as error:
        raise CommandError(_first_line(error)) from None
    if args.json:
        print(json.dumps([dataclasses.asdict(hit) for hit in hits], indent=2))
    else:
        for rank, hit in enumerate(hits, 1):
            print(f"{rank:3d}. {hit.score:.4f}  {hit.name}  ({hit.path})")
    if args.output:
        query = args.text if args.text is not None else f"like {args.like}"
        save_hits_image(hits, args.output, up_axis=index.config.get("up_axis", "y"), title=f"query: {query}")
        print(f"wrote {args.output}")


def _check_model(model: str) -> None:
    if not (Path(model).is_dir() or "/" in model):
        raise CommandError(f"--model: {model!r} is neither a folder nor a Hub id (org/name)")


# --------------------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clip2point", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("classify", help="zero-shot classify point-cloud files")
    p.add_argument("files", nargs="+", help=".ply .obj .off .stl .npy .npz .txt .xyz files")
    p.add_argument("--labels", required=True, help="comma-separated candidate labels")
    p.add_argument("--model", required=True, help="a model folder or Hub id")
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
    p.add_argument("--up-axis", choices=("y", "z"), default="y", help="z for ModelNet-style files")
    p.add_argument("--num-points", type=int, default=1024)
    p.add_argument("--depth-mode", choices=("parity", "minmax"), default="parity")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_render)

    p = commands.add_parser("evaluate", help="zero-shot accuracy on a dataset (clip2point_hf.evaluation)")
    p.add_argument("--dataset", required=True, help="a dataset folder (ModelNet, ScanObjectNN, mesh folder)")
    p.add_argument("--model", required=True, help="a CLIP2Point folder or Hub id")
    p.add_argument(
        "--views", default="6", help="6, 10, a preset name, or a JSON list of [elev, azim(, dist)]"
    )
    p.add_argument(
        "--prompts", nargs="+", default=["reference"], help="reference, ensemble, or templates with {}"
    )
    p.add_argument("--split", default="test")
    p.add_argument("--output_dir", default="zero_shot_output")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--tokenizer", help="CLIP tokenizer, if the model folder has none")
    p.add_argument(
        "--on-missing-skip", action="store_true", help="skip files a split list names but are absent"
    )
    p.set_defaults(func=cmd_evaluate)

    p = commands.add_parser("convert", help="convert an original checkpoint into a model folder")
    p.add_argument("checkpoint", help="best_eval.pth, best_test.pth, or an OpenAI CLIP .pt")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--kind", choices=("auto", "clip", "pretraining", "dpa"), default="auto")
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

    p = commands.add_parser("embed", help="embed a folder or dataset of shapes into a search index")
    p.add_argument("source", help="a folder of point/mesh files (recursive), or a folder saved by datasets")
    p.add_argument("--model", required=True, help="a CLIP2Point model folder or Hub id")
    p.add_argument("-o", "--output", required=True, help="the index folder, e.g. shapes.index")
    p.add_argument("--split", help="the split of a saved DatasetDict")
    p.add_argument("--up-axis", choices=("y", "z"), help="z for ModelNet-style files (default: the model's)")
    p.add_argument(
        "--num-shards", "--num_shards", type=int, default=1, help="split the work over N processes"
    )
    p.add_argument("--shard-index", "--shard_index", type=int, help="this process's shard (omit to merge)")
    p.add_argument("--chunk-size", type=int, default=256, help="shapes per resumable chunk")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--faiss", default="auto", help="auto, none, or a faiss factory string (HNSW32, IVF1024,Flat)"
    )
    p.add_argument("--skip-unreadable", action="store_true", help="skip files that cannot be read (listed)")
    p.set_defaults(func=cmd_embed)

    p = commands.add_parser("search", help="text-to-shape or shape-to-shape search in an index")
    p.add_argument("text", nargs="?", help='the query, e.g. "a chair with armrests"')
    p.add_argument("--like", help="a query shape file instead of a text")
    p.add_argument("--index", required=True, help="an index folder written by `clip2point embed`")
    p.add_argument("-k", type=int, default=8, help="how many hits")
    p.add_argument("-o", "--output", help="write a picture of the hits' front views (PNG)")
    p.add_argument("--template", help="prompt template with {} (default: the index's)")
    p.add_argument("--exact", action="store_true", help="exact search even when the index has a faiss index")
    p.add_argument("--model", help="embed the query with this model (default: the index's)")
    p.add_argument("--up-axis", choices=("y", "z"), help="the query shape's up axis (default: the index's)")
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true", help="print the hits as JSON")
    p.set_defaults(func=cmd_search)
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
