"""The architectures of thesis Table 3.3 in 2D and 3D, their FLOP counter, and 2D-to-3D inflation.

Public entry points: :func:`names`, :func:`build`, :func:`build_features`, :func:`summary`,
:func:`count_flops`, :func:`count_parameters`, :func:`inflate_state_dict`, :func:`inflate_into`.
"""

from models.zoo.catalog import (
    TABLE_3_3,
    TABLE_3_3_INPUT_SHAPE,
    TABLE_3_3_OUTPUTS,
    PublishedProperties,
    build,
    build_features,
    names,
    summary,
)
from models.zoo.densenet import DenseNet
from models.zoo.flops import count_flops, count_parameters
from models.zoo.inception import InceptionV1
from models.zoo.inflation import HEAD_PREFIXES, InflationReport, inflate_into, inflate_state_dict
from models.zoo.resnet import ResNet
from models.zoo.slicewise import SliceMaxNet

__all__ = [
    "TABLE_3_3",
    "TABLE_3_3_INPUT_SHAPE",
    "TABLE_3_3_OUTPUTS",
    "HEAD_PREFIXES",
    "DenseNet",
    "InceptionV1",
    "InflationReport",
    "PublishedProperties",
    "ResNet",
    "SliceMaxNet",
    "build",
    "build_features",
    "count_flops",
    "count_parameters",
    "inflate_into",
    "inflate_state_dict",
    "names",
    "summary",
]
