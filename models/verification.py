"""``lungcds models verify NAME``: does an installed model load, run, and give what it gave before?

A site that imported an authors' checkpoint (or installed any weights) checks it in three steps
without a patient scan: the file still has the SHA-256 recorded at installation; the model loads
into its network (strictly: every tensor in place); and it runs on the built-in phantom
(:func:`models.phantom.chest_phantom`, fixed seed), whose outputs are printed with a digest.  The
phantom and the code are the same everywhere, so the same weights give the same digest at every
site on the same pipeline version and CPU kernels: a second site, or the same site after an
upgrade, compares digests.  These numbers are a functional check on a synthetic CT, never a
clinical result.

STOIC2021 members are run alone (their own ``predict``, on the phantom's true lung masks), since
the ensemble configuration may not include them; every other model runs through the pipeline
itself (:func:`models.pipeline.analyse`), which is what a patient's scan goes through.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from models.findings import Findings
from models.phantom import Phantom, chest_phantom
from models.pipeline import analyse
from models.registry import STOIC_MEMBERS
from models.runtime import ModelProvider
from models.stoic.member import MemberInputs
from models.volume import PatientContext
from models.weights import WeightsError, WeightStore, origin_sentence, sha256_of

__all__ = ["PHANTOM_AGE_YEARS", "PHANTOM_SEX", "Verification", "as_json", "verify_model"]

#: The phantom's patient, for the members that take age and sex.
PHANTOM_AGE_YEARS = 60.0
PHANTOM_SEX: Literal["M", "F"] = "M"
#: Grid of the verification phantom: 60 slices of 5 mm, 4 mm pixels (a 384 mm field of view).
_SHAPE = (60, 96, 96)
_SPACING = (5.0, 4.0, 4.0)
#: Digits kept in the digest: enough to tell weights apart, few enough that summation order
#: differences between CPU kernels (about 1e-6) do not change it.
_DIGEST_DECIMALS = 4


@dataclass(frozen=True)
class Verification:
    """What ``models verify`` found for one installed model."""

    name: str
    recorded_sha256: str
    file_sha256: str
    origin: str
    status: str
    reason: str
    outputs: Mapping[str, float | None] = field(default_factory=dict)

    @property
    def intact(self) -> bool:
        """True when the file still has the hash recorded at installation."""
        return self.recorded_sha256 == self.file_sha256

    @property
    def ran(self) -> bool:
        """True when the model produced outputs on the phantom."""
        return self.status == "ran"

    @property
    def output_digest(self) -> str:
        """SHA-256 of the outputs rounded to a few decimals (compare between sites and upgrades)."""
        rounded = {k: None if v is None else round(float(v), _DIGEST_DECIMALS) for k, v in self.outputs.items()}
        return hashlib.sha256(json.dumps(rounded, sort_keys=True).encode()).hexdigest()


def _phantom() -> Phantom:
    return chest_phantom(_SHAPE, _SPACING, seed=0)


def _member_outputs(provider: ModelProvider, name: str, phantom: Phantom) -> tuple[str, str, dict[str, float | None]]:
    loaded = provider.load(name)
    if loaded is None:
        return "not_installed", "no weights installed", {}
    inputs = MemberInputs(
        volume=phantom.volume(),
        lungs=phantom.left | phantom.right,
        lung_left=phantom.left,
        lung_right=phantom.right,
        lesions=phantom.lesions,
        age_years=PHANTOM_AGE_YEARS,
        sex=PHANTOM_SEX,
    )
    output = loaded.model.predict(inputs)
    outputs: dict[str, float | None] = {"p_covid": output.p_covid, "p_severe": output.p_severe}
    outputs.update({key: float(value) for key, value in output.details.items()})
    return "ran", loaded.source, outputs


def _pipeline_outputs(findings: Findings, name: str) -> dict[str, float | None]:
    """The numbers of ``name`` in a pipeline result: its scores, and the volume (mL) of every mask it made."""
    outputs: dict[str, float | None] = {}
    if name == "corads" and findings.corads is not None:
        outputs["corads_score"] = findings.corads.score
        outputs.update({f"corads_member{i}": value for i, value in enumerate(findings.corads.members)})
    if name == "i3dr" and findings.i3dr is not None:
        outputs.update({f"patient_{key}": value for key, value in findings.i3dr.patient.items()})
        for lobe, values in findings.i3dr.lobes.items():
            outputs.update({f"{lobe}_{key}": value for key, value in values.items()})
    if name == "severity" and findings.severity is not None:
        outputs["total_ctss"] = float(findings.severity.total_ctss)
    for region, source in sorted(findings.mask_sources.items()):
        if source == name and region in findings.measurements:
            outputs[f"{region}_ml"] = findings.measurements[region].volume_ml
    return outputs


def verify_model(store: WeightStore, name: str) -> Verification:
    """Hash check, load and a run on the phantom for one installed model.

    Raises
    ------
    models.weights.WeightsError
        If nothing is installed under ``name``.
    models.registry.UnknownModelError
        If ``name`` is not a registered model.
    """
    installed = store.get(name)
    if installed is None:
        raise WeightsError(f"no weights are installed for {name!r}")
    file_sha = sha256_of(installed.path) if installed.path.is_file() else "file missing"
    origin = origin_sentence(installed.origin) if installed.origin else f"installed from {installed.source_filename}"
    if file_sha != installed.sha256:
        return Verification(name, installed.sha256, file_sha, origin, "not_run", "the file changed since installation")
    provider = ModelProvider(store)
    phantom = _phantom()
    if name in STOIC_MEMBERS:
        status, reason, outputs = _member_outputs(provider, name, phantom)
        return Verification(name, installed.sha256, file_sha, origin, status, reason, outputs)
    findings = analyse(phantom.volume(), PatientContext(PHANTOM_AGE_YEARS, PHANTOM_SEX), store, provider=provider)
    run = findings.models.get(name)
    if run is None:
        return Verification(name, installed.sha256, file_sha, origin, "not_run", "the pipeline did not run this model")
    outputs = _pipeline_outputs(findings, name)
    return Verification(name, installed.sha256, file_sha, origin, run.status, run.reason, outputs)


def as_json(verification: Verification) -> dict[str, Any]:
    """The verification as one JSON document."""
    return {
        "name": verification.name,
        "intact": verification.intact,
        "recorded_sha256": verification.recorded_sha256,
        "file_sha256": verification.file_sha256,
        "origin": verification.origin,
        "status": verification.status,
        "reason": verification.reason,
        "outputs": dict(verification.outputs),
        "output_digest": verification.output_digest,
        "note": "outputs on the built-in synthetic phantom: a functional check, not a clinical result",
    }
