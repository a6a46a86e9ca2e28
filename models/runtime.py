"""The learned models of one process: loaded once, from installed or generated weights.

House rule 12: a worker builds each network once and keeps it.  :class:`ModelProvider` does
that for the lobe and lesion segmentations, lungmask's lobe model, the CO-RADS ensemble, each
STOIC2021 member and I3Dr.  A model runs with
*installed* weights (``lungcds models install``; validated only when the site recorded a
validation statement) or, when asked (``--demo-weights``), with *generated* weights that are
deterministic and always reported as unvalidated (lungmask's models never run on generated
weights: they exist to run their authors' published files).  Without either, :meth:`ModelProvider.load`
returns ``None`` (and :func:`models.registry.unavailable_run` says why).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from models.corads.ensemble import CoradsEnsemble
from models.findings import Provenance
from models.i3dr import I3dr
from models.memory import return_freed_memory_at_once
from models.registry import I3DR, LUNGMASK_LTRCLOBES, LUNGMASK_R231, STOIC_MEMBERS, get_spec
from models.segmentation import (
    LesionSettings,
    LobeSettings,
    build_lesion_network,
    build_lobe_network,
    demo_state,
    load_state,
)
from models.stoic.catalog import demo_member, load_member
from models.stoic.ensemble import STOIC_TOP3, EnsembleConfig
from models.stoic.member import StoicMember
from models.weights import InstalledWeights, WeightStore, origin_sentence

__all__ = ["DEMO_SEED", "LearnedModel", "LungmaskModel", "ModelProvider", "installed_model"]

logger = logging.getLogger(__name__)

#: Seed of every generated (demonstration) network: the same demo weights everywhere.
DEMO_SEED = 0
LesionKind = Literal["nnunet", "resnet18_unet"]


@dataclass(frozen=True)
class LearnedModel:
    """A loaded model and where its weights came from.

    ``provenance`` is "generated_weights", or "installed_validated" / "installed_unvalidated"
    for installed weights with or without a recorded validation statement; ``source`` says in
    words what the weights are (for ``ModelRun.reason``).  Installed weights carry their
    SHA-256, origin (file name and installation time) and validation statement.
    """

    name: str
    model: Any
    version: str
    provenance: Provenance
    source: str
    weights_sha256: str | None = None
    weights_origin: str | None = None
    validation_statement: str | None = None


@dataclass(frozen=True)
class LungmaskModel:
    """lungmask's lobe model as loaded: the inferer and the R231 weights it was fused with (None: LTRCLobes alone)."""

    lobes: Any
    fill: InstalledWeights | None


def installed_model(model: Any, installed: InstalledWeights) -> LearnedModel:
    """``model`` with the provenance of its installed weights (validated only with a validation statement)."""
    source = f"installed weights {installed.source_filename} (sha256 {installed.sha256[:12]}…)"
    if installed.origin is not None:
        source += f", {origin_sentence(installed.origin)}"
    source += f", validated: {installed.validation}" if installed.validated else ", no validation statement recorded"
    origin = f"installed from {installed.source_filename} at {installed.installed_at}"
    if installed.origin is not None:
        origin += f"; {origin_sentence(installed.origin)}"
    return LearnedModel(
        installed.name,
        model,
        get_spec(installed.name).version,
        "installed_validated" if installed.validated else "installed_unvalidated",
        source,
        weights_sha256=installed.sha256,
        weights_origin=origin,
        validation_statement=installed.validation if installed.validated else None,
    )


class ModelProvider:
    """Loads each learned model at most once (thread-safe), from the weight store or generated.

    Parameters
    ----------
    weights : WeightStore or None
        Installed weights; ``None`` means none are installed.
    demo_weights : bool
        Generate deterministic demonstration weights for models without installed ones.
    device : str
        Torch device every learned model runs on (``LUNGCDS_DEVICE``); CO-RADS, I3Dr and each
        STOIC2021 member are built there and copy their inputs there with :func:`models.device.to_device`.
    lesion_kind : {"nnunet", "resnet18_unet"}
        Which lesion network the ``lesions`` weights are for.
    lobe_settings, lesion_settings : optional
        Preprocessing and sliding-window settings of the segmentations (published defaults).
    demo_factories : mapping, optional
        Per model name, a function building a *generated* model to use instead of the
        full-size one (small networks for quick tests); only used with ``demo_weights``.
    stoic_config : EnsembleConfig, optional
        Members and weights of the STOIC2021 ensemble (thesis Table 4.1's top three by default).
    keep_loaded : bool, optional
        Keep every model once loaded (the default on a GPU, where a job takes seconds and loading
        would dominate), or forget each one when :meth:`release` says its stage is done (the
        default on the CPU: the default ensemble's networks hold about 4 GB of float32 weights
        together, a CPU job takes minutes and reading one model's file again a second or less;
        ``benchmarks/full_pipeline.py`` measures both).  A released model is loaded again when
        next asked for; the pipeline reports that as its ``"<model> weights"`` stage.
    """

    def __init__(
        self,
        weights: WeightStore | None,
        *,
        demo_weights: bool = False,
        device: str = "cpu",
        lesion_kind: LesionKind = "nnunet",
        lobe_settings: LobeSettings | None = None,
        lesion_settings: LesionSettings | None = None,
        demo_factories: Mapping[str, Callable[[], Any]] | None = None,
        stoic_config: EnsembleConfig = STOIC_TOP3,
        keep_loaded: bool | None = None,
    ) -> None:
        self.weights = weights
        self.demo_weights = demo_weights
        self.device = device
        self.lesion_kind: LesionKind = lesion_kind
        self.lobe_settings = lobe_settings
        self.lesion_settings = lesion_settings
        self._demo_factories = dict(demo_factories or {})
        self._loaded: dict[str, LearnedModel | None] = {}
        self._lock = threading.Lock()
        self.stoic_config = stoic_config
        self.keep_loaded = torch.device(device).type != "cpu" if keep_loaded is None else keep_loaded
        self._builders: dict[str, Callable[[InstalledWeights | None], Any]] = {
            "lobes": self._lobes,
            "lesions": self._lesions,
            "corads": self._corads,
            I3DR: self._i3dr,
            LUNGMASK_LTRCLOBES: self._lungmask_lobes,
            LUNGMASK_R231: self._lungmask_lungs,
            **{name: self._stoic_builder(name) for name in STOIC_MEMBERS},
        }

    def installed(self, name: str) -> InstalledWeights | None:
        """The installed weights of ``name``, if any."""
        return self.weights.get(name) if self.weights is not None else None

    def load(self, name: str) -> LearnedModel | None:
        """The model ``name`` ready to run, or None when it has neither installed nor demo weights."""
        with self._lock:
            if name not in self._loaded:
                self._loaded[name] = self._load(name)
            return self._loaded[name]

    def release(self, name: str) -> None:
        """Say that the stage using ``name`` is done: the model is forgotten unless models are kept loaded.

        Its memory returns once the caller's own references are gone too (at once: loading the
        first model fixed glibc's mapping threshold, :mod:`models.memory`), so the process's peak is
        that of the largest stage, not of all models together.
        """
        if self.keep_loaded:
            return
        with self._lock:
            self._loaded.pop(name, None)

    def _load(self, name: str) -> LearnedModel | None:
        if name not in self._builders:
            raise ValueError(f"{name!r} is not a learned model this provider can load")
        spec = get_spec(name)
        installed = self.installed(name)
        if installed is None and (not self.demo_weights or name in (LUNGMASK_LTRCLOBES, LUNGMASK_R231)):
            return None  # lungmask runs on its authors' installed weights only, never on generated ones
        return_freed_memory_at_once()  # a model is about to be built: see models.memory
        if installed is None and name in self._demo_factories:
            model = self._demo_factories[name]()
        else:
            model = self._builders[name](installed)
        logger.info("loaded model %s from %s", name, "installed weights" if installed else "demo weights")
        if installed is None:
            source = f"generated demonstration weights (seed {DEMO_SEED}): never trained, no clinical meaning"
            return LearnedModel(name, model, spec.version, "generated_weights", source)
        return installed_model(model, installed)

    def configuration(self) -> dict[str, str]:
        """The settings the models of this provider run with, in words (``Findings.configuration``).

        What, besides the weights, decides their outputs: the lesion network, the segmentation
        settings, the STOIC2021 ensemble and, with generated weights, their seed and whether small
        test networks stand in for the published ones.
        """
        published = "published defaults"
        configuration = {
            "lesion_network": self.lesion_kind,
            "lobe_settings": repr(self.lobe_settings) if self.lobe_settings is not None else published,
            "lesion_settings": repr(self.lesion_settings) if self.lesion_settings is not None else published,
            "stoic_ensemble": repr(self.stoic_config),
        }
        if self.demo_weights:
            small = ", ".join(sorted(self._demo_factories))
            configuration["generated_weights"] = f"seed {DEMO_SEED}" + (
                f"; small test networks stand in for {small}" if small else ""
            )
        return configuration

    def _lobes(self, installed: InstalledWeights | None) -> torch.nn.Module:
        network = build_lobe_network()
        self._fill(network, installed)
        return network

    def _lesions(self, installed: InstalledWeights | None) -> torch.nn.Module:
        network = build_lesion_network(self.lesion_kind)
        self._fill(network, installed)
        return network

    @staticmethod
    def _fill(network: torch.nn.Module, installed: InstalledWeights | None) -> None:
        if installed is not None:
            load_state(network, installed.path)
        else:
            demo_state(network, DEMO_SEED)
        network.eval()

    def _lungmask_lobes(self, installed: InstalledWeights | None) -> LungmaskModel:
        """lungmask's LTRCLobes, fused with R231 when R231 is installed too (``_load`` never asks without weights)."""
        from models.segmentation.lungmask_lobes import LungmaskLobes  # imports lungmask, only when installed

        if installed is None:
            raise ValueError(f"{LUNGMASK_LTRCLOBES} runs on installed weights only")
        fill = self.installed(LUNGMASK_R231)
        return LungmaskModel(LungmaskLobes(installed.path, fill.path if fill is not None else None), fill)

    @staticmethod
    def _lungmask_lungs(installed: InstalledWeights | None) -> Any:
        """lungmask's R231 alone (the input mask of the members whose authors used it)."""
        from models.segmentation.lungmask_lobes import LungmaskLungs  # imports lungmask, only when installed

        if installed is None:
            raise ValueError(f"{LUNGMASK_R231} runs on installed weights only")
        return LungmaskLungs(installed.path)

    def _corads(self, installed: InstalledWeights | None) -> CoradsEnsemble:
        if installed is not None:
            return CoradsEnsemble.from_safetensors(installed.path, device=self.device)
        return CoradsEnsemble.demo(DEMO_SEED, device=self.device)

    def _i3dr(self, installed: InstalledWeights | None) -> I3dr:
        if installed is not None:
            return I3dr.from_safetensors(installed.path, device=self.device)
        return I3dr.demo(DEMO_SEED, device=self.device)

    def _stoic_builder(self, name: str) -> Callable[[InstalledWeights | None], StoicMember]:
        def build(installed: InstalledWeights | None) -> StoicMember:
            if installed is not None:
                return load_member(name, installed.path, device=self.device)
            return demo_member(name, DEMO_SEED, device=self.device)

        return build
