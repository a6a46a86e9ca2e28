"""Weight-free quantitative chest CT: the classical lung mask, its quality gate and the measurements.

Everything here runs without trained weights and is deterministic, so it is what a site sees on a
fresh install: the lung mask (:mod:`models.qct.lungmask`), whether it can be trusted
(:mod:`models.qct.quality`) and the densitometry of every region (:mod:`models.qct.measurements`).
Learned lobe masks, when installed, are measured by the same code.
"""
