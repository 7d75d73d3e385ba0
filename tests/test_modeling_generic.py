"""transformers' own generic model tests (`ModelTesterMixin`) on the three CLIP2Point models.

The tests are transformers': they are read from the source distribution of the installed transformers version
(`tests/test_modeling_common.py`), never copied into this repository. `make transformers-tests` (part of
`make test`) downloads that sdist into `.cache/transformers-sdist/` (or `$CLIP2POINT_TRANSFORMERS_SDIST_DIR`);
where it is absent, or `parameterized` (which those tests import) is not installed, this module is skipped and
says why.

Only the testers -- tiny configs and inputs, one per model -- are written here. Tests that cannot apply to a
two-tower model are listed in `EXCLUDED` with the reason; every other generic test runs.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
import os
import shutil
import sys
import tarfile
import tempfile
import types
import unittest
from pathlib import Path

import pytest
import torch
import transformers

from clip2point_hf import (
    CLIP2PointForPointCloudClassification,
    CLIP2PointForPreTraining,
    CLIP2PointModel,
)
from clip2point_hf.testing_utils import make_tiny_config, make_tiny_tokenizer

SDIST_DIR = Path(
    os.environ.get(
        "CLIP2POINT_TRANSFORMERS_SDIST_DIR",
        Path(__file__).resolve().parents[1] / ".cache" / "transformers-sdist",
    )
)
#: The package name the sdist's `tests/` folder is imported under (its modules use relative imports).
PACKAGE = "transformers_sdist_tests"
#: What the generic tests need from the sdist.
NEEDED = ("test_modeling_common.py", "test_configuration_common.py")


def _extracted_tests(archive: Path) -> Path:
    """`tests/` of the sdist, extracted once next to it (atomically: a killed run leaves no half folder)."""
    target = archive.with_name(archive.name.removesuffix(".tar.gz") + "-tests")
    if all((target / name).is_file() for name in NEEDED):
        return target
    prefix = archive.name.removesuffix(".tar.gz") + "/tests/"
    scratch = Path(tempfile.mkdtemp(dir=archive.parent, prefix=".extract-"))
    try:
        with tarfile.open(archive) as tar:
            for name in NEEDED:
                member = tar.getmember(prefix + name)
                (scratch / name).write_bytes(tar.extractfile(member).read())
        shutil.rmtree(target, ignore_errors=True)
        scratch.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _load_common() -> tuple[types.ModuleType | None, str]:
    """transformers' `test_modeling_common` module, or None and why not."""
    version = transformers.__version__
    archive = SDIST_DIR / f"transformers-{version}.tar.gz"
    if not archive.is_file():
        return None, (
            f"transformers {version}'s generic model tests are not available: no {archive} "
            f"(`make transformers-tests` downloads it: pip download transformers=={version} --no-binary :all:)"
        )
    try:
        import parameterized  # noqa: F401  (imported by transformers' test module)
    except ImportError:
        return None, "transformers' generic model tests import `parameterized` (pip install -e '.[dev]')"
    folder = _extracted_tests(archive)
    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(folder)]
    sys.modules[PACKAGE] = package
    # The sdist leaves out `tests/exporters/` and `tests/generation/`, from which `test_modeling_common` imports one
    # mixin each: torch.export tests of the common inputs, and the generation tests' base class (for its
    # `issubclass` check). Empty stand-ins: neither applies here (no CLIP2Point model generates; torch.export of the
    # zero-shot forward is tested in tests/test_modeling_contract.py).
    for module_name, class_name in (
        ("exporters.test_export", "ExportTesterMixin"),
        ("generation.test_utils", "GenerationTesterMixin"),
    ):
        parent_name = f"{PACKAGE}.{module_name.split('.')[0]}"
        parent = sys.modules.setdefault(parent_name, types.ModuleType(parent_name))
        parent.__path__ = []
        module = types.ModuleType(f"{PACKAGE}.{module_name}")
        setattr(module, class_name, type(class_name, (), {}))
        sys.modules[module.__name__] = module
    return importlib.import_module(f"{PACKAGE}.test_modeling_common"), ""


common, why_not = _load_common()
if common is None:
    pytest.skip(why_not, allow_module_level=True)

# ------------------------------------------------------------------------------------------------- exclusions

_TOWER_OUTPUTS = "hidden states and attentions of a single tower"
_TOKEN_EMBEDDINGS = "token-embedding resizing"
#: Generic tests that cannot apply to a two-tower model, with the reason; a name ending in `*` covers every
#: parameterised variant.
EXCLUDED = {
    # A CLIP2Point output holds each tower's own output (`depth_model_output`, `text_model_output`, ...), as
    # `CLIPOutput` does; these tests look for ONE tower's `hidden_states` / `attentions` at the top level of the
    # output. tests/test_modeling_contract.py checks each tower's hidden states and attentions against the tower
    # run alone, on our models and on CLIPModel.
    "test_attention_outputs": _TOWER_OUTPUTS,
    "test_hidden_states_output": _TOWER_OUTPUTS,
    "test_retain_grad_hidden_states_attentions": _TOWER_OUTPUTS,
    # Two towers have no single input embedding to get, set or resize (`get_input_embeddings` is not one
    # `nn.Embedding`), and the text tower's vocabulary is fixed by CLIP's tokenizer.
    "test_model_get_set_embeddings": _TOKEN_EMBEDDINGS,
    "test_resize_tokens_embeddings": _TOKEN_EMBEDDINGS,
    "test_resize_embeddings_untied": _TOKEN_EMBEDDINGS,
    "test_resize_embeddings_untied_no_reinit_on_post_init": _TOKEN_EMBEDDINGS,
}
#: Exclusions of one model only.
EXCLUDED_FOR = {
    CLIP2PointModel: {
        # transformers skips these for every base model (a class in MODEL_MAPPING_NAMES, which lists transformers'
        # own only): the zero-shot model has no loss; CLIP2PointForPreTraining trains its depth encoder.
        "test_training": "a base model without a loss (transformers skips base models here)",
        "test_training_gradient_checkpointing": "a base model without a loss (transformers skips base models)",
        "test_training_gradient_checkpointing_use_reentrant_false": "a base model without a loss",
        "test_training_gradient_checkpointing_use_reentrant_true": "a base model without a loss",
    },
    CLIP2PointForPreTraining: {
        # The comparison reads a top-level `hidden_states` (or `logits` / `logits_per_text`), which a pre-training
        # output -- embeddings and each tower's own output -- does not have. Eager against sdpa, with every
        # tower's hidden states, is compared in tests/test_modeling_contract.py.
        "test_eager_matches_sdpa_inference_*": _TOWER_OUTPUTS,
    },
}
#: Parameters that take no part in a model's loss, so the gradient-checkpointing tests must not ask each one for a
#: gradient (`test_all_params_have_gradient`; the rest of those tests runs): the text tower (class prompts are
#: embedded outside `forward`) and, in pre-training, the image encoder, whose embeddings are detached targets.
#: Which parameters train is tested in tests/test_modeling.py (`freeze_for_training`).
UNUSED_IN_LOSS = (CLIP2PointForPreTraining, CLIP2PointForPointCloudClassification)

#: Generic tests that run only with `-m slow` (make test-all), to keep this module under a minute on two CPU cores:
#: the half-precision variants of the eager/sdpa comparison (the float32 variants always run).
SLOW = ("test_eager_matches_sdpa_inference_*_fp16_*", "test_eager_matches_sdpa_inference_*_bf16_*")

# ------------------------------------------------------------------------------------------------- testers

ADDITIONAL_INPUTS = {
    CLIP2PointModel: ["input_ids"],
    CLIP2PointForPreTraining: ["depth_pixel_values"],
}

BATCH, VIEWS = 2, 3


class CLIP2PointModelTester:
    """Tiny towers (2 layers, hidden 32, 4 heads, 32 px images in 8 px patches, 16-d projections) and inputs for
    one CLIP2Point model class."""

    def __init__(self, parent, model_class):
        self.parent = parent
        self.model_class = model_class
        self.batch_size = BATCH
        self.is_training = True
        self.num_hidden_layers = 2
        self.num_attention_heads = 4
        self.hidden_size = 32
        self.image_size = 32
        self.patch_size = 8
        self.vision_config = self.get_config().vision_config
        self.text_config = self.get_config().text_config

    def get_config(self):
        return make_tiny_config(num_views=VIEWS)

    def prepare_config_and_inputs_for_common(self):
        g = torch.Generator().manual_seed(0)
        size = self.image_size
        if self.model_class is CLIP2PointForPreTraining:
            inputs = {
                "pixel_values": torch.randn(BATCH, 3, size, size, generator=g),
                "depth_pixel_values": torch.randn(BATCH, 2, 3, size, size, generator=g),
            }
        elif self.model_class is CLIP2PointForPointCloudClassification:
            inputs = {
                "pixel_values": torch.randn(BATCH, VIEWS, 3, size, size, generator=g),
                "labels": torch.arange(BATCH) % 2,
            }
        else:
            # As many prompts as clouds, as CLIP's tester: the batching test slices every input's first dimension.
            text = make_tiny_tokenizer()(["image of a chair", "a lamp"], padding=True, return_tensors="pt")
            inputs = {"pixel_values": torch.randn(BATCH, VIEWS, 3, size, size, generator=g), **text}
        return self.get_config(), {k: v.to(common.torch_device) for k, v in inputs.items()}


def _slow(test):
    """`test` marked slow (a new function: transformers' own is left as it is)."""

    @functools.wraps(test)
    def run(self, *args, **kwargs):
        return test(self, *args, **kwargs)

    return pytest.mark.slow(run)


def _generic_test_case(model_class):
    """A `unittest.TestCase` running transformers' `ModelTesterMixin` on `model_class`, minus `EXCLUDED` (and
    `EXCLUDED_FOR[model_class]`); the tests of `SLOW` are marked slow."""

    def setUp(self):
        self.model_tester = CLIP2PointModelTester(self, model_class)

    attributes = {
        "all_model_classes": (model_class,),
        # Inputs besides `main_input_name` that the attention-backend comparison must pass.
        "additional_model_inputs": ADDITIONAL_INPUTS.get(model_class, []),
        "pipeline_model_mapping": {},
        # transformers runs its missing-weights initialisation test only on models it dates from 2023 on (by a
        # copyright line); this flag runs it here.
        "test_can_init_all_missing_weights_before_2023": True,
        "test_all_params_have_gradient": model_class not in UNUSED_IN_LOSS,
        "setUp": setUp,
    }
    exclusions = {**EXCLUDED, **EXCLUDED_FOR.get(model_class, {})}
    generic = [name for name in dir(common.ModelTesterMixin) if name.startswith("test_")]
    for pattern, reason in exclusions.items():
        names = [n for n in generic if n.startswith(pattern[:-1])] if pattern.endswith("*") else [pattern]
        assert names and set(names) <= set(generic), f"{pattern} names no generic test"

        def excluded(self, reason=reason):
            self.skipTest(f"not applicable to a two-tower model: {reason}")

        for name in names:
            attributes[name] = excluded
    for name in generic:
        if name not in attributes and any(fnmatch.fnmatchcase(name, pattern) for pattern in SLOW):
            attributes[name] = _slow(getattr(common.ModelTesterMixin, name))
    return type(
        f"{model_class.__name__}GenericTest", (common.ModelTesterMixin, unittest.TestCase), attributes
    )


CLIP2PointModelGenericTest = _generic_test_case(CLIP2PointModel)
CLIP2PointForPreTrainingGenericTest = _generic_test_case(CLIP2PointForPreTraining)
CLIP2PointForPointCloudClassificationGenericTest = _generic_test_case(CLIP2PointForPointCloudClassification)
