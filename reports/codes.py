"""Coded concepts and fixed wording used by every lungcds report object.

Standard codes come from SNOMED CT (``SCT``), DICOM (``DCM``), LOINC (``LN``) and UCUM, as
listed in DICOM PS3.16 (Content Mapping Resource).  Concepts with no standard code (the
functional lung volume of thesis section 2.4.3, the emphysema index, model outputs, model
status) use the private coding scheme :data:`PRIVATE_SCHEME` ("99LUNGCDS"); PS3.16 section 8
reserves designators starting with "99" for private schemes, and every object that uses one
declares it in the Coding Scheme Identification Sequence (PS3.3 C.12.1.1.4) through
:data:`PRIVATE_CODING_SCHEME`.

Anatomy codes were checked against SNOMED CT: note that 45653009 is "Upper lobe of lung"
(no laterality); the right upper lobe is 42400003.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.sr.coding import Code

__all__ = [
    "ANATOMICAL_STRUCTURE",
    "ARTIFICIAL_INTELLIGENCE",
    "ATTENUATION_COEFFICIENT",
    "CORADS_CATEGORY",
    "CORADS_CATEGORY_VALUES",
    "CORADS_SCORE",
    "CT_CHEST_REPORT",
    "CT_OF_CHEST",
    "CT_SEVERITY_SCORE",
    "DECISION_SUPPORT",
    "DECISION_SUPPORT_STATEMENT",
    "DENSITOMETRY_ALGORITHM",
    "FPV_RANGE_HU",
    "FUNCTIONAL_LUNG_VOLUME",
    "HIGH_ATTENUATION_AREA",
    "I3DR_OUTPUT_CODES",
    "I3DR_OUTPUT_UNITS",
    "LESION",
    "LESION_MASK_ALGORITHM",
    "LOBE_INVOLVEMENT",
    "LOBE_MASK_ALGORITHM",
    "LOW_ATTENUATION_AREA_950",
    "LUNG_MASK_ALGORITHM",
    "MEAN",
    "MEASUREMENT_NOT_AVAILABLE",
    "MODEL_RUN_STATUS",
    "MORPHOLOGICALLY_ABNORMAL_STRUCTURE",
    "MORPHOLOGICAL_OPERATIONS",
    "OUTPUT_VALIDATION_STATUS",
    "PERCENTILE_15_ATTENUATION",
    "PIPELINE_WARNING",
    "PRIVATE_CODING_SCHEME",
    "PRIVATE_SCHEME",
    "PROBABILITY_COVID19",
    "PROBABILITY_SEVERE_OUTCOME",
    "QUALITATIVE_EVALUATIONS",
    "REGION_CODES",
    "SUM_OF_SEGMENTED_VOXELS",
    "UCUM_DLCO",
    "UCUM_HOUNSFIELD_UNIT",
    "UCUM_LITER",
    "UCUM_MILLILITER",
    "UCUM_NO_UNITS",
    "UCUM_PERCENT",
    "UNVALIDATED_BANNER",
    "UNVALIDATED_METHOD_BANNER",
    "UNVALIDATED_METHOD_STATEMENT",
    "UNVALIDATED_NO_PROVENANCE_STATEMENT",
    "UNVALIDATED_WEIGHTS_STATEMENT",
    "VOLUME",
    "WEIGHT_FREE_STATEMENT",
]

#: Private coding scheme designator (PS3.16 section 8: "99" prefix = private scheme).
PRIVATE_SCHEME = "99LUNGCDS"

#: Declaration of :data:`PRIVATE_SCHEME` for the Coding Scheme Identification Sequence.
PRIVATE_CODING_SCHEME = CodingSchemeIdentificationItem(
    designator=PRIVATE_SCHEME,
    name="lungcds private concepts",
    version="1",
    responsible_organization="lungcds project",
)

# --- procedures and document titles -------------------------------------------------------

#: Procedure reported (TID 1500 row 4; CID 100 is extensible).
CT_OF_CHEST = Code("169069000", "SCT", "Computed tomography of chest")
#: Document title of the encapsulated PDF (CID 7000 "Diagnostic Imaging Report Document Titles").
CT_CHEST_REPORT = Code("24627-2", "LN", "CT Chest Report")

# --- anatomy (finding sites, segmented property types) -------------------------------------

#: SNOMED CT body structures for the region names of ``models.findings.REGION_NAMES``.
REGION_CODES: Mapping[str, Code] = MappingProxyType(
    {
        "lungs": Code("39607008", "SCT", "Lung"),
        "lung_left": Code("44029006", "SCT", "Left lung"),
        "lung_right": Code("3341006", "SCT", "Right lung"),
        "LUL": Code("44714003", "SCT", "Upper lobe of left lung"),
        "LLL": Code("41224006", "SCT", "Lower lobe of left lung"),
        "RUL": Code("42400003", "SCT", "Upper lobe of right lung"),
        "RML": Code("72481006", "SCT", "Middle lobe of right lung"),
        "RLL": Code("266005", "SCT", "Lower lobe of right lung"),
    }
)
#: Segmented property type / finding type of lesion masks (CID 7151).
LESION = Code("52988006", "SCT", "Lesion")
#: Segmented property categories and finding categories (CID 7150).
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = Code("49755003", "SCT", "Morphologically Abnormal Structure")

# --- algorithm families (CID 7162) -----------------------------------------------------------

MORPHOLOGICAL_OPERATIONS = Code("123104", "DCM", "Morphological Operations")
ARTIFICIAL_INTELLIGENCE = Code("123110", "DCM", "Artificial Intelligence")

# --- measurement concepts (TID 300) ----------------------------------------------------------

#: CID 7469 "Generic Intensity and Size Measurements".
VOLUME = Code("118565006", "SCT", "Volume")
ATTENUATION_COEFFICIENT = Code("112031", "DCM", "Attenuation Coefficient")
#: CID 7464 "General Region of Interest Measurement Modifiers" (derivation).
MEAN = Code("373098007", "SCT", "Mean")
#: CID 7474 "Volume Measurement Methods".
SUM_OF_SEGMENTED_VOXELS = Code("126030", "DCM", "Sum of segmented voxel method for volume")

#: Lower and upper bound (HU, inclusive) of the functional lung volume, thesis section 2.4.3.
FPV_RANGE_HU: tuple[int, int] = (-950, -500)

FUNCTIONAL_LUNG_VOLUME = Code("FPV", PRIVATE_SCHEME, "Functional lung volume, -950 to -500 HU")
LOW_ATTENUATION_AREA_950 = Code("LAA950", PRIVATE_SCHEME, "Volume fraction below -950 HU")
PERCENTILE_15_ATTENUATION = Code("PERC15", PRIVATE_SCHEME, "15th percentile of attenuation")
HIGH_ATTENUATION_AREA = Code("HAA", PRIVATE_SCHEME, "High attenuation area fraction")

# --- qualitative evaluations and statements --------------------------------------------------

#: TID 1500 row 12 container "Qualitative Evaluations".
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")
MEASUREMENT_NOT_AVAILABLE = Code("MEASNA", PRIVATE_SCHEME, "Measurement not available")
MODEL_RUN_STATUS = Code("MODELSTATUS", PRIVATE_SCHEME, "Model run status")
OUTPUT_VALIDATION_STATUS = Code("VALIDATION", PRIVATE_SCHEME, "Output validation status")
DECISION_SUPPORT = Code("DECSUPPORT", PRIVATE_SCHEME, "Decision support statement")
PIPELINE_WARNING = Code("PIPEWARNING", PRIVATE_SCHEME, "Analysis pipeline warning")

# --- model outputs ----------------------------------------------------------------------------

CORADS_CATEGORY = Code("CORADSCAT", PRIVATE_SCHEME, "CO-RADS category")
#: Coded values of :data:`CORADS_CATEGORY`, keyed by category 1-5.
CORADS_CATEGORY_VALUES: Mapping[int, Code] = MappingProxyType(
    {n: Code(f"CORADS{n}", PRIVATE_SCHEME, f"CO-RADS {n}") for n in range(1, 6)}
)
CORADS_SCORE = Code("CORADSSCORE", PRIVATE_SCHEME, "CO-RADS ensemble score")
PROBABILITY_COVID19 = Code("PCOVID", PRIVATE_SCHEME, "Probability of COVID-19")
PROBABILITY_SEVERE_OUTCOME = Code("PSEVERE", PRIVATE_SCHEME, "Probability of severe COVID-19 outcome")

#: I3Dr outputs (architecture spec, ``result.json`` key ``i3dr``) as estimated quantities.
I3DR_OUTPUT_CODES: Mapping[str, Code] = MappingProxyType(
    {
        "pv_l": Code("I3DRPV", PRIVATE_SCHEME, "Estimated lung volume"),
        "fpv_l": Code("I3DRFPV", PRIVATE_SCHEME, "Estimated functional lung volume"),
        "fev1_pre_l": Code("I3DRFEV1PRE", PRIVATE_SCHEME, "Estimated FEV1 before bronchodilator"),
        "fev1_post_l": Code("I3DRFEV1POST", PRIVATE_SCHEME, "Estimated FEV1 after bronchodilator"),
        "fvc_pre_l": Code("I3DRFVCPRE", PRIVATE_SCHEME, "Estimated FVC before bronchodilator"),
        "fvc_post_l": Code("I3DRFVCPOST", PRIVATE_SCHEME, "Estimated FVC after bronchodilator"),
        "dlco": Code("I3DRDLCO", PRIVATE_SCHEME, "Estimated diffusing capacity for CO"),
    }
)
LOBE_INVOLVEMENT = Code("INVOLVEMENT", PRIVATE_SCHEME, "Lesion involvement of lobe")
CT_SEVERITY_SCORE = Code("CTSS", PRIVATE_SCHEME, "CT severity score")

# --- units (UCUM, CID 7181 and PS3.16 section 7.2) ------------------------------------------

UCUM_MILLILITER = Code("ml", "UCUM", "milliliter")
UCUM_LITER = Code("l", "UCUM", "liter")
UCUM_PERCENT = Code("%", "UCUM", "Percent")
UCUM_HOUNSFIELD_UNIT = Code("[hnsf'U]", "UCUM", "Hounsfield unit")
UCUM_NO_UNITS = Code("1", "UCUM", "no units")
UCUM_DLCO = Code("ml/min/mm[Hg]", "UCUM", "milliliter per minute per millimeter of mercury")

#: Units of the I3Dr outputs: volumes and flows in litres, DLCO in mL/min/mmHg.
I3DR_OUTPUT_UNITS: Mapping[str, Code] = MappingProxyType(
    {key: (UCUM_DLCO if key == "dlco" else UCUM_LITER) for key in I3DR_OUTPUT_CODES}
)

# --- algorithms ---------------------------------------------------------------------------------

LUNG_MASK_ALGORITHM = "lungcds classical lung mask"
LOBE_MASK_ALGORITHM = "lungcds lobe mask"
LESION_MASK_ALGORITHM = "lungcds lesion mask"
DENSITOMETRY_ALGORITHM = "lungcds lung densitometry"

# --- fixed wording -------------------------------------------------------------------------------

DECISION_SUPPORT_STATEMENT = (
    "This is computer-generated decision support, not a diagnosis. All results must be "
    "reviewed and interpreted by a qualified radiologist in the clinical context."
)
WEIGHT_FREE_STATEMENT = (
    "Lung volumes and attenuation measurements come from a classical, weight-free lung mask "
    "(image processing without a trained neural network)."
)
UNVALIDATED_WEIGHTS_STATEMENT = "UNVALIDATED: generated demonstration weights, not for clinical use"
UNVALIDATED_METHOD_STATEMENT = "UNVALIDATED: method without clinical validation, not for clinical use"
UNVALIDATED_NO_PROVENANCE_STATEMENT = "UNVALIDATED: no model provenance recorded for this output, not for clinical use"
UNVALIDATED_BANNER = "UNVALIDATED \u2014 generated weights, not for clinical use"
UNVALIDATED_METHOD_BANNER = "UNVALIDATED \u2014 outputs without clinical validation, not for clinical use"
