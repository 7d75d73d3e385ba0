"""`clip2point`: classify, render, evaluate, convert, publish, search and serve a web page from the command line.

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

from clip2point_hf.data.formats import DATASET_FORMATS
from clip2point_hf.errors import first_line
from clip2point_hf.points_clip2point import UP_AXES

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError, KeyError, RuntimeError)


class CommandError(Exception):
    """A user-facing error: printed as one line."""


# --------------------------------------------------------------------------------------------------------- helpers


def _labels(text: str) -> list[str]:
    from clip2point_hf.pipeline_clip2point import _check_labels

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


def _load_pipeline(model: str | None, device: str | None):
    """The pipeline on ``--model``, or without it on the best weights reachable (`clip2point_apps.weights`); one
    line on stderr names the weights used."""
    from .weights import WeightsUnavailable, build_classifier, resolve_weights

    _check_device(device)
    try:
        weights = resolve_weights(model)
    except WeightsUnavailable as error:
        raise CommandError(f"--model: {error}") from None
    print(weights.describe(), file=sys.stderr, flush=True)
    try:
        return build_classifier(weights, device)
    except (OSError, ValueError) as error:
        raise CommandError(f"cannot load the model {weights.source!r}: {first_line(error)}") from None


def _check_device(device: str | None) -> None:
    import torch

    if device and device.startswith("cuda") and not torch.cuda.is_available():
        raise CommandError(
            f"--device {device}: this torch build sees no CUDA device (torch {torch.__version__}); "
            "use --device cpu, or install a CUDA build of torch"
        )


def _up_axis_note(up_axis: str | None, default: str, source: str) -> str:
    return (
        f"up axis: {up_axis} (--up_axis)"
        if up_axis
        else f"up axis: {default} ({source}; --up_axis to change)"
    )


# --------------------------------------------------------------------------------------------------------- commands


def cmd_classify(args: argparse.Namespace) -> None:
    from clip2point_hf.pipeline_clip2point import CLASSIFICATION_TASK

    labels = _labels(args.labels) if args.labels is not None else None
    for path in args.files:
        if Path(path).is_dir():
            raise CommandError(f"{path}: is a folder, not a point-cloud or mesh file")
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
            raise CommandError(
                "--labels is required: the model is a zero-shot model (it has no classes of its own)"
            )
        kwargs = {"candidate_labels": labels, "batch_size": args.batch_size}
        if args.template:
            kwargs["hypothesis_template"] = args.template
    if args.up_axis:
        kwargs["up_axis"] = args.up_axis
    note = _up_axis_note(args.up_axis, classifier.front_end.up_axis, "the model's processor")
    print(note, file=sys.stderr if args.json else sys.stdout)
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
    from clip2point_hf.feature_extraction_clip2point import CLIP2PointFeatureExtractor
    from clip2point_hf.point_files import read_point_cloud

    from .visualization import save_views_image

    points = read_point_cloud(args.file, seed=args.seed)
    front_end = CLIP2PointFeatureExtractor(
        num_points=args.num_points, up_axis=args.up_axis, views=_views(args.views), depth_mode=args.depth_mode
    )
    save_views_image(front_end, points, args.output)
    print(f"wrote {args.output} ({front_end.num_views} views of {args.file}; up axis {args.up_axis})")


def cmd_convert(args: argparse.Namespace) -> None:
    from clip2point_hf.conversion_clip2point import (
        convert_checkpoint,
        detect_layout,
        load_clip,
        load_state_dict_file,
    )

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

    from clip2point_hf.loading import resolve_model

    try:
        return AutoTokenizer.from_pretrained(resolve_model(spec, "tokenizer", required_file=None))
    except (OSError, ValueError) as error:
        raise CommandError(f"--tokenizer: cannot load {spec!r}: {first_line(error)}") from None


def _class_names(spec: str) -> list[str]:
    from clip2point_hf.data.names import MODELNET10_CLASSES, MODELNET40_CLASSES, SCANOBJECTNN_CLASSES
    from clip2point_hf.prompts import prompt_names

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

    argv = ["--model", args.model, "--dataset", args.dataset, "--protocol", args.protocol]
    if args.views is not None:
        argv += ["--views", {"10": "reference10", "6": "reference6"}.get(args.views, args.views)]
    if args.prompts is not None:
        argv += ["--prompts", *args.prompts]
    if args.prompt_naming is not None:
        argv += ["--prompt_naming", args.prompt_naming]
    if args.seed is not None:
        argv += ["--seed", str(args.seed)]
    argv += ["--output_dir", args.output_dir, "--batch_size", str(args.batch_size), "--split", args.split]
    argv += ["--on_missing", args.on_missing, "--dataset_format", args.dataset_format]
    for flag in ("tokenizer", "up_axis"):
        if getattr(args, flag):
            argv += [f"--{flag}", getattr(args, flag)]
    argv += ["--overwrite_output_dir"] * args.overwrite_output_dir + ["--verbose"] * args.verbose
    run_zero_shot(argv)
    print(
        f"results: {Path(args.output_dir) / 'zero_shot_results.json'}, {Path(args.output_dir) / 'confusion_matrix.png'}"
    )


def cmd_serve(args: argparse.Namespace) -> None:
    try:
        import gradio  # noqa: F401  (an optional extra: only this command needs it)
    except ImportError:
        raise CommandError("the web page needs Gradio: pip install 'clip2point-hf[demo]'") from None
    from .web import build_demo

    if args.model is not None and not (Path(args.model).is_dir() or "/" in args.model):
        raise CommandError(f"--model: {args.model!r} is neither a folder nor a Hub id (org/name)")
    if args.index is not None and not Path(args.index).exists():
        raise CommandError(f"--index: {args.index}: not found")
    demo = build_demo(model=args.model, index=args.index, device=args.device)
    demo.launch(server_name=args.host, server_port=args.port)


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
        raise CommandError(first_line(error)) from None
    if index is not None:
        print(f"wrote {args.output}: {index}")
    elif args.shard_index is not None:
        print(
            f"shard {args.shard_index}/{args.num_shards} done in {args.output}; once every shard is done, run the "
            "same command without --shard_index to merge"
        )
    # else: a process of `accelerate launch` other than the main one, which merged and printed


def cmd_search(args: argparse.Namespace) -> None:
    queries = [q for q in (args.text, args.like, args.image) if q is not None]
    if len(queries) != 1:
        raise CommandError("give either a query text or --like FILE or --image PHOTO (exactly one)")
    for flag, path in (("--like", args.like), ("--image", args.image)):
        if path is not None and not Path(path).is_file():
            raise CommandError(f"{flag} {path}: file not found")
    if args.template is not None and "{}" not in args.template:
        raise CommandError(f"--template {args.template!r}: must contain {{}} where the query goes")
    for flag in ("model", "image_model"):
        if getattr(args, flag):
            _check_model(getattr(args, flag), f"--{flag}")
    from .retrieval import PhotoEncoder, ShapeIndex, load_embedder, save_hits_image

    index = ShapeIndex.load(args.index)
    up_axis = args.up_axis or index.config.get("up_axis")
    if args.image is not None:
        index.image_encoder = PhotoEncoder.from_pretrained(
            args.image_model or args.model or index.model_location()
        )
        if args.device:
            index.image_encoder.model.to(args.device)
    elif args.model or args.device or args.up_axis:
        index.embedder = load_embedder(args.model or index.model_location(), args.device, up_axis)
    try:
        if args.text is not None:
            hits = index.search_text(args.text, k=args.k, template=args.template, exact=args.exact or None)
        elif args.like is not None:
            hits = index.search_shape(args.like, k=args.k, exact=args.exact or None)
        else:
            hits = index.search_image(args.image, k=args.k, exact=args.exact or None)
    except ImportError as error:
        raise CommandError(first_line(error)) from None
    if args.json:
        print(json.dumps([dataclasses.asdict(hit) for hit in hits], indent=2))
    else:
        for rank, hit in enumerate(hits, 1):
            print(f"{rank:3d}. {hit.score:.4f}  {hit.name}  ({hit.path})")
    gone = [hit.path for hit in hits if hit.path and not Path(hit.path).is_file()]
    if gone:
        print(
            f"note: {len(gone)} of {len(hits)} hits' shape files are gone (first: {gone[0]}); {args.index} keeps "
            "shape paths relative to its folder: move the shapes along with it",
            file=sys.stderr,
        )
    if args.output:
        if args.text is not None:
            query = args.text
        else:
            query = f"like {args.like}" if args.like is not None else f"photo {args.image}"
        save_hits_image(
            hits,
            args.output,
            up_axis=index.config.get("up_axis") or "y",
            title=f"query: {query}",
            query_image=args.image,
        )
        print(f"wrote {args.output}")


def _check_model(model: str, flag: str = "--model") -> None:
    if not (Path(model).is_dir() or "/" in model):
        raise CommandError(f"{flag}: {model!r} is neither a folder nor a Hub id (org/name)")


# --------------------------------------------------------------------------------------------------------- parser


UP_AXIS_HELP = (
    "the files' up axis: z for ModelNet OFF; y for modelnet40_normal_resampled .txt, ShapeNet-55, "
    "ScanObjectNN and glTF/GLB (README, 'Up axis')"
)


class _Options:
    """Adds each option as `--name_with_underscores` (the spelling of the scripts' HfArgumentParser options,
    shown in --help) and accepts `--name-with-dashes` for it too."""

    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser

    def __call__(self, *names: str, **kwargs) -> None:
        action = self.parser.add_argument(*names, **kwargs)
        aliases = [name.replace("_", "-") for name in names if name.startswith("--") and "_" in name]
        if aliases:
            hidden = {**kwargs, "dest": action.dest, "default": argparse.SUPPRESS, "help": argparse.SUPPRESS}
            self.parser.add_argument(*aliases, **hidden)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clip2point",
        description=__doc__.splitlines()[0],
        epilog="Options are spelled --like_this (as the example scripts'); --like-this is accepted too.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("classify", help="classify point-cloud files (zero-shot or fine-tuned model)")
    o = _Options(p)
    o("files", nargs="+", help=f"point-cloud or mesh files ({' '.join(_file_types())})")
    o(
        "--labels",
        help="comma-separated candidate labels (required for a zero-shot model; for a fine-tuned one, "
        "only these of its classes are shown)",
    )
    o(
        "--model",
        default=None,
        help="a CLIP2Point (zero-shot or fine-tuned) or CLIP folder or Hub id (default: the best weights "
        "reachable; see README)",
    )
    o("--up_axis", choices=UP_AXES, default=None, help=UP_AXIS_HELP + "; default: the model's processor's")
    o("--template", help="prompt template with {} (default: the model's)")
    o("--device", default=None, help="cpu, cuda, cuda:1, ...")
    o("--batch_size", type=int, default=16)
    o("--top_k", type=int, default=3)
    o("--json", action="store_true", help="print all scores as JSON")
    p.set_defaults(func=cmd_classify)

    p = commands.add_parser("render", help="write a picture of a cloud's depth views")
    o = _Options(p)
    o("file", help=f"a point-cloud or mesh file ({' '.join(_file_types())})")
    o("-o", "--output", default="views.png")
    o("--views", default="10", help="10, 6, upper10 or 'elev,azim[,dist];...'")
    o("--up_axis", choices=UP_AXES, default="y", help=UP_AXIS_HELP + "; default: y")
    o("--num_points", type=int, default=1024)
    o("--depth_mode", choices=("parity", "minmax"), default="parity")
    o("--seed", type=int, default=0)
    p.set_defaults(func=cmd_render)

    p = commands.add_parser(
        "evaluate", help="accuracy on a dataset, zero-shot or fine-tuned (clip2point_apps.evaluation)"
    )
    o = _Options(p)
    o("--dataset", required=True, help="a dataset folder (ModelNet, ScanObjectNN, mesh folder)")
    o("--dataset_format", choices=DATASET_FORMATS, default="auto", help="which loader (default: detected)")
    o("--model", required=True, help="a CLIP2Point folder or Hub id (zero-shot or fine-tuned)")
    o("--up_axis", choices=UP_AXES, default=None, help=UP_AXIS_HELP + "; default: the dataset loader's")
    o(
        "--protocol",
        choices=("default", "reference"),
        default="default",
        help="reference: the authors' zero-shot protocol (README, Evaluation); explicit flags override it",
    )
    o(
        "--views",
        help="6, 10, a preset name, or a JSON list of [elev, azim(, dist)] (default: 6 for a zero-shot model, "
        "the saved processor's views for a fine-tuned one)",
    )
    o("--prompts", nargs="+", help="reference (default), ensemble, or templates with {}")
    o("--prompt_naming", choices=("ours", "reference"), help="class spellings (default: ours)")
    o("--split", default="test")
    o(
        "--seed",
        type=int,
        help="seed of the clouds sampled from the dataset (default: a fine-tuned model's run seed, else 0)",
    )
    o("--output_dir", default="zero_shot_output")
    o("--overwrite_output_dir", action="store_true", help="replace results already in --output_dir")
    o("--batch_size", type=int, default=32)
    o("--tokenizer", help="CLIP tokenizer, if the model folder has none")
    o(
        "--on_missing",
        choices=("error", "skip"),
        default="error",
        help="files a split list names but are absent: error, or skip them",
    )
    p.set_defaults(func=cmd_evaluate)

    p = commands.add_parser("convert", help="convert an original checkpoint into a model folder")
    o = _Options(p)
    o("checkpoint", help="the authors' best_eval/best_val/best_test.pth, or an OpenAI CLIP .pt")
    o("-o", "--output", required=True)
    o(
        "--layout",
        choices=("auto", "clip", "pretraining", "dpa"),
        default="auto",
        help="checkpoint layout (default: detected from the keys; file names do not tell)",
    )
    o("--clip", help="CLIP for the text tower: Hub id, folder or OpenAI .pt")
    o("--tokenizer", help="CLIP tokenizer folder or Hub id (saved with the model)")
    o("--class_names", default="modelnet40", help="DPA classes: modelnet40, a file, or a,b,c")
    p.set_defaults(func=cmd_convert)

    p = commands.add_parser("push", help="export, verify and upload a model folder to the Hub")
    o = _Options(p)
    o("model_dir")
    o("--repo", required=True, help="Hub repo id, org/name")
    o("--results", nargs="*", default=[], help="zero-shot result JSON files for the card")
    o("--output", help="where to write the upload folder (default: MODEL_DIR/hub_export)")
    o("--base_model", help="the CLIP it was initialised from, for the card")
    o("--private", action="store_true")
    o("--dry_run", action="store_true", help="write and verify the folder, upload nothing")
    p.set_defaults(func=cmd_push)

    p = commands.add_parser("serve", help="a local web page: upload a 3D file, see its views and scores")
    o = _Options(p)
    o("--model", help="a model folder or Hub id (default: the best weights reachable; see README)")
    o("--index", help="a shape index from `clip2point embed` (adds a search tab)")
    o("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines")
    o("--port", type=int, default=7860)
    o("--device", default=None, help="cpu, cuda, cuda:1, ...")
    p.set_defaults(func=cmd_serve)

    p = commands.add_parser("embed", help="embed a folder or dataset of shapes into a search index")
    o = _Options(p)
    o("source", help="a folder of point/mesh files (recursive), or a folder saved by datasets")
    o("--model", required=True, help="a CLIP2Point model folder or Hub id")
    o("-o", "--output", required=True, help="the index folder, e.g. shapes.index")
    o("--split", help="the split of a saved DatasetDict")
    o("--up_axis", choices=UP_AXES, help=UP_AXIS_HELP + "; default: the dataset's, else the model's")
    o(
        "--num_shards",
        type=int,
        default=1,
        help="split the work over N jobs of a scheduler without accelerate (SLURM arrays); under "
        "`accelerate launch` the processes split it by themselves",
    )
    o("--shard_index", type=int, help="this job's shard (omit to merge)")
    o("--chunk_size", type=int, default=256, help="shapes per resumable chunk")
    o("--batch_size", type=int, default=32)
    o("--device", default=None, help="cpu, cuda, cuda:1, ...")
    o("--faiss", default="auto", help="auto, none, or a faiss factory string (HNSW32, IVF1024,Flat)")
    o("--skip_unreadable", action="store_true", help="skip files that cannot be read (listed)")
    p.set_defaults(func=cmd_embed)

    p = commands.add_parser("search", help="text-, shape- or photo-to-shape search in an index")
    o = _Options(p)
    o(
        "text",
        nargs="?",
        help='the query, e.g. "a chair with armrests" (a query starting with a/an/the/two... keeps its own '
        'article: "a horse" -> "image of a horse"; README, Search)',
    )
    o("--like", help="a query shape file instead of a text")
    o("--image", help="a query photo (jpg, png, ...) instead of a text, through CLIP's image tower")
    o("--index", required=True, help="an index folder written by `clip2point embed`")
    o("-k", type=int, default=8, help="how many hits")
    o("-o", "--output", help="write a picture of the hits' front views (PNG)")
    o("--template", help="prompt template with {} (default: the index's, e.g. 'image of a {}')")
    o("--exact", action="store_true", help="exact search even when the index has a faiss index")
    o("--model", help="embed the query with this model (default: the index's)")
    o(
        "--image_model",
        help="where a photo's image tower comes from: the CLIP the model was pre-trained from, or a model folder "
        "with image_encoder/ (default: the index's model)",
    )
    o("--up_axis", choices=UP_AXES, help="the query shape's up axis (default: the index's)")
    o("--device", default=None)
    o("--json", action="store_true", help="print the hits as JSON")
    p.set_defaults(func=cmd_search)
    for command in commands.choices.values():
        command.add_argument(
            "--verbose",
            action="store_true",
            help="show the libraries' progress bars (loading, saving, datasets)",
        )
    return parser


def _file_types() -> tuple[str, ...]:
    from clip2point_hf.point_files import POINT_FILE_TYPES

    return POINT_FILE_TYPES


def _signed_axes_attached(argv: Sequence[str]) -> list[str]:
    """`--up_axis -x` as `--up_axis=-x`: argparse takes a value starting with '-' for an option."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in ("--up_axis", "--up-axis") and arg in UP_AXES:
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_signed_axes_attached(sys.argv[1:] if argv is None else argv))
    from .training.tracking import configure_console

    configure_console(args.verbose)
    try:
        args.func(args)
    except CommandError as error:
        print(f"clip2point {args.command}: error: {error}", file=sys.stderr)
        return 2
    except USER_ERRORS as error:
        if os.environ.get("CLIP2POINT_DEBUG"):
            raise
        print(f"clip2point {args.command}: error: {first_line(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
