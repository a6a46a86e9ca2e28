"""The analysis models this pipeline knows about, as data, and the honest status of each.

Every registered model appears in every result (``Findings.models``), ran or not, so that a
report can say plainly which analyses were done and why the others were not.  A model is
*implemented* when this pipeline version contains its architecture and preprocessing, and
*needs weights* when it cannot run without a trained weights file installed with
``lungcds models install`` (architecture spec, "Honesty about models").

lungmask's published networks (:data:`LUNGMASK_MODEL_SPECS`) are the exception: they are an
installable alternative source of the lobe masks, known to :func:`get_spec` and the weight store,
and a result lists them only when their weights are installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from models import PIPELINE_VERSION
from models.corads.ensemble import CORADS_MODEL_VERSION
from models.findings import ModelRun, ModelStatus

if TYPE_CHECKING:
    from models.weights import WeightStore

__all__ = [
    "CLASSICAL_LUNG_MASK",
    "I3DR",
    "STOIC",
    "STOIC_ENSEMBLE_VERSION",
    "STOIC_MEMBERS",
    "KNOWN_MODELS",
    "LESIONS_MODEL_VERSION",
    "LOBES_MODEL_VERSION",
    "LUNGMASK_LTRCLOBES",
    "LUNGMASK_MODEL_SPECS",
    "LUNGMASK_R231",
    "SEVERITY",
    "MODEL_SPECS",
    "REGISTRY",
    "ModelSpec",
    "UnknownModelError",
    "get_spec",
    "unavailable_run",
]

#: Name of the weight-free lung mask of :mod:`models.qct.lungmask`.
CLASSICAL_LUNG_MASK = "lung_mask_classical"
#: Name of the CT severity score, derived from the lobe and lesion masks.
SEVERITY = "severity"
#: Versions of the learned segmentations' implementation (architecture, preprocessing, post-processing).
LOBES_MODEL_VERSION = "1.0.0"
LESIONS_MODEL_VERSION = "1.0.0"
#: lungmask's published networks (Hofmanninger et al., Eur Radiol Exp 2020), run by the ``lungmask`` package.
LUNGMASK_LTRCLOBES = "lungmask_ltrclobes"
LUNGMASK_R231 = "lungmask_r231"
#: The STOIC2021 ensemble (an aggregate of members, no weights of its own) and I3Dr.
STOIC = "stoic"
STOIC_ENSEMBLE_VERSION = "1.0.0"
I3DR = "i3dr"
#: The STOIC2021 final-phase members (thesis 4.3.3, Table 4.1 AUCs on test set B), one weights file each.
STOIC_MEMBERS: Mapping[str, str] = MappingProxyType(
    {
        "stoic_baseline": "STOIC2021 baseline: I3D, 240^3 at 1.6 mm, two sigmoid outputs (thesis 4.2.5)",
        "stoic_code1055": "STOIC2021 Code 1055: five 3D ConvNeXt-Tiny folds on the whole scan at 224^3, severity only",
        "stoic_simonj": (
            "STOIC2021 simon.j: ViT-L/16 slice features of the CT and the lung-masked CT, logistic regressions "
            "with age and sex, learned blend"
        ),
        "stoic_flyingbird": (
            "STOIC2021 Flying Bird: half-width 3D ResNet-18 folds on the lung box at 256^3 with age, separate "
            "COVID-19 and severity models"
        ),
        "stoic_hal9000": "STOIC2021 hal9000: 2D ResNet-18 and MobileNetV3-Large on 32 slices, top-5 pooling, 9 views",
        "stoic_uaux2": (
            "STOIC2021 uaux2: 3D DenseNet-121 bag with age, sex and infection-to-lung ratio (needs the lesion "
            "mask), 3-class 3D ResNet-34 for COVID-19"
        ),
        "stoic_etro": "STOIC2021 etro: 13 lesion and patient features in a bag of logistic regressions",
        "stoic_deakin": "STOIC2021 deakin_team: 3D DenseNet-201 on the baseline's input",
    }
)


class UnknownModelError(ValueError):
    """A model name that is not in the registry."""


@dataclass(frozen=True)
class ModelSpec:
    """One analysis model: what it is and whether this pipeline version can run it.

    Attributes
    ----------
    name : str
        Key in ``result.json["models"]`` and in the weight store.
    version : str
        Version of the model's implementation (``"n/a"`` while it is not implemented).
    description : str
        One sentence a radiologist can read in a report.
    needs_weights : bool
        True when the model cannot run without an installed weights file.
    implemented : bool
        True when this pipeline version contains the model's architecture and preprocessing.
    """

    name: str
    version: str
    description: str
    needs_weights: bool
    implemented: bool


#: All models, in the order reports list them.
MODEL_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name=CLASSICAL_LUNG_MASK,
        version="1.0.0",
        description=(
            "Left and right lung masks by classical, weight-free image processing (thresholds, "
            "airway tracing, morphology); no trained model"
        ),
        needs_weights=False,
        implemented=True,
    ),
    ModelSpec(
        name="lobes",
        version=LOBES_MODEL_VERSION,
        description=(
            "Learned segmentation of the five pulmonary lobes: nnU-Net-style 3D U-Net, sliding window "
            "(in the spirit of the thesis' RTSU-Net, sections 2.4.5 and 3.3.4)"
        ),
        needs_weights=True,
        implemented=True,
    ),
    ModelSpec(
        name="lesions",
        version=LESIONS_MODEL_VERSION,
        description=(
            "Learned segmentation of ground-glass opacities and consolidation: the CORADS-AI 3D nnU-Net "
            "(thesis section 3.4.5) or the 3D U-Net with a ResNet-18 encoder (seeds/004 section 2.3)"
        ),
        needs_weights=True,
        implemented=True,
    ),
    ModelSpec(
        name=SEVERITY,
        version="1.0.0",
        description=(
            "Lesion involvement per lobe and CT severity score 0-5 per lobe, 0-25 in total (seeds/003, "
            "'Segmentation model'), computed from the lobe and lesion masks"
        ),
        needs_weights=False,
        implemented=True,
    ),
    ModelSpec(
        name="corads",
        version=CORADS_MODEL_VERSION,
        description="CO-RADS category from an ensemble of ten 3D DenseNet-201 networks (thesis chapter 3)",
        needs_weights=True,
        implemented=True,
    ),
    ModelSpec(
        name=STOIC,
        version=STOIC_ENSEMBLE_VERSION,
        description=(
            "Probability of COVID-19 and of severe outcome (intubation or death within one month, among COVID-19 "
            "patients): mean of the installed STOIC2021 members of the configured ensemble (thesis Table 4.1)"
        ),
        needs_weights=False,
        implemented=True,
    ),
    *(
        ModelSpec(name=name, version="1.0.0", description=description, needs_weights=True, implemented=True)
        for name, description in STOIC_MEMBERS.items()
    ),
    ModelSpec(
        name=I3DR,
        version="1.0.0",
        description=(
            "Lung function (PV, FPV, FEV1 and FVC before/after bronchodilator, DLCO) per patient and per lobe "
            "by I3Dr: models A and B on an I3D backbone, lobes rescaled to the patient estimate (thesis chapter 2)"
        ),
        needs_weights=True,
        implemented=True,
    ),
)

#: Read-only mapping from model name to its spec.
REGISTRY: Mapping[str, ModelSpec] = MappingProxyType({spec.name: spec for spec in MODEL_SPECS})

#: Installable alternatives to a mask of :data:`MODEL_SPECS`: lungmask's networks, run by the ``lungmask``
#: package's own inference code.  A result lists them only when their weights are installed, so that a site
#: without them gets exactly the results it got before they existed.
LUNGMASK_MODEL_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name=LUNGMASK_LTRCLOBES,
        version="1.0.0",
        description=(
            "Learned segmentation of the five pulmonary lobes by lungmask's LTRCLobes U-Net (Hofmanninger et al., "
            "Eur Radiol Exp 2020), fused with its R231 lung model when installed, run by the lungmask package"
        ),
        needs_weights=True,
        implemented=True,
    ),
    ModelSpec(
        name=LUNGMASK_R231,
        version="1.0.0",
        description=(
            "lungmask's R231 lung U-Net (Hofmanninger et al., Eur Radiol Exp 2020), the fill model of the "
            "LTRCLobes lobe masks, run by the lungmask package"
        ),
        needs_weights=True,
        implemented=True,
    ),
)
#: Every model a weights file can be installed for or a result can list: :data:`REGISTRY` and lungmask's.
KNOWN_MODELS: Mapping[str, ModelSpec] = MappingProxyType(
    {spec.name: spec for spec in (*MODEL_SPECS, *LUNGMASK_MODEL_SPECS)}
)


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model.

    Raises
    ------
    UnknownModelError
        If ``name`` is not registered; the message lists the registered names.
    """
    try:
        return KNOWN_MODELS[name]
    except KeyError:
        known = ", ".join(KNOWN_MODELS)
        raise UnknownModelError(f"unknown model {name!r}; registered models are: {known}") from None


def unavailable_run(spec: ModelSpec, weights_store: WeightStore | None, *, demo_weights: bool = False) -> ModelRun:
    """The record of a model that did not run, with the reason in plain words.

    Never claims that a model ran: an unimplemented architecture is reported as not available in
    this pipeline version, an implemented one without weights as not installed.

    Parameters
    ----------
    spec : ModelSpec
        The model.
    weights_store : WeightStore or None
        Where installed weights are looked up; ``None`` means no store (nothing installed).
    demo_weights : bool
        Whether generated demonstration weights were asked for; said in the reason, because
        an unimplemented model cannot run with them either.

    Returns
    -------
    ModelRun
        Status ``"not_installed"`` (or ``"skipped"`` for a runnable model that was not run),
        no provenance and no weights hash.
    """
    installed = weights_store.get(spec.name) if weights_store is not None and spec.needs_weights else None
    status: ModelStatus = "not_installed"
    if not spec.implemented:
        reason = (
            f"not available in pipeline version {PIPELINE_VERSION}: the {spec.name} architecture is not "
            "implemented yet, so no result is given"
        )
        if installed is not None:
            reason += f" (weights sha256 {installed.sha256} are installed but unused)"
        if demo_weights:
            reason += "; demonstration weights cannot stand in for a missing architecture"
    elif spec.needs_weights and installed is None:
        reason = "no weights installed; install with `lungcds models install`"
    else:
        reason = "not run in this analysis"
        status = "skipped"
    return ModelRun(
        name=spec.name,
        status=status,
        reason=reason,
        version=spec.version,
        description=spec.description,
    )
