"""The plausibility gate: impossible learned numbers are taken out of the findings, each with its reason."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from models.findings import (
    CoradsResult,
    Findings,
    Geometry,
    I3drResult,
    ModelRun,
    RegionMeasurements,
    SeverityResult,
    StoicResult,
    Volume,
)
from models.plausibility import withhold_implausible

LOBE_VOLUMES = {"LUL": 1400.0, "LLL": 1300.0, "RUL": 1100.0, "RML": 450.0, "RLL": 1500.0}
PATIENT = {"pv_l": 5.6, "fpv_l": 4.4, "fev1_pre_l": 2.7, "fev1_post_l": 2.9, "fvc_pre_l": 3.9, "fvc_post_l": 4.0}
PATIENT["dlco"] = 21.4


def _measured(region: str, volume_ml: float) -> RegionMeasurements:
    return RegionMeasurements(region, int(volume_ml), volume_ml, 0.8 * volume_ml, 5.0, -900.0, -850.0, 8.0)


def _findings(lobe_provenance: str = "generated_weights", **changes: object) -> Findings:
    """Plausible findings of every output (lobes and I3Dr on generated weights), then ``changes``."""
    geometry = Geometry(
        (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)), (2, 2, 2)
    )
    volume = Volume(np.zeros((2, 2, 2), np.float32), geometry, ("1.2.3.1", "1.2.3.2"))
    lungs = {"lungs": 5750.0, "lung_left": 2700.0, "lung_right": 3050.0}
    measurements = {name: _measured(name, ml) for name, ml in {**lungs, **LOBE_VOLUMES}.items()}
    generated = "generated_weights"
    models = {
        "lung_mask": ModelRun("lung_mask", "ran", "", "1.0", "weight_free"),
        "lobes": ModelRun("lobes", "ran", "", "1.0", lobe_provenance),  # type: ignore[arg-type]
        "corads": ModelRun("corads", "ran", "", "1.0", generated),
        "stoic": ModelRun("stoic", "ran", "", "1.0", generated, inputs=("stoic_simonj",)),
        "stoic_simonj": ModelRun("stoic_simonj", "ran", "", "1.0", generated),
        "i3dr": ModelRun("i3dr", "ran", "", "1.0", generated),
        "severity": ModelRun("severity", "ran", "", "1.0", generated, inputs=("lobes",)),
    }
    shares = {lobe: ml / 5750.0 for lobe, ml in LOBE_VOLUMES.items()}
    findings = Findings(
        volume=volume,
        masks={},
        measurements=measurements,
        models=models,
        pipeline_version="1",
        corads=CoradsResult(3, 0.55, (0.5, 0.6)),
        stoic=StoicResult(
            0.4, 0.2, {"stoic_simonj": {"p_covid": 0.4, "p_severe": 0.2}}, averaged={"p_covid": ("stoic_simonj",)}
        ),
        i3dr=I3drResult(
            patient=dict(PATIENT),
            lobes={lobe: {k: v * share for k, v in PATIENT.items()} for lobe, share in shares.items()},
            lobes_unscaled={lobe: {k: v * share for k, v in PATIENT.items()} for lobe, share in shares.items()},
            patient_b=dict(PATIENT),
        ),
        severity=SeverityResult({lobe: {"involvement_pct": 2.0, "ctss": 1} for lobe in LOBE_VOLUMES}, 5),
        mask_sources={**dict.fromkeys(lungs, "lung_mask"), **dict.fromkeys(LOBE_VOLUMES, "lobes")},
    )
    return dataclasses.replace(findings, **changes)  # type: ignore[arg-type]


def test_plausible_findings_pass_unchanged() -> None:
    findings = _findings()
    assert withhold_implausible(findings) is findings


def test_a_lobe_fragment_is_withheld_with_what_depends_on_it() -> None:
    findings = _findings()
    measurements = {**findings.measurements, "RML": _measured("RML", 0.3)}
    gated = withhold_implausible(dataclasses.replace(findings, measurements=measurements))
    assert "RML" not in gated.measurements and "RUL" in gated.measurements
    (lobe,) = gated.withheld_values("measurements")
    assert lobe.site == "RML"
    assert lobe.reason == (
        "withheld: Right middle lobe 0.3 mL is below the plausible minimum of 50 mL for a lobe (mask by model lobes)"
    )
    assert gated.severity is None and "Right middle lobe 0.3 mL" in gated.withheld_values("severity")[0].reason
    assert gated.i3dr is not None and not gated.i3dr.lobes and not gated.i3dr.lobes_unscaled
    assert gated.i3dr.patient == PATIENT, "the patient level does not depend on the lobe masks"
    body = json.loads(json.dumps(gated.as_dict()))
    assert body["measurements"]["RML"]["volume_ml"] is None and body["measurements"]["RML"]["withheld"] == lobe.reason
    assert body["measurements"]["RML"]["provenance"] == "generated_weights"
    assert body["severity"]["total_ctss"] is None and body["severity"]["withheld"][0]["reason"].startswith("withheld: ")


def test_a_lobe_larger_than_its_lung_is_withheld_but_weight_free_lobes_are_not_gated() -> None:
    findings = _findings()
    measurements = {**findings.measurements, "LUL": _measured("LUL", 2900.0)}
    gated = withhold_implausible(dataclasses.replace(findings, measurements=measurements))
    assert gated.withheld_values("measurements")[0].reason.startswith(
        "withheld: Left upper lobe 2900.0 mL is larger than its lung (2700.0 mL)"
    )
    weight_free = _findings("weight_free")
    tiny = dataclasses.replace(weight_free, measurements={**weight_free.measurements, "RML": _measured("RML", 0.3)})
    assert withhold_implausible(tiny) is tiny


def test_lung_function_outside_physiology_is_withheld() -> None:
    findings = _findings()
    assert findings.i3dr is not None
    patient = {**PATIENT, "fev1_pre_l": -0.90, "dlco": -0.2, "pv_l": 0.06, "fev1_post_l": 5.0, "fvc_post_l": 3.0}
    lobes = {lobe: dict(values) for lobe, values in findings.i3dr.lobes.items()}
    lobes["RML"]["fvc_pre_l"] = -0.1
    gated = withhold_implausible(
        dataclasses.replace(findings, i3dr=dataclasses.replace(findings.i3dr, patient=patient, lobes=lobes))
    )
    assert gated.i3dr is not None
    reasons = {(w.site, w.quantity): w.reason for w in gated.withheld_values("i3dr")}
    assert reasons[("patient", "fev1_pre_l")] == (
        "withheld: patient (model A) FEV1 pre-bronchodilator -0.90 L is not physiological (must be above 0 L)"
    )
    assert reasons[("patient", "dlco")] == (
        "withheld: patient (model A) DLCO -0.20 mL/min/mmHg is not physiological (must be above 0 mL/min/mmHg)"
    )
    assert "is not physiological for a patient (at least 1 L)" in reasons[("patient", "pv_l")]
    assert (
        "FEV1 post-bronchodilator 5.00 L exceeds FVC post-bronchodilator 3.00 L" in reasons[("patient", "fvc_post_l")]
    )
    assert reasons[("patient", "fev1_post_l")] == reasons[("patient", "fvc_post_l")]
    assert reasons[("lobes", "fvc_pre_l")].startswith(
        "withheld: at every lobe, as the lobes are rescaled together: RML"
    )
    assert set(gated.i3dr.patient) == {"fpv_l", "fvc_pre_l"}
    assert all(
        "fvc_pre_l" not in values for values in (*gated.i3dr.lobes.values(), *gated.i3dr.lobes_unscaled.values())
    )
    assert all("fev1_pre_l" in values for values in gated.i3dr.lobes.values())
    body = json.loads(json.dumps(gated.as_dict()))
    assert body["i3dr"]["patient"]["fev1_pre_l"] is None and body["i3dr"]["lobes"]["LUL"]["fvc_pre_l"] is None
    assert {"site": "patient", "quantity": "dlco", "reason": reasons[("patient", "dlco")]} in body["i3dr"]["withheld"]


@pytest.mark.parametrize(
    ("corads", "why"),
    [
        (CoradsResult(6, 0.55, (0.5, 0.6)), "CO-RADS category 6 is not one of 1-5"),
        (CoradsResult(3, 1.4, (0.5, 0.6)), "ensemble score 1.40 is not a probability (must be within 0-1)"),
        (CoradsResult(3, 0.55, (0.5, float("nan"))), "member 2 score nan is not a finite number"),
    ],
)
def test_an_impossible_corads_result_is_withheld(corads: CoradsResult, why: str) -> None:
    gated = withhold_implausible(_findings(corads=corads))
    assert gated.corads is None and gated.withheld_values("corads")[0].reason == f"withheld: {why}"
    assert json.loads(json.dumps(gated.as_dict()))["corads"]["category"] is None


def test_a_probability_outside_0_1_is_withheld_with_the_mean_it_spoils() -> None:
    stoic = StoicResult(
        0.7, 0.2, {"stoic_simonj": {"p_covid": 1.4, "p_severe": 0.2}}, averaged={"p_covid": ("stoic_simonj",)}
    )
    gated = withhold_implausible(_findings(stoic=stoic))
    assert gated.stoic is not None and gated.stoic.p_covid is None and gated.stoic.p_severe == 0.2
    assert gated.stoic.members == {"stoic_simonj": {"p_severe": 0.2}}
    reasons = [w.reason for w in gated.withheld_values("stoic")]
    assert reasons == [
        "withheld: stoic_simonj p_covid 1.40 is not a probability (must be within 0-1)",
        "withheld: ensemble p_covid is the mean of withheld member values (stoic_simonj)",
    ]
    member = json.loads(json.dumps(gated.as_dict()))["stoic"]["members"]["stoic_simonj"]
    assert member["p_covid"] is None and member["provenance"] == "generated_weights"
