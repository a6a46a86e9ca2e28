"""Which class implements each STOIC2021 member, imported only when that member is loaded.

The members' modules pull in large network definitions; a process that runs two of them
should not import all eight.  :func:`member_class` maps a registry name
(:data:`models.registry.STOIC_MEMBERS`) to its class, which satisfies
:class:`~models.stoic.member.StoicMember` and offers ``from_safetensors(path, *, device=None)`` and
``demo(seed, *, device=None, **small_overrides)``: the member's networks are put on ``device``
(CPU by default) once, and each prediction copies its inputs there.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from models.registry import LUNGMASK_R231, STOIC_MEMBERS, UnknownModelError
from models.stoic.member import StoicMember

__all__ = ["AUTHORS_LUNG_MASKS", "MEMBER_MODULES", "demo_member", "load_member", "member_class", "member_summaries"]

#: Registry name -> (module, class).
MEMBER_MODULES: dict[str, tuple[str, str]] = {
    "stoic_baseline": ("models.stoic.baseline", "StoicBaseline"),
    "stoic_code1055": ("models.stoic.code1055", "StoicCode1055"),
    "stoic_simonj": ("models.stoic.simonj", "SimonjMember"),
    "stoic_flyingbird": ("models.stoic.flyingbird", "StoicFlyingBird"),
    "stoic_hal9000": ("models.stoic.hal9000", "Hal9000Member"),
    "stoic_uaux2": ("models.stoic.uaux2", "StoicUaux2"),
    "stoic_etro": ("models.stoic.etro", "EtroMember"),
    "stoic_deakin": ("models.stoic.deakin", "StoicDeakin"),
}


#: The lung mask each member's authors computed its input from, where it was a published network
#: a site can install: lungmask R231 for Flying Bird (FB ``inference/process.py``,
#: ``LungMask.get_model('unet', 'R231', ...)``) and simon.j (SJ ``inference/algorithm/transforms.py``,
#: ``CreateLungMask``: "the U-Net R231 model").  Without it installed they run on the classical
#: lung mask, and their records say so.
AUTHORS_LUNG_MASKS: Mapping[str, str] = MappingProxyType(
    {"stoic_flyingbird": LUNGMASK_R231, "stoic_simonj": LUNGMASK_R231}
)


def member_class(name: str) -> Any:
    """The class of member ``name``.

    Raises
    ------
    UnknownModelError
        If ``name`` is not a registered STOIC2021 member.
    """
    if name not in STOIC_MEMBERS or name not in MEMBER_MODULES:
        raise UnknownModelError(f"{name!r} is not a STOIC2021 member; members are: {', '.join(STOIC_MEMBERS)}")
    module, attribute = MEMBER_MODULES[name]
    return getattr(importlib.import_module(module), attribute)


def load_member(name: str, path: Path, *, device: torch.device | str | None = None) -> StoicMember:
    """Member ``name`` with the weights of an installed file (its card must name the member), on ``device``."""
    member: StoicMember = member_class(name).from_safetensors(path, device=device)
    return member


def demo_member(
    name: str, seed: int, *, device: torch.device | str | None = None, **small_overrides: Any
) -> StoicMember:
    """Member ``name`` with generated demonstration weights (card ``"demo": true``), on ``device``.

    ``small_overrides`` shrink the networks for quick tests; without them the member has its
    published size.
    """
    member: StoicMember = member_class(name).demo(seed, device=device, **small_overrides)
    return member


def member_summaries() -> list[dict[str, Any]]:
    """Every member's network rows for ``lungcds models summary``: parameters, FLOPs, passes, published count.

    Each member module's ``summary()`` builds its networks on the meta device, so nothing is allocated.
    """
    rows: list[dict[str, Any]] = []
    for name, (module, _) in MEMBER_MODULES.items():
        for row in importlib.import_module(module).summary():
            rows.append({"member": name, **row})
    return rows
