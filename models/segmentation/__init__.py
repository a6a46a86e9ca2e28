"""Learned lung masking: pulmonary lobes and COVID-19 lesions on chest CT.

Public entry points (see each module for the papers and the reasons behind every choice):

* :func:`build_lobe_network`, :func:`segment_lobes`: lobes (LUL, LLL, RUL, RML, RLL) from an
  nnU-Net-style 3D U-Net, post-processed to tile the given left and right lung masks;
* :func:`build_lesion_network`, :func:`segment_lesions`: the CORADS-AI lesion nnU-Net (GGO and
  consolidation) or the S4 3D U-Net with an R3D-18 encoder;
* :func:`load_state`, :func:`save_state`, :func:`demo_state`: safetensors weights, strictly
  checked, and deterministic generated weights for demonstration runs;
* :func:`train_lobes`: the lobe training command;
* :func:`count_parameters`, :func:`count_flops`, :func:`segmentation_summaries`: model cost.

This package imports nothing of the project outside ``models``.
"""

from models.segmentation.flops import FlopCount, count_flops, count_parameters
from models.segmentation.lesions import LesionKind, LesionSettings, build_lesion_network, segment_lesions
from models.segmentation.lobes import LobeSettings, build_lobe_network, segment_lobes
from models.segmentation.nnunet import GenericUNet
from models.segmentation.preprocessing import IntensityWindow
from models.segmentation.resnet_unet import ResNet18UNet
from models.segmentation.summary import ArchitectureSummary, segmentation_summaries
from models.segmentation.training import LobeTrainingConfig, TrainingError, TrainingResult, train_lobes
from models.segmentation.weights import StateMismatchError, demo_state, load_state, save_state

__all__ = [
    "ArchitectureSummary",
    "FlopCount",
    "GenericUNet",
    "IntensityWindow",
    "LesionKind",
    "LesionSettings",
    "LobeSettings",
    "LobeTrainingConfig",
    "ResNet18UNet",
    "StateMismatchError",
    "TrainingError",
    "TrainingResult",
    "build_lesion_network",
    "build_lobe_network",
    "count_flops",
    "count_parameters",
    "demo_state",
    "load_state",
    "save_state",
    "segment_lesions",
    "segment_lobes",
    "segmentation_summaries",
    "train_lobes",
]
