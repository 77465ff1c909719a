"""The server's ledger of a federated run: one record per task round and site, and what it writes.

:class:`RunLedger` keeps the round records of :mod:`cardiolora.fl.history` (round 0 is ``init``;
then one per round ``t``; then ``finalize`` and ``cross_eval``), counts the payload bytes each site
got and sent (:func:`cardiolora.fl.protocol.payload_bytes`), remembers every key a site ever sent,
and turns all that into the run's outputs:

* ``rml_history.json`` — ``{"method", "profile", "lambda0", "decay", "ranks", "sizes", "rounds",
  "received_keys"}``, rewritten after every task round;
* ``rml_curves.png`` — :func:`cardiolora.fl.history.plot_history`, at the end and at most once a
  minute in between;
* TensorBoard scalars of the last record (:meth:`RunLedger.scalars`): ``lambda`` and
  ``<key>/<site>`` for score, rating, coefficient, train_loss, bytes_up and bytes_down; the
  controller streams them through FLARE's analytics events.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from cardiolora.atomic import write_json
from cardiolora.fl.history import plot_history
from cardiolora.fl.protocol import payload_bytes

__all__ = ["RunLedger", "HISTORY_FILE", "CURVES_FILE", "TRACKED_KEYS"]

#: The history file in the server's run folder.
HISTORY_FILE = "rml_history.json"
#: The curves in the server's run folder.
CURVES_FILE = "rml_curves.png"
#: Per-site numbers streamed to TensorBoard as ``<key>/<site>``.
TRACKED_KEYS = ("score", "rating", "coefficient", "train_loss", "bytes_up", "bytes_down")
#: Seconds between two drawings of the curves while the run goes on.
PLOT_INTERVAL = 60


class RunLedger:
    """Round records, byte counts and received keys of one run (see the module docstring).

    Args:
        rounds: the records to continue from (a resumed run's history), or None to start empty.
    """

    def __init__(self, rounds: Iterable[dict] | None = None) -> None:
        self.rounds: list[dict] = list(rounds or [])
        self.received_keys: dict[str, list[str]] = {}
        self._last_plot = time.monotonic()
        self._opened = time.monotonic()

    def open(self, record: dict) -> dict:
        """Start a new record (``{"round", "lambda", ..., "sites": {}}``) and its clock; returns it."""
        self.rounds.append(record)
        self._opened = time.monotonic()
        return record

    def close(self) -> None:
        """Write the seconds since :meth:`open` into the current record (``"seconds"``)."""
        self.current["seconds"] = round(time.monotonic() - self._opened, 3)

    @property
    def current(self) -> dict:
        """The record being written."""
        return self.rounds[-1]

    def site(self, site: str) -> dict:
        """The current record of `site` (created with zero bytes up and down)."""
        rec = self.current["sites"].setdefault(site, {})
        rec.setdefault("bytes_up", 0)
        rec.setdefault("bytes_down", 0)
        return rec

    def sent(self, sites: Iterable[str], params: Mapping[str, Any] | None) -> None:
        """Count `params` as downloaded by each of `sites`."""
        down = payload_bytes(params)
        for site in sites:
            self.site(site)["bytes_down"] += down

    def received(self, site: str, params: Mapping[str, Any] | None) -> None:
        """Count `params` as uploaded by `site`."""
        self.site(site)["bytes_up"] += payload_bytes(params)

    def note_keys(self, site: str, keys: Iterable[Any]) -> None:
        """Add `keys` to what `site` ever sent (``received_keys``)."""
        self.received_keys.setdefault(site, [])
        self.received_keys[site] = sorted(set(self.received_keys[site]) | set(map(str, keys)))

    def record_ratings(
        self,
        previous: Mapping[str, float],
        current: Mapping[str, float],
        ratings: Mapping[str, float],
        coefficients: Mapping[str, float],
    ) -> None:
        """Record a round's scores, and the ratings and Eq. 2 coefficients of the merged sites.

        Args:
            previous: ``{site: P_{t-1}^c}`` (before this round's scores replace them).
            current: ``{site: P_t^c}``: the sites that scored the candidate this round.
            ratings: ``{site: w_t(c)}`` of the sites whose adapters were merged.
            coefficients: ``{site: w_t(c)|D_c|/Σ|D|}`` of the same sites.
        """
        for site in set(current) | set(ratings):
            rec = self.site(site)
            rec["previous_score"] = previous.get(site)
            rec["score"] = current.get(site)
            if site in ratings:
                rec["rating"] = ratings[site]
                rec["coefficient"] = coefficients[site]

    def scalars(self) -> list[tuple[str, float, int]]:
        """TensorBoard scalars ``(tag, value, step)`` of the current record (λ and :data:`TRACKED_KEYS`)."""
        rec = self.current
        t = int(rec["round"])
        out = []
        if rec.get("lambda") is not None:
            out.append(("lambda", rec["lambda"], t))
        for site, s in rec["sites"].items():
            for key in TRACKED_KEYS:
                if isinstance(s.get(key), (int, float)):
                    out.append((f"{key}/{site}", s[key], t))
        return out

    def write(
        self,
        folder: str | os.PathLike,
        header: Mapping[str, Any],
        title: str,
        final: bool = False,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        """History JSON every time; the PNG when `final` and at most once a minute in between.

        Args:
            folder: the server's run folder.
            header: the run's description written before the rounds (method, profile, λ_0, decay,
                ranks, sizes).
            title: title of the curves.
            final: draw the curves whatever the time since the last drawing.
            warn: where to report a drawing that failed (a plot never stops a federation).
        """
        out = Path(folder)
        write_json({**header, "rounds": self.rounds, "received_keys": self.received_keys}, out / HISTORY_FILE)
        if not final and time.monotonic() - self._last_plot < PLOT_INTERVAL:
            return
        self._last_plot = time.monotonic()
        try:
            plot_history(self.rounds, out / CURVES_FILE, title=title)
        except Exception as err:  # a plot must never stop a federation
            if warn is not None:
                warn(f"could not draw {out / CURVES_FILE}: {err}")
