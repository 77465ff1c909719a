"""What is a study: DICOM files grouped by PatientID + StudyInstanceUID, NIfTI files, batches.

:func:`find_studies` turns the ``segment`` command's input into the studies to process; DICOM
input is scanned once (:func:`cardiolora.dicom.scan_folder`) and each study keeps its scan, so
nothing is read twice.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cardiolora.dicom import ScanResult, StudyScan, scan_folder
from cardiolora.errors import InputError, Problem
from cardiolora.site.nifti_io import is_nifti, nifti_study_name

__all__ = ["StudyInput", "find_studies"]


@dataclass(frozen=True)
class StudyInput:
    """One study to process.

    Attributes:
        name: output folder name (unique within a run).
        path: the DICOM folder / file or the NIfTI file.
        kind: ``"dicom"``, ``"nifti"`` or ``"other"`` (a loose file in a batch folder: skipped).
        scan: for DICOM, the study as the folder scan found it (PatientID + StudyInstanceUID);
            ``None`` when the scan found no image series there.
        problems: files the scan left out that lie in this study's folder.
        skipped: files the scan skipped on purpose (DICOMDIR, non-image instances).
        warnings: pydicom's warnings during the scan, one line per kind.
    """

    name: str
    path: Path
    kind: str
    scan: StudyScan | None = None
    problems: tuple[Problem, ...] = ()
    skipped: tuple[Problem, ...] = ()
    warnings: tuple[str, ...] = ()


def _visible(entries: Sequence[Path]) -> list[Path]:
    return sorted(p for p in entries if not p.name.startswith("."))


def _safe_name(text: str) -> str:
    """`text` as a folder name (letters, digits, ``-``, ``_``, ``.``)."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("._")
    return cleaned or "study"


def _top_folder(path: Path, root: Path) -> str:
    """The first folder below `root` on the way to `path` (``""`` for files at the top)."""
    parts = path.relative_to(root).parts if path != root else ()
    return parts[0] if len(parts) > 1 else ""


def _inside(path: Path, folder: Path) -> bool:
    return folder == path or folder in path.parents


def _dicom_studies(root: Path, scan: ScanResult) -> list[StudyInput]:
    """One :class:`StudyInput` per (PatientID, StudyInstanceUID) that the scan of `root` found.

    A study's name is the subfolder of `root` that holds all its files when that subfolder
    holds no other study, else ``<PatientID>_<end of the StudyInstanceUID>``. Files the scan
    left out go to the study whose subfolder holds them.
    """
    found = scan.studies()
    homes = []
    for study in found:
        tops = {_top_folder(p, root) for p in study.files}
        homes.append(next(iter(tops)) if len(tops) == 1 and "" not in tops else "")
    counts = {h: homes.count(h) for h in homes}
    homed = [root / h for h in homes if h and counts[h] == 1]
    out = []
    for study, home in zip(found, homes, strict=True):
        if home and counts[home] == 1:
            name, folder = home, root / home
            mine = tuple(p for p in scan.problems if _inside(p.path, folder))
            skipped = tuple(p for p in scan.skipped if _inside(p.path, folder))
        else:  # flat or interleaved: the files left out outside every study folder concern it
            name, folder = _safe_name(f"{study.patient_id or 'anonymous'}_{study.study_uid[-8:]}"), root
            mine = tuple(p for p in scan.problems if not any(_inside(p.path, h) for h in homed))
            skipped = tuple(p for p in scan.skipped if not any(_inside(p.path, h) for h in homed))
        out.append(StudyInput(name, folder, "dicom", study, mine, skipped, tuple(scan.warnings)))
    return out


def _folder_studies(folder: Path, scan: ScanResult | None = None) -> list[StudyInput]:
    """The DICOM studies of `folder` (or file); one study keeps the folder's (or file's) name."""
    scan = scan if scan is not None else scan_folder(folder)
    found = _dicom_studies(folder, scan)
    if len(found) > 1:
        return found
    name = folder.stem if folder.is_file() else folder.name
    study = found[0].scan if found else None
    return [StudyInput(name, folder, "dicom", study, tuple(scan.problems), tuple(scan.skipped), tuple(scan.warnings))]


def _unique_names(studies: list[StudyInput]) -> list[StudyInput]:
    seen: dict[str, int] = {}
    out = []
    for s in studies:
        n = seen.get(s.name, 0)
        seen[s.name] = n + 1
        out.append(s if n == 0 else dataclasses.replace(s, name=f"{s.name}_{n + 1}"))
    return out


def find_studies(path: str | os.PathLike) -> tuple[list[StudyInput], bool]:
    """The studies named by the command's input, and whether it is a batch.

    Rule: a NIfTI file is one study. DICOM input (a file or a folder, any nesting) is scanned once
    and its image files grouped into **studies by PatientID + StudyInstanceUID**: one study is
    processed under the input's name; several make a batch, each study named by the subfolder
    that holds it (else ``<PatientID>_<end of the StudyInstanceUID>``). A folder holding NIfTI
    files at its top level is a batch of those files and of its subfolders (each scanned the same
    way); other loose files there are listed as skipped.

    Args:
        path: the command's input.

    Returns:
        ``(studies, batch)``; hidden entries (``.name``) are ignored at the top level.

    Raises:
        InputError: if `path` does not exist.
    """
    root = Path(path)
    if not root.exists():
        raise InputError(f"{root}: no such file or folder.")
    if root.is_file() and is_nifti(root):
        return [StudyInput(nifti_study_name(root), root, "nifti")], False
    entries = _visible(list(root.iterdir())) if root.is_dir() else []
    niftis = [p for p in entries if p.is_file() and is_nifti(p)]
    if niftis:
        studies = [StudyInput(nifti_study_name(p), p, "nifti") for p in niftis]
        for folder in (p for p in entries if p.is_dir()):
            studies += _folder_studies(folder)
        studies += [StudyInput(p.name, p, "other") for p in entries if p.is_file() and not is_nifti(p)]
        return _unique_names(studies), True
    scan = scan_folder(root)
    found = _dicom_studies(root, scan)
    if len(found) <= 1:
        return _folder_studies(root, scan), False
    flat = any(s.path == root for s in found)  # loose files then belong to the flat studies' problems
    loose = [] if flat else [p for p in scan.problems if p.path.parent == root]
    studies = found + [StudyInput(p.path.name, p.path, "other") for p in loose]
    return _unique_names(studies), True
