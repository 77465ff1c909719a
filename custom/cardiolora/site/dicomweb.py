"""A PACS over DICOMweb: find studies (QIDO-RS), retrieve them (WADO-RS), store results (STOW-RS).

:class:`DicomWebServer` wraps ``dicomweb_client.DICOMwebClient`` with the three things the site
application needs, and turns every bad answer into a named :class:`DicomWebError` that says the
server URL, the StudyInstanceUID, the HTTP status (``None`` when there was no answer) and why:

=============================  =====================================================================
:class:`StudyNotFoundError`    the server does not know the study (HTTP 404; or QIDO-RS lists no
                               instance and WADO-RS answers 404)
:class:`ServerError`           any other HTTP error (4xx / 5xx) of QIDO-RS, WADO-RS or STOW-RS
:class:`ServerTimeoutError`    no answer within ``timeout`` seconds
:class:`ServerUnreachableError`  no connection (refused, unknown host)
:class:`PartialStudyError`     WADO-RS returned fewer instances than QIDO-RS listed
:class:`StoreError`            STOW-RS refused an instance (``FailedSOPSequence``) or did not
                               confirm it (missing from ``ReferencedSOPSequence``)
=============================  =====================================================================

**No partial writes.** :meth:`DicomWebServer.retrieve_study` writes the instances into
``<folder>.tmp-<pid>`` and renames it to ``<folder>`` only when every listed instance arrived; on
any error the temporary folder is removed and nothing is left.

**What is retrieved.** Every series of the study except derived objects (modalities in
:data:`SKIPPED_MODALITIES`: segmentations, structured reports, presentation states, key objects),
so the SEG and SR that an earlier run stored back into the study are not read as input.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pydicom
import requests
import retrying

__all__ = [
    "SKIPPED_MODALITIES",
    "DicomWebError",
    "DicomWebServer",
    "PartialStudyError",
    "RetrievedStudy",
    "ServerError",
    "ServerTimeoutError",
    "ServerUnreachableError",
    "StoreError",
    "StudyNotFoundError",
    "check_date_range",
]

logger = logging.getLogger(__name__)

#: Series of these modalities are not retrieved as input (derived objects, including our own SEG / SR).
SKIPPED_MODALITIES = frozenset({"SEG", "SR", "PR", "KO", "DOC", "REG", "RTSTRUCT"})

#: DICOM tags (hex) of the QIDO-RS JSON answers read here.
_TAG = {
    "PatientID": "00100020",
    "StudyDate": "00080020",
    "StudyInstanceUID": "0020000D",
    "SeriesInstanceUID": "0020000E",
    "SOPInstanceUID": "00080018",
    "Modality": "00080060",
    "ModalitiesInStudy": "00080061",
}

_DATE_RANGE = re.compile(r"^(\d{8})?(-)?(\d{8})?$")

T = TypeVar("T")


class DicomWebError(RuntimeError):
    """A DICOMweb request that failed; the message names the server, the study, the status and why.

    Attributes:
        url: the server's DICOMweb root.
        study_uid: the StudyInstanceUID concerned (``None`` for a study search).
        status: the HTTP status code (``None`` when the server gave no answer).
        reason: what went wrong, in words.
    """

    kind = "DICOMweb request failed"

    def __init__(self, url: str, study_uid: str | None, status: int | None, reason: str) -> None:
        self.url, self.study_uid, self.status, self.reason = url, study_uid, status, reason
        where = f"study {study_uid}" if study_uid else "study search"
        http = f"HTTP {status}" if status is not None else "no HTTP answer"
        super().__init__(f"{type(self).__name__}: {url}: {where}: {self.kind} ({http}): {reason}")


class StudyNotFoundError(DicomWebError):
    """The server does not hold the study (HTTP 404)."""

    kind = "study not found"


class ServerError(DicomWebError):
    """The server answered with an HTTP error other than 404."""

    kind = "server error"


class ServerTimeoutError(DicomWebError):
    """The server did not answer in time."""

    kind = "timed out"


class ServerUnreachableError(DicomWebError):
    """No connection to the server."""

    kind = "server unreachable"


class PartialStudyError(DicomWebError):
    """WADO-RS returned fewer instances than QIDO-RS listed."""

    kind = "partial study"


class StoreError(DicomWebError):
    """STOW-RS refused or did not confirm an instance."""

    kind = "STOW-RS refused"


def check_date_range(value: str | None) -> str | None:
    """Check a QIDO-RS StudyDate matching value.

    Args:
        value: ``YYYYMMDD``, ``YYYYMMDD-YYYYMMDD``, ``YYYYMMDD-`` (from) or ``-YYYYMMDD`` (until);
            ``None`` for no date condition.

    Returns:
        `value` unchanged.

    Raises:
        ValueError: naming ``--study-date`` for any other form, or a range whose start is after its end.
    """
    if value is None:
        return None
    m = _DATE_RANGE.match(value)
    if not value or m is None or not (m.group(1) or m.group(3)) or (m.group(3) and m.group(1) and not m.group(2)):
        raise ValueError(f"--study-date {value!r}: expected YYYYMMDD, YYYYMMDD-YYYYMMDD, YYYYMMDD- or -YYYYMMDD.")
    if m.group(1) and m.group(3) and m.group(1) > m.group(3):
        raise ValueError(f"--study-date {value!r}: the range starts after it ends.")
    return value


def _value(item: Mapping[str, Any], keyword: str) -> Any:
    """The first value of `keyword` in a DICOM JSON object (``None`` when absent)."""
    values = (item.get(_TAG[keyword]) or {}).get("Value") or [None]
    return values[0]


@dataclass(frozen=True)
class RetrievedStudy:
    """A study written into a folder by :meth:`DicomWebServer.retrieve_study`.

    Attributes:
        study_uid: its StudyInstanceUID.
        folder: the folder holding one ``<SOPInstanceUID>.dcm`` per instance, a subfolder per series.
        n_instances: instances written.
        series: SeriesInstanceUID -> Modality of the series retrieved.
        skipped_series: SeriesInstanceUID -> Modality of the series left out (derived objects).
    """

    study_uid: str
    folder: Path
    n_instances: int
    series: dict[str, str] = field(default_factory=dict)
    skipped_series: dict[str, str] = field(default_factory=dict)


class DicomWebServer:
    """One DICOMweb server (QIDO-RS, WADO-RS, STOW-RS under one root URL).

    Args:
        url: the DICOMweb root, e.g. ``http://127.0.0.1:8042/dicom-web``.
        timeout: seconds to wait for a connection and for each answer.
        attempts: tries of a request that gets no answer (timeout, no connection) or an answer
            408 / 429 / 503 / 504, with exponential back-off from 1 s (``dicomweb-client``'s
            retry); other HTTP errors are not retried.

    Raises:
        ValueError: naming ``--dicomweb`` if `url` is not an http(s) URL.
    """

    def __init__(self, url: str, timeout: float = 30.0, attempts: int = 3) -> None:
        from dicomweb_client.api import DICOMwebClient

        if not re.match(r"^https?://[^/\s]+", url or ""):
            raise ValueError(f"--dicomweb {url!r}: expected an http:// or https:// URL of the DICOMweb root.")
        if timeout <= 0:
            raise ValueError(f"--timeout must be positive, got {timeout}.")
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self.client = DICOMwebClient(self.url, timeout=self.timeout)
        self.client.set_http_retry_params(max_attempts=max(1, int(attempts)), wait_exponential_multiplier=500)

    def _call(self, study_uid: str | None, what: str, fn: Callable[[], T]) -> T:
        """Run one request; turn what ``requests`` raises into a named :class:`DicomWebError`."""
        try:
            return fn()
        except requests.HTTPError as err:
            status = err.response.status_code if err.response is not None else None
            text = ""
            if err.response is not None:
                body = " ".join(err.response.text.split())[:300] if err.response.text else ""
                text = (err.response.reason or "") + (f": {body}" if body else "")
            cls = StudyNotFoundError if status == 404 and study_uid else ServerError
            raise cls(self.url, study_uid, status, f"{what}: {text.strip() or err}") from None
        except retrying.RetryError as err:  # the last of `attempts` answers was 408 / 429 / 503 / 504
            response = err.last_attempt.value
            status = getattr(response, "status_code", None)
            reason = getattr(response, "reason", "") or ""
            raise ServerError(
                self.url, study_uid, status, f"{what}: {reason} after {err.last_attempt.attempt_number} attempts"
            ) from None
        except requests.Timeout:
            raise ServerTimeoutError(
                self.url, study_uid, None, f"{what}: no answer within {self.timeout:g} s"
            ) from None
        except requests.ConnectionError as err:
            raise ServerUnreachableError(self.url, study_uid, None, f"{what}: {_root_cause(err)}") from None
        except (ValueError, requests.RequestException) as err:  # a garbled answer (bad JSON, bad multipart)
            raise ServerError(self.url, study_uid, None, f"{what}: unreadable answer ({err})") from None

    def _search(
        self, study_uid: str | None, what: str, key: str, search: Callable[[int], list[dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        """All results of a QIDO-RS search, page by page (``offset``) until a page brings nothing new.

        A server may answer a search in pages; one that ignores ``offset`` repeats its answer, which
        ends the loop too (``dicomweb-client``'s own ``get_remaining`` would loop for ever).

        Args:
            study_uid: the study concerned (for errors).
            what: the search, in words (for errors).
            key: the keyword identifying a result (``StudyInstanceUID`` ...).
            search: one request, given the offset.

        Returns:
            The results, each once.

        Raises:
            DicomWebError: a request failed.
        """
        results: list[dict[str, Any]] = []
        seen: set[str] = set()
        offset = 0
        while True:
            page = self._call(study_uid, what, lambda o=offset: search(o))
            new = [i for i in page if _value(i, key) is not None and str(_value(i, key)) not in seen]
            if not new:
                return results
            results += new
            seen.update(str(_value(i, key)) for i in new)
            offset += len(page)

    def find_studies(
        self, patient_id: str | None = None, study_date: str | None = None, study_uids: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """The studies that match, by QIDO-RS.

        Args:
            patient_id: PatientID to match (QIDO-RS; Orthanc 1.10's DICOMweb plugin matches it exactly,
                no ``*`` / ``?`` wildcards).
            study_date: a StudyDate or range (:func:`check_date_range`).
            study_uids: StudyInstanceUIDs to restrict to (none: any).

        Returns:
            ``[{"study_uid", "patient_id", "study_date", "modalities"}]`` sorted by date, then UID.

        Raises:
            DicomWebError: the search failed.
        """
        filters: dict[str, Any] = {}
        if patient_id:
            filters["PatientID"] = patient_id
        if study_date:
            filters["StudyDate"] = check_date_range(study_date)
        if study_uids:
            filters["StudyInstanceUID"] = ",".join(study_uids)
        fields = ["PatientID", "StudyDate", "ModalitiesInStudy"]
        found = self._search(
            None,
            f"QIDO-RS search for studies {filters}",
            "StudyInstanceUID",
            lambda offset: self.client.search_for_studies(search_filters=filters, fields=fields, offset=offset),
        )
        out = []
        for item in found:
            uid = _value(item, "StudyInstanceUID")
            if not uid:
                continue
            modalities = (item.get(_TAG["ModalitiesInStudy"]) or {}).get("Value") or []
            out.append(
                {
                    "study_uid": str(uid),
                    "patient_id": _value(item, "PatientID"),
                    "study_date": _value(item, "StudyDate"),
                    "modalities": [str(m) for m in modalities],
                }
            )
        return sorted(out, key=lambda s: (str(s["study_date"] or ""), s["study_uid"]))

    def list_instances(self, study_uid: str) -> dict[str, dict[str, Any]]:
        """The study's instances by series, by QIDO-RS.

        Args:
            study_uid: the StudyInstanceUID.

        Returns:
            ``{SeriesInstanceUID: {"modality": str, "instances": set of SOPInstanceUIDs}}``.

        Raises:
            StudyNotFoundError: QIDO-RS lists no instance and WADO-RS answers 404 for the study.
            PartialStudyError: QIDO-RS lists no instance but WADO-RS holds the study.
            DicomWebError: a request failed.
        """
        found = self._search(
            study_uid,
            "QIDO-RS search for series",
            "SeriesInstanceUID",
            lambda offset: self.client.search_for_series(study_instance_uid=study_uid, offset=offset),
        )
        series: dict[str, dict[str, Any]] = {}
        for item in found:
            uid = _value(item, "SeriesInstanceUID")
            if uid:
                series[str(uid)] = {"modality": str(_value(item, "Modality") or ""), "instances": set()}
        for uid in series:
            instances = self._search(
                study_uid,
                f"QIDO-RS search for the instances of series {uid}",
                "SOPInstanceUID",
                lambda offset, uid=uid: self.client.search_for_instances(
                    study_instance_uid=study_uid, series_instance_uid=uid, offset=offset
                ),
            )
            series[uid]["instances"] = {
                str(_value(i, "SOPInstanceUID")) for i in instances if _value(i, "SOPInstanceUID")
            }
        if not any(s["instances"] for s in series.values()):
            # the server's own word on the study: WADO-RS of its metadata (404 when unknown)
            meta = self._call(
                study_uid,
                "QIDO-RS lists no instance; WADO-RS of the study metadata",
                lambda: self.client.retrieve_study_metadata(study_uid),
            )
            raise PartialStudyError(
                self.url, study_uid, 200, f"QIDO-RS lists no instance but WADO-RS returns metadata of {len(meta)}"
            )
        return series

    def retrieve_study(self, study_uid: str, folder: str | os.PathLike) -> RetrievedStudy:
        """Retrieve a study's image series by WADO-RS into `folder` (module docstring).

        Args:
            study_uid: the StudyInstanceUID.
            folder: where to put it; must not exist. Written as ``<folder>.tmp-<pid>`` and renamed.

        Returns:
            What was written.

        Raises:
            FileExistsError: `folder` exists.
            PartialStudyError: a series came back with fewer instances than QIDO-RS listed, or the
                study holds no image series.
            DicomWebError: a request failed (nothing is left on disk).
        """
        target = Path(folder)
        if target.exists():
            raise FileExistsError(f"{target}: exists; a retrieved study is never written over another.")
        listed = self.list_instances(study_uid)
        wanted = {uid: s for uid, s in listed.items() if s["modality"].upper() not in SKIPPED_MODALITIES}
        skipped = {uid: s["modality"] for uid, s in listed.items() if uid not in wanted}
        if not wanted:
            raise PartialStudyError(
                self.url, study_uid, 200, f"no image series to retrieve (only {sorted(set(skipped.values()))})"
            )
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        n = 0
        try:
            for i, (series_uid, s) in enumerate(sorted(wanted.items())):
                sub = tmp / f"series_{i:03d}"
                sub.mkdir()

                def fetch(series_uid: str = series_uid, sub: Path = sub) -> set[str]:
                    got: set[str] = set()
                    for ds in self.client.iter_series(study_uid, series_uid):  # streamed: one instance at a time
                        sop = str(ds.SOPInstanceUID)
                        if sop not in got:
                            got.add(sop)
                            ds.save_as(sub / f"{_safe(sop)}.dcm", enforce_file_format=True)
                    return got

                got = self._call(study_uid, f"WADO-RS of series {series_uid}", fetch)
                missing = s["instances"] - got
                if missing:
                    raise PartialStudyError(
                        self.url,
                        study_uid,
                        200,
                        f"series {series_uid}: WADO-RS returned {len(got & s['instances'])} of the "
                        f"{len(s['instances'])} instances QIDO-RS lists (missing e.g. {sorted(missing)[0]})",
                    )
                n += len(got)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        series = {uid: s["modality"] for uid, s in wanted.items()}
        logger.info("retrieved study %s: %d instances of %d series into %s", study_uid, n, len(series), target)
        return RetrievedStudy(study_uid, target, n, series, skipped)

    def store(self, study_uid: str, files: Sequence[str | os.PathLike]) -> list[str]:
        """Store DICOM files into the study by STOW-RS (one request) and check the answer.

        Args:
            study_uid: the StudyInstanceUID they belong to.
            files: the DICOM files (SEG, SR).

        Returns:
            The SOPInstanceUIDs stored, in the order of `files`.

        Raises:
            StoreError: the server refused an instance or did not confirm it.
            DicomWebError: the request failed.
        """
        datasets = [pydicom.dcmread(f) for f in files]
        uids = [str(ds.SOPInstanceUID) for ds in datasets]
        answer = self._call(
            study_uid,
            f"STOW-RS of {len(datasets)} instances",
            lambda: self.client.store_instances(datasets, study_instance_uid=study_uid),
        )
        failed = [str(getattr(i, "ReferencedSOPInstanceUID", "?")) for i in getattr(answer, "FailedSOPSequence", [])]
        if failed:
            reasons = [str(getattr(i, "FailureReason", "?")) for i in answer.FailedSOPSequence]
            raise StoreError(self.url, study_uid, 200, f"instances {failed} failed (FailureReason {reasons})")
        confirmed = {
            str(getattr(i, "ReferencedSOPInstanceUID", "")) for i in getattr(answer, "ReferencedSOPSequence", [])
        }
        unconfirmed = [u for u in uids if u not in confirmed]
        if unconfirmed:
            raise StoreError(
                self.url, study_uid, 200, f"instances {unconfirmed} are not in the answer's ReferencedSOPSequence"
            )
        return uids


def _safe(uid: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in uid)


def _root_cause(err: BaseException) -> str:
    """The innermost reason of a connection error (e.g. ``[Errno 111] Connection refused``)."""
    text = str(err)
    m = re.search(r"\[Errno -?\d+\][^')\"]*", text)
    return m.group(0).strip() if m else text
