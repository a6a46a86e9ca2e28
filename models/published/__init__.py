"""Checkpoints as their authors published them: detected, checked key by key, converted, recorded.

See :mod:`models.published.format` for the rules every format follows and
:mod:`models.published.importer` for ``lungcds models install`` of an authors' file or folder.
"""
