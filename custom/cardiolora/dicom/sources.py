"""Source values the DICOM writers (SEG, SR) copy from the MR sources: validity checks and clean-up.

Anonymised sources often hold values that are invalid for their VR: dates such as ``00000000`` or
``20120000``, impossible times, a PatientSex other than M / F / O, UIDs with leading-zero
components. Attributes copied into a new object (all type 2 or 3 where this is used) are emptied
instead (:func:`empty_invalid`); UIDs of the sources are referenced as they are, only checked
(:func:`valid_uid`) so that a note can say so. pydicom's warnings about them are collected with
:class:`cardiolora.dicom.headers.WarningLog`.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import validate_value

__all__ = ["empty_invalid", "valid_uid", "valid_value"]

_STRING_VRS = frozenset("AE AS CS DA DS DT IS LO LT PN SH ST TM UC UR UT".split())
_TM = re.compile(r"([01]\d|2[0-3])([0-5]\d([0-5]\d(\.\d{1,6})?)?)?")
_DT = re.compile(r"(\d{8})(\d{2,6}(?:\.\d{1,6})?)?([+-]\d{4})?")
_SEXES = ("M", "F", "O")


def valid_uid(uid: str) -> bool:
    """Whether `uid` is a valid DICOM UID (without pydicom's warning)."""
    return len(uid) <= 64 and bool(pydicom.uid.RE_VALID_UID.match(uid))


def valid_value(vr: str, value: object) -> bool:
    """Whether a string value is valid for `vr`; dates are checked on the calendar."""
    text = str(value).strip()
    if vr in ("DA", "DT"):
        m = _DT.fullmatch(text)
        if not m or (vr == "DA" and len(text) != 8) or (m.group(2) and not _TM.fullmatch(m.group(2))):
            return False
        try:
            return bool(datetime.date(int(text[:4]), int(text[4:6]), int(text[6:8])))
        except ValueError:
            return False
    if vr == "TM":
        return bool(_TM.fullmatch(text))
    try:
        validate_value(vr, text, pydicom.config.RAISE)
    except ValueError:
        return False
    return True


def empty_invalid(ds: Dataset, keywords: Iterable[str] | None = None) -> list[str]:
    """Empty, in place, the top-level string values of `ds` that are invalid (see module docstring).

    Args:
        ds: the dataset to clean.
        keywords: the attributes to check (default: every top-level one).

    Returns:
        ``"<keyword> '<value>'"`` for each emptied value, in dataset order.
    """
    wanted = None if keywords is None else set(keywords)
    fixed, tags = [], []
    for elem in ds:
        value = elem.value
        if (wanted is not None and elem.keyword not in wanted) or elem.VR not in _STRING_VRS or value in (None, ""):
            continue
        values = list(value) if isinstance(value, MultiValue) else [value]
        if not all(valid_value(elem.VR, v) for v in values) or (
            elem.keyword == "PatientSex" and str(value) not in _SEXES
        ):
            fixed.append(f"{elem.keyword} {str(value)!r}")
            tags.append((elem.tag, elem.VR))
    for tag, vr in tags:  # new elements: a shallow copy of `ds` keeps the source's untouched
        ds[tag] = DataElement(tag, vr, "")
    return fixed
