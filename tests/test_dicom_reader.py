"""Tests of cardiolora.site.dicom_reader: DICOM study folders in, short-axis CineStudy out.

Phantom series are written by the project's own writers (write_dicom_cine, write_dicom_localizers)
and then edited with pydicom to make each bad input; the real Siemens series of RVSC patient 09 is
read in place from ../shared/data (skipped when absent).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import EnhancedMRImageStorage as ENHANCED_MR_IMAGE_STORAGE
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.uid import LegacyConvertedEnhancedMRImageStorage as LEGACY_ENHANCED_MR_IMAGE_STORAGE

from cardiolora.data.cine import CineStudy
from cardiolora.dicom import (
    read_cine,
    read_short_axis_cine,
    rejection_reasons,
    scan_folder,
    select_short_axis_cine,
)
from cardiolora.dicom.mr_writer import write_dicom_cine, write_dicom_localizers
from cardiolora.errors import InputError as DicomInputError

try:  # the phantom generator is being finished elsewhere; fall back to a tiny synthetic study
    from cardiolora.data.phantom import make_subject
except ImportError:  # pragma: no cover - depends on the state of the phantom module
    make_subject = None

RVSC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rvsc_dicom" / "patient09" / "P09dicom"
#: float32 keeps ~7 significant digits: the round trip adds at most 4 float32 steps of the maximum
#: to the writer's documented rescale error (slope / 2).
F32_STEPS = 4 * float(np.finfo(np.float32).eps)


# --------------------------------------------------------------------------------------------
# studies and folders
# --------------------------------------------------------------------------------------------


def _synthetic(seed: int, n_phases: int) -> CineStudy:
    """A small oblique cine with bright discs (used only when the phantom module is missing)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q[:, 2] = np.cross(q[:, 0], q[:, 1])
    spacing = (8.0, 1.4, 1.4)
    affine = np.eye(4)
    affine[:3, :3] = q * np.array(spacing[::-1])
    affine[:3, 3] = rng.uniform(-100, 100, 3)
    yy, xx = np.mgrid[0:64, 0:64]
    image = rng.uniform(0, 30, (n_phases, 6, 64, 64)).astype(np.float32)
    for t in range(n_phases):
        for z in range(6):
            image[t, z] += 200.0 * (np.hypot(yy - 32, xx - 30) < 10 - t + z)
    return CineStudy(
        subject_id=f"synthetic-{seed:03d}",
        image=image,
        label=None,
        spacing_zyx=spacing,
        affine_lps=affine,
        trigger_times_ms=np.arange(n_phases) * 35.0,
        ed_phase=0,
        es_phase=min(1, n_phases - 1),
        vendor="siemens",
        meta={"height_cm": 170.0, "weight_kg": 70.0},
    )


def make_study(profile: str, seed: int, n_phases: int, crop: tuple[int, int, int] | None = None) -> CineStudy:
    """A phantom cine from the project generator, optionally cropped to the first (Z, Y, X) voxels.

    ``profile="synthetic"`` (or a missing phantom module) gives the small synthetic study instead.

    Cropping from index 0 keeps the affine valid (voxel (0, 0, 0) does not move).
    """
    if profile == "synthetic" or make_subject is None:
        study = _synthetic(seed, n_phases)
    else:
        study = make_subject(seed, profile, n_phases=n_phases)
    if crop is None:
        return study
    z, y, x = crop
    return dataclasses.replace(study, image=np.ascontiguousarray(study.image[:, :z, :y, :x]), label=None)


def flipped(study: CineStudy) -> CineStudy:
    """The same voxels described with the slice axis reversed (third affine column = -normal)."""
    flip = np.eye(4)
    flip[2, 2], flip[2, 3] = -1.0, study.n_slices - 1
    return dataclasses.replace(study, image=study.image[:, ::-1].copy(), label=None, affine_lps=study.affine_lps @ flip)


def rescale_tol(path: Path, study: CineStudy) -> float:
    """The writer's documented intensity error bound for the series of `path`."""
    slope = float(pydicom.dcmread(path, stop_before_pixels=True).RescaleSlope)
    return slope / 2 + F32_STEPS * float(np.abs(study.image).max())


@pytest.fixture(scope="module")
def small_study() -> CineStudy:
    """3 phases x 4 slices x 40 x 48 voxels: fast to write and read."""
    return make_study("ge", 3, n_phases=3, crop=(4, 40, 48))


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory, small_study) -> Path:
    """A study folder with the SA cine (series 5), a localiser (1) and a 4CH cine (2)."""
    out = tmp_path_factory.mktemp("base") / "study"
    paths = write_dicom_cine(small_study, out, uid_seed="base")
    write_dicom_localizers(small_study, out, paths[0], uid_seed="base")
    return out


@pytest.fixture()
def folder(base_folder, tmp_path) -> Path:
    """A private copy of `base_folder` that a test may edit."""
    return Path(shutil.copytree(base_folder, tmp_path / "study"))


def edit(path: Path, change: Callable[[Dataset], None]) -> None:
    """Read `path`, apply `change` to the dataset and write it back."""
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=True)


def to_enhanced_mr(paths: list[Path], out: Path, seed: int = 0) -> Path:
    """Convert a classic phantom series into ONE Enhanced MR Image Storage file (frames shuffled).

    Geometry and rescale go to the functional groups (shared: PixelMeasures, PlaneOrientation,
    PixelValueTransformation; per frame: PlanePosition, CardiacSynchronization with
    NominalCardiacTriggerDelayTime, FrameContent with TemporalPositionIndex). The frames are
    stored in a random order so that the reader must sort them.
    """
    dss = [pydicom.dcmread(p) for p in paths]
    order = np.random.default_rng(seed).permutation(len(dss))
    first = dss[0]
    ds = Dataset()
    for keyword in (
        "SpecificCharacterSet", "PatientName", "PatientID", "PatientSex", "PatientSize", "PatientWeight",
        "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
        "FrameOfReferenceUID", "PositionReferenceIndicator", "Manufacturer", "ManufacturerModelName",
        "MagneticFieldStrength", "Modality", "SeriesNumber", "SeriesDescription", "ProtocolName",
        "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored",
        "HighBit", "PixelRepresentation",
    ):  # fmt: skip
        if keyword in first:
            setattr(ds, keyword, first[keyword].value)
    ds.SOPClassUID = ENHANCED_MR_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.InstanceNumber = "1"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.NumberOfFrames = str(len(dss))
    measures = Dataset()
    measures.PixelSpacing = first.PixelSpacing
    measures.SliceThickness = first.SliceThickness
    plane = Dataset()
    plane.ImageOrientationPatient = first.ImageOrientationPatient
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = (
        first.RescaleSlope,
        first.RescaleIntercept,
        "US",
    )
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [plane]
    shared.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]
    items = []
    for i in order:
        src = dss[i]
        position, cardiac, content, item = Dataset(), Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = src.ImagePositionPatient
        cardiac.NominalCardiacTriggerDelayTime = src.TriggerTime
        content.TemporalPositionIndex = int(src.TemporalPositionIdentifier)
        content.StackID = "1"
        content.InStackPositionNumber = int(src.AcquisitionNumber)
        item.PlanePositionSequence = [position]
        item.CardiacSynchronizationSequence = [cardiac]
        item.FrameContentSequence = [content]
        items.append(item)
    ds.PerFrameFunctionalGroupsSequence = items
    ds.PixelData = b"".join(dss[i].PixelData for i in order)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ENHANCED_MR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out


def to_legacy_enhanced(paths: list[Path], out: Path) -> Path:
    """Convert a classic series into one Legacy Converted Enhanced MR file with highdicom."""
    dss = [pydicom.dcmread(p) for p in paths]
    for ds in dss:
        ds.PatientName = f"{ds.PatientName}^"  # highdicom warns about one-component names
    image = hd.legacy.LegacyConvertedEnhancedMRImage(
        dss,
        series_instance_uid=generate_uid(),
        series_number=9,
        sop_instance_uid=generate_uid(),
        instance_number=1,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save_as(out)
    return out


# --------------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------------

ROUND_TRIPS = [
    # id,          profile,     seed, phases, flip
    ("reference", "reference", 0, 3, False),
    ("ge", "ge", 1, 2, False),
    ("philips", "philips", 2, 3, False),
    ("siemens", "siemens", 3, 4, False),
    ("siemens-flipped", "siemens", 4, 2, True),
    ("synthetic-fallback", "synthetic", 5, 3, False),
]


@pytest.mark.parametrize(
    ("profile", "seed", "n_phases", "flip"), [r[1:] for r in ROUND_TRIPS], ids=[r[0] for r in ROUND_TRIPS]
)
def test_phantom_round_trip(tmp_path, profile, seed, n_phases, flip):
    """Phantom -> write_dicom_cine -> read_short_axis_cine gives the same cine (flip documented)."""
    original = make_study(profile, seed, n_phases)
    written = flipped(original) if flip else original
    paths = write_dicom_cine(written, tmp_path, uid_seed=profile)
    study = read_short_axis_cine(tmp_path)
    # Slices are read in increasing order along row x column: the phantom's own order. A series
    # written with the slice axis reversed is read back reversed, image and affine together.
    assert study.image.shape == original.image.shape
    assert study.image.dtype == np.float32
    np.testing.assert_allclose(study.image, original.image, rtol=0, atol=rescale_tol(paths[0], original))
    np.testing.assert_allclose(study.affine_lps, original.affine_lps, rtol=0, atol=1e-4)
    np.testing.assert_allclose(study.spacing_zyx, original.spacing_zyx, rtol=0, atol=1e-4)
    np.testing.assert_allclose(study.trigger_times_ms, original.trigger_times_ms, rtol=0, atol=1e-4)
    assert study.label is None and study.ed_phase == 0 and study.es_phase == 0
    assert study.meta["ed_es_known"] is False
    header = pydicom.dcmread(paths[0], stop_before_pixels=True)
    assert study.vendor == header.Manufacturer
    assert study.subject_id == header.PatientID == study.meta["patient_id"]
    assert study.meta["study_instance_uid"] == header.StudyInstanceUID
    assert study.meta["series_instance_uid"] == header.SeriesInstanceUID
    assert study.meta["frame_of_reference_uid"] == header.FrameOfReferenceUID
    assert study.meta["height_cm"] == pytest.approx(original.meta["height_cm"], abs=0.01)
    assert study.meta["weight_kg"] == pytest.approx(original.meta["weight_kg"], abs=0.001)
    assert study.meta["phase_order"] == "TriggerTime"
    t, z = n_phases - 1, 1
    z_file = original.n_slices - 1 - z if flip else z
    assert Path(study.meta["source_files"][t][z]).name == f"IM_{z_file:03d}_{t:03d}.dcm"
    assert study.meta["source_frame_numbers"][t][z] == 1
    assert study.meta["problems"] == [] and study.meta["duplicates_dropped"] == []


def test_flip_keeps_every_voxel_in_place(tmp_path, small_study):
    """Reading a reversed stack maps voxel (x, y, z) to the same LPS point as written voxel Z-1-z."""
    written = flipped(small_study)
    write_dicom_cine(written, tmp_path, uid_seed="flip")
    study = read_short_axis_cine(tmp_path)
    z_last = small_study.n_slices - 1
    for z in range(small_study.n_slices):
        np.testing.assert_allclose(
            study.affine_lps @ [3.0, 5.0, z, 1.0], written.affine_lps @ [3.0, 5.0, z_last - z, 1.0], atol=1e-4
        )
    np.testing.assert_allclose(study.image, written.image[:, ::-1], atol=0.5)


# --------------------------------------------------------------------------------------------
# scanning and selection
# --------------------------------------------------------------------------------------------


def test_scan_describes_every_series(base_folder, small_study):
    scan = scan_folder(base_folder)
    assert scan.problems == [] and scan.skipped == []
    by_number = {s.series_number: s for s in scan.series}
    assert sorted(by_number) == [1, 2, 5]
    sa, lax, loc = by_number[5], by_number[2], by_number[1]
    assert (sa.n_positions, sa.phases_per_position) == (
        small_study.n_slices,
        (small_study.n_phases,) * small_study.n_slices,
    )
    assert (sa.rows, sa.columns) == small_study.image.shape[2:]
    assert sa.pixel_spacing == pytest.approx(small_study.spacing_zyx[1:])
    assert sa.modality == "MR" and sa.sop_class_uid == "1.2.840.10008.5.1.4.1.1.4" and not sa.is_enhanced_mr
    assert sa.orientation_consistent and sa.issues == ()
    assert np.diff(sa.slice_positions_mm) == pytest.approx([small_study.spacing_zyx[0]] * (small_study.n_slices - 1))
    assert (lax.n_positions, lax.n_phases, lax.description) == (1, 3, "4CH cine")
    assert loc.is_localizer and rejection_reasons(sa) == []
    assert select_short_axis_cine(scan.series).series is sa  # a plain list of series works too
    assert "1 slice position (need >= 2)" in rejection_reasons(lax)


SELECTIONS = [
    # id,              series argument
    ("automatic", None),
    ("number-text", "5"),
    ("number-int", 5),
    ("description-any-case", "sa CINE"),
    ("series-uid", "uid"),
]


@pytest.mark.parametrize("name", [s[1] for s in SELECTIONS], ids=[s[0] for s in SELECTIONS])
def test_select_picks_short_axis(base_folder, name):
    scan = scan_folder(base_folder)
    sa = next(s for s in scan.series if s.series_number == 5)
    chosen = select_short_axis_cine(scan, sa.series_uid if name == "uid" else name).series
    assert chosen is sa


NAMED_BAD = [
    # id,             series argument, message part
    ("lax-by-name", "4CH cine", "series 2 '4CH cine' is not a short-axis cine: 1 slice position (need >= 2)"),
    ("lax-by-number", 2, "1 slice position (need >= 2)"),
    ("localizer", "localizer", "a localizer (ImageType LOCALIZER)"),
    ("unknown", "T1 map", "matches no SeriesInstanceUID, SeriesNumber or SeriesDescription"),
]


@pytest.mark.parametrize(("name", "message"), [c[1:] for c in NAMED_BAD], ids=[c[0] for c in NAMED_BAD])
def test_select_named_series_that_is_not_short_axis(base_folder, name, message):
    with pytest.raises(DicomInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        select_short_axis_cine(scan_folder(base_folder), name)


def test_select_without_short_axis_lists_every_series(folder):
    for path in folder.glob("IM_*.dcm"):
        path.unlink()
    with pytest.raises(DicomInputError) as info:
        read_short_axis_cine(folder)
    text = str(info.value)
    assert "no short-axis cine series found among 2 series" in text
    assert "series 2 '4CH cine': 1 slice position (need >= 2)" in text
    assert "series 1 'localizer': a localizer (ImageType LOCALIZER)" in text


def test_select_prefers_description_hint(tmp_path, small_study):
    """Two SA-like stacks: the one called 'sa cine' wins over a bigger unnamed one."""
    n_phases = 2 * small_study.n_phases
    bigger = dataclasses.replace(
        small_study,
        image=np.concatenate([small_study.image] * 2),
        trigger_times_ms=np.arange(n_phases) * 30.0,
    )
    write_dicom_cine(
        bigger, tmp_path, series_number=7, series_description="MOLLI 5(3)3", file_prefix="T1", uid_seed="a"
    )
    write_dicom_cine(small_study, tmp_path, series_number=8, series_description="sa cine", uid_seed="a")
    assert select_short_axis_cine(scan_folder(tmp_path)).series.series_number == 8


def test_select_ambiguous_name(tmp_path, small_study):
    for number in (7, 8):
        write_dicom_cine(small_study, tmp_path, series_number=number, file_prefix=f"S{number}", uid_seed="amb")
    scan = scan_folder(tmp_path)
    with pytest.raises(DicomInputError, match=r"`series` 'sa cine' names 2 series: series 7 'SA cine'"):
        select_short_axis_cine(scan, "sa cine")
    assert select_short_axis_cine(scan).series.series_number == 8  # equal rank: the later (repeated) series


def _layout_flat(src: Path, dst: Path, rng: np.random.Generator) -> None:
    shutil.copytree(src, dst)


def _layout_nested(src: Path, dst: Path, rng: np.random.Generator) -> None:
    for i, path in enumerate(sorted(src.iterdir())):
        sub = dst.joinpath(*[f"d{rng.integers(3)}" for _ in range(1 + i % 3)])
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, sub / path.name)


def _layout_renamed(src: Path, dst: Path, rng: np.random.Generator) -> None:
    dst.mkdir()
    for path in sorted(src.iterdir()):
        shutil.copy(path, dst / f"{rng.integers(1 << 40):010x}")  # no extension, random names


def _layout_shuffled(src: Path, dst: Path, rng: np.random.Generator) -> None:
    dst.mkdir()
    paths = sorted(src.iterdir())
    for path, k in zip(paths, rng.permutation(len(paths)), strict=True):
        shutil.copy(path, dst / f"IM_{k:04d}.dcm")  # names in an order unrelated to the content


LAYOUTS = [
    ("nested", _layout_nested),
    ("renamed-no-extension", _layout_renamed),
    ("shuffled-names", _layout_shuffled),
]


@pytest.mark.parametrize("layout", [c[1] for c in LAYOUTS], ids=[c[0] for c in LAYOUTS])
def test_file_names_and_nesting_do_not_matter(base_folder, tmp_path, layout):
    reference = read_short_axis_cine(base_folder)
    layout(base_folder, tmp_path / "study", np.random.default_rng(0))
    study = read_short_axis_cine(tmp_path / "study")
    np.testing.assert_array_equal(study.image, reference.image)
    np.testing.assert_array_equal(study.affine_lps, reference.affine_lps)
    np.testing.assert_array_equal(study.trigger_times_ms, reference.trigger_times_ms)
    assert study.meta["source_sop_instance_uids"] == reference.meta["source_sop_instance_uids"]


# --------------------------------------------------------------------------------------------
# multi-frame (Enhanced MR, Legacy Converted Enhanced MR)
# --------------------------------------------------------------------------------------------

MULTIFRAME = [
    # id,                   converter,         SOP class,                       is_enhanced_mr
    ("enhanced-mr-pydicom", to_enhanced_mr, ENHANCED_MR_IMAGE_STORAGE, True),
    ("legacy-converted-highdicom", to_legacy_enhanced, LEGACY_ENHANCED_MR_IMAGE_STORAGE, False),
]


@pytest.mark.parametrize(
    ("convert", "sop_class", "enhanced"), [c[1:] for c in MULTIFRAME], ids=[c[0] for c in MULTIFRAME]
)
def test_multiframe_round_trip(tmp_path, small_study, convert, sop_class, enhanced):
    paths = write_dicom_cine(small_study, tmp_path / "classic", uid_seed="mf")
    classic = read_cine(paths)
    out = convert(paths, tmp_path / "multiframe" / "sub" / "enhanced")
    scan = scan_folder(tmp_path / "multiframe")
    [info] = scan.series
    assert (info.sop_class_uid, info.is_enhanced_mr, info.multiframe) == (sop_class, enhanced, True)
    assert (info.n_positions, info.n_phases) == (small_study.n_slices, small_study.n_phases)
    study = read_short_axis_cine(tmp_path / "multiframe")
    np.testing.assert_array_equal(study.image, classic.image)
    np.testing.assert_allclose(study.affine_lps, small_study.affine_lps, rtol=0, atol=1e-4)
    np.testing.assert_allclose(study.trigger_times_ms, small_study.trigger_times_ms, rtol=0, atol=1e-4)
    assert study.meta["phase_order"] == "TriggerTime"
    assert {p for row in study.meta["source_files"] for p in row} == {str(out)}
    numbers = [n for row in study.meta["source_frame_numbers"] for n in row]
    assert sorted(numbers) == list(range(1, len(paths) + 1))


def test_multiframe_frame_without_position(tmp_path, small_study):
    paths = write_dicom_cine(small_study, tmp_path / "classic", uid_seed="mf")
    out = to_enhanced_mr(paths, tmp_path / "mf" / "enhanced.dcm")
    edit(
        out,
        lambda ds: delattr(ds.PerFrameFunctionalGroupsSequence[2].PlanePositionSequence[0], "ImagePositionPatient"),
    )
    with pytest.raises(DicomInputError, match=r"enhanced\.dcm \(frame 3\) lacks ImagePositionPatient"):
        read_cine([out])


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


def _delete(keyword: str, name: str = "IM_001_001.dcm") -> Callable[[Path], None]:
    return lambda folder: edit(folder / name, lambda ds: delattr(ds, keyword))


def _set(keyword: str, value: object, name: str = "IM_002_001.dcm") -> Callable[[Path], None]:
    return lambda folder: edit(folder / name, lambda ds: setattr(ds, keyword, value))


def _truncate(name: str, keep: float) -> Callable[[Path], None]:
    def run(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: int(len(data) * keep)])

    return run


def _keep_first_phase(folder: Path) -> None:
    for path in folder.glob("IM_*.dcm"):
        if not path.stem.endswith("_000"):
            path.unlink()


def _remove(*names: str) -> Callable[[Path], None]:
    def run(folder: Path) -> None:
        for name in names:
            for path in folder.glob(name):
                path.unlink()

    return run


def _tilt(folder: Path) -> None:
    def change(ds: Dataset) -> None:
        o = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
        angle = np.deg2rad(15.0)
        row = o[:3]
        col = np.cos(angle) * o[3:] + np.sin(angle) * np.cross(o[:3], o[3:])
        ds.ImageOrientationPatient = [f"{v:.10f}" for v in (*row, *col)]

    edit(folder / "IM_001_002.dcm", change)


def _copy_with_new_uid(change_pixels: bool) -> Callable[[Path], None]:
    def run(folder: Path) -> None:
        ds = pydicom.dcmread(folder / "IM_002_002.dcm")
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        if change_pixels:
            pixels = ds.pixel_array.copy()
            pixels[0, 0] += 1
            ds.PixelData = pixels.tobytes()
        ds.save_as(folder / "extra" / "again", enforce_file_format=True)

    return lambda folder: ((folder / "extra").mkdir(), run(folder))[1]


# Each case: id, how to spoil the folder, what the DicomInputError must say (all parts).
BAD_INPUTS = [
    ("missing-position", _delete("ImagePositionPatient"), ["IM_001_001.dcm lacks ImagePositionPatient"]),
    (
        "missing-orientation",
        _delete("ImageOrientationPatient"),
        ["IM_001_001.dcm lacks ImageOrientationPatient"],
    ),
    ("missing-pixel-spacing", _delete("PixelSpacing"), ["IM_001_001.dcm lacks PixelSpacing"]),
    ("truncated-pixels", _truncate("IM_000_001.dcm", 0.7), ["IM_000_001.dcm: PixelData holds", "truncated"]),
    (
        "truncated-header",
        _truncate("IM_003_002.dcm", 0.05),
        ["inconsistent number of phases", "IM_003_002.dcm: DICOM header lacks"],
    ),
    (
        "pixel-spacing-differs",
        _set("PixelSpacing", ["1.1", "1.1"]),
        ["PixelSpacing differs", "IM_002_001.dcm (1.1, 1.1)"],
    ),
    ("rows-differ", _set("Rows", 39), ["Rows x Columns differ", "IM_002_001.dcm (39x48)"]),
    (
        "single-phase",
        _keep_first_phase,
        ["series 5 'SA cine': ", "1 phase per slice position (need >= 2 for a cine)"],
    ),
    (
        "phase-missing-at-one-slice",
        _remove("IM_002_001.dcm"),
        ["inconsistent number of phases across slice positions", "2 at ", "mm (IM_002_000.dcm)"],
    ),
    ("slice-missing", _remove("IM_002_*.dcm"), ["not evenly spaced (a slice missing?)"]),
    (
        "tilted-plane",
        _tilt,
        ["series 5 'SA cine': ImageOrientationPatient is not parallel", "IM_001_002.dcm (15.0 deg)"],
    ),
    (
        "two-different-images-same-phase",
        _copy_with_new_uid(True),
        ["two different images at the same slice position", "again and", "IM_002_002.dcm"],
    ),
]


@pytest.mark.parametrize(("spoil", "parts"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_raises_naming_file_or_series(folder, spoil, parts):
    spoil(folder)
    with pytest.raises(DicomInputError) as info:
        read_short_axis_cine(folder)
    assert isinstance(info.value, ValueError)
    for part in parts:
        assert part in str(info.value)


# Bad files read directly with read_cine (the series was chosen, or files were named).
READ_CINE_BAD = [
    ("missing-position", _delete("ImagePositionPatient"), "IM_001_001.dcm lacks ImagePositionPatient"),
    ("tilted-plane", _tilt, "IM_001_002.dcm (15.0 deg)"),
    ("single-phase", _keep_first_phase, "1 phase per slice position (need >= 2 for a cine)"),
]


@pytest.mark.parametrize(("spoil", "part"), [c[1:] for c in READ_CINE_BAD], ids=[c[0] for c in READ_CINE_BAD])
def test_read_cine_on_files_raises(folder, spoil, part):
    spoil(folder)
    with pytest.raises(DicomInputError) as info:
        read_cine(sorted(folder.glob("IM_*.dcm")))
    assert part in str(info.value)


def test_memory_limit_raises_before_reading(folder, small_study):
    info = select_short_axis_cine(scan_folder(folder)).series
    for path in folder.glob("IM_*.dcm"):  # pixels unreadable: the limit must fire first
        path.write_bytes(path.read_bytes()[:-100])
    need = small_study.image.size * 4
    with pytest.raises(
        DicomInputError, match=rf"series 5 'SA cine' needs {need} bytes .* more than `max_bytes` = {need - 1}"
    ):
        read_cine(info, max_bytes=need - 1)


ARGUMENT_ERRORS = [
    # id, call, message part
    (
        "max-bytes-zero",
        lambda f: read_cine(sorted(f.glob("IM_*")), max_bytes=0),
        "`max_bytes` must be a positive integer",
    ),
    ("folder-to-read-cine", lambda f: read_cine(f), "is a folder"),
    ("two-series", lambda f: read_cine(sorted(f.iterdir())), "the files hold 3 series, expected one"),
    ("no-such-folder", lambda f: scan_folder(f / "absent"), "no such file or folder"),
    ("empty-file-list", lambda f: read_cine([]), "empty list of files"),
]


@pytest.mark.parametrize(("call", "part"), [c[1:] for c in ARGUMENT_ERRORS], ids=[c[0] for c in ARGUMENT_ERRORS])
def test_argument_errors(base_folder, call, part):
    with pytest.raises(DicomInputError, match=part.replace("`", ".")):
        call(base_folder)


def _text_file(folder: Path) -> None:
    (folder / "notes.dcm").write_text("not an image\n")


def _dicomdir(folder: Path) -> None:
    ds = Dataset()
    ds.FileSetID = "STUDY"
    ds.DirectoryRecordSequence = []
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(folder / "DICOMDIR", enforce_file_format=True)


def _multiframe_without_groups(folder: Path) -> None:
    ds = pydicom.dcmread(folder / "IM_000_000.dcm")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.NumberOfFrames = "2"
    ds.save_as(folder / "odd", enforce_file_format=True)


def _report_without_pixels(folder: Path) -> None:
    ref = pydicom.dcmread(folder / "IM_000_000.dcm", stop_before_pixels=True)
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"  # Enhanced SR
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = ref.StudyInstanceUID, generate_uid(), "SR"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(folder / "report", enforce_file_format=True)


def _copy_same_uid(folder: Path) -> None:
    (folder / "z").mkdir()
    shutil.copy(folder / "IM_000_000.dcm", folder / "z" / "copy")


# Tolerated oddities: the cine is read as if they were absent and they are reported.
TOLERATED = [
    # id, spoil, meta key, text in that list
    ("text-file-named-dcm", _text_file, "problems", "notes.dcm: not a DICOM file"),
    ("dicomdir", _dicomdir, "skipped", "DICOMDIR: DICOMDIR (a media directory"),
    ("same-file-twice", _copy_same_uid, "problems", "copy: duplicate SOPInstanceUID"),
    (
        "multiframe-without-groups",
        _multiframe_without_groups,
        "problems",
        "odd: is a multi-frame file (2 frames)",
    ),
    ("report-without-pixels", _report_without_pixels, "skipped", "report: not an image (SOP class"),
    (
        "same-image-new-uid",
        _copy_with_new_uid(False),
        "duplicates_dropped",
        "again (same position, phase and pixels as",
    ),
]


@pytest.mark.parametrize(("spoil", "key", "part"), [c[1:] for c in TOLERATED], ids=[c[0] for c in TOLERATED])
def test_tolerated_oddities_are_reported(base_folder, folder, spoil, key, part):
    reference = read_short_axis_cine(base_folder)
    spoil(folder)
    study = read_short_axis_cine(folder)
    np.testing.assert_array_equal(study.image, reference.image)
    assert any(part in entry for entry in study.meta[key]), study.meta[key]


def test_only_non_dicom_files(tmp_path):
    (tmp_path / "a.dcm").write_text("hello")
    (tmp_path / "b").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    scan = scan_folder(tmp_path)
    assert scan.series == [] and len(scan.problems) == 2
    with pytest.raises(
        DicomInputError, match=r"no DICOM image series found in .* \(2 files\).*a\.dcm: not a DICOM file"
    ):
        select_short_axis_cine(scan)


# --------------------------------------------------------------------------------------------
# the real Siemens series of RVSC patient 09
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rvsc() -> Path:
    if not RVSC.exists():
        pytest.skip(f"real data not available: {RVSC} does not exist (it is never shipped with the project)")
    return RVSC


def test_rvsc_scan(rvsc):
    """24 files, one series: 3 slice positions 8.4 mm apart with 2, 2 and 20 phases."""
    scan = scan_folder(rvsc)
    assert scan.n_files == 24 and scan.problems == [] and scan.skipped == []
    [info] = scan.series
    assert (info.series_number, info.description, info.modality) == (23, "PROT VD FEVD JC2", "MR")
    assert (info.rows, info.columns) == (256, 216)
    assert info.pixel_spacing == pytest.approx((0.70140280561122, 0.70140280561122), abs=1e-9)
    assert info.orientation_consistent and info.phase_order == "TriggerTime"
    # Positions along row x column, ascending: the last files (P09-0022/23) come first.
    assert info.slice_positions_mm == pytest.approx((-39.2514, -30.8514, -22.4514), abs=1e-3)
    assert np.diff(info.slice_positions_mm) == pytest.approx([8.4, 8.4], abs=1e-4)
    assert info.phases_per_position == (2, 2, 20)
    for z_pos in info.slice_positions_mm:  # trigger times rise with InstanceNumber at each position
        frames = sorted(
            (
                f
                for f in info.frames
                if abs(np.dot(f.position, np.cross(f.orientation[:3], f.orientation[3:])) - z_pos) < 0.1
            ),
            key=lambda f: f.instance_number,
        )
        assert np.all(np.diff([f.trigger_time for f in frames]) > 0)
    assert select_short_axis_cine(scan).series is info  # it qualifies: >= 2 positions, >= 2 phases each


def test_rvsc_folder_with_contour_files(rvsc):
    """The patient folder also holds contour text files: reported, and named after the read error."""
    scan = scan_folder(rvsc.parent)
    assert len(scan.series) == 1 and scan.series[0].n_positions == 3
    assert scan.problems and all("not a DICOM file" in p.reason and p.path.parent != rvsc for p in scan.problems)
    with pytest.raises(DicomInputError, match=r"inconsistent number of phases .* left out: .*not a DICOM file"):
        read_short_axis_cine(rvsc.parent)


def test_rvsc_whole_series_has_inconsistent_phases(rvsc):
    with pytest.raises(DicomInputError) as info:
        read_short_axis_cine(rvsc)
    text = str(info.value)
    assert "series 23 'PROT VD FEVD JC2' cannot be read" in text
    for part in (
        "2 at -39.25 mm (P09-0022.dcm)",
        "2 at -30.85 mm (P09-0020.dcm)",
        "20 at -22.45 mm (P09-0000.dcm)",
    ):
        assert part in text


RVSC_SUBSETS = [
    # id, files, slice 0 file, mean trigger times, spread of phase 1 across slices
    ("two-slices", ("0000", "0001", "0020", "0021"), "P09-0020.dcm", (0.0, 48.75), 0.0),
    (
        "three-slices",
        ("0000", "0001", "0020", "0021", "0022", "0023"),
        "P09-0022.dcm",
        (0.0, (322 + 2 * 48.75) / 3),
        322 - 48.75,
    ),
]


@pytest.mark.parametrize(
    ("numbers", "first", "times", "spread"), [c[1:] for c in RVSC_SUBSETS], ids=[c[0] for c in RVSC_SUBSETS]
)
def test_rvsc_consistent_subset(rvsc, numbers, first, times, spread):
    files = [rvsc / f"P09-{n}.dcm" for n in numbers]
    study = read_cine(files)
    n_slices = len(files) // 2
    assert study.image.shape == (2, n_slices, 256, 216)
    assert study.spacing_zyx == pytest.approx((8.4, 0.70140280561122, 0.70140280561122), abs=1e-4)
    assert study.slice_thickness_mm == 7.0
    assert Path(study.meta["source_files"][0][0]).name == first
    np.testing.assert_allclose(study.trigger_times_ms, times, atol=1e-6)
    assert study.meta["trigger_time_spread_ms"] == pytest.approx(spread)
    assert (study.vendor, study.meta["height_cm"], study.meta["weight_kg"]) == ("SIEMENS", 175.0, 62.0)
    for t in range(2):
        for z in range(n_slices):
            ds = pydicom.dcmread(study.meta["source_files"][t][z])
            np.testing.assert_allclose(
                study.affine_lps @ [0, 0, z, 1], [*map(float, ds.ImagePositionPatient), 1], atol=1e-4
            )
            np.testing.assert_array_equal(study.image[t, z], ds.pixel_array.astype(np.float32))  # no rescale tags
    # Pixel (row 10, column 20) of slice 1 lies where DICOM's geometry puts it.
    ds = pydicom.dcmread(study.meta["source_files"][0][1])
    o = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
    expected = (
        np.asarray(ds.ImagePositionPatient, dtype=np.float64)
        + 20 * 0.70140280561122 * o[:3]
        + 10 * 0.70140280561122 * o[3:]
    )
    np.testing.assert_allclose((study.affine_lps @ [20, 10, 1, 1])[:3], expected, atol=1e-4)
