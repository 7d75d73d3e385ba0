"""`clip2point`: classify, render, evaluate, convert, publish, search and serve a web page from the command line.

User errors (a bad file, an unknown option value, a model folder missing files, an unreachable Hub) end in one line
on stderr and exit code 2, with no traceback: argparse's errors, :class:`CommandError` and the package's user-error
classes (``clip2point_hf.errors.SCRIPT_USER_ERRORS``). Any other exception is a bug and keeps its traceback.

``--help``, a mistyped option and a missing input file are answered before torch or transformers load: this module
imports only the standard library and :mod:`clip2point_apps.console`; each command checks its inputs first
(``check_inputs``) and imports what it needs inside its function.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import importlib.util
import json
import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from .console import configure_console, join_negated_axes, unrecognized_options_message


class CommandError(Exception):
    """A user-facing error found by the command itself: printed as one line."""


class CommandParser(argparse.ArgumentParser):
    """argparse with the example scripts' spelling: an option ``--name_with_underscores`` (shown in ``--help``) is
    also accepted as ``--name-with-dashes``, as HfArgumentParser accepts it. An error is one line, and
    :attr:`option_names` lists the options for the "did you mean" of a mistyped one."""

    def __init__(self, *args, **kwargs):
        self.option_names: list[str] = []
        super().__init__(*args, **kwargs)

    def add_argument(self, *names: str, **kwargs) -> argparse.Action:
        action = super().add_argument(*names, **kwargs)
        self.option_names += [name for name in names if name.startswith("-")]
        dashed = [name.replace("_", "-") for name in names if name.startswith("--") and "_" in name]
        if dashed:
            hidden = {**kwargs, "dest": action.dest, "default": argparse.SUPPRESS, "help": argparse.SUPPRESS}
            super().add_argument(*dashed, **hidden)
        return action

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


# --------------------------------------------------------------------------------------------------------- checks
# What each command can tell without torch: run before anything heavy is imported.


def check_files(paths: Sequence[str], option: str = "") -> None:
    """Each of ``paths`` is an existing file (a folder or a missing path is one line naming it)."""
    for path in paths:
        if Path(path).is_dir():
            raise CommandError(f"{option}{path}: is a folder, not a point-cloud or mesh file")
        if not Path(path).is_file():
            raise CommandError(f"{option}{path}: file not found")


def check_model_spec(model: str | None, flag: str = "--model") -> None:
    """``--model`` (or another model option, when given) is a folder or a Hub id."""
    if model is not None and not (Path(model).is_dir() or "/" in model):
        raise CommandError(f"{flag}: {model!r} is neither a folder nor a Hub id (org/name)")


def check_up_axis(up_axis: str | None) -> None:
    """``--up_axis`` (when given) is one the library knows; the list comes from the library, so this check
    imports it: commands call it after their other checks."""
    if up_axis is None:
        return
    from clip2point_hf.points_clip2point import UP_AXES

    if up_axis not in UP_AXES:
        raise CommandError(f"--up_axis: {up_axis!r} is not one of {', '.join(UP_AXES)}")


def check_classify(args: argparse.Namespace) -> None:
    check_files(args.files)
    check_model_spec(args.model)
    check_up_axis(args.up_axis)


def check_render(args: argparse.Namespace) -> None:
    check_files([args.file])
    check_up_axis(args.up_axis)


def check_convert(args: argparse.Namespace) -> None:
    if not Path(args.checkpoint).is_file():
        raise CommandError(f"{args.checkpoint}: file not found")


def check_push(args: argparse.Namespace) -> None:
    if not Path(args.model_dir).is_dir():
        raise CommandError(f"{args.model_dir}: no such model folder")


def check_serve(args: argparse.Namespace) -> None:
    if importlib.util.find_spec("gradio") is None:  # an optional extra: only this command needs it
        raise CommandError("the web page needs Gradio: pip install 'clip2point-hf[demo]'")
    check_model_spec(args.model)
    if args.index is not None and not Path(args.index).exists():
        raise CommandError(f"--index: {args.index}: not found")
    check_port_free(args.host, args.port)


def check_port_free(host: str, port: int) -> None:
    """``--host``/``--port`` can be listened on (bound, then closed at once): a port in use, a privileged port
    or a host that is not this machine's is one line naming the option, before the model loads."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.create_server((host, port), family=family):
            pass
    except socket.gaierror:
        raise CommandError(f"--host {host}: not a host name or address this machine can resolve") from None
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise CommandError(port_in_use_message(host, port)) from None
        if error.errno == errno.EACCES:
            raise CommandError(
                f"--port {port}: this user may not listen on ports below 1024; choose --port 1024 or above"
            ) from None
        if error.errno == errno.EADDRNOTAVAIL:
            raise CommandError(f"--host {host}: not an address of this machine") from None
        raise CommandError(f"--port {port}: cannot listen on {host}:{port} ({error.strerror})") from None


def port_in_use_message(host: str, port: int) -> str:
    return f"--port {port}: {host}:{port} is in use by another program; choose another --port"


def check_embed(args: argparse.Namespace) -> None:
    if not Path(args.source).is_dir():
        raise CommandError(f"{args.source}: not a folder (a folder of shapes or a saved dataset)")
    check_model_spec(args.model)
    check_up_axis(args.up_axis)


def check_search(args: argparse.Namespace) -> None:
    if sum(query is not None for query in (args.text, args.like, args.image)) != 1:
        raise CommandError("give either a query text or --like FILE or --image PHOTO (exactly one)")
    for flag, path in (("--like", args.like), ("--image", args.image)):
        if path is not None:
            check_files([path], f"{flag} ")
    if args.template is not None and "{}" not in args.template:
        raise CommandError(f"--template {args.template!r}: must contain {{}} where the query goes")
    check_model_spec(args.model)
    check_model_spec(args.image_model, "--image_model")
    check_up_axis(args.up_axis)


def no_check(args: argparse.Namespace) -> None:
    """For a command whose inputs only its own code can check (``evaluate``: the evaluation's parser)."""


# --------------------------------------------------------------------------------------------------------- helpers


def _labels(labels: str | Sequence[str], option: str) -> list[str]:
    """Labels, comma-separated or listed; a blank or repeated one is an error naming ``option``."""
    from clip2point_hf.pipeline_clip2point import parse_candidate_labels

    try:
        return list(parse_candidate_labels(labels, name=option))
    except ValueError as error:
        raise CommandError(str(error)) from None


def positive_int(text: str) -> int:
    """An argparse type: an int >= 1 (the error names the option)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {text!r}")
    return value


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1 to 65535 (the error names the option)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 1 to 65535, got {text!r}")
    return value


def _views(text: str):
    """`10`, `6`, a preset name, or `elev,azim[,dist];...`, checked by the renderer's rules (errors name
    ``--views``)."""
    from clip2point_hf.errors import first_line
    from clip2point_hf.rendering_clip2point import resolve_views

    aliases = {"10": "reference10", "6": "reference6"}
    if text in aliases or not any(c in text for c in ",;"):
        views = aliases.get(text, text)
    else:
        try:
            views = [[float(x) for x in view.split(",")] for view in text.split(";") if view.strip()]
        except ValueError as error:
            raise CommandError(
                f"--views: cannot parse {text!r} as 'elev,azim[,dist];...' ({error})"
            ) from None
    try:
        resolve_views(views)
    except ValueError as error:
        raise CommandError(f"--views {text}: {first_line(error)}") from None
    return views


def _load_pipeline(model: str | None, device: str | None):
    """The pipeline on ``--model``, or without it on the best weights reachable (`clip2point_apps.weights`); once it
    is built, one line on stderr names the weights used (a folder that cannot be used is the error's one line)."""
    from clip2point_hf.errors import ModelLoadError, first_line

    from .weights import build_classifier, resolve_weights

    _check_device(device)
    try:
        weights = resolve_weights(model)
    except ModelLoadError as error:
        raise CommandError(f"--model: {error}") from None
    try:
        classifier = build_classifier(weights, device)
    except ModelLoadError as error:  # names the folder and what it lacks
        raise CommandError(first_line(error)) from None
    except (OSError, ValueError) as error:
        raise CommandError(f"cannot load the model {weights.source!r}: {first_line(error)}") from None
    print(weights.describe(), file=sys.stderr, flush=True)
    return classifier


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


def _note(text: str, args: argparse.Namespace) -> None:
    """A line about how the answer was made: on stdout, or on stderr where stdout is JSON."""
    print(text, file=sys.stderr if args.json else sys.stdout)


# --------------------------------------------------------------------------------------------------------- commands


def cmd_classify(args: argparse.Namespace) -> None:
    from clip2point_hf.pipeline_clip2point import CLASSIFICATION_TASK

    labels = _labels(args.labels, "--labels") if args.labels is not None else None
    if args.template is not None and "{}" not in args.template:
        raise CommandError(f"--template must contain '{{}}' where the label goes, got {args.template!r}")
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
        if labels is not None:
            _note(
                f"scores: probabilities over all {len(known)} classes of the model; only the --labels ones are "
                "shown",
                args,
            )
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
    _note(_up_axis_note(args.up_axis, classifier.front_end.up_axis, "the model's processor"), args)
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

    views = _views(args.views)
    points = read_point_cloud(args.file, seed=args.seed)
    front_end = CLIP2PointFeatureExtractor(
        num_points=args.num_points, up_axis=args.up_axis, views=views, depth_mode=args.depth_mode
    )
    title = f"{Path(args.file).name}: {front_end.num_views} views ({args.views}), up axis {args.up_axis}"
    save_views_image(front_end, points, args.output, title=title)
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
    class_names = None
    if layout == "dpa":
        class_names = _class_names(DPA_ASSUMED_CLASSES if args.class_names is None else args.class_names)
        if args.class_names is None:
            print(
                f"class names: {DPA_ASSUMED_CLASSES} ({len(class_names)}), assumed: a DPA checkpoint does not "
                "record its classes, and the authors' few-shot script trains on ModelNet40; --class_names to change"
            )
    elif args.class_names is not None:
        raise CommandError(
            f"--class_names applies to a DPA checkpoint; this one has the {layout} layout (a zero-shot model "
            "takes its labels when it classifies)"
        )
    tokenizer = _tokenizer(args.tokenizer)
    if layout != "clip" and not args.clip:
        raise CommandError(f"--clip is required to convert a {layout} checkpoint (its text tower is CLIP's)")
    if layout == "dpa" and tokenizer is None:
        raise CommandError("--tokenizer (CLIP's) is required to embed the class names of a DPA checkpoint")
    conversion = convert_checkpoint(
        state,
        layout=layout,
        clip=None if layout == "clip" else load_clip(args.clip),
        class_names=class_names,
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

    from clip2point_hf.errors import first_line
    from clip2point_hf.loading import resolve_tokenizer

    try:
        return AutoTokenizer.from_pretrained(resolve_tokenizer(spec))
    except (OSError, ValueError) as error:
        raise CommandError(f"--tokenizer: cannot load {spec!r}: {first_line(error)}") from None


#: The class list `convert` assumes for a DPA checkpoint without --class_names (the authors' few-shot dataset).
DPA_ASSUMED_CLASSES = "modelnet40"


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
        names = [line.strip() for line in Path(spec).read_text().splitlines() if line.strip()]
        return _labels(names, f"--class_names {spec}")
    return _labels(spec, "--class_names")


def cmd_push(args: argparse.Namespace) -> None:
    from .hub import HubPushError, export_hub_folder, push_to_hub, verify_hub_folder

    folder = Path(args.output or Path(args.model_dir) / "hub_export")
    export_hub_folder(args.model_dir, folder, args.results, repo_id=args.repo, base_model=args.base_model)
    verify_hub_folder(folder, reference_dir=args.model_dir)
    if args.dry_run:
        print(f"dry run: {folder} is complete and verified; nothing was uploaded")
        return
    try:
        url = push_to_hub(folder, args.repo, private=args.private)
    except HubPushError as error:
        raise CommandError(str(error)) from None
    print(f"pushed {folder} to {args.repo}: {url}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    """The evaluation script itself: its options are parsed by its own parser (one declaration of each)."""
    from .evaluation import parse_evaluation_arguments, results_file_name, run_evaluation

    options, backbone = parse_evaluation_arguments(args.evaluation_options, prog="clip2point evaluate")
    configure_console(verbose=options.verbose)
    summary = run_evaluation(options, backbone)
    output_dir = Path(options.output_dir)
    print(f"results: {output_dir / results_file_name(summary)}, {output_dir / 'confusion_matrix.png'}")


def cmd_serve(args: argparse.Namespace) -> None:
    from .web import build_demo

    demo = build_demo(model=args.model, index=args.index, device=args.device)
    shown_host = "localhost" if args.host in ("0.0.0.0", "::") else args.host
    print(f"serving the page at http://{shown_host}:{args.port} (Ctrl+C to stop)", flush=True)
    try:
        # quiet: Gradio's own banner would advise share=True (a public link), which this command never makes
        demo.launch(server_name=args.host, server_port=args.port, share=False, quiet=True)
    except OSError as error:  # the port was taken between the check and the launch (Gradio's advice to set
        if "port" not in str(error).lower():  # GRADIO_SERVER_PORT does not apply: --port overrides it)
            raise
        raise CommandError(port_in_use_message(args.host, args.port)) from None


def cmd_embed(args: argparse.Namespace) -> None:
    from clip2point_hf.errors import first_line

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
    from clip2point_hf.errors import first_line

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


# --------------------------------------------------------------------------------------------------------- parser


UP_AXIS_HELP = (
    "the files' up axis (an axis, negated with -: z, -y, ...): z for ModelNet OFF; y for "
    "modelnet40_normal_resampled .txt, ShapeNet-55, ScanObjectNN and glTF/GLB (README, 'Up axis')"
)
FILE_TYPES_HELP = "README, 'File types'"


def add_command(
    commands,
    name: str,
    run: Callable[[argparse.Namespace], None],
    check_inputs: Callable[[argparse.Namespace], None],
    **kwargs,
) -> CommandParser:
    """A subcommand: ``check_inputs(args)`` runs first (nothing heavy), then ``run(args)``."""
    parser = commands.add_parser(name, **kwargs)
    parser.set_defaults(run=run, check_inputs=check_inputs, command_parser=parser)
    return parser


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="clip2point",
        description=__doc__.splitlines()[0],
        epilog="Options are spelled --like_this (as the example scripts'); --like-this is accepted too.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    p = add_command(
        commands,
        "classify",
        cmd_classify,
        check_classify,
        help="classify point-cloud files (zero-shot or fine-tuned model)",
    )
    p.add_argument("files", nargs="+", help=f"point-cloud or mesh files ({FILE_TYPES_HELP})")
    p.add_argument(
        "--labels",
        help="comma-separated candidate labels (required for a zero-shot model; for a fine-tuned one, "
        "only these of its classes are shown)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="a CLIP2Point (zero-shot or fine-tuned) or CLIP folder or Hub id (default: the best weights "
        "reachable; see README)",
    )
    p.add_argument("--up_axis", metavar="AXIS", help=UP_AXIS_HELP + "; default: the model's processor's")
    p.add_argument("--template", help="prompt template with {} (default: the model's)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ...")
    p.add_argument("--batch_size", type=positive_int, default=16)
    p.add_argument("--top_k", type=positive_int, default=3, help="how many labels to show per file")
    p.add_argument("--json", action="store_true", help="print all scores as JSON")

    p = add_command(
        commands, "render", cmd_render, check_render, help="write a picture of a cloud's depth views"
    )
    p.add_argument("file", help=f"a point-cloud or mesh file ({FILE_TYPES_HELP})")
    p.add_argument("-o", "--output", default="views.png")
    p.add_argument("--views", default="10", help="10, 6, upper10 or 'elev,azim[,dist];...'")
    p.add_argument("--up_axis", metavar="AXIS", default="y", help=UP_AXIS_HELP + "; default: y")
    p.add_argument("--num_points", type=positive_int, default=1024)
    p.add_argument("--depth_mode", choices=("parity", "minmax"), default="parity")
    p.add_argument("--seed", type=int, default=0)

    add_command(
        commands,
        "evaluate",
        cmd_evaluate,
        no_check,
        add_help=False,  # `clip2point evaluate --help` is the evaluation's own
        help="accuracy on a dataset, zero-shot or fine-tuned: the options of examples/zero_shot.py "
        "(clip2point evaluate --help)",
    )

    p = add_command(
        commands,
        "convert",
        cmd_convert,
        check_convert,
        help="convert an original checkpoint into a model folder",
    )
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
    p.add_argument(
        "--class_names",
        default=None,
        help="a DPA checkpoint's classes, which it does not record: modelnet40, modelnet10, scanobjectnn, a file "
        f"(one name a line) or a,b,c. Default: {DPA_ASSUMED_CLASSES}, the authors' few-shot dataset (printed when "
        "assumed)",
    )

    p = add_command(
        commands, "push", cmd_push, no_check, help="export, verify and upload a model folder to the Hub"
    )
    p.add_argument("model_dir")
    p.add_argument("--repo", required=True, help="Hub repo id, org/name")
    p.add_argument(
        "--results",
        nargs="*",
        default=[],
        help="result files of `clip2point evaluate` for the card (zero_shot_results.json, eval_results.json)",
    )
    p.add_argument("--output", help="where to write the upload folder (default: MODEL_DIR/hub_export)")
    p.add_argument("--base_model", help="the CLIP it was initialised from, for the card")
    p.add_argument("--private", action="store_true")
    p.add_argument("--dry_run", action="store_true", help="write and verify the folder, upload nothing")

    p = add_command(
        commands,
        "serve",
        cmd_serve,
        check_serve,
        help="a local web page: upload a 3D file, see its views and scores",
    )
    p.add_argument(
        "--model", help="a model folder or Hub id (default: the best weights reachable; see README)"
    )
    p.add_argument("--index", help="a shape index from `clip2point embed` (adds a search tab)")
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines")
    p.add_argument("--port", type=port_number, default=7860)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ...")

    p = add_command(
        commands,
        "embed",
        cmd_embed,
        check_embed,
        help="embed a folder or dataset of shapes into a search index",
    )
    p.add_argument("source", help="a folder of point/mesh files (recursive), or a folder saved by datasets")
    p.add_argument("--model", required=True, help="a CLIP2Point model folder or Hub id")
    p.add_argument("-o", "--output", required=True, help="the index folder, e.g. shapes.index")
    p.add_argument("--split", help="the split of a saved DatasetDict")
    p.add_argument(
        "--up_axis", metavar="AXIS", help=UP_AXIS_HELP + "; default: the dataset's, else the model's"
    )
    p.add_argument(
        "--num_shards",
        type=int,
        default=1,
        help="split the work over N jobs of a scheduler without accelerate (SLURM arrays); under "
        "`accelerate launch` the processes split it by themselves",
    )
    p.add_argument("--shard_index", type=int, help="this job's shard (omit to merge)")
    p.add_argument("--chunk_size", type=int, default=256, help="shapes per resumable chunk")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--faiss", default="auto", help="auto, none, or a faiss factory string (HNSW32, IVF1024,Flat)"
    )
    p.add_argument("--skip_unreadable", action="store_true", help="skip files that cannot be read (listed)")

    p = add_command(
        commands,
        "search",
        cmd_search,
        check_search,
        help="text-, shape- or photo-to-shape search in an index",
    )
    p.add_argument(
        "text",
        nargs="?",
        help='the query, e.g. "a chair with armrests" (a query starting with a/an/the/two... keeps its own '
        'article: "a horse" -> "image of a horse"; README, \'Search\')',
    )
    p.add_argument("--like", help="a query shape file instead of a text")
    p.add_argument(
        "--image", help="a query photo (jpg, png, ...) instead of a text, through CLIP's image tower"
    )
    p.add_argument("--index", required=True, help="an index folder written by `clip2point embed`")
    p.add_argument("-k", type=int, default=8, help="how many hits")
    p.add_argument("-o", "--output", help="write a picture of the hits' front views (PNG)")
    p.add_argument("--template", help="prompt template with {} (default: the index's, e.g. 'image of a {}')")
    p.add_argument("--exact", action="store_true", help="exact search even when the index has a faiss index")
    p.add_argument("--model", help="embed the query with this model (default: the index's)")
    p.add_argument(
        "--image_model",
        help="where a photo's image tower comes from: the CLIP the model was pre-trained from, or a model folder "
        "with image_encoder/ (default: the index's model)",
    )
    p.add_argument("--up_axis", metavar="AXIS", help="the query shape's up axis (default: the index's)")
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true", help="print the hits as JSON")
    for name, command in commands.choices.items():
        if name != "evaluate":
            command.add_argument(
                "--verbose",
                action="store_true",
                help="show the libraries' progress bars (loading, saving, datasets)",
            )
    return parser


def parse_command_line(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """The command's arguments and what its parser does not know (the evaluation's options). A negated up axis
    may follow its option as users type it: ``--up_axis -z``."""
    return build_parser().parse_known_args(join_negated_axes(argv))


def main(argv: Sequence[str] | None = None) -> int:
    args, unrecognized = parse_command_line(sys.argv[1:] if argv is None else argv)
    if args.command == "evaluate":
        args.evaluation_options = unrecognized  # the evaluation's parser reads them
    elif unrecognized:
        command_parser = args.command_parser
        command_parser.error(unrecognized_options_message(unrecognized, command_parser.option_names))
    try:
        args.check_inputs(args)
        if (
            args.command != "evaluate"
        ):  # evaluate's --verbose is the evaluation's option: cmd_evaluate applies it
            configure_console(verbose=args.verbose)
        args.run(args)
    except CommandError as error:
        print(f"clip2point {args.command}: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        from clip2point_hf.errors import SCRIPT_USER_ERRORS, first_line

        if not isinstance(error, SCRIPT_USER_ERRORS) or os.environ.get("CLIP2POINT_DEBUG"):
            raise  # a bug: its traceback
        print(f"clip2point {args.command}: error: {first_line(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
