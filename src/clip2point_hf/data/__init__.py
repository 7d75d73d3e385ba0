"""Hugging Face ``datasets`` loaders for CLIP2Point: point clouds built once, cached and deterministic.

```python
from clip2point_hf.data import (load_modelnet, load_scanobjectnn, load_shapenet_pairs,
                                load_mesh_folder, build_render_pairs)
ds = load_modelnet("path/to/ModelNet40", num_points=1024, seed=0)   # OFF / normal_resampled / h5
ds = load_scanobjectnn("path/h5_files", variant="PB_T50_RS")         # or OBJ_ONLY / OBJ_BG
pairs = load_shapenet_pairs("path/ShapeNet55", "path/rendering")     # clouds + 10 views
ds = load_mesh_folder("path/shrec_16")                               # <class>/<split>/*.obj|off|ply|stl
build_render_pairs("path/shrec_16", "out/pairs")                     # 10 shaded views per mesh
push_dataset_to_hub(ds, "org/name"); load_dataset_from_hub("org/name")  # metadata travels too
```

Every loader returns a ``datasets.DatasetDict`` with ``points`` (``Array2D`` float32), ``label``
(``ClassLabel``), ``name`` and ``path`` columns, saved once under the cache (see
:mod:`clip2point_hf.data.cache`) and memory-mapped on later calls. Randomness for training
(sub-sampling, augmentation, the random view of a pair) lives in :mod:`clip2point_hf.data.transforms`,
applied on the fly by the keyed loader (:class:`KeyedDataset`). :mod:`~clip2point_hf.data.formats` picks
the loader for a folder (:func:`load_point_cloud_dataset`); :mod:`~clip2point_hf.data.fewshot` draws validation
and K-shot subsets. Class-name prompt spellings are in :mod:`clip2point_hf.prompts`.
"""

from ..errors import DatasetFormatError, MissingFilesError
from ..mesh_io import Mesh, sample_surface
from ..point_files import MESH_EXTENSIONS, read_mesh
from ..seeding import seeded_rng
from .cache import LOADER_VERSION, dataset_metadata, default_cache_dir, set_dataset_metadata
from .collate import EpochSampler, KeyedDataset, batch_to_tensors, collate_point_clouds
from .fewshot import random_subset, sample_k_shot, stratified_split
from .formats import DATASET_FORMATS, detect_dataset_format, load_point_cloud_dataset
from .mesh_folder import load_mesh_folder, scan_mesh_folder
from .modelnet import MODELNET_UP_AXIS, detect_modelnet_format, load_modelnet
from .names import (
    MODELNET10_CLASSES,
    MODELNET40_CLASSES,
    SCANOBJECTNN_CLASSES,
    SHAPENET55_SYNSETS,
)
from .render_pairs import build_render_pairs
from .scanobjectnn import SCANOBJECTNN_VARIANTS, load_scanobjectnn
from .shapenet import load_shapenet_pairs
from .sharing import load_dataset_from_hub, push_dataset_to_hub
from .transforms import PointCloudBatchTransform, PretrainingPairTransform, load_rgb_image

__all__ = [
    "DATASET_FORMATS",
    "LOADER_VERSION",
    "MESH_EXTENSIONS",
    "MODELNET10_CLASSES",
    "MODELNET40_CLASSES",
    "MODELNET_UP_AXIS",
    "SCANOBJECTNN_CLASSES",
    "SCANOBJECTNN_VARIANTS",
    "SHAPENET55_SYNSETS",
    "DatasetFormatError",
    "EpochSampler",
    "KeyedDataset",
    "Mesh",
    "MissingFilesError",
    "PointCloudBatchTransform",
    "PretrainingPairTransform",
    "batch_to_tensors",
    "build_render_pairs",
    "collate_point_clouds",
    "dataset_metadata",
    "default_cache_dir",
    "detect_dataset_format",
    "detect_modelnet_format",
    "load_dataset_from_hub",
    "load_mesh_folder",
    "load_modelnet",
    "load_point_cloud_dataset",
    "load_rgb_image",
    "load_scanobjectnn",
    "load_shapenet_pairs",
    "push_dataset_to_hub",
    "random_subset",
    "read_mesh",
    "sample_k_shot",
    "sample_surface",
    "scan_mesh_folder",
    "seeded_rng",
    "set_dataset_metadata",
    "stratified_split",
]
