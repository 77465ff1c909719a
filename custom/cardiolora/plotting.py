"""matplotlib's ``pyplot`` on the non-interactive Agg backend, imported on first use.

Every PNG the package draws (training curves, federated round curves, phantom montages, the site's
overlays and volume curves) gets ``pyplot`` from :func:`pyplot`. matplotlib is imported there and
not at module top, for two reasons: the backend must be chosen before ``pyplot`` is imported (at
module top, merely importing cardiolora would switch the backend of the program that imports it),
and it is slow to import while only the functions that draw need it.
"""

from __future__ import annotations

from types import ModuleType

__all__ = ["pyplot"]


def pyplot() -> ModuleType:
    """``matplotlib.pyplot``, with the Agg backend selected first (files only, no display).

    Returns:
        The ``matplotlib.pyplot`` module.
    """
    import matplotlib  # here, not at the top: see the module docstring

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
