"""DICOM in and out, one module per stage (MONAI Deploy's operator chain as the model).

====================  ========================================================================
module                stage
====================  ========================================================================
``headers``           one file's header → its 2D frames (classic, enhanced, legacy converted)
``scan``              folder walk → studies (PatientID + StudyInstanceUID) → series
``geometry``          slice positions, phase order, duplicates and every consistency check
``stack``             one-series-per-slice cines assembled into one stack
``select``            series selection by a rules file (``series_rules.json`` the default)
``volume``            the chosen series' pixels → a ``(T, Z, Y, X)`` CineStudy
``seg``               DICOM SEG writer (one object per study) and reader
``seg_frames``        the SEG's sources as a phase x slice table; the stand-in headers
``seg_merge``         per-phase SEG frames merged into one object with a temporal dimension
``sr``                DICOM SR measurement report (TID 1500) writer and reader
``sr_codes``          the SR's coded concepts (LOINC, SNOMED CT, DCM) and units
``sr_content``        the SR's content tree
``sources``           anonymiser values that are not valid DICOM, emptied; atomic saves
``mr_writer``         the phantom MR Image Storage writer, mirroring the reader's conventions
====================  ========================================================================

Errors are :class:`cardiolora.errors.InputError` naming the file or attribute.
"""

from __future__ import annotations

from cardiolora.dicom.scan import ScanResult, SeriesInfo, StudyScan, scan_folder
from cardiolora.dicom.select import (
    DEFAULT_RULES_FILE,
    INCOMPLETE_POSITION_POLICIES,
    SelectedSeries,
    load_rules,
    rejection_reasons,
    select_short_axis_cine,
)
from cardiolora.dicom.stack import assemble_stacks
from cardiolora.dicom.volume import DEFAULT_MAX_BYTES, read_cine, read_short_axis_cine, read_study

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_RULES_FILE",
    "INCOMPLETE_POSITION_POLICIES",
    "ScanResult",
    "SelectedSeries",
    "SeriesInfo",
    "StudyScan",
    "assemble_stacks",
    "load_rules",
    "read_cine",
    "read_short_axis_cine",
    "read_study",
    "rejection_reasons",
    "scan_folder",
    "select_short_axis_cine",
]
