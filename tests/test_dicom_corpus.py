"""The DICOM reader against a corpus of real-world variants (built by tests/dicom_corpus.py).

Each variant of a clean source study (the real RVSC patient 09 Siemens series, read with
``incomplete_positions="drop"``, and a small phantom cine written by the project's MR writer) is
either read to the same volume as the clean source (pixel-identical ``image``, same
``affine_lps`` and, where stated, ``trigger_times_ms``) or refused with a true reason that names
every offending file (or the first 3 and "(N in all)") and the attribute.

A variant that fails because of the reader is marked ``xfail(strict=True)`` with the defect: fixing
the reader makes the test pass, and the strict mark then asks for its removal.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import dicom_corpus as corpus
import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    EnhancedMRImageStorage,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    LegacyConvertedEnhancedMRImageStorage,
    RLELossless,
)

from cardiolora.data.cine import CineStudy
from cardiolora.dicom import read_short_axis_cine, scan_folder
from cardiolora.dicom.mr_writer import write_dicom_cine
from cardiolora.errors import InputError

RVSC_PATIENT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rvsc_dicom" / "patient09"
BOTH = ("rvsc", "phantom")


# --------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """A clean source study: its folder, the read policy it needs and the volume it reads to."""

    name: str
    folder: Path
    policy: str
    reference: CineStudy

    def read(self, folder: Path) -> CineStudy:
        """Read `folder` with this source's policy."""
        return read_short_axis_cine(folder, incomplete_positions=self.policy)


@pytest.fixture(scope="session")
def rvsc_source() -> Source:
    """RVSC patient 09: 24 classic Siemens files; 3 positions of 2, 2 and 20 phases (read: 20 x 1)."""
    folder = RVSC_PATIENT / "P09dicom"
    if not folder.is_dir():
        pytest.skip(f"real data not available: {folder} does not exist (it is never shipped with the project)")
    return Source("rvsc", folder, "drop", read_short_axis_cine(folder, incomplete_positions="drop"))


@pytest.fixture(scope="session")
def phantom_source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    """A phantom cine of 4 phases x 4 slices x 40 x 40 (the centre of a GE-profile subject)."""
    from cardiolora.data.phantom import make_subject

    full = make_subject(3, "ge", n_phases=4)
    z0, y0, x0 = 2, (full.image.shape[2] - 40) // 2, (full.image.shape[3] - 40) // 2
    affine = full.affine_lps.copy()
    affine[:3, 3] = (full.affine_lps @ [x0, y0, z0, 1.0])[:3]
    study = dataclasses.replace(
        full,
        image=np.ascontiguousarray(full.image[:, z0 : z0 + 4, y0 : y0 + 40, x0 : x0 + 40]),
        label=None,
        affine_lps=affine,
    )
    folder = tmp_path_factory.mktemp("phantom_source") / "study"
    write_dicom_cine(study, folder, uid_seed="corpus")
    return Source("phantom", folder, "raise", read_short_axis_cine(folder))


def get_source(request: pytest.FixtureRequest, name: str) -> Source:
    """The session fixture of source `name`."""
    return request.getfixturevalue(f"{name}_source")


def assert_same_volume(study: CineStudy, reference: CineStudy, *, trigger: bool = True) -> None:
    """Pixel-identical image, same affine and (when `trigger`) the same trigger times."""
    assert study.image.shape == reference.image.shape
    np.testing.assert_array_equal(study.image, reference.image)
    np.testing.assert_allclose(study.affine_lps, reference.affine_lps, rtol=0, atol=1e-6)
    if trigger:
        np.testing.assert_allclose(study.trigger_times_ms, reference.trigger_times_ms, rtol=0, atol=1e-6)


def assert_named(message: str, names: list[str]) -> None:
    """Every name is in `message`, or (more than 3) the first 3 shown and "(N in all)"."""
    shown = [n for n in names if n in message]
    if len(names) <= 3:
        assert shown == names, f"{sorted(set(names) - set(shown))} not named in: {message}"
    else:
        assert f"({len(names)} in all)" in message, message
        assert len(shown) >= 3, f"fewer than 3 of {names} named in: {message}"


# --------------------------------------------------------------------------------------------
# variants read like the clean source
# --------------------------------------------------------------------------------------------

Check = Callable[[CineStudy, Source, Path], None]


@dataclass(frozen=True)
class Same:
    """A variant that must read like its source.

    Attributes:
        build: the corpus builder.
        sources: the sources it applies to.
        trigger: whether ``trigger_times_ms`` must be the source's too.
        same_series: whether the source's SeriesInstanceUID must be the one read.
        check: further checks of the read study.
        needs: modules the builder needs (encoders); the test is skipped without them.
        xfail: source name -> the reader defect that makes it fail.
    """

    build: Callable[[Path, Path], Path]
    sources: tuple[str, ...] = BOTH
    trigger: bool = True
    same_series: bool = True
    check: Check | None = None
    needs: tuple[str, ...] = ()
    xfail: Mapping[str, str] = field(default_factory=dict)


def _check_legacy(study: CineStudy, src: Source, out: Path) -> None:
    assert study.meta["sop_class_uid"] == LegacyConvertedEnhancedMRImageStorage
    assert len({f for row in study.meta["source_files"] for f in row}) == 1


def _check_philips(study: CineStudy, src: Source, out: Path) -> None:
    assert study.meta["sop_class_uid"] == EnhancedMRImageStorage
    ds = pydicom.dcmread(corpus.dicom_files(out)[0], stop_before_pixels=True)
    assert "TriggerTime" not in ds and "ImagePositionPatient" not in ds
    assert study.meta["phase_order"] == "TriggerTime"  # from NominalCardiacTriggerDelayTime


def _check_anonymised(study: CineStudy, src: Source, out: Path) -> None:
    assert "sex" not in study.meta
    assert study.meta["patient_id"] == src.reference.meta["patient_id"]


def _check_per_file_for(study: CineStudy, src: Source, out: Path) -> None:
    assert len(study.meta["frame_of_reference_uids"]) == study.n_phases * study.n_slices


def _check_leading_zero(study: CineStudy, src: Source, out: Path) -> None:
    assert study.meta["study_instance_uid"] == f"{corpus.LEADING_ZERO_ROOT}.1"
    warnings = study.meta["dicom_warnings"]
    assert len(warnings) <= 3, warnings  # collapsed by kind, not one line per file
    for line in warnings:
        if "VR UI" in line:
            assert line.split()[0].isdigit() and int(line.split()[0]) > 1, line


def _check_dicomdir(study: CineStudy, src: Source, out: Path) -> None:
    assert (out / "DICOMDIR").is_file()
    assert any("DICOMDIR" in s for s in study.meta["skipped"]), study.meta["skipped"]


def _check_localizers(study: CineStudy, src: Source, out: Path) -> None:
    assert len(scan_folder(out).series) == 3
    assert study.meta["series_description"] == src.reference.meta["series_description"]


def _check_stack(study: CineStudy, src: Source, out: Path) -> None:
    if src.name == "rvsc":
        # RVSC's positions hold 2, 2 and 20 phases: no two series form a stack, and with `drop`
        # the one full position (its own series now) is the volume, as in the original
        assert study.meta["assembled_by"] == "" and study.n_slices == 1
        return
    assert study.meta["assembled_by"]
    assert len(study.meta["source_series_instance_uids"]) == study.n_slices


def _check_no_trigger(study: CineStudy, src: Source, out: Path) -> None:
    assert study.meta["phase_order"] == "InstanceNumber"
    assert np.all(np.isnan(study.trigger_times_ms))


def _check_non_dicom(study: CineStudy, src: Source, out: Path) -> None:
    problems = "\n".join(study.meta["problems"])
    for name in corpus.non_dicom_names():
        assert str(out / name) in problems, f"{name} not in {problems}"


def _compressed(syntax: str) -> Check:
    def check(study: CineStudy, src: Source, out: Path) -> None:
        for row in study.meta["source_files"]:
            for path in row:
                assert pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax

    return check


SAME: dict[str, Same] = {
    "osirix-empty-groups": Same(corpus.build_osirix_empty_groups),
    "osirix-one-empty-item": Same(corpus.build_osirix_one_empty_item),
    "legacy-converted-highdicom": Same(corpus.build_legacy_converted, same_series=False, check=_check_legacy),
    "enhanced-philips": Same(corpus.build_enhanced_philips, same_series=False, check=_check_philips),
    "anonymised": Same(corpus.build_anonymised, check=_check_anonymised),
    "per-file-frame-of-reference": Same(corpus.build_per_file_frame_of_reference, check=_check_per_file_for),
    "leading-zero-uids": Same(corpus.build_leading_zero_uids, same_series=False, check=_check_leading_zero),
    "shuffled-names": Same(corpus.build_shuffled_names),
    "nested": Same(corpus.build_nested),
    "dicomdir": Same(corpus.build_dicomdir, check=_check_dicomdir),
    "localizers": Same(corpus.build_localizers, check=_check_localizers),
    "derived-copies": Same(corpus.build_derived_copies),
    "series-per-position": Same(corpus.build_series_per_position, same_series=False, check=_check_stack),
    "series-per-position-same-description": Same(
        corpus.build_same_description_per_position, sources=("phantom",), same_series=False, check=_check_stack
    ),
    "no-trigger-slice-major": Same(corpus.build_no_trigger_slice_major, trigger=False, check=_check_no_trigger),
    "no-trigger-phase-major": Same(corpus.build_no_trigger_phase_major, trigger=False, check=_check_no_trigger),
    "no-slice-location": Same(corpus.build_no_slice_location),
    "non-dicom-files": Same(corpus.build_non_dicom_files, check=_check_non_dicom),
    "rle-lossless": Same(corpus.build_rle, check=_compressed(RLELossless)),
    "jpeg-ls-lossless": Same(corpus.build_jpegls_lossless, check=_compressed(JPEGLSLossless), needs=("jpeg_ls",)),
    "jpeg2000-lossless": Same(
        corpus.build_jpeg2000_lossless, check=_compressed(JPEG2000Lossless), needs=("pylibjpeg", "openjpeg")
    ),
    "jpeg-lossless-sv1": Same(corpus.build_jpeg_lossless, check=_compressed(JPEGLosslessSV1), needs=("imagecodecs",)),
}


def _params(table: Mapping[str, Same | Refused]) -> list:
    """One pytest param per (variant, source), with the variant's xfail marks."""
    params = []
    for name, variant in table.items():
        for source in variant.sources:
            marks = []
            if source in variant.xfail:
                marks.append(pytest.mark.xfail(reason=variant.xfail[source], strict=True))
            params.append(pytest.param(name, source, marks=marks, id=f"{name}-{source}"))
    return params


@pytest.mark.parametrize(("name", "source"), _params(SAME))
def test_variant_reads_like_source(request: pytest.FixtureRequest, tmp_path: Path, name: str, source: str) -> None:
    """The variant reads to the source's volume (image, affine, trigger times where stated)."""
    variant = SAME[name]
    for module in variant.needs:
        pytest.importorskip(module, reason=f"the {name} encoder needs {module}")
    src = get_source(request, source)
    out = variant.build(src.folder, tmp_path / "study")
    study = src.read(out)
    assert_same_volume(study, src.reference, trigger=variant.trigger)
    if variant.same_series:
        assert study.meta["series_instance_uid"] == src.reference.meta["series_instance_uid"]
    if variant.check is not None:
        variant.check(study, src, out)


def test_reacquired_position_keeps_later_series(phantom_source: Source, tmp_path: Path) -> None:
    """One series per position and one position repeated later: the repeat's (mirrored) pixels are read."""
    src = phantom_source
    out = corpus.build_reacquired_position(src.folder, tmp_path / "study")
    study = src.read(out)
    z = corpus.reacquired_index(src.folder)
    expected = src.reference.image.copy()
    expected[:, z] = expected[:, z, :, ::-1]
    np.testing.assert_array_equal(study.image, expected)
    np.testing.assert_allclose(study.affine_lps, src.reference.affine_lps, rtol=0, atol=1e-6)
    np.testing.assert_allclose(study.trigger_times_ms, src.reference.trigger_times_ms, rtol=0, atol=1e-6)
    assert study.meta["assembled_by"]
    repeat = pydicom.dcmread(next(out.glob("REPEAT_*")), stop_before_pixels=True)
    assert repeat.SeriesInstanceUID in study.meta["source_series_instance_uids"]
    notes = " ".join(study.meta["stack_notes"])
    assert "acquired twice" in notes and f"kept the later acquisition series {repeat.SeriesNumber}" in notes


@pytest.mark.parametrize("source", BOTH)
def test_jpeg_baseline_reads_within_quantisation(request: pytest.FixtureRequest, tmp_path: Path, source: str) -> None:
    """Lossy JPEG Baseline (8 bit): same geometry and times; intensities off by < 5 % of the range."""
    pytest.importorskip("imagecodecs", reason="the JPEG Baseline encoder needs imagecodecs")
    src = get_source(request, source)
    out = corpus.build_jpeg_baseline(src.folder, tmp_path / "study")
    study = src.read(out)
    _compressed(JPEGBaseline8Bit)(study, src, out)
    assert study.image.shape == src.reference.image.shape
    np.testing.assert_allclose(study.affine_lps, src.reference.affine_lps, rtol=0, atol=1e-6)
    np.testing.assert_allclose(study.trigger_times_ms, src.reference.trigger_times_ms, rtol=0, atol=1e-6)
    step = corpus.baseline_slope(src.folder)
    error = np.abs(study.image.astype(np.float64) - src.reference.image)
    assert error.max() <= 12 * step and error.mean() <= 2 * step, (error.max(), error.mean(), step)


def test_rvsc_patient_folder_ignores_contour_files(rvsc_source: Source) -> None:
    """The real patient folder (contour .txt, list and .mask files beside P09dicom) reads like P09dicom."""
    study = rvsc_source.read(RVSC_PATIENT)
    assert_same_volume(study, rvsc_source.reference)
    others = sorted(p for p in RVSC_PATIENT.rglob("*") if p.is_file() and p.parent != rvsc_source.folder)
    assert others
    problems = "\n".join(study.meta["problems"])
    assert all(f"{p}: not a DICOM file" in problems for p in others), problems


# --------------------------------------------------------------------------------------------
# variants refused with a true reason
# --------------------------------------------------------------------------------------------

Expect = Callable[[str, Source, Path], None]


@dataclass(frozen=True)
class Refused:
    """A variant that must be refused.

    Attributes:
        build: the corpus builder.
        expect: assertions on the refusal message (given the source and the built folder).
        sources: the sources it applies to.
        xfail: source name -> the reader defect that makes it fail.
    """

    build: Callable[[Path, Path], Path]
    expect: Expect
    sources: tuple[str, ...] = BOTH
    xfail: Mapping[str, str] = field(default_factory=dict)


def _two_studies(same_patient: bool) -> Expect:
    def expect(message: str, src: Source, out: Path) -> None:
        studies = scan_folder(out).studies()
        assert len(studies) == 2
        assert (studies[0].patient_id == studies[1].patient_id) is same_patient
        assert "holds 2 studies" in message
        for s in studies:
            assert f"patient '{s.patient_id}' study {s.study_uid}" in message

    return expect


def _duplicates(message: str, src: Source, out: Path) -> None:
    groups = corpus.slice_groups(corpus.dicom_files(out))
    repeated = [str(p) for g in groups for p in g[1:]]
    assert "duplicate" in message and "TriggerTime" in message
    assert_named(message, repeated)


def _missing_position(message: str, src: Source, out: Path) -> None:
    assert "not evenly spaced" in message
    for position in corpus.slice_positions_mm(corpus.dicom_files(out)):
        assert f"{position:.2f}" in message


def _missing_file(message: str, src: Source, out: Path) -> None:
    n = src.reference.n_phases
    positions = corpus.slice_positions_mm(corpus.dicom_files(out))
    z = len(positions) // 2
    assert "inconsistent number of phases" in message
    for i, position in enumerate(positions):
        assert f"{n - 1 if i == z else n} at {position:.2f} mm" in message


def _truncated(spread: bool) -> Expect:
    def expect(message: str, src: Source, out: Path) -> None:
        assert "truncated" in message
        assert_named(message, [str(out / name) for name in corpus.truncation_targets(src.folder, spread)])

    return expect


def _missing_geometry(message: str, src: Source, out: Path) -> None:
    assert "lacks ImagePositionPatient" in message
    assert_named(message, [str(out / name) for name in corpus.geometry_targets(src.folder)])


def assert_phase_claims_true(message: str, out: Path) -> None:
    """A claim "N phase(s) per slice position" holds at every position of the study's largest series."""
    claims = {int(n) for n in re.findall(r"(\d+) phases? per slice position", message)}
    if not claims:
        return
    info = max(scan_folder(out).series, key=lambda s: len(s.frames))
    for n in claims:
        assert set(info.phases_per_position) == {n}, (
            f"the message says {n} phase(s) per slice position, the positions hold {info.phases_per_position}: "
            f"{message}"
        )


REFUSED: dict[str, Refused] = {
    "two-patients": Refused(corpus.build_two_patients, _two_studies(same_patient=False)),
    "two-studies-one-patient": Refused(corpus.build_two_studies, _two_studies(same_patient=True)),
    "duplicate-phases": Refused(corpus.build_duplicate_phases, _duplicates),
    "missing-middle-position": Refused(corpus.build_missing_middle_position, _missing_position, ("phantom",)),
    "missing-one-file": Refused(corpus.build_missing_one_file, _missing_file, ("phantom",)),
    "truncated-pixels": Refused(corpus.build_truncated_pixels, _truncated(spread=False)),
    "truncated-headers": Refused(corpus.build_truncated_headers, _truncated(spread=True), ("phantom",)),
    "truncated-headers-one-position": Refused(
        corpus.build_truncated_headers_one_position, _truncated(spread=False), ("phantom",)
    ),
    "truncated-headers-after-uids": Refused(
        corpus.build_truncated_headers_after_uids, _truncated(spread=True), ("phantom",)
    ),
    "missing-image-position": Refused(corpus.build_missing_geometry, _missing_geometry),
}


@pytest.mark.parametrize(("name", "source"), _params(REFUSED))
def test_variant_is_refused_truthfully(request: pytest.FixtureRequest, tmp_path: Path, name: str, source: str) -> None:
    """The variant is refused with an InputError naming the offending files and the attribute."""
    variant = REFUSED[name]
    src = get_source(request, source)
    out = variant.build(src.folder, tmp_path / "study")
    with pytest.raises(InputError) as info:
        src.read(out)
    variant.expect(str(info.value), src, out)
    assert_phase_claims_true(str(info.value), out)


def test_rvsc_truncated_headers_with_drop_read_the_kept_position_and_say_what_is_missing(
    rvsc_source: Source, tmp_path: Path
) -> None:
    """With ``drop`` the full position (20 phases, one lost to a truncated header: 19) is read; the
    report names every truncated file and the jump in the trigger times where the phase is missing.

    This is the drop policy's meaning (keep the positions holding the most phases), not a refusal:
    the volume is a true cine of the kept position, and nothing about the lost phase is hidden.
    """
    out = corpus.build_truncated_headers(rvsc_source.folder, tmp_path / "study")
    study = rvsc_source.read(out)
    assert study.image.shape[:2] == (19, 1)
    problems = " ".join(study.meta["problems"])
    for name in corpus.truncation_targets(rvsc_source.folder, True):
        assert str(out / name) in problems
    assert study.meta["trigger_time_gaps"], "the missing phase is not reported"
