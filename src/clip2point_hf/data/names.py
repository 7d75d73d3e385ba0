"""Class names of the datasets CLIP2Point uses, and prompt-friendly spellings of them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

__all__ = [
    "MODELNET10_CLASSES",
    "MODELNET40_CLASSES",
    "PROMPT_NAMES",
    "SCANOBJECTNN_CLASSES",
    "SHAPENET55_SYNSETS",
    "prompt_name",
    "prompt_names",
]

#: ModelNet40 folder names, in the (alphabetical) label order of every public release.
MODELNET40_CLASSES: tuple[str, ...] = (
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone",
    "cup", "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard", "lamp",
    "laptop", "mantel", "monitor", "night_stand", "person", "piano", "plant", "radio", "range_hood", "sink",
    "sofa", "stairs", "stool", "table", "tent", "toilet", "tv_stand", "vase", "wardrobe", "xbox",
)  # fmt: skip

#: ModelNet10 folder names, in label order.
MODELNET10_CLASSES: tuple[str, ...] = (
    "bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet",
)  # fmt: skip

#: ScanObjectNN's 15 classes in label order (the release's ``shape_names.txt``).
SCANOBJECTNN_CLASSES: tuple[str, ...] = (
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table",
    "bed", "pillow", "sink", "sofa", "toilet",
)  # fmt: skip

#: ShapeNetCore.v2 (ShapeNet-55) synset id -> class name, in synset (= label) order.
SHAPENET55_SYNSETS: dict[str, str] = {
    "02691156": "airplane",
    "02747177": "trash_bin",
    "02773838": "bag",
    "02801938": "basket",
    "02808440": "bathtub",
    "02818832": "bed",
    "02828884": "bench",
    "02843684": "birdhouse",
    "02871439": "bookshelf",
    "02876657": "bottle",
    "02880940": "bowl",
    "02924116": "bus",
    "02933112": "cabinet",
    "02942699": "camera",
    "02946921": "can",
    "02954340": "cap",
    "02958343": "car",
    "02992529": "cellphone",
    "03001627": "chair",
    "03046257": "clock",
    "03085013": "keyboard",
    "03207941": "dishwasher",
    "03211117": "display",
    "03261776": "earphone",
    "03325088": "faucet",
    "03337140": "file_cabinet",
    "03467517": "guitar",
    "03513137": "helmet",
    "03593526": "jar",
    "03624134": "knife",
    "03636649": "lamp",
    "03642806": "laptop",
    "03691459": "loudspeaker",
    "03710193": "mailbox",
    "03759954": "microphone",
    "03761084": "microwave",
    "03790512": "motorbike",
    "03797390": "mug",
    "03928116": "piano",
    "03938244": "pillow",
    "03948459": "pistol",
    "03991062": "flowerpot",
    "04004475": "printer",
    "04074963": "remote_control",
    "04090263": "rifle",
    "04099429": "rocket",
    "04225987": "skateboard",
    "04256520": "sofa",
    "04330267": "stove",
    "04379243": "table",
    "04401088": "telephone",
    "04460130": "tower",
    "04468005": "train",
    "04530566": "watercraft",
    "04554684": "washer",
}

#: Prompt spellings that differ from the plain rule in :func:`prompt_name` (SPEC section 3).
PROMPT_NAMES: dict[str, str] = {
    "night_stand": "night stand",
    "flower_pot": "flower pot",
    "glass_box": "glass box",
    "range_hood": "range hood",
    "tv_stand": "tv stand",
    "trash_bin": "trash bin",
    "file_cabinet": "file cabinet",
    "remote_control": "remote control",
    "myScissor": "scissors",
    "dino_ske": "dinosaur skeleton",
    "two_balls": "two balls",
}

_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


def prompt_name(name: str, overrides: Mapping[str, str] | None = None) -> str:
    """The spelling of a class name for a text prompt.

    ``overrides`` first, then :data:`PROMPT_NAMES`, then the plain rule: underscores become spaces,
    camelCase is split, trailing digits are dropped, letters are lower-cased
    (``"night_stand" -> "night stand"``, ``"bird1" -> "bird"``).
    """
    if overrides and name in overrides:
        return overrides[name]
    if name in PROMPT_NAMES:
        return PROMPT_NAMES[name]
    plain = " ".join(_CAMEL.sub(" ", name).replace("_", " ").split()).lower()
    return plain.rstrip("0123456789").rstrip() or plain


def prompt_names(dataset_or_names, overrides: Mapping[str, str] | None = None) -> list[str]:
    """Prompt-friendly names for a dataset's classes, in label order.

    Accepts a ``datasets.Dataset``/``DatasetDict`` with a ``label`` ``ClassLabel`` column, a
    ``ClassLabel``, or a list of names. ``prompt_names(load_modelnet(...))`` gives
    ``["airplane", ..., "night stand", ...]``.
    """
    names = _class_names(dataset_or_names)
    return [prompt_name(n, overrides) for n in names]


def _class_names(obj) -> list[str]:
    features = getattr(obj, "features", None)
    if features is not None and "label" in features and hasattr(features["label"], "names"):
        return list(features["label"].names)  # Dataset
    if isinstance(getattr(obj, "names", None), list):
        return list(obj.names)  # ClassLabel
    if isinstance(obj, Mapping) and obj:
        return _class_names(next(iter(obj.values())))  # DatasetDict
    if isinstance(obj, Iterable) and not isinstance(obj, str | Mapping):
        return [str(n) for n in obj]
    raise TypeError(f"cannot find class names in {type(obj).__name__}")
