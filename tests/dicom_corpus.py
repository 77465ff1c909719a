"""A corpus of real-world DICOM variants, built at test time from a clean short-axis cine folder.

Every ``build_<name>(src_folder, out_folder) -> Path`` copies the DICOM files of `src_folder` (one
clean cine series: the real RVSC patient 09 folder or a phantom written by the project's MR
writer) into `out_folder`, changes them the way a scanner, a PACS export, a viewer or an
anonymiser does, and returns the folder to read. Nothing is written outside `out_folder`, and no
real data ever goes into the repository: the corpus exists only in test tmp folders.

Builders whose spoiled files a test must name (truncations, missing attributes, re-acquired
positions) choose them with a public helper (:func:`truncation_targets`,
:func:`geometry_targets`, :func:`reacquired_index` ...) that the test calls on the same source, so
the choice is made in one place.
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.config import disable_value_validation
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

__all__ = [
    "LEADING_ZERO_ROOT",
    "baseline_slope",
    "build_anonymised",
    "build_derived_copies",
    "build_dicomdir",
    "build_duplicate_phases",
    "build_enhanced_philips",
    "build_jpeg2000_lossless",
    "build_jpeg_baseline",
    "build_jpeg_lossless",
    "build_jpegls_lossless",
    "build_leading_zero_uids",
    "build_legacy_converted",
    "build_localizers",
    "build_missing_geometry",
    "build_missing_middle_position",
    "build_missing_one_file",
    "build_nested",
    "build_no_slice_location",
    "build_no_trigger_phase_major",
    "build_no_trigger_slice_major",
    "build_non_dicom_files",
    "build_osirix_empty_groups",
    "build_osirix_one_empty_item",
    "build_per_file_frame_of_reference",
    "build_reacquired_position",
    "build_rle",
    "build_same_description_per_position",
    "build_series_per_position",
    "build_shuffled_names",
    "build_truncated_headers",
    "build_truncated_headers_after_uids",
    "build_truncated_headers_one_position",
    "build_truncated_pixels",
    "build_two_patients",
    "build_two_studies",
    "copy_source",
    "dicom_files",
    "geometry_targets",
    "missing_file_target",
    "non_dicom_names",
    "reacquired_index",
    "slice_groups",
    "slice_positions_mm",
    "truncation_targets",
]

#: UID root of :func:`build_leading_zero_uids`: the component ``0897`` has a leading zero.
LEADING_ZERO_ROOT = "1.2.826.0.1.3680043.99.0897"


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly or deeper under `folder` (files with a readable header), sorted."""
    found = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        try:
            pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - anything unreadable is not a source file
            continue
        found.append(path)
    return found


def copy_source(src_folder: Path, out_folder: Path) -> list[Path]:
    """Copy the DICOM files of `src_folder` flat into `out_folder` (names kept); the new paths."""
    out_folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for path in dicom_files(src_folder):
        target = out_folder / path.name
        shutil.copyfile(path, target)
        paths.append(target)
    return paths


def _save(ds: Dataset, path: Path) -> None:
    """Write `ds` to `path` as a Part 10 file, without value validation (corpus values may be odd)."""
    with disable_value_validation():
        ds.save_as(path, enforce_file_format=True)


def _edit(path: Path, change: Callable[[Dataset], None]) -> None:
    """Read `path`, apply `change` and write it back (values are not validated)."""
    ds = pydicom.dcmread(path)
    with disable_value_validation():
        change(ds)
    _save(ds, path)


def _edit_all(paths: Sequence[Path], change: Callable[[Dataset], None]) -> list[Path]:
    for path in paths:
        _edit(path, change)
    return list(paths)


def _delete(*keywords: str) -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        for keyword in keywords:
            if keyword in ds:
                delattr(ds, keyword)

    return change


def _float(ds: Dataset, keyword: str, default: float = 0.0) -> float:
    value = ds.get(keyword)
    return default if value is None or value == "" else float(value)


def slice_groups(paths: Sequence[Path]) -> list[list[Path]]:
    """`paths` (one series) grouped by slice position along row x column cosine, ascending.

    Within a position the files are in time order (TriggerTime, then InstanceNumber), so
    ``groups[z][t]`` is the file of phase ``t`` at the reader's slice ``z``.
    """
    heads = {p: pydicom.dcmread(p, stop_before_pixels=True) for p in paths}
    first = heads[paths[0]]
    o = np.asarray(first.ImageOrientationPatient, dtype=np.float64)
    normal = np.cross(o[:3], o[3:])
    normal /= np.linalg.norm(normal)
    proj = sorted(
        (float(np.dot(np.asarray(h.ImagePositionPatient, dtype=np.float64), normal)), p) for p, h in heads.items()
    )
    groups: list[list[Path]] = []
    last = None
    for value, path in proj:
        if last is None or value - last > 0.1:
            groups.append([])
        groups[-1].append(path)
        last = value
    return [
        sorted(g, key=lambda p: (_float(heads[p], "TriggerTime"), _float(heads[p], "InstanceNumber"), p.name))
        for g in groups
    ]


def _fullest(groups: list[list[Path]]) -> list[Path]:
    """The position holding the most files (the first such, along the normal)."""
    return max(groups, key=len)


def _new_instance(ds: Dataset, sop_uid: str | None = None) -> None:
    """Give `ds` a new SOPInstanceUID (and the matching file meta)."""
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


def _set_encapsulated(ds: Dataset, frames: list[bytes], syntax: str) -> None:
    """Store already-compressed `frames` as encapsulated PixelData with transfer syntax `syntax`."""
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = syntax


def _png_bytes(width: int = 4, height: int = 4) -> bytes:
    """A valid grey PNG image (written by hand: no imaging package needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes(range(width)) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------------------------
# viewer and archive exports
# --------------------------------------------------------------------------------------------


def build_osirix_empty_groups(src_folder: Path, out_folder: Path) -> Path:
    """OsiriX / Horos exports: each classic file gets an empty Per-Frame Functional Groups Sequence."""

    def change(ds: Dataset) -> None:
        ds.PerFrameFunctionalGroupsSequence = []

    _edit_all(copy_source(src_folder, out_folder), change)
    return out_folder


def build_osirix_one_empty_item(src_folder: Path, out_folder: Path) -> Path:
    """A GE SIGNA HDx series exported through OsiriX: (5200,9230) holds one empty item per file."""

    def change(ds: Dataset) -> None:
        ds.PerFrameFunctionalGroupsSequence = [Dataset()]

    _edit_all(copy_source(src_folder, out_folder), change)
    return out_folder


def build_shuffled_names(src_folder: Path, out_folder: Path) -> Path:
    """PACS exports that name files by hash: random names without extension, unrelated to content."""
    rng = np.random.default_rng(7)
    out_folder.mkdir(parents=True, exist_ok=True)
    for path in dicom_files(src_folder):
        shutil.copyfile(path, out_folder / f"{int(rng.integers(1 << 62)):016X}")
    return out_folder


def build_nested(src_folder: Path, out_folder: Path) -> Path:
    """Archive / CD exports that spread one series over several folder levels (1 to 4 deep)."""
    rng = np.random.default_rng(8)
    for i, path in enumerate(dicom_files(src_folder)):
        depth = 1 + i % 4
        sub = out_folder.joinpath(*[f"{'ABC'[int(rng.integers(3))]}{level}" for level in range(depth)])
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, sub / path.name)
    return out_folder


def build_dicomdir(src_folder: Path, out_folder: Path) -> Path:
    """A CD / USB export: pydicom's FileSet writes a DICOMDIR and the files in PT*/ST*/SE* folders.

    An empty StudyID is set to ``1`` (the DICOMDIR STUDY record requires one).
    """
    from pydicom.fileset import FileSet

    fs = FileSet()
    for path in dicom_files(src_folder):
        ds = pydicom.dcmread(path)
        if not ds.get("StudyID"):  # a STUDY record needs one; media creators fill it in
            ds.StudyID = "1"
        fs.add(ds)
    out_folder.mkdir(parents=True, exist_ok=True)
    fs.write(out_folder)
    return out_folder


def build_non_dicom_files(src_folder: Path, out_folder: Path) -> Path:
    """A study folder with what users and operating systems leave beside the images.

    Adds :func:`non_dicom_names`: a text note, a PNG screenshot, a JSON sidecar, an empty file
    and a macOS AppleDouble ``._`` file.
    """
    copy_source(src_folder, out_folder)
    notes, png, sidecar, empty, apple = (out_folder / n for n in non_dicom_names())
    notes.write_text("Patient moved during slice 3.\n")
    png.write_bytes(_png_bytes())
    sidecar.write_text(json.dumps({"Modality": "MR", "SeriesDescription": "converted by dcm2niix"}))
    empty.write_bytes(b"")
    apple.write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64))
    return out_folder


def non_dicom_names() -> tuple[str, ...]:
    """The names of the files :func:`build_non_dicom_files` adds."""
    return ("notes.txt", "screenshot.png", "series.json", "EMPTY", "._IM_0001")


# --------------------------------------------------------------------------------------------
# anonymisers and UIDs
# --------------------------------------------------------------------------------------------


def build_anonymised(src_folder: Path, out_folder: Path) -> Path:
    """Anonymiser output: PatientBirthDate ``00000000``, StudyDate ``20120000``, empty name and sex."""

    def change(ds: Dataset) -> None:
        ds.PatientBirthDate = "00000000"
        ds.StudyDate = "20120000"
        ds.PatientName = ""
        ds.PatientSex = ""

    _edit_all(copy_source(src_folder, out_folder), change)
    return out_folder


def build_per_file_frame_of_reference(src_folder: Path, out_folder: Path) -> Path:
    """Scanners / converters that give every instance its own (valid) FrameOfReferenceUID."""

    def change(ds: Dataset) -> None:
        ds.FrameOfReferenceUID = generate_uid()

    _edit_all(copy_source(src_folder, out_folder), change)
    return out_folder


def build_leading_zero_uids(src_folder: Path, out_folder: Path) -> Path:
    """Old anonymisers that write UIDs with a leading-zero component (``...99.0897.<n>``, invalid).

    StudyInstanceUID, each SeriesInstanceUID and every SOPInstanceUID (and the file meta's copy)
    are rewritten under :data:`LEADING_ZERO_ROOT`.
    """
    paths = copy_source(src_folder, out_folder)
    series: dict[str, str] = {}
    for i, path in enumerate(paths):

        def change(ds: Dataset, i: int = i) -> None:
            ds.StudyInstanceUID = f"{LEADING_ZERO_ROOT}.1"
            old = str(ds.SeriesInstanceUID)
            series.setdefault(old, f"{LEADING_ZERO_ROOT}.2.{len(series) + 1}")
            ds.SeriesInstanceUID = series[old]
            _new_instance(ds, f"{LEADING_ZERO_ROOT}.3.{i + 1}")

        _edit(path, change)
    return out_folder


# --------------------------------------------------------------------------------------------
# multi-frame conversions
# --------------------------------------------------------------------------------------------


def _series_files(src_folder: Path) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {}
    for path in dicom_files(src_folder):
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)
        groups.setdefault(uid, []).append(path)
    return groups


def build_legacy_converted(src_folder: Path, out_folder: Path) -> Path:
    """A PACS / highdicom legacy conversion: one Legacy Converted Enhanced MR file per series."""
    import highdicom as hd

    out_folder.mkdir(parents=True, exist_ok=True)
    for k, paths in enumerate(_series_files(src_folder).values()):
        dss = [pydicom.dcmread(p) for p in paths]
        for ds in dss:
            if "^" not in str(ds.PatientName):
                ds.PatientName = f"{ds.PatientName}^"  # highdicom warns about one-component names
        image = hd.legacy.LegacyConvertedEnhancedMRImage(
            dss,
            series_instance_uid=generate_uid(),
            series_number=int(dss[0].SeriesNumber) + 100,
            sop_instance_uid=generate_uid(),
            instance_number=1,
        )
        image.save_as(out_folder / f"legacy_{k + 1}.dcm")
    return out_folder


_ENHANCED_TOP = (
    "SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge",
    "PatientSize", "PatientWeight", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
    "ReferringPhysicianName", "StudyDescription", "FrameOfReferenceUID", "PositionReferenceIndicator",
    "Manufacturer", "ManufacturerModelName", "MagneticFieldStrength", "Modality", "SeriesNumber",
    "SeriesDescription", "ProtocolName", "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation",
    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "AcquisitionTime", "ContentDate",
    "ContentTime",
)  # fmt: skip


def build_enhanced_philips(src_folder: Path, out_folder: Path) -> Path:
    """A Philips Enhanced MR cine: one multi-frame file per series, trigger delays only per frame.

    Frames are stored slice-major (stack position, then time) as Philips does. Per frame:
    PlanePosition, PlaneOrientation, PixelValueTransformation (when the source rescales),
    CardiacSynchronization with NominalCardiacTriggerDelayTime, FrameContent with
    TemporalPositionIndex / StackID / InStackPositionNumber. Shared: PixelMeasures. There is no
    top-level TriggerTime, ImagePositionPatient or ImageOrientationPatient.
    """
    out_folder.mkdir(parents=True, exist_ok=True)
    for k, paths in enumerate(_series_files(src_folder).values()):
        groups = slice_groups(paths)
        dss = {p: pydicom.dcmread(p) for p in paths}
        first = dss[paths[0]]
        ds = Dataset()
        for keyword in _ENHANCED_TOP:
            if keyword in first:
                setattr(ds, keyword, first[keyword].value)
        ds.SOPClassUID = EnhancedMRImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.InstanceNumber = 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
        ds.NumberOfFrames = len(paths)
        measures = Dataset()
        measures.PixelSpacing = first.PixelSpacing
        measures.SliceThickness = first.SliceThickness
        shared = Dataset()
        shared.PixelMeasuresSequence = [measures]
        ds.SharedFunctionalGroupsSequence = [shared]
        items, pixels = [], []
        for z, group in enumerate(groups):
            for t, path in enumerate(group):
                src = dss[path]
                position, orientation, cardiac, content, item = Dataset(), Dataset(), Dataset(), Dataset(), Dataset()
                position.ImagePositionPatient = src.ImagePositionPatient
                orientation.ImageOrientationPatient = src.ImageOrientationPatient
                cardiac.NominalCardiacTriggerDelayTime = src.TriggerTime
                content.TemporalPositionIndex = t + 1
                content.StackID = "1"
                content.InStackPositionNumber = z + 1
                content.FrameAcquisitionNumber = z + 1
                item.PlanePositionSequence = [position]
                item.PlaneOrientationSequence = [orientation]
                item.CardiacSynchronizationSequence = [cardiac]
                item.FrameContentSequence = [content]
                if "RescaleSlope" in src:
                    transform = Dataset()
                    transform.RescaleSlope = src.RescaleSlope
                    transform.RescaleIntercept = src.get("RescaleIntercept", "0")
                    transform.RescaleType = "US"
                    item.PixelValueTransformationSequence = [transform]
                items.append(item)
                pixels.append(src.PixelData)
        ds.PerFrameFunctionalGroupsSequence = items
        ds.PixelData = b"".join(pixels)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        _save(ds, out_folder / f"enhanced_{k + 1}.dcm")
    return out_folder


# --------------------------------------------------------------------------------------------
# other series beside the short-axis stack
# --------------------------------------------------------------------------------------------


def build_localizers(src_folder: Path, out_folder: Path) -> Path:
    """A whole examination: a localiser and a 4-chamber cine (project MR writer) beside the stack.

    The planes are cut from the volume the reader makes of the copied stack.
    """
    from cardiolora.dicom import read_short_axis_cine
    from cardiolora.dicom.mr_writer import write_dicom_localizers

    copy_source(src_folder, out_folder)
    study = read_short_axis_cine(out_folder, incomplete_positions="drop")
    write_dicom_localizers(study, out_folder, study.meta["source_files"][0][0], uid_seed="corpus")
    return out_folder


def build_derived_copies(src_folder: Path, out_folder: Path) -> Path:
    """Post-processing output stored beside the stack in the same study.

    Adds (1) a Secondary Capture RGB thumbnail (64 x 64, Modality OT, DERIVED\\SECONDARY) of the
    first frame, and (2) a single-slice DERIVED\\SECONDARY MR series: a copy of every phase of the
    position holding the most phases, with new UIDs and a higher SeriesNumber.
    """
    paths = copy_source(src_folder, out_folder)
    groups = slice_groups(paths)
    first = pydicom.dcmread(groups[0][0])
    number = int(first.SeriesNumber)

    grey = first.pixel_array.astype(np.float64)
    step = max(1, max(grey.shape) // 64)
    small = grey[::step, ::step][:64, :64]
    small = np.pad(small, ((0, 64 - small.shape[0]), (0, 64 - small.shape[1])))
    rgb = np.repeat((255 * small / max(small.max(), 1)).astype(np.uint8)[..., None], 3, axis=2)
    sc = Dataset()
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                    "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName"):  # fmt: skip
        if keyword in first:
            setattr(sc, keyword, first[keyword].value)
    sc.SOPClassUID = SecondaryCaptureImageStorage
    sc.SOPInstanceUID = generate_uid()
    sc.SeriesInstanceUID = generate_uid()
    sc.SeriesNumber = number + 900
    sc.SeriesDescription = "Thumbnail"
    sc.Modality = "OT"
    sc.ConversionType = "WSD"
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.InstanceNumber = 1
    sc.Rows, sc.Columns = 64, 64
    sc.SamplesPerPixel = 3
    sc.PhotometricInterpretation = "RGB"
    sc.PlanarConfiguration = 0
    sc.BitsAllocated = sc.BitsStored = 8
    sc.HighBit = 7
    sc.PixelRepresentation = 0
    sc.PixelData = rgb.tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sc.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sc.file_meta = meta
    _save(sc, out_folder / "THUMBNAIL.dcm")

    series_uid = generate_uid()
    for i, path in enumerate(_fullest(groups)):
        ds = pydicom.dcmread(path)
        with disable_value_validation():
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = number + 800
            ds.SeriesDescription = f"{first.get('SeriesDescription', '')} DERIVED".strip()
            ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
            _new_instance(ds)
        _save(ds, out_folder / f"DERIVED_{i:03d}.dcm")
    return out_folder


# --------------------------------------------------------------------------------------------
# one series per slice position
# --------------------------------------------------------------------------------------------


def _split_by_position(src_folder: Path, out_folder: Path, numbered: bool) -> list[list[Path]]:
    paths = copy_source(src_folder, out_folder)
    groups = slice_groups(paths)
    base = int(pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesNumber)
    for z, group in enumerate(groups):
        uid = generate_uid()

        def change(ds: Dataset, z: int = z, uid: str = uid) -> None:
            ds.SeriesInstanceUID = uid
            ds.SeriesNumber = base + 1 + z
            if numbered:
                ds.SeriesDescription = f"sax_{z + 1}"

        _edit_all(group, change)
    return groups


def build_series_per_position(src_folder: Path, out_folder: Path) -> Path:
    """Siemens / cohort exports: one series per slice position, descriptions ``sax_1``, ``sax_2`` ..."""
    _split_by_position(src_folder, out_folder, numbered=True)
    return out_folder


def build_same_description_per_position(src_folder: Path, out_folder: Path) -> Path:
    """One series per slice position, every series with the source's SeriesDescription."""
    _split_by_position(src_folder, out_folder, numbered=False)
    return out_folder


def reacquired_index(src_folder: Path) -> int:
    """The slice index (reader order) that :func:`build_reacquired_position` re-acquires."""
    return len(slice_groups(dicom_files(src_folder))) // 2


def build_reacquired_position(src_folder: Path, out_folder: Path) -> Path:
    """One series per position, and the middle position acquired again in a later series.

    The repeat (SeriesNumber above every other, ``sax_<z+1>``, later AcquisitionTime) holds the
    same frames mirrored left-right, so a test can see which acquisition was kept.
    """
    groups = _split_by_position(src_folder, out_folder, numbered=True)
    z = len(groups) // 2
    uid = generate_uid()
    number = int(pydicom.dcmread(groups[-1][0], stop_before_pixels=True).SeriesNumber) + 10
    for path in groups[z]:
        ds = pydicom.dcmread(path)
        stored = np.ascontiguousarray(ds.pixel_array[:, ::-1])
        with disable_value_validation():
            ds.SeriesInstanceUID = uid
            ds.SeriesNumber = number
            ds.AcquisitionTime = "235959"
            _new_instance(ds)
        ds.PixelData = stored.astype(ds.pixel_array.dtype).tobytes()
        _save(ds, out_folder / f"REPEAT_{path.name}")
    return out_folder


# --------------------------------------------------------------------------------------------
# missing ordering / location attributes
# --------------------------------------------------------------------------------------------


def _renumber_without_trigger(src_folder: Path, out_folder: Path, phase_major: bool) -> Path:
    groups = slice_groups(copy_source(src_folder, out_folder))
    n_z, n_t = len(groups), max(len(g) for g in groups)
    for z, group in enumerate(groups):
        for t, path in enumerate(group):
            number = t * n_z + z + 1 if phase_major else z * n_t + t + 1

            def change(ds: Dataset, number: int = number) -> None:
                ds.InstanceNumber = number
                _delete("TriggerTime", "TemporalPositionIdentifier", "NominalCardiacTriggerDelayTime")(ds)

            _edit(path, change)
    return out_folder


def build_no_trigger_slice_major(src_folder: Path, out_folder: Path) -> Path:
    """No TriggerTime / TemporalPositionIdentifier; InstanceNumber slice-major (Siemens, GE)."""
    return _renumber_without_trigger(src_folder, out_folder, phase_major=False)


def build_no_trigger_phase_major(src_folder: Path, out_folder: Path) -> Path:
    """No TriggerTime / TemporalPositionIdentifier; InstanceNumber phase-major (some Philips exports)."""
    return _renumber_without_trigger(src_folder, out_folder, phase_major=True)


def build_no_slice_location(src_folder: Path, out_folder: Path) -> Path:
    """Converters that drop the optional SliceLocation."""
    _edit_all(copy_source(src_folder, out_folder), _delete("SliceLocation"))
    return out_folder


# --------------------------------------------------------------------------------------------
# compressed transfer syntaxes
# --------------------------------------------------------------------------------------------


def _compress_all(src_folder: Path, out_folder: Path, syntax: str) -> Path:
    for path in copy_source(src_folder, out_folder):
        ds = pydicom.dcmread(path)
        ds.compress(syntax)
        _save(ds, path)
    return out_folder


def build_rle(src_folder: Path, out_folder: Path) -> Path:
    """RLE Lossless (GE and Philips archives), encoded by pydicom itself."""
    return _compress_all(src_folder, out_folder, RLELossless)


def build_jpegls_lossless(src_folder: Path, out_folder: Path) -> Path:
    """JPEG-LS Lossless (many PACS), encoded by pyjpegls through pydicom."""
    return _compress_all(src_folder, out_folder, JPEGLSLossless)


def build_jpeg2000_lossless(src_folder: Path, out_folder: Path) -> Path:
    """JPEG 2000 Lossless (many PACS), encoded by pylibjpeg-openjpeg through pydicom."""
    return _compress_all(src_folder, out_folder, JPEG2000Lossless)


def build_jpeg_lossless(src_folder: Path, out_folder: Path) -> Path:
    """JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 SV1, the DICOM default).

    Encoded with imagecodecs (libjpeg-turbo's lossless mode) at BitsStored precision.
    """
    import imagecodecs

    for path in copy_source(src_folder, out_folder):
        ds = pydicom.dcmread(path)
        stored = np.ascontiguousarray(ds.pixel_array)
        bits = int(ds.BitsStored)
        frame = imagecodecs.jpeg8_encode(stored, lossless=True, predictor=1, bitspersample=bits)
        _set_encapsulated(ds, [bytes(frame)], JPEGLosslessSV1)
        _save(ds, path)
    return out_folder


def baseline_slope(src_folder: Path) -> float:
    """The RescaleSlope :func:`build_jpeg_baseline` gives its 8-bit series (its quantisation step)."""
    lo, hi = _value_range(dicom_files(src_folder))
    return (hi - lo) / 255.0 if hi > lo else 1.0


def _value_range(paths: Sequence[Path]) -> tuple[float, float]:
    lo, hi = np.inf, -np.inf
    for path in paths:
        ds = pydicom.dcmread(path)
        values = ds.pixel_array * _float(ds, "RescaleSlope", 1.0) + _float(ds, "RescaleIntercept")
        lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
    return lo, hi


def build_jpeg_baseline(src_folder: Path, out_folder: Path) -> Path:
    """JPEG Baseline (Process 1, lossy 8 bit): teaching files and web-PACS exports.

    The intensities are requantised to 8 bits with one series-wide RescaleSlope
    (:func:`baseline_slope`) and RescaleIntercept, then JPEG-encoded at quality 95 by imagecodecs.
    """
    import imagecodecs

    paths = copy_source(src_folder, out_folder)
    lo, _ = _value_range(paths)
    slope = baseline_slope(src_folder)
    for path in paths:
        ds = pydicom.dcmread(path)
        values = ds.pixel_array * _float(ds, "RescaleSlope", 1.0) + _float(ds, "RescaleIntercept")
        stored = np.clip(np.rint((values - lo) / slope), 0, 255).astype(np.uint8)
        frame = imagecodecs.jpeg8_encode(stored, level=95)
        with disable_value_validation():
            _delete("SmallestImagePixelValue", "LargestImagePixelValue", "SmallestPixelValueInSeries",
                    "LargestPixelValueInSeries")(ds)  # fmt: skip
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
            ds.RescaleSlope = f"{slope:.10g}"[:16]
            ds.RescaleIntercept = f"{lo:.10g}"[:16]
            ds.LossyImageCompression = "01"
        _set_encapsulated(ds, [bytes(frame)], JPEGBaseline8Bit)
        _save(ds, path)
    return out_folder


# --------------------------------------------------------------------------------------------
# inputs the reader must refuse
# --------------------------------------------------------------------------------------------


def _copy_as_other_study(src_folder: Path, out_folder: Path, patient_id: str | None) -> None:
    """A second copy of the study with new Study / Series / SOP / FrameOfReference UIDs."""
    study_uid, for_uid = generate_uid(), generate_uid()
    series: dict[str, str] = {}

    def change(ds: Dataset) -> None:
        ds.StudyInstanceUID = study_uid
        ds.FrameOfReferenceUID = for_uid
        ds.SeriesInstanceUID = series.setdefault(str(ds.SeriesInstanceUID), generate_uid())
        _new_instance(ds)
        if patient_id is not None:
            ds.PatientID = patient_id
            ds.PatientName = patient_id.replace("-", "^")

    _edit_all(copy_source(src_folder, out_folder), change)


def build_two_patients(src_folder: Path, out_folder: Path) -> Path:
    """A folder holding two patients' studies (a mis-sorted export): ``first/`` and ``second/``."""
    copy_source(src_folder, out_folder / "first")
    _copy_as_other_study(src_folder, out_folder / "second", patient_id="CORPUS-OTHER")
    return out_folder


def build_two_studies(src_folder: Path, out_folder: Path) -> Path:
    """A folder holding two studies of one patient (baseline and follow-up)."""
    copy_source(src_folder, out_folder / "first")
    _copy_as_other_study(src_folder, out_folder / "second", patient_id=None)
    return out_folder


def build_duplicate_phases(src_folder: Path, out_folder: Path) -> Path:
    """A broken export: every file of a position carries that position's first InstanceNumber and
    TriggerTime (the phases cannot be told apart)."""
    for group in slice_groups(copy_source(src_folder, out_folder)):
        head = pydicom.dcmread(group[0], stop_before_pixels=True)
        number, trigger = head.InstanceNumber, head.TriggerTime

        def change(ds: Dataset, number: object = number, trigger: object = trigger) -> None:
            ds.InstanceNumber = number
            ds.TriggerTime = trigger

        _edit_all(group[1:], change)
    return out_folder


def build_missing_middle_position(src_folder: Path, out_folder: Path) -> Path:
    """An incomplete transfer: every file of slice position 1 (reader order) is missing."""
    groups = slice_groups(copy_source(src_folder, out_folder))
    for path in groups[1]:
        path.unlink()
    return out_folder


def missing_file_target(src_folder: Path) -> str:
    """The file name :func:`build_missing_one_file` removes: the middle phase of the middle position."""
    groups = slice_groups(dicom_files(src_folder))
    group = groups[len(groups) // 2]
    return group[len(group) // 2].name


def build_missing_one_file(src_folder: Path, out_folder: Path) -> Path:
    """One file (one phase at one position, :func:`missing_file_target`) missing from the copy."""
    copy_source(src_folder, out_folder)
    (out_folder / missing_file_target(src_folder)).unlink()
    return out_folder


def truncation_targets(src_folder: Path, spread: bool = False) -> list[str]:
    """The three file names a truncation builder cuts.

    Args:
        src_folder: the source folder.
        spread: ``False``: phases 1-3 of the position holding the most phases; ``True``: one file
            at each of the first three positions (phase ``k + 1`` at position ``k``, modulo its
            phase count), as an interrupted copy hits files here and there.
    """
    groups = slice_groups(dicom_files(src_folder))
    if not spread:
        return [p.name for p in _fullest(groups)[1:4]]
    return [g[(k + 1) % len(g)].name for k, g in enumerate(groups[:3])]


def _cut_headers(src_folder: Path, out_folder: Path, spread: bool) -> Path:
    copy_source(src_folder, out_folder)
    for name in truncation_targets(src_folder, spread):
        path = out_folder / name
        path.write_bytes(path.read_bytes()[: _scan_pixel_tag(path) // 2])
    return out_folder


def _scan_pixel_tag(path: Path) -> int:
    """Byte offset of the (last) PixelData tag (7FE0,0010) of `path`."""
    data = path.read_bytes()
    index = data.rfind(b"\xe0\x7f\x10\x00")
    if index < 0:
        raise ValueError(f"{path}: no PixelData tag found")
    return index


def build_truncated_pixels(src_folder: Path, out_folder: Path) -> Path:
    """Three files (:func:`truncation_targets`) cut in the middle of their pixel data (an interrupted copy)."""
    copy_source(src_folder, out_folder)
    for name in truncation_targets(src_folder):
        path = out_folder / name
        data = path.read_bytes()
        start = _scan_pixel_tag(path)
        path.write_bytes(data[: start + (len(data) - start) // 2])
    return out_folder


def build_truncated_headers(src_folder: Path, out_folder: Path) -> Path:
    """Three files at three positions (``truncation_targets(spread=True)``) cut mid-header."""
    return _cut_headers(src_folder, out_folder, spread=True)


def build_truncated_headers_one_position(src_folder: Path, out_folder: Path) -> Path:
    """Phases 1-3 of the fullest position (:func:`truncation_targets`) cut in the middle of their header."""
    return _cut_headers(src_folder, out_folder, spread=False)


def build_truncated_headers_after_uids(src_folder: Path, out_folder: Path) -> Path:
    """Three files at three positions (``truncation_targets(spread=True)``) cut just before (0028,0002).

    The UIDs survive (the files still join their series), Rows / Columns and the pixels do not.
    """
    copy_source(src_folder, out_folder)
    for name in truncation_targets(src_folder, spread=True):
        path = out_folder / name
        data = path.read_bytes()
        cut = data.find(b"\x28\x00\x02\x00", 132)  # (0028,0002) SamplesPerPixel, explicit VR little endian
        if cut < 0:
            raise ValueError(f"{path}: no (0028,0002) element found")
        path.write_bytes(data[: cut + 3])
    return out_folder


def slice_positions_mm(paths: Sequence[Path]) -> list[float]:
    """The slice positions (``ImagePositionPatient . normal``, mm) of :func:`slice_groups`, ascending."""
    positions = []
    for group in slice_groups(paths):
        ds = pydicom.dcmread(group[0], stop_before_pixels=True)
        o = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
        normal = np.cross(o[:3], o[3:])
        positions.append(
            float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=np.float64), normal / np.linalg.norm(normal)))
        )
    return positions


def geometry_targets(src_folder: Path) -> list[str]:
    """The two file names :func:`build_missing_geometry` spoils: phases 0 and 2 of the fullest position."""
    group = _fullest(slice_groups(dicom_files(src_folder)))
    return [group[0].name, group[2].name]


def build_missing_geometry(src_folder: Path, out_folder: Path) -> Path:
    """Two files (:func:`geometry_targets`) without ImagePositionPatient (a faulty de-identifier)."""
    copy_source(src_folder, out_folder)
    for name in geometry_targets(src_folder):
        _edit(out_folder / name, _delete("ImagePositionPatient"))
    return out_folder
