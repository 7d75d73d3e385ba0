"""Publishing: the Hub folder (weights, remote code, processor, card), its verification, and the upload.

One folder is what gets uploaded: `model.safetensors`, `config.json` with `auto_map`, the remote-code files,
the processor and tokenizer files, and `README.md` (the model card, whose `model-index` carries the numbers
of the zero-shot result files it was built from).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from clip2point_hf.conversion_clip2point import PROVENANCE_FILE
from clip2point_hf.feature_extraction_clip2point import SAVED_BY_TRANSFORMERS
from clip2point_hf.loading import TOKENIZER_FILES
from clip2point_hf.modeling_clip2point import (
    CLIP2PointForPointCloudClassification,
    CLIP2PointForPreTraining,
    CLIP2PointModel,
    CLIP2PointPreTrainedModel,
)
from clip2point_hf.pipeline_clip2point import CLASSIFICATION_TASK, task_for_architecture
from clip2point_hf.processing_clip2point import point_cloud_front_end

from .arguments import RUN_ARGS_FILE

REMOTE_CODE_FILES = ("configuration_clip2point.py", "modeling_clip2point.py", "prompts.py")
PROCESSOR_CODE_FILES = (
    "processing_clip2point.py",
    "feature_extraction_clip2point.py",
    "points_clip2point.py",
    "rendering_clip2point.py",
)
#: The pipeline (named by `custom_pipelines` in config.json) and the flat modules it imports.
PIPELINE_CODE_FILES = (
    "pipeline_clip2point.py",
    "point_files.py",
    "mesh_io.py",
    "gltf_io.py",
    "point_io.py",
    "seeding.py",
    "errors.py",
    "prompts.py",
)

#: Objects in each complete split, by the dataset name the loaders report: only a result that scored
#: exactly this many objects, with every class present, is published under the bare name.
FULL_SPLIT_SIZES: dict[tuple[str, str], tuple[int, ...]] = {
    ("ModelNet40", "train"): (9843, 9840),  # the OFF / resampled release; PointNet's hdf5 has 9840
    ("ModelNet40", "test"): (2468,),
    ("ModelNet10", "train"): (3991,),
    ("ModelNet10", "test"): (908,),
    ("ScanObjectNN OBJ_BG", "train"): (2309,),
    ("ScanObjectNN OBJ_BG", "test"): (581,),
    ("ScanObjectNN OBJ_ONLY", "train"): (2309,),
    ("ScanObjectNN OBJ_ONLY", "test"): (581,),
    ("ScanObjectNN PB_T50_RS", "train"): (11416,),
    ("ScanObjectNN PB_T50_RS", "test"): (2882,),
}


class HubFolderError(ValueError):
    """A model folder lacks what publishing needs, or the exported folder does not verify."""


class HubPushError(RuntimeError):
    """The upload failed (offline, no network, no credentials); the message says where the local copy is."""


def load_for_export(model_dir: str | os.PathLike) -> CLIP2PointPreTrainedModel:
    """Load a saved CLIP2Point model for publishing; a pre-training run publishes its `CLIP2PointModel`
    (the frozen image tower is a copy of CLIP's and no user needs it)."""
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise HubFolderError(f"{model_dir}: no config.json; is this a saved CLIP2Point model folder?")
    if not any(model_dir.glob("*.safetensors")):
        raise HubFolderError(f"{model_dir}: no *.safetensors weights")
    architectures = json.loads(config_path.read_text()).get("architectures") or ["CLIP2PointModel"]
    classes = {
        cls.__name__: cls
        for cls in (CLIP2PointModel, CLIP2PointForPreTraining, CLIP2PointForPointCloudClassification)
    }
    if architectures[0] not in classes:
        raise HubFolderError(f"{config_path}: architecture {architectures[0]!r} is not a CLIP2Point model")
    model = classes[architectures[0]].from_pretrained(model_dir).eval()
    return model.clip2point if isinstance(model, CLIP2PointForPreTraining) else model


def evaluated_dataset(result: dict, where: str = "result") -> dict:
    """The dataset a zero-shot result scored, as found: `name` (the loader's), `split`, `num_examples`,
    `classes_present` (classes with at least one scored object), `num_classes`, `complete` (the whole
    split of a dataset in `FULL_SPLIT_SIZES`, every class present) and `label`: the bare name only when
    complete, otherwise the name with what was scored, so that no card claims more data than was used."""
    for key in ("split", "num_examples", "class_names"):
        if key not in result:
            raise HubFolderError(f"{where}: result has no {key!r}; the card must state which data was scored")
    name = result.get("dataset_name") or Path(str(result.get("dataset", "unknown"))).name
    split, scored, num_classes = str(result["split"]), int(result["num_examples"]), len(result["class_names"])
    if "confusion_matrix" in result:
        present = sum(1 for row in result["confusion_matrix"] if sum(row) > 0)
    elif isinstance(result.get("per_class_accuracy"), dict):
        present = sum(1 for value in result["per_class_accuracy"].values() if value is not None)
    else:
        raise HubFolderError(f"{where}: result has no 'confusion_matrix' or 'per_class_accuracy' by name")
    full = FULL_SPLIT_SIZES.get((name, split))
    complete = full is not None and scored in full and present == num_classes
    if complete:
        label = name
    elif full is not None:
        label = f"{name} {split} subset ({scored} of {full[0]} objects, {present} of {num_classes} classes)"
    else:
        label = f"{name} {split} ({scored} objects, {present} of {num_classes} classes)"
    return {
        "name": name,
        "split": split,
        "num_examples": scored,
        "classes_present": present,
        "num_classes": num_classes,
        "complete": complete,
        "label": label,
    }


def read_results(paths: Sequence[str | os.PathLike]) -> list[dict]:
    """Read the result files of `clip2point_apps.evaluation` (`zero_shot_results.json`, or `eval_results.json` for
    a fine-tuned classifier); `dataset`
    becomes the dataset's name, `num_views` the number of views, and `evaluated` what `evaluated_dataset`
    finds in it."""
    results = []
    for path in paths:
        try:
            result = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise HubFolderError(f"{path}: cannot read the result file ({error})") from error
        for key in ("overall_accuracy", "mean_class_accuracy"):
            if key not in result:
                raise HubFolderError(f"{path}: result file has no {key!r}")
        evaluated = evaluated_dataset(result, str(path))
        views = result.get("views")
        results.append(
            {
                **result,
                "dataset": evaluated["name"],
                "num_views": len(views) if isinstance(views, list) else views,
                "evaluated": evaluated,
            }
        )
    return results


def read_provenance(model_dir: str | os.PathLike) -> dict | None:
    """The `provenance.json` that `clip2point convert` writes beside converted weights, if any."""
    path = Path(model_dir) / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise HubFolderError(f"{path}: not valid JSON ({error})") from error


def _provenance_section(provenance: dict | None, *, trained_here: bool) -> str:
    """Where the weights come from and how they were selected: stated apart from the package's protocol."""
    if provenance is None:
        if trained_here:
            return "Trained with this package's scripts (arguments under Training below)."
        return (
            f"Not recorded: this folder has neither `{PROVENANCE_FILE}` (written by `clip2point convert`) "
            f"nor `{RUN_ARGS_FILE}` (written by this package's training scripts)."
        )
    lines = [
        f"Converted with `clip2point convert` ({provenance.get('converter', 'clip2point_hf')}) from "
        f"{provenance.get('converted_from')}.",
        "",
        f"- checkpoint: `{provenance.get('checkpoint')}` (sha256 `{provenance.get('sha256')}`), "
        f"{provenance.get('layout')} layout",
    ]
    if provenance.get("layout") != "clip":
        lines.append(f"- selection by the authors: {provenance.get('selection')}")
        lines.append(
            "- so accuracies of these weights on a test set their scripts selected on are optimistic; the "
            "validation-only selection below does not apply to these weights"
        )
    if provenance.get("views") is not None:
        lines.append(
            f"- views of the checkpoint's view selector (carried into the processor): {provenance['views']}"
        )
    lines += [f"- set aside: {line}" for line in provenance.get("set_aside", [])]
    return "\n".join(lines)


def _usage_section(name: str, task: str) -> str:
    """The card's code examples, for the model's pipeline task."""
    if task == CLASSIFICATION_TASK:
        return f"""```python
from transformers import pipeline
import clip2point_hf  # registers the task; or load with trust_remote_code=True without the package

clf = pipeline("{task}", model="{name}")
clf("chair.ply", top_k=3)  # the classes it was fine-tuned on (config.id2label)
```

```python
from transformers import AutoModelForImageClassification, AutoProcessor

model = AutoModelForImageClassification.from_pretrained("{name}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{name}", trust_remote_code=True)
logits = model(**processor(point_clouds, return_tensors="pt")).logits  # learned scale x cosine; .softmax(-1)
```
"""
    return f"""```python
from transformers import pipeline
import clip2point_hf  # registers the task; or load with trust_remote_code=True without the package

clf = pipeline("{task}", model="{name}")
clf("chair.ply", candidate_labels=["chair", "table", "lamp"])
```

```python
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("{name}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{name}", trust_remote_code=True)
inputs = processor(point_clouds, text=["image of a chair", "image of a lamp"], return_tensors="pt")
out = model(**inputs)
probs = out.logits_per_point_cloud.softmax(-1)  # CLIP-scaled logits, as CLIPModel's logits_per_image
raw = out.cosine_sum_per_point_cloud  # the authors' unscaled sum over views of cosines (same ranking)
```
"""


def build_model_card(
    model: CLIP2PointPreTrainedModel,
    processor,
    results: Sequence[dict] = (),
    repo_id: str | None = None,
    base_model: str | None = None,
    training_notes: str | None = None,
    provenance: dict | None = None,
) -> ModelCard:
    """A model card whose YAML (library, pipeline tag, tags, datasets, model-index) matches `results`.

    Each result's dataset is published as found (`evaluated_dataset`); `provenance` (a converted
    folder's `provenance.json`) is stated apart from what this package's scripts guarantee.
    """
    eval_results, dataset_ids, rows = [], set(), []
    for result in results:
        found = evaluated_dataset(result)
        if result.get("classifier") == "fine-tuned":  # scored over the classes it was trained on
            task_type, task_name = "image-classification", "Point cloud classification (fine-tuned)"
        else:
            task_type, task_name = "zero-shot-classification", "Zero-shot point cloud classification"
        # A dataset id only for the whole split; anything less is named by what was scored.
        dataset_type = result.get("dataset_id", found["name"]) if found["complete"] else found["label"]
        if found["complete"]:
            dataset_ids.add(dataset_type)
        for metric, key in (("accuracy", "overall_accuracy"), ("mean_class_accuracy", "mean_class_accuracy")):
            eval_results.append(
                EvalResult(
                    task_type=task_type,
                    task_name=task_name,
                    dataset_type=dataset_type,
                    dataset_name=found["label"],
                    dataset_split=found["split"],
                    dataset_args={
                        "objects_scored": found["num_examples"],
                        "classes_present": found["classes_present"],
                        "classes": found["num_classes"],
                    },
                    metric_type=metric,
                    metric_name=metric.replace("_", " "),
                    metric_value=round(100 * float(result[key]), 2),
                )
            )
        views = result.get("num_views", result.get("views", ""))
        views = len(views) if isinstance(views, list) else views
        rows.append(
            f"| {found['label']} | {found['split']} | {found['num_examples']} | "
            f"{found['classes_present']} of {found['num_classes']} | {views} | {result.get('up_axis', 'not recorded')} | "
            f"{100 * float(result['overall_accuracy']):.2f} | {100 * float(result['mean_class_accuracy']):.2f} |"
        )
    name = repo_id or "clip2point"
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-classification"
        if task_for_architecture(type(model).__name__) == CLASSIFICATION_TASK
        else "zero-shot-image-classification",
        tags=["clip2point", "point-cloud", "3d", "zero-shot", "clip", "depth-rendering", "custom_code"],
        datasets=sorted(dataset_ids) or None,
        base_model=base_model,
        model_name=name,
        eval_results=eval_results or None,
    )
    settings = point_cloud_front_end(processor).to_dict()
    render = {k: v for k, v in settings.items() if k not in SAVED_BY_TRANSFORMERS}
    table = (
        "| dataset (as scored) | split | objects | classes present | views | up axis | overall acc. (%) | "
        "mean class acc. (%) |\n|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
        if results
        else "No evaluation was run for this checkpoint."
    )
    converted = provenance is not None and provenance.get("layout") != "clip"
    usage = _usage_section(name, task_for_architecture(type(model).__name__))
    origin = _provenance_section(provenance, trained_here=training_notes is not None)
    body = f"""
# {name}

CLIP2Point ({type(model).__name__}): CLIP transferred to point clouds by rendering depth maps and
image-depth contrastive pre-training (Huang et al., ICCV 2023), packaged with
[clip2point_hf](https://pypi.org/project/clip2point-hf/).

## Usage

{usage}
## Rendering settings

Depth maps are rendered in pure PyTorch (no PyTorch3D) with these processor settings:

```json
{json.dumps(render, indent=2, default=str)}
```

## Evaluation

Top-1 accuracy (zero-shot, or over a fine-tuned classifier's own classes), computed by `clip2point evaluate` (the numbers in the metadata come from the
same result files). A dataset is named bare only when its whole split was scored with every class present:

{table}

## Provenance of these weights

{origin}

## What this package's scripts guarantee

{"These hold for weights trained with this package's scripts, not for the converted weights above." if converted else "These hold for weights trained with this package's scripts."}

- Checkpoints are selected on a held-out validation split, never on a test set (the reference
  implementation selected on ModelNet40 test accuracy; its published numbers are therefore optimistic).
- Test clouds are sampled once with a fixed seed and cached, so every evaluation sees the same points.
- Pre-training negatives come from the global batch across processes.

{training_notes or ""}

## Citation

```bibtex
@inproceedings{{huang2023clip2point,
  title={{CLIP2Point: Transfer CLIP to Point Cloud Classification with Image-Depth Pre-Training}},
  author={{Huang, Tianyu and Dong, Bowen and Yang, Yunhan and Huang, Xiaoshui and Lau, Rynson W. H. and
          Ouyang, Wanli and Zuo, Wangmeng}},
  booktitle={{ICCV}},
  year={{2023}}
}}
```
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{textwrap.dedent(body)}")


def export_hub_folder(
    model_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    result_files: Sequence[str | os.PathLike] = (),
    repo_id: str | None = None,
    base_model: str | None = None,
) -> Path:
    """Write the folder to upload: weights, config with `auto_map` and `custom_pipelines`, remote code (model,
    processor, pipeline), processor, card. It is written by the model's pipeline (`task_for_architecture`) through
    transformers' `Pipeline.save_pretrained`, so `pipeline(model=folder, trust_remote_code=True)` finds it."""
    from transformers import pipeline

    from clip2point_hf.processing_clip2point import CLIP2PointProcessor

    model = load_for_export(model_dir)
    try:
        processor = CLIP2PointProcessor.from_pretrained(model_dir)
    except (OSError, ValueError) as error:
        raise HubFolderError(f"{model_dir}: no usable processor/tokenizer files ({error})") from error
    results = read_results(result_files)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    pipeline(task_for_architecture(type(model).__name__), model=model, processor=processor).save_pretrained(
        output_dir
    )
    training_notes = None
    if (Path(model_dir) / RUN_ARGS_FILE).is_file():
        args = (Path(model_dir) / RUN_ARGS_FILE).read_text()
        training_notes = (
            f"## Training\n\nArguments of the run that produced these weights:\n\n```json\n{args}\n```"
        )
    provenance = read_provenance(model_dir)
    if provenance is not None:
        (output_dir / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    build_model_card(model, processor, results, repo_id, base_model, training_notes, provenance).save(
        output_dir / "README.md"
    )
    return output_dir


def verify_hub_folder(folder: str | os.PathLike, reference_dir: str | os.PathLike | None = None) -> None:
    """Check the folder has every file and loads with `trust_remote_code=True` in a fresh process where
    `clip2point_hf` cannot be imported; with `reference_dir`, its outputs must equal that model's."""
    folder = Path(folder)
    needed = ["config.json", "model.safetensors", "README.md", *REMOTE_CODE_FILES, *PROCESSOR_CODE_FILES]
    needed += PIPELINE_CODE_FILES
    missing = [name for name in needed if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        missing.append("tokenizer.json")
    if missing:
        raise HubFolderError(f"{folder}: missing {missing}")
    card = ModelCard.load(folder / "README.md")
    if card.data.library_name != "transformers":
        raise HubFolderError(f"{folder / 'README.md'}: card metadata lacks library_name")

    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["clip2point_hf"] = None  # prove the folder needs no installed package
        import numpy as np, torch
        from transformers import pipeline
        folder = {str(folder)!r}
        classifier = pipeline(model=folder, trust_remote_code=True)  # the task from `custom_pipelines`
        model, processor = classifier.model.eval(), classifier.processor
        for obj in (classifier, model, processor):
            assert "clip2point_hf" not in type(obj).__module__, type(obj).__module__
        cloud = np.random.default_rng(0).normal(size=(2, 300, 3)).astype("float32")  # as below
        batch = processor(cloud, text=["image of a chair", "image of a lamp"], return_tensors="pt")
        with torch.no_grad():
            if type(model).__name__ == "CLIP2PointModel":
                logits = model(**batch).logits_per_point_cloud
            else:
                logits = model(pixel_values=batch["pixel_values"]).logits
        torch.save({{"logits": logits, "pixel_values": batch["pixel_values"]}}, folder + "/.verify.pt")
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600
    )
    if result.returncode != 0:
        last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "no output"
        raise HubFolderError(f"{folder}: does not load with trust_remote_code ({last})")
    produced = torch.load(folder / ".verify.pt", weights_only=True)
    (folder / ".verify.pt").unlink()
    if reference_dir is not None:
        from clip2point_hf.processing_clip2point import CLIP2PointProcessor

        reference = load_for_export(reference_dir)
        processor = CLIP2PointProcessor.from_pretrained(reference_dir)
        cloud = np.random.default_rng(0).normal(size=(2, 300, 3)).astype("float32")
        batch = processor(cloud, text=["image of a chair", "image of a lamp"], return_tensors="pt")
        if not torch.equal(batch["pixel_values"], produced["pixel_values"]):
            raise HubFolderError(
                f"{folder}: the remote-code processor renders differently from {reference_dir}"
            )
        with torch.no_grad():
            out = (
                reference(**batch)
                if isinstance(reference, CLIP2PointModel)
                else reference(batch["pixel_values"])
            )
        expected = out.logits_per_point_cloud if isinstance(reference, CLIP2PointModel) else out.logits
        if not torch.allclose(produced["logits"], expected, atol=1e-5, rtol=1e-5):
            raise HubFolderError(f"{folder}: remote-code outputs differ from {reference_dir}")


def push_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload CLIP2Point",
) -> str:
    """Upload `folder` (without training checkpoints) to the Hub model repo `repo_id`; returns the commit URL.

    Any failure (offline, no network, no credentials, HTTP errors) is one `HubPushError` naming the local copy.
    """
    try:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            commit_message=commit_message,
            ignore_patterns=["checkpoints/*", "best_model/*", "*.tmp"],
        )
    except Exception as error:
        first = (str(error).strip().splitlines() or [""])[0]
        raise HubPushError(
            f"could not push to the Hub repo {repo_id!r} ({type(error).__name__}: {first}); "
            f"the local copy is complete at {Path(folder).resolve()}"
        ) from error
    return str(getattr(commit, "commit_url", commit))


__all__ = [
    "FULL_SPLIT_SIZES",
    "HubFolderError",
    "HubPushError",
    "build_model_card",
    "evaluated_dataset",
    "export_hub_folder",
    "load_for_export",
    "push_to_hub",
    "read_provenance",
    "read_results",
    "verify_hub_folder",
]
