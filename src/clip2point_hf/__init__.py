"""CLIP2Point for Hugging Face: depth rendering, image-depth pre-training and the Gated Dual-Path Adapter."""

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
    AutoProcessor,
)
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_clip2point import CLIP2PointConfig
from .feature_extraction_clip2point import CLIP2PointFeatureExtractor
from .modeling_clip2point import (
    CLIP2PointClassifierOutput,
    CLIP2PointForPointCloudClassification,
    CLIP2PointForPreTraining,
    CLIP2PointModel,
    CLIP2PointOutput,
    CLIP2PointPreTrainedModel,
    CLIP2PointPreTrainingOutput,
)
from .pipeline_clip2point import (
    CLASSIFICATION_TASK,
    ZERO_SHOT_TASK,
    PointCloudClassificationPipeline,
    ZeroShotPointCloudClassificationPipeline,
)
from .pipeline_point_cloud_feature_extraction import PointCloudFeatureExtractionPipeline
from .processing_clip2point import CLIP2PointProcessor
from .rendering_clip2point import VIEW_PRESETS, DepthRenderer

__version__ = "0.1.0"

# Local Auto classes, and the same mapping written into every saved config's `auto_map` (remote code).
AutoConfig.register(CLIP2PointConfig.model_type, CLIP2PointConfig, exist_ok=True)
AutoModel.register(CLIP2PointConfig, CLIP2PointModel, exist_ok=True)
AutoModelForPreTraining.register(CLIP2PointConfig, CLIP2PointForPreTraining, exist_ok=True)
AutoModelForImageClassification.register(
    CLIP2PointConfig, CLIP2PointForPointCloudClassification, exist_ok=True
)
AutoFeatureExtractor.register(CLIP2PointConfig, CLIP2PointFeatureExtractor, exist_ok=True)
AutoProcessor.register(CLIP2PointConfig, CLIP2PointProcessor, exist_ok=True)
CLIP2PointConfig.register_for_auto_class()
CLIP2PointModel.register_for_auto_class("AutoModel")
CLIP2PointForPreTraining.register_for_auto_class("AutoModelForPreTraining")
CLIP2PointForPointCloudClassification.register_for_auto_class("AutoModelForImageClassification")
CLIP2PointFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
CLIP2PointProcessor.register_for_auto_class("AutoProcessor")

PIPELINE_REGISTRY.register_pipeline(
    ZERO_SHOT_TASK,
    pipeline_class=ZeroShotPointCloudClassificationPipeline,
    pt_model=AutoModel,
    type="multimodal",
)
PIPELINE_REGISTRY.register_pipeline(
    CLASSIFICATION_TASK,
    pipeline_class=PointCloudClassificationPipeline,
    pt_model=AutoModelForImageClassification,
    type="multimodal",
)
PIPELINE_REGISTRY.register_pipeline(
    "point-cloud-feature-extraction",
    pipeline_class=PointCloudFeatureExtractionPipeline,
    pt_model=AutoModel,
    type="multimodal",
)

__all__ = [
    "VIEW_PRESETS",
    "CLIP2PointClassifierOutput",
    "CLIP2PointConfig",
    "CLIP2PointFeatureExtractor",
    "CLIP2PointForPointCloudClassification",
    "CLIP2PointForPreTraining",
    "CLIP2PointModel",
    "CLIP2PointOutput",
    "CLIP2PointPreTrainedModel",
    "CLIP2PointPreTrainingOutput",
    "CLIP2PointProcessor",
    "DepthRenderer",
    "PointCloudClassificationPipeline",
    "PointCloudFeatureExtractionPipeline",
    "ZeroShotPointCloudClassificationPipeline",
]
