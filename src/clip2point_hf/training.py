"""Reusable pieces of the example scripts (``examples/pretrain.py``, ``finetune_gdpa.py``, ``zero_shot.py``).

Everything that decides *what* is computed lives here, so the scripts stay short and the benchmark measures the
same step the scripts run:

* typed arguments shared by the scripts, parsed from the command line or a JSON/YAML file;
* backbones: a Hub id, a transformers CLIP folder, an OpenAI ``.pt`` file, or a randomly initialised CLIP from a
  preset/config (tests and CPU learning runs), and the matching tokenizer;
* datasets: any loader of :mod:`clip2point_hf.data`, seeded stratified validation splits and K-shot sampling;
* determinism that survives a resume: every random draw of a sample (its point subset, RGB view, zoom,
  augmentation) comes from a generator keyed by ``(seed, epoch, dataset index)``, the shuffling of an epoch from
  ``(seed, epoch)`` and the global RNG (dropout) is re-seeded from ``(seed, epoch, step, process)`` before every
  step. A run killed mid-epoch and resumed therefore replays exactly the batches and draws it would have made,
  whatever the number of processes, and a ``k``-process run sees the same global batches as one process;
* checkpoints (``Accelerator.save_state`` with a completion marker), learning-rate schedules, rendering of the
  batch on the accelerator device, zero-shot prediction, metrics and the confusion-matrix picture, Hub upload.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .hub import HubPushError, push_to_hub  # re-exported: the scripts' --push_to_hub

__all__ = [
    "CLIP_CONFIG_PRESETS",
    "ENSEMBLE_TEMPLATES",
    "PROGRESS_FILE",
    "REFERENCE_TEMPLATES",
    "BackboneArguments",
    "EpochSampler",
    "HubPushError",
    "KeyedDataset",
    "PointCloudBatchTransform",
    "PretrainingPairTransform",
    "TrainingArguments",
    "TrainingProgress",
    "build_clip",
    "build_lr_scheduler",
    "build_optimizer",
    "class_prompt_names",
    "classification_metrics",
    "encode_class_prompts",
    "find_checkpoints",
    "keyed_generator",
    "keyed_seed",
    "latest_checkpoint",
    "load_point_cloud_dataset",
    "load_tokenizer",
    "make_processor",
    "parse_args",
    "pretraining_inputs",
    "push_to_hub",
    "render_point_clouds",
    "resolve_templates",
    "resolve_trackers",
    "sample_k_shot",
    "save_confusion_matrix_image",
    "seed_step",
    "start_trackers",
    "stratified_split",
    "to_y_up",
]

# ---------------------------------------------------------------------------------------------------------
# Arguments

OptionalStr = str | None


@dataclass
class BackboneArguments:
    """Which CLIP the scripts build on."""

    clip: OptionalStr = field(
        default=None,
        metadata={
            "help": "CLIP backbone: a Hub id (openai/clip-vit-base-patch32), a transformers CLIP folder, "
            "or an OpenAI-layout .pt file."
        },
    )
    clip_config: OptionalStr = field(
        default=None,
        metadata={
            "help": "Instead of --clip: a randomly initialised CLIP (seeded by --seed) from a preset "
            f"({', '.join(['tiny', 'small', 'vit-b-32'])}), a CLIPConfig JSON file or a folder holding config.json."
        },
    )
    tokenizer: OptionalStr = field(
        default=None,
        metadata={
            "help": "CLIP tokenizer (Hub id or folder). Default: the one of --clip; 'char' (the built-in "
            "character-level tokenizer) for a random --clip_config backbone."
        },
    )


@dataclass
class TrainingArguments:
    """Run settings shared by the training scripts (each script overrides some defaults)."""

    output_dir: OptionalStr = field(
        default=None, metadata={"help": "Where the run, its checkpoints and the model go."}
    )
    seed: int = field(
        default=42, metadata={"help": "Seed of initialisation, shuffling, sampling and dropout."}
    )
    mixed_precision: OptionalStr = field(
        default=None,
        metadata={
            "help": "no, fp16 or bf16 (default: what `accelerate launch`/`accelerate config` says).",
            "choices": ["no", "fp16", "bf16"],
        },
    )
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Batch size per process."})
    per_device_eval_batch_size: int = field(
        default=64, metadata={"help": "Evaluation batch size per process."}
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimiser update."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate."})
    min_learning_rate: float = field(default=0.0, metadata={"help": "Floor of the cosine schedules."})
    weight_decay: float = field(
        default=1e-4, metadata={"help": "AdamW/LAMB weight decay (not on biases, norms, scales)."}
    )
    optimizer: str = field(
        default="adamw",
        metadata={"help": "adamw, or lamb (needs the timm package).", "choices": ["adamw", "lamb"]},
    )
    num_train_epochs: int = field(
        default=10, metadata={"help": "Epochs (unless --max_train_steps ends earlier)."}
    )
    max_train_steps: int | None = field(
        default=None, metadata={"help": "Stop after this many optimiser updates."}
    )
    lr_scheduler_type: str = field(
        default="cosine",
        metadata={
            "help": "constant, linear, cosine, or cosine_restarts (restart every --restart_epochs epochs).",
            "choices": ["constant", "linear", "cosine", "cosine_restarts"],
        },
    )
    restart_epochs: float = field(default=2.0, metadata={"help": "Period of cosine_restarts, in epochs."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up updates."})
    max_grad_norm: float | None = field(
        default=None, metadata={"help": "Clip the gradient norm (off by default)."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Log the training loss every N updates."})
    eval_steps: int | None = field(
        default=None, metadata={"help": "Validate every N updates (default: every epoch)."}
    )
    checkpointing_steps: OptionalStr = field(
        default=None, metadata={"help": "Save a resumable checkpoint every N updates, or 'epoch'."}
    )
    checkpoints_total_limit: int | None = field(default=3, metadata={"help": "Keep at most N checkpoints."})
    resume_from_checkpoint: OptionalStr = field(
        default=None,
        metadata={
            "help": "Resume: a checkpoint folder, or 'latest' (the default when the flag has no value; a run "
            "without any checkpoint then starts from scratch).",
            "nargs": "?",
            "const": "latest",
        },
    )
    load_best_model_at_end: bool = field(
        default=True, metadata={"help": "Save the model that scored best on validation (else the last one)."}
    )
    report_to: str = field(
        default="none", metadata={"help": "Trackers: none, tensorboard, wandb, all (only those installed)."}
    )
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    push_to_hub: bool = field(
        default=False, metadata={"help": "Upload the final folder to the Hub (after saving it)."}
    )
    hub_model_id: OptionalStr = field(
        default=None, metadata={"help": "Hub repo (default: the output folder's name)."}
    )
    hub_token: OptionalStr = field(default=None, metadata={"help": "Hub token (default: the stored login)."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})

    def validate(self) -> None:
        if not self.output_dir:
            raise ValueError("--output_dir is required")
        for name in (
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "num_train_epochs",
            "logging_steps",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.max_train_steps is not None and self.max_train_steps < 1:
            raise ValueError(f"--max_train_steps must be >= 1, got {self.max_train_steps}")
        steps = self.checkpointing_steps
        if steps not in (None, "epoch") and (not str(steps).isdigit() or int(steps) < 1):
            raise ValueError(
                f"--checkpointing_steps must be a positive int or 'epoch', got {self.checkpointing_steps!r}"
            )
        if self.eval_steps is not None and self.eval_steps < 1:
            raise ValueError(f"--eval_steps must be >= 1, got {self.eval_steps}")
        if self.learning_rate <= 0:
            raise ValueError(f"--learning_rate must be > 0, got {self.learning_rate}")


def parse_args(types: Sequence[type], argv: Sequence[str] | None = None) -> tuple:
    """Parse `types` (dataclasses) from the command line, or from a JSON/YAML file given as the first argument.

    ``script.py run.yaml`` reads every field from the file; ``script.py run.yaml --seed 3`` lets the command line
    override the file. Unknown keys in a file are an error naming them.
    """
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(list(types))
    if argv and argv[0].lower().endswith((".json", ".yaml", ".yml")) and not argv[0].startswith("-"):
        path = Path(argv[0])
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        text = path.read_text()
        if path.suffix.lower() == ".json":
            values = json.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a mapping of argument names to values")
        known = {f.name for t in types for f in fields(t)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path}: unknown arguments {unknown}")
        parser.set_defaults(**values)
        argv = argv[1:]
    return parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)


def args_to_dict(*args) -> dict:
    """Flat, JSON-serialisable view of dataclass arguments (tokens are left out)."""
    out = {}
    for a in args:
        out.update(asdict(a) if is_dataclass(a) else dict(a))
    out.pop("hub_token", None)
    return out


# ---------------------------------------------------------------------------------------------------------
# Backbones and tokenizers

#: Random-initialisation presets. ``tiny``: unit tests (32 px). ``small``: CPU learning runs (64 px).
#: ``vit-b-32``: the shapes of CLIP ViT-B/32 (throughput measurements).
CLIP_CONFIG_PRESETS: dict[str, dict] = {
    "tiny": {  # the towers of clip2point_hf.testing_utils.tiny_tower_configs()
        "vision_config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
        },
        "text_config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 64,
        },
        "projection_dim": 16,
        "initializer_factor": 5.0,
    },
    "small": {
        "vision_config": {
            "hidden_size": 128,
            "intermediate_size": 512,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "image_size": 64,
            "patch_size": 8,
        },
        "text_config": {
            "hidden_size": 64,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 64,
        },
        "projection_dim": 64,
        "initializer_factor": 5.0,
    },
    "vit-b-32": {},
}
#: Why ``initializer_factor`` 5 for the small random presets: with CLIP's default initialisation a random tower's
#: pooled output hardly depends on its input (cosine ~0.999 between the embeddings of unrelated renderings), so
#: frozen random features carry little and contrastive training from scratch collapses to identical embeddings.


def load_tokenizer(args: BackboneArguments):
    """The tokenizer named by ``--tokenizer``, else the one of ``--clip``, else (random backbones) ``char``."""
    from transformers import AutoTokenizer

    name = args.tokenizer
    if name is None:
        if args.clip is not None and not os.path.isfile(args.clip):
            name = args.clip
        elif args.clip_config is not None:
            name = "char"
        else:
            raise ValueError(
                "--tokenizer is required with an OpenAI-layout .pt backbone (e.g. --tokenizer openai/clip-vit-base-patch32)"
            )
    if name == "char":
        from .testing_utils import make_tiny_tokenizer

        return make_tiny_tokenizer()
    return AutoTokenizer.from_pretrained(name)


def _clip_config(spec: str, tokenizer):
    from transformers import CLIPConfig

    if spec in CLIP_CONFIG_PRESETS:
        values = json.loads(json.dumps(CLIP_CONFIG_PRESETS[spec]))
    elif os.path.isdir(spec) or os.path.isfile(spec):
        path = os.path.join(spec, "config.json") if os.path.isdir(spec) else spec
        values = json.loads(Path(path).read_text())
    else:
        raise ValueError(
            f"--clip_config {spec!r} is neither a preset ({', '.join(CLIP_CONFIG_PRESETS)}) nor a config file"
        )
    text = dict(values.get("text_config") or {})
    if tokenizer is not None:  # the random text tower must fit the tokenizer
        text["vocab_size"] = len(tokenizer)
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(tokenizer, key, None)
            if value is not None:
                text[key] = value
    values["text_config"] = text
    factor = values.get("initializer_factor")
    if (
        factor is not None
    ):  # CLIPModel initialises with the top-level factor, standalone towers with their own
        for key in ("text_config", "vision_config"):
            values[key] = {"initializer_factor": factor, **(values.get(key) or {})}
    return CLIPConfig(**{k: v for k, v in values.items() if k not in ("architectures", "model_type")})


def build_clip(args: BackboneArguments, tokenizer=None, seed: int = 0):
    """A ``CLIPModel`` from ``--clip`` (Hub id, folder, OpenAI ``.pt``) or a seeded random one from ``--clip_config``."""
    from transformers import CLIPModel

    from .conversion_clip2point import load_clip

    if (args.clip is None) == (args.clip_config is None):
        raise ValueError("give exactly one of --clip (pretrained CLIP) and --clip_config (random CLIP)")
    if args.clip is not None:
        return load_clip(args.clip)
    config = _clip_config(args.clip_config, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPModel(config)


# ---------------------------------------------------------------------------------------------------------
# Keyed randomness


def keyed_seed(*keys) -> int:
    """A 63-bit seed from any tuple of ints/strings (stable across processes, machines and Python versions)."""
    digest = hashlib.blake2b(repr(tuple(keys)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def keyed_generator(*keys) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(keyed_seed(*keys))
    return generator


def seed_step(seed: int, epoch: int, step: int, process_index: int) -> None:
    """Re-seed the global RNGs (dropout, ...) from the step's coordinates, so a resumed step replays exactly."""
    torch.manual_seed(keyed_seed(seed, "step", epoch, step, process_index))


class EpochSampler(torch.utils.data.Sampler):
    """Yields ``(epoch, index)`` keys; the order of an epoch is a permutation keyed by ``(seed, epoch)``.

    The epoch travels with every key, so a dataset can draw each sample's randomness from
    ``(seed, epoch, index)`` in any worker process. ``set_epoch`` is called by Accelerate's data loader.
    """

    def __init__(self, num_samples: int, seed: int, shuffle: bool = True):
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            order = torch.randperm(
                self.num_samples, generator=keyed_generator(self.seed, "order", self.epoch)
            ).tolist()
        else:
            order = range(self.num_samples)
        epoch = self.epoch
        for index in order:
            yield (epoch, index)


def _identity(batch):
    return batch


class KeyedDataset(torch.utils.data.Dataset):
    """A ``datasets.Dataset`` read a batch at a time, each sample transformed with its own keyed generator.

    ``transform(rows, indices, generators)`` receives the rows (dict of columns; ``points`` as one numpy array),
    their dataset indices and one ``torch.Generator`` per row keyed by ``(seed, stream, epoch, index)``, and
    returns the batch dict. Use with :class:`EpochSampler` and :meth:`loader`.
    """

    def __init__(self, dataset, transform: Callable, seed: int, stream: str):
        self.dataset = dataset.with_format("numpy", columns=["points", "label"], output_all_columns=True)
        self.transform = transform
        self.seed = int(seed)
        self.stream = stream

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, keys):
        keys = [k if isinstance(k, tuple) else (0, int(k)) for k in keys]
        indices = [int(i) for _, i in keys]
        rows = self.dataset[indices]
        generators = [keyed_generator(self.seed, self.stream, int(e), int(i)) for e, i in keys]
        return self.transform(rows, indices, generators)

    def __getitem__(self, key):
        return self.__getitems__([key])

    def loader(self, batch_size: int, shuffle: bool, drop_last: bool, num_workers: int = 0):
        sampler = EpochSampler(len(self), self.seed if shuffle else 0, shuffle=shuffle)
        return torch.utils.data.DataLoader(
            self,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=drop_last,
            collate_fn=_identity,
            num_workers=num_workers,
            # the loader's own seed draws come from here, never from the global RNG
            generator=torch.Generator().manual_seed(0),
        )


# ---------------------------------------------------------------------------------------------------------
# Point clouds: up axis, batch transforms, rendering

_UP_TO_Y = {
    "y": lambda x, y, z: (x, y, z),
    "z": lambda x, y, z: (-y, z, -x),  # the reference's ModelNet mapping
    "-y": lambda x, y, z: (x, -y, -z),
    "x": lambda x, y, z: (-y, x, z),
    "-x": lambda x, y, z: (y, -x, z),
    "-z": lambda x, y, z: (x, -z, y),
}


def to_y_up(points: torch.Tensor, up_axis: str) -> torch.Tensor:
    """Rotate ``(..., 3)`` points stored with ``up_axis`` up into the renderer's y-up world (proper rotations)."""
    if up_axis not in _UP_TO_Y:
        raise ValueError(f"up axis must be one of {sorted(_UP_TO_Y)}, got {up_axis!r}")
    if up_axis == "y":
        return points
    return torch.stack(_UP_TO_Y[up_axis](*points.unbind(-1)), dim=-1)


class PointCloudBatchTransform:
    """Rows of a point-cloud dataset -> ``points`` (B, N, 3) y-up, ``label`` (B,), ``index`` (B,).

    Training augmentation (all drawn from each sample's keyed generator, in this order): a random subset of
    ``num_points`` points, an anisotropic scale in ``scale``, a rotation about the up axis, clipped Gaussian
    jitter. Clouds are re-normalised into the unit sphere when rendered.
    """

    def __init__(
        self,
        up_axis: str = "y",
        num_points: int | None = None,
        scale: tuple[float, float] | None = None,
        rotate: bool = False,
        jitter: float = 0.0,
    ):
        self.up_axis = up_axis
        self.num_points = num_points
        self.scale = scale
        self.rotate = rotate
        self.jitter = float(jitter)

    def __call__(self, rows: Mapping, indices: Sequence[int], generators: Sequence[torch.Generator]) -> dict:
        points = to_y_up(
            torch.from_numpy(np.ascontiguousarray(rows["points"], dtype=np.float32)), self.up_axis
        )
        out = []
        for cloud, g in zip(points, generators):
            n = cloud.shape[0]
            if self.num_points is not None and self.num_points < n:
                cloud = cloud[torch.randperm(n, generator=g)[: self.num_points]]
            if self.scale is not None:
                low, high = self.scale
                cloud = cloud * (low + (high - low) * torch.rand(3, generator=g))
            if self.rotate:
                theta = float(torch.rand((), generator=g)) * 2 * math.pi
                c, s = math.cos(theta), math.sin(theta)
                rot = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
                cloud = cloud @ rot.T
            if self.jitter > 0:
                cloud = cloud + (torch.randn(cloud.shape, generator=g) * self.jitter).clamp(
                    -3 * self.jitter, 3 * self.jitter
                )
            out.append(cloud)
        return {
            "points": torch.stack(out),
            "label": torch.as_tensor(np.asarray(rows["label"], dtype=np.int64)),
            "index": torch.as_tensor(indices, dtype=torch.long),
        }


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class PretrainingPairTransform:
    """Rows of a pairs dataset (``load_shapenet_pairs``) -> one training pair per object (SPEC section 2).

    Per object, from its keyed generator: one of its RGB renderings, ``num_points`` random points, and two zoom
    distances ``d_j = 1 + (u_j - 0.5) * distance_jitter`` (``u_j ~ U[0, 1)``; 0.2 gives the reference's
    ``[0.9, 1.1)``). Returns ``points`` (B, N, 3), ``image`` (B, 3, S, S) CLIP-normalised, ``view_angles``
    (B, 2) (elevation, azimuth of the chosen rendering), ``distances`` (B, 2), ``label`` and ``index``.
    Depth maps are rendered later, on the accelerator device (:func:`pretraining_inputs`).
    """

    def __init__(
        self,
        view_angles: Sequence[Sequence[float]],
        image_size: int,
        num_points: int | None = 1024,
        distance_jitter: float = 0.2,
        image_mean: Sequence[float] = CLIP_MEAN,
        image_std: Sequence[float] = CLIP_STD,
    ):
        self.view_angles = torch.tensor(
            [[float(v[0]), float(v[1])] for v in view_angles], dtype=torch.float32
        )
        self.image_size = int(image_size)
        self.num_points = num_points
        self.distance_jitter = float(distance_jitter)
        self.image_mean = torch.tensor(image_mean, dtype=torch.float32).view(3, 1, 1)
        self.image_std = torch.tensor(image_std, dtype=torch.float32).view(3, 1, 1)

    def load_image(self, image) -> torch.Tensor:
        """A stored image (``{"bytes", "path"}`` or PIL) -> (3, S, S) float in [0, 1], transparency on white."""
        import io

        from PIL import Image

        if isinstance(image, Mapping):
            image = (
                Image.open(io.BytesIO(image["bytes"])) if image.get("bytes") else Image.open(image["path"])
            )
        if image.mode in ("RGBA", "LA", "P"):
            image = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image)
        image = image.convert("RGB")
        if image.size != (self.image_size, self.image_size):
            image = image.resize((self.image_size, self.image_size), Image.BICUBIC)
        return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255.0)

    def __call__(self, rows: Mapping, indices: Sequence[int], generators: Sequence[torch.Generator]) -> dict:
        clouds = torch.from_numpy(np.ascontiguousarray(rows["points"], dtype=np.float32))
        num_views = self.view_angles.shape[0]
        points, images, views, distances = [], [], [], []
        for cloud, rendered, g in zip(clouds, rows["images"], generators):
            if len(rendered) != num_views:
                raise ValueError(f"an object has {len(rendered)} renderings, the view list has {num_views}")
            view = int(torch.randint(num_views, (1,), generator=g))
            n = cloud.shape[0]
            if self.num_points is not None and self.num_points < n:
                cloud = cloud[torch.randperm(n, generator=g)[: self.num_points]]
            u = torch.rand(2, generator=g)
            points.append(cloud)
            images.append(self.load_image(rendered[view]))
            views.append(view)
            distances.append(1.0 + (u - 0.5) * self.distance_jitter)
        image = (torch.stack(images) - self.image_mean) / self.image_std
        return {
            "points": torch.stack(points),
            "image": image,
            "view_angles": self.view_angles[torch.tensor(views)],
            "distances": torch.stack(distances),
            "label": torch.as_tensor(np.asarray(rows["label"], dtype=np.int64)),
            "index": torch.as_tensor(indices, dtype=torch.long),
        }


def render_point_clouds(
    renderer, points: torch.Tensor, views, distances: torch.Tensor | None = None
) -> torch.Tensor:
    """Normalise ``points`` (B, N, 3) into the unit sphere and render ``views`` on their device, outside autocast."""
    from .rendering_clip2point import normalize_point_cloud

    device_type = points.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        return renderer.render(normalize_point_cloud(points.float())[0], views, distances)


def pretraining_inputs(renderer, batch: Mapping) -> dict:
    """The model inputs of one pre-training step: the two depth maps of every object, rendered on the batch's
    device from the RGB rendering's view at the two zoom distances (a pure scale: nothing is clipped)."""
    angles = batch["view_angles"]
    b = angles.shape[0]
    views = torch.cat([angles[:, None, :].expand(b, 2, 2), batch["distances"][..., None]], dim=-1)
    depth = render_point_clouds(renderer, batch["points"], views)
    return {"pixel_values": batch["image"], "depth_pixel_values": depth}


# ---------------------------------------------------------------------------------------------------------
# Datasets

DATASET_FORMATS = ("auto", "modelnet", "scanobjectnn", "mesh_folder", "shapenet_pairs")


def detect_dataset_format(path: str | os.PathLike) -> str:
    """Which loader of :mod:`clip2point_hf.data` reads ``path``."""
    from .data import detect_modelnet_format
    from .data.shapenet import PAIRS_META_FILE

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    if (root / PAIRS_META_FILE).is_file() or (root / "shapenet_pc").is_dir():
        return "shapenet_pairs"
    names = {p.name.lower() for p in root.rglob("*.h5")} if any(root.rglob("*.h5")) else set()
    if any("objectdataset" in n for n in names):
        return "scanobjectnn"
    with contextlib.suppress(Exception):
        detect_modelnet_format(root)
        if names or any(root.glob("*/*.txt")) or any(root.glob("*/*/*.off")):
            return "modelnet"
    return "mesh_folder"


def load_point_cloud_dataset(
    path: str | os.PathLike,
    dataset_format: str = "auto",
    num_points: int = 1024,
    seed: int = 0,
    variant: str = "PB_T50_RS",
    cache_dir: str | None = None,
    on_missing: str = "error",
):
    """Load ``path`` with the matching loader; returns ``(DatasetDict, metadata)``.

    ``on_missing="skip"`` lets the ModelNet and ShapeNet loaders build from the files present when their split
    lists name absent ones (a partial download); the default is an error that lists them.
    """
    from . import data

    if dataset_format not in DATASET_FORMATS:
        raise ValueError(f"--dataset_format must be one of {DATASET_FORMATS}, got {dataset_format!r}")
    fmt = detect_dataset_format(path) if dataset_format == "auto" else dataset_format
    if fmt == "modelnet":
        ds = data.load_modelnet(
            path, num_points=num_points, seed=seed, cache_dir=cache_dir, on_missing=on_missing
        )
    elif fmt == "scanobjectnn":
        ds = data.load_scanobjectnn(
            path, variant=variant, num_points=num_points, seed=seed, cache_dir=cache_dir
        )
    elif fmt == "shapenet_pairs":
        ds = data.load_shapenet_pairs(path, path, cache_dir=cache_dir, on_missing=on_missing)
    else:
        ds = data.load_mesh_folder(path, num_points=num_points, seed=seed, cache_dir=cache_dir)
    meta = data.dataset_metadata(ds)
    meta.setdefault("format", fmt)
    return ds, meta


def class_prompt_names(class_names: Sequence[str]) -> list[str]:
    """Prompt spellings of class names (``night_stand`` -> ``night stand``); names that would collide (SHREC's
    ``bird1``/``bird2`` -> ``bird``) keep their distinguishing suffix (``bird 1``, ``bird 2``)."""
    from .data import prompt_name

    names = [prompt_name(n) for n in class_names]
    counts = {n: names.count(n) for n in names}
    out = []
    for raw, name in zip(class_names, names):
        if counts[name] > 1:
            plain = " ".join(re.sub(r"(?<=[a-z])(?=[A-Z])", " ", raw).replace("_", " ").split()).lower()
            name = re.sub(r"(?<=[a-z])(?=\d)", " ", plain)
        out.append(name)
    if len(set(out)) != len(out):
        raise ValueError(f"class names give duplicate prompts: {out}")
    return out


def stratified_split(labels: Sequence[int], fraction: float, seed: int, stream: str = "validation"):
    """Split indices per class: ``round(n_c * fraction)`` of each class (at least one when the class has two or
    more examples and ``fraction > 0``) go to the held-out part. Returns ``(kept, held_out)``, sorted."""
    labels = np.asarray(labels)
    g = np.random.default_rng(keyed_seed(seed, stream))
    kept, held = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[g.permutation(len(idx))]
        k = round(len(idx) * fraction)
        if fraction > 0 and len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        held.extend(idx[:k].tolist())
        kept.extend(idx[k:].tolist())
    return sorted(kept), sorted(held)


def sample_k_shot(
    labels: Sequence[int], indices: Sequence[int], shots: int, seed: int
) -> tuple[list[int], dict]:
    """``shots`` examples per class from ``indices`` (seeded); classes with fewer keep all (reported)."""
    labels = np.asarray(labels)
    indices = np.asarray(sorted(indices))
    g = np.random.default_rng(keyed_seed(seed, "k-shot", shots))
    chosen, short = [], {}
    for c in np.unique(labels):
        idx = indices[labels[indices] == c]
        if len(idx) < shots:
            short[int(c)] = len(idx)
        chosen.extend(idx[g.permutation(len(idx))[:shots]].tolist())
    return sorted(chosen), short


# ---------------------------------------------------------------------------------------------------------
# Prompts and zero-shot prediction

#: The reference's single prompt.
REFERENCE_TEMPLATES = ["image of a {}"]
#: A prompt ensemble for depth renderings (embeddings averaged after normalisation).
ENSEMBLE_TEMPLATES = [
    "image of a {}",
    "a depth map of a {}.",
    "a rendered depth image of a {}.",
    "a grey depth image of a {}.",
    "a point cloud of a {}.",
    "a 3D model of a {}.",
    "a photo of a {}.",
    "a sketch of a {}.",
]


def resolve_templates(prompts: str | Sequence[str] | None) -> list[str]:
    """``"reference"``, ``"ensemble"``, or explicit templates each containing ``{}``."""
    if prompts is None or prompts == "reference" or prompts == ["reference"]:
        return list(REFERENCE_TEMPLATES)
    if prompts == "ensemble" or prompts == ["ensemble"]:
        return list(ENSEMBLE_TEMPLATES)
    templates = [prompts] if isinstance(prompts, str) else list(prompts)
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise ValueError(f"prompt templates must contain '{{}}' (or be 'reference'/'ensemble'), got {bad}")
    return templates


@torch.no_grad()
def encode_class_prompts(
    model, tokenizer, class_names: Sequence[str], templates: Sequence[str]
) -> torch.Tensor:
    """(K, D) L2-normalised class embeddings of a ``CLIP2PointModel``: mean over templates of the normalised
    text embeddings, re-normalised (one template: exactly the reference's embedding)."""
    import torch.nn.functional as F

    device = next(model.parameters()).device
    max_length = model.config.text_config.max_position_embeddings
    total = None
    for template in templates:
        tokens = tokenizer(
            [template.format(n) for n in class_names],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        ).to(device)
        text = F.normalize(
            model.get_text_features(tokens["input_ids"], tokens.get("attention_mask")).pooler_output.float(),
            dim=-1,
        )
        total = text if total is None else total + text
    return F.normalize(total, dim=-1)


# ---------------------------------------------------------------------------------------------------------
# Metrics and pictures

METRIC_PATH = Path(__file__).resolve().parent / "metrics" / "accuracy_clip2point.py"
_metric_cache: dict[str, Any] = {}


def load_accuracy_metric():
    """The package's ``evaluate`` metric module, loaded by path (works offline)."""
    import evaluate

    if "metric" not in _metric_cache:
        _metric_cache["metric"] = evaluate.load(str(METRIC_PATH))
    return _metric_cache["metric"]


def classification_metrics(predictions, references, class_names: Sequence[str]) -> dict:
    """Overall, mean-class and per-class accuracy and the confusion matrix, through the evaluate module."""
    metric = load_accuracy_metric()
    predictions = np.asarray(predictions, dtype=np.int64).tolist()
    references = np.asarray(references, dtype=np.int64).tolist()
    return metric.compute(
        predictions=predictions,
        references=references,
        num_classes=len(class_names),
        label_names=list(class_names),
    )


def save_confusion_matrix_image(
    confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: str | os.PathLike, title: str = ""
) -> None:
    """A PNG of the confusion matrix (rows: true class, columns: predicted), row-normalised shading, counts
    written in the cells. Drawn with Pillow (no matplotlib needed)."""
    from PIL import Image, ImageDraw, ImageFont

    cm = np.asarray(confusion, dtype=np.int64)
    k = cm.shape[0]
    font = ImageFont.load_default()
    cell = 22 if k <= 40 else 12
    label_w = 8 + 7 * max((len(n) for n in class_names), default=1)
    top = label_w + (24 if title else 8)
    width, height = label_w + k * cell + 10, top + k * cell + 10
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((8, 6), f"{title}   (rows: true class, columns: predicted class)", fill="black", font=font)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    for i in range(k):
        for j in range(k):
            x0, y0 = label_w + j * cell, top + i * cell
            level = int(255 - 215 * share[i, j])
            colour = (level, level, 255) if i == j else (255, level, level)
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=colour, outline=(225, 225, 225))
            if cm[i, j] and cell >= 20:
                draw.text((x0 + 3, y0 + 5), str(cm[i, j]), fill="black", font=font)
    for i, name in enumerate(class_names):
        draw.text((4, top + i * cell + (cell - 10) // 2), str(name), fill="black", font=font)
        column = Image.new("RGB", (label_w, cell), "white")
        ImageDraw.Draw(column).text((4, (cell - 10) // 2), str(name), fill="black", font=font)
        column = column.rotate(90, expand=True)
        image.paste(column, (label_w + i * cell, top - label_w))
    image.save(path)


# ---------------------------------------------------------------------------------------------------------
# Optimisation


def build_optimizer(model: torch.nn.Module, args: TrainingArguments, parameters=None):
    """AdamW (default; the SPEC's documented stand-in for LAMB) or LAMB from timm, over trainable parameters.

    Weight decay skips biases, norm layers and scalar/vector parameters (scales, gates, the balance weight).
    ``parameters`` may be a list of ``(name, parameter)`` or of param-group dicts.
    """
    named = (
        parameters
        if parameters is not None
        else [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    )
    if named and isinstance(named[0], dict):
        groups = named
    else:
        decay = [p for n, p in named if p.ndim >= 2 and "norm" not in n.lower()]
        no_decay = [p for n, p in named if not (p.ndim >= 2 and "norm" not in n.lower())]
        groups = [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameters")
    if args.optimizer == "lamb":
        try:
            from timm.optim import Lamb
        except ImportError as error:
            raise ImportError("--optimizer lamb needs the timm package (pip install timm)") from error
        return Lamb(groups, lr=args.learning_rate)
    return torch.optim.AdamW(groups, lr=args.learning_rate)


def lr_multiplier(step: int, kind: str, total: int, warmup: int, period: int, floor: float) -> float:
    """The schedule as a multiple of the peak rate at update ``step`` (0-based); ``floor`` = min / peak."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = step - warmup
    if kind == "constant":
        return 1.0
    if kind == "linear":
        return max(0.0, 1.0 - t / max(1, total - warmup))
    if kind == "cosine":
        p = min(1.0, t / max(1, total - warmup))
    elif kind == "cosine_restarts":
        p = (t % max(1, period)) / max(1, period)
    else:
        raise ValueError(f"unknown --lr_scheduler_type {kind!r}")
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * p))


def build_lr_scheduler(optimizer, args: TrainingArguments, total_updates: int, updates_per_epoch: int):
    """A ``LambdaLR`` stepped once per optimiser update (its state is the update count: exact on resume)."""
    import functools

    floor = args.min_learning_rate / args.learning_rate
    period = max(1, round(args.restart_epochs * updates_per_epoch))
    fn = functools.partial(
        lr_multiplier,
        kind=args.lr_scheduler_type,
        total=total_updates,
        warmup=args.warmup_steps,
        period=period,
        floor=floor,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


# ---------------------------------------------------------------------------------------------------------
# Progress, checkpoints and resuming

#: Written into a checkpoint folder once every process has saved: only such folders are resumed from.
PROGRESS_FILE = "clip2point_progress.json"


@dataclass
class TrainingProgress:
    """Where a run is; registered with ``accelerator.register_for_checkpointing`` so it travels with the state."""

    epoch: int = 0
    step_in_epoch: int = 0  # batches (per process) already consumed in ``epoch``
    completed_steps: int = 0  # optimiser updates
    best_metric: float | None = None
    best_step: int | None = None
    batches_per_epoch: int | None = None
    num_processes: int | None = None
    total_batch_size: int | None = None

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: Mapping) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def find_checkpoints(checkpoint_root: str | os.PathLike) -> list[Path]:
    """``checkpoint_<n>`` folders under ``checkpoint_root``, oldest first."""
    root = Path(checkpoint_root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint_\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(checkpoint_root: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint (one with :data:`PROGRESS_FILE`); a folder a killed run left half-written
    is passed over."""
    complete = [p for p in find_checkpoints(checkpoint_root) if (p / PROGRESS_FILE).is_file()]
    return complete[-1] if complete else None


def save_checkpoint(accelerator, progress: TrainingProgress) -> str:
    """``accelerator.save_state()`` (automatic naming, total limit) plus the completion marker."""
    path = accelerator.save_state()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tmp = Path(path) / (PROGRESS_FILE + ".tmp")
        tmp.write_text(json.dumps(progress.state_dict(), indent=2))
        os.replace(tmp, Path(path) / PROGRESS_FILE)
    accelerator.wait_for_everyone()
    return path


def resume_from_checkpoint(
    accelerator, resume: str | None, checkpoint_root: str | os.PathLike, progress: TrainingProgress
):
    """Load the requested checkpoint (``"latest"`` or a folder) into the prepared objects and ``progress``.

    Returns the folder used, or ``None`` (nothing requested, or ``"latest"`` and no complete checkpoint yet).
    Later checkpoints are numbered after every existing folder.
    """
    if not resume:
        return None
    if resume == "latest":
        path = latest_checkpoint(checkpoint_root)
        if path is None:
            accelerator.print(f"No complete checkpoint in {checkpoint_root}: starting from scratch.")
            return None
    else:
        path = Path(resume)
        if not (path / PROGRESS_FILE).is_file():
            raise ValueError(f"{path} is not a complete checkpoint of these scripts (no {PROGRESS_FILE})")
    expected = (progress.batches_per_epoch, progress.num_processes, progress.total_batch_size)
    accelerator.load_state(str(path))
    found = (progress.batches_per_epoch, progress.num_processes, progress.total_batch_size)
    if found != expected:
        raise ValueError(
            f"{path} was written by a run with (batches per epoch, processes, global batch) = {found}, this run has "
            f"{expected}; resuming would not replay the same batches. Resume with the original settings."
        )
    existing = find_checkpoints(checkpoint_root)
    accelerator.project_configuration.iteration = (
        (int(existing[-1].name.split("_")[1]) + 1) if existing else 0
    )
    accelerator.print(
        f"Resumed from {path}: epoch {progress.epoch}, batch {progress.step_in_epoch}, update {progress.completed_steps}"
    )
    return str(path)


def resolve_trackers(report_to: str | None) -> list[str] | None:
    """The ``log_with`` list for ``Accelerator``; a clear error when a requested tracker is not installed.

    ``none`` -> no tracker; ``all`` -> the installed ones among tensorboard and wandb.
    """
    import importlib.util

    if report_to in (None, "", "none"):
        return None
    requested = ["tensorboard", "wandb"] if report_to == "all" else [t.strip() for t in report_to.split(",")]
    usable = []
    for name in requested:
        if name not in ("tensorboard", "wandb"):
            raise ValueError(
                f"--report_to: unknown tracker {name!r} (choose none, tensorboard, wandb or all)"
            )
        if importlib.util.find_spec(name) is None:
            if report_to == "all":
                continue
            raise ImportError(
                f"--report_to {name} needs the {name} package (pip install {name}); or pass --report_to none"
            )
        usable.append(name)
    return usable or None


def start_trackers(accelerator, project_name: str, config: Mapping) -> None:
    """``accelerator.init_trackers`` with a flat config of plain values (what TensorBoard's hparams accept)."""
    if not accelerator.log_with:
        return
    clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config.items()}
    accelerator.init_trackers(project_name, config=clean)


class JsonLogger:
    """Appends one JSON line per logged event to ``<output_dir>/log_history.jsonl`` (main process only)."""

    def __init__(self, accelerator, output_dir: str | os.PathLike):
        self.accelerator = accelerator
        self.path = Path(output_dir) / "log_history.jsonl"

    def __call__(self, values: Mapping, step: int) -> None:
        if self.accelerator.is_main_process:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": step, **{k: _plain(v) for k, v in values.items()}}) + "\n")
        self.accelerator.log(dict(values), step=step)


def _plain(value):
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


# ---------------------------------------------------------------------------------------------------------
# Saving and publishing


def make_processor(
    tokenizer,
    image_size: int,
    views,
    num_points: int = 1024,
    point_radius: float = 0.02,
    depth_mode: str = "parity",
    up_axis: str = "y",
):
    """The ``CLIP2PointProcessor`` saved with a run; its ``renderer`` is the one the run's steps use."""
    from .processing_clip2point import CLIP2PointProcessor

    return CLIP2PointProcessor(
        tokenizer=tokenizer,
        num_points=num_points,
        views=views,
        image_size=image_size,
        point_radius=point_radius,
        depth_mode=depth_mode,
        up_axis=up_axis if up_axis in ("y", "z") else "y",
    )


# ---------------------------------------------------------------------------------------------------------
# The training loop shared by the scripts


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


def run_training(
    accelerator,
    args: TrainingArguments,
    model,
    optimizer,
    scheduler,
    train_loader,
    progress: TrainingProgress,
    *,
    compute_loss: Callable,
    total_updates: int,
    log: Callable,
    evaluate: Callable | None = None,
    on_best: Callable | None = None,
    checkpoint_root: str | os.PathLike | None = None,
) -> TrainingProgress:
    """The update loop of every script: gradient accumulation, per-step seeding, logging, validation, model
    selection and resumable checkpoints.

    ``compute_loss(batch) -> (loss, {name: scalar tensor})``; ``evaluate() -> (selection_metric, {name: value})``
    runs every ``eval_steps`` updates (default: every epoch); ``on_best()`` is called whenever the selection
    metric improves (``progress.best_metric`` is already updated). The loop resumes where ``progress`` says: the
    epoch's shuffling is rebuilt from ``(seed, epoch)`` and the consumed batches are skipped.
    """
    from tqdm.auto import tqdm

    batches = len(train_loader)
    updates_per_epoch = math.ceil(batches / args.gradient_accumulation_steps)
    num_epochs = math.ceil(total_updates / updates_per_epoch)
    every = None if args.checkpointing_steps in (None, "epoch") else int(args.checkpointing_steps)
    bar = tqdm(
        total=total_updates,
        initial=progress.completed_steps,
        disable=not accelerator.is_local_main_process,
        desc="training",
    )
    sums: dict[str, float] = {}
    count = 0
    last_eval = [None]

    def validate():
        if evaluate is None:
            return
        last_eval[0] = progress.completed_steps
        model.eval()
        value, metrics = evaluate()
        model.train()
        log(metrics, progress.completed_steps)
        if progress.best_metric is None or value > progress.best_metric:
            progress.best_metric, progress.best_step = float(value), progress.completed_steps
            if on_best is not None:
                on_best()

    if progress.step_in_epoch >= batches:  # a checkpoint taken at the very end of an epoch
        progress.epoch, progress.step_in_epoch = progress.epoch + 1, 0
    done = progress.completed_steps >= total_updates
    for epoch in range(progress.epoch, num_epochs):
        if done:
            break
        progress.epoch = epoch
        train_loader.set_epoch(epoch)
        loader = train_loader
        if progress.step_in_epoch > 0:
            loader = accelerator.skip_first_batches(train_loader, progress.step_in_epoch)
            loader.set_epoch(epoch)
        model.train()
        for batch in loader:
            seed_step(args.seed, epoch, progress.step_in_epoch, accelerator.process_index)
            with accelerator.accumulate(model):
                loss, extras = compute_loss(batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            progress.step_in_epoch += 1
            for name, value in {"loss": loss, **extras}.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach().float())
            count += 1
            if not accelerator.sync_gradients:
                continue
            progress.completed_steps += 1
            bar.update(1)
            if (
                progress.completed_steps % args.logging_steps == 0
                or progress.completed_steps == total_updates
            ):
                keys = sorted(sums)
                mean = accelerator.reduce(
                    torch.tensor([sums[k] / count for k in keys], device=accelerator.device), reduction="mean"
                )
                means = {f"train/{k}": float(v) for k, v in zip(keys, mean.tolist())}
                means["train/learning_rate"] = scheduler.get_last_lr()[0]
                means["train/epoch"] = epoch + progress.step_in_epoch / batches
                log(means, progress.completed_steps)
                bar.set_postfix(loss=f"{means['train/loss']:.4f}")
                sums, count = {}, 0
            if args.eval_steps and progress.completed_steps % args.eval_steps == 0:
                validate()
            if every and progress.completed_steps % every == 0:
                save_checkpoint(accelerator, progress)
            if progress.completed_steps >= total_updates:
                done = True
                break
        if progress.step_in_epoch >= batches:
            progress.epoch, progress.step_in_epoch = epoch + 1, 0
            if not args.eval_steps:
                validate()
            if args.checkpointing_steps == "epoch":
                save_checkpoint(accelerator, progress)
    if evaluate is not None and last_eval[0] != progress.completed_steps and progress.completed_steps > 0:
        validate()  # the final weights are always a candidate
    bar.close()
    return progress


def setup_accelerator(args: TrainingArguments):
    """An ``Accelerator`` with automatic checkpoint naming under ``<output_dir>/checkpoints`` and the trackers."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    project = ProjectConfiguration(
        project_dir=str(args.output_dir),
        logging_dir=str(Path(args.output_dir) / "runs"),
        automatic_checkpoint_naming=True,
        total_limit=args.checkpoints_total_limit,
    )
    kwargs = {} if args.mixed_precision is None else {"mixed_precision": args.mixed_precision}
    try:
        trackers = resolve_trackers(args.report_to)
    except (ImportError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    return Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=trackers,
        project_config=project,
        step_scheduler_with_optimizer=False,
        **kwargs,
    )


def save_folder_atomically(save: Callable[[str], None], target: str | os.PathLike) -> None:
    """``save(tmp)`` then swap ``tmp`` in for ``target``, so a killed run never leaves a half-written folder."""
    import shutil

    target = Path(target)
    tmp = target.parent / f".{target.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save(str(tmp))
    old = target.parent / f".{target.name}.old"
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.rename(target, old)
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def finish_with_hub(accelerator, args: TrainingArguments, folder: str | os.PathLike) -> None:
    """``--push_to_hub``: upload ``folder`` (already saved locally); exit 1 with one clear line on failure."""
    if not args.push_to_hub:
        return
    if accelerator.is_main_process:
        repo = args.hub_model_id or Path(args.output_dir).resolve().name
        try:
            url = push_to_hub(folder, repo, token=args.hub_token, private=args.hub_private_repo)
        except HubPushError as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        print(f"Pushed to {url}", flush=True)
    accelerator.wait_for_everyone()


def write_json(path: str | os.PathLike, value) -> None:
    Path(path).write_text(json.dumps(value, indent=2, default=_plain) + "\n")
