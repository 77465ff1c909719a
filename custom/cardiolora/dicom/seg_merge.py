"""The SEG's references to its sources and the merge of per-phase SEGs into one multi-phase object.

highdicom 0.28 refuses two frames of one segment at one ImagePositionPatient and has no temporal
index, so :mod:`cardiolora.dicom.seg` builds one SEG per phase over stand-in sources
(:mod:`cardiolora.dicom.seg_frames`). :func:`merge_phases` merges them: ``DimensionIndexSequence``
= ReferencedSegmentNumber, TemporalPositionIndex (Frame Content), ImagePositionPatient; frames
sorted by (segment, phase, slice) with ``DimensionIndexValues`` = (segment, phase + 1, slice
rank), ``TemporalPositionIndex`` and ``FrameLabel``. :func:`reference_sources` replaces the
stand-ins' placeholder UIDs by the real sources (``ReferencedFrameNumber`` for a multi-frame
source) and rebuilds ``SourceImageSequence``, ``ReferencedSeriesSequence`` and, for sources of
other studies, ``StudiesContainingOtherReferencedInstancesSequence``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import pack_bits

from cardiolora.dicom.seg_frames import Frame

__all__ = ["merge_phases", "reference_sources"]


def _ref(cls: str, sop: str, **more: object) -> Dataset:
    """A reference item (ReferencedSOPClassUID, ReferencedSOPInstanceUID and `more`)."""
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = cls, sop
    for keyword, value in more.items():
        setattr(item, keyword, value)
    return item


def reference_sources(seg: Dataset, frames: Sequence[Frame], placeholders: Mapping[str, Frame]) -> None:
    """Replace the placeholder references of `seg` by the real sources `frames`."""
    for item in seg.PerFrameFunctionalGroupsSequence:
        for src in (s for d in item.get("DerivationImageSequence", []) for s in d.SourceImageSequence):
            fr = placeholders.get(src.ReferencedSOPInstanceUID)
            if fr is not None:  # else already replaced: the frames of one plane share the item
                src.ReferencedSOPClassUID, src.ReferencedSOPInstanceUID = fr.class_uid, fr.sop_uid
                if fr.frame:
                    src.ReferencedFrameNumber = fr.frame
    studies: dict[str, dict[str, dict[str, str]]] = defaultdict(lambda: defaultdict(dict))
    for fr in frames:
        studies[fr.study_uid][fr.series_uid][fr.sop_uid] = fr.class_uid

    def series_items(series: Mapping[str, Mapping[str, str]]) -> list[Dataset]:
        items = [Dataset() for _ in series]
        for item, (uid, instances) in zip(items, series.items(), strict=True):
            item.SeriesInstanceUID = uid
            item.ReferencedInstanceSequence = [_ref(c, s) for s, c in instances.items()]
        return items

    seg.SourceImageSequence = [_ref(c, s) for se in studies.values() for i in se.values() for s, c in i.items()]
    seg.ReferencedSeriesSequence = series_items(studies.pop(str(seg.StudyInstanceUID)))
    if studies:  # sources of other studies (Common Instance Reference module)
        seg.StudiesContainingOtherReferencedInstancesSequence = others = [Dataset() for _ in studies]
        for item, (uid, series) in zip(others, studies.items(), strict=True):
            item.StudyInstanceUID, item.ReferencedSeriesSequence = uid, series_items(series)


def merge_phases(
    segs: Sequence[Dataset],
    label: np.ndarray,
    where: Mapping[str, tuple[int, int]],
    slice_rank: Sequence[Sequence[int]],
    frame_labels: Sequence[str],
) -> Dataset:
    """Merge per-phase SEGs (placeholder references) into ``segs[0]``, adding the temporal index."""
    base = segs[0]
    dims = list(base.DimensionIndexSequence)
    if [int(d.DimensionIndexPointer) for d in dims] != [0x0062000B, 0x00200032]:
        raise RuntimeError(f"unexpected highdicom DimensionIndexSequence {[d.DimensionIndexPointer for d in dims]}")
    entries = []
    for item in (item for seg in segs for item in seg.PerFrameFunctionalGroupsSequence):
        t, z = where[item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        segment = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        entries.append((segment, t, slice_rank[t][z], z, item))
    entries.sort(key=lambda e: e[:4])
    for s, t, rank, _, item in entries:
        content = item.FrameContentSequence[0]
        content.DimensionIndexValues = [s, t + 1, rank]
        content.TemporalPositionIndex = t + 1
        content.FrameLabel = frame_labels[t]
    temporal = Dataset()
    temporal.DimensionOrganizationUID = dims[0].DimensionOrganizationUID
    temporal.DimensionIndexPointer = 0x00209128  # TemporalPositionIndex
    temporal.FunctionalGroupPointer = 0x00209111  # FrameContentSequence
    temporal.DimensionDescriptionLabel = "Temporal Position Index"
    base.DimensionIndexSequence = [dims[0], temporal, dims[1]]
    if base.get("DimensionOrganizationType") == "3D":
        base.DimensionOrganizationType = "3D_TEMPORAL"
    base.PerFrameFunctionalGroupsSequence = [e[-1] for e in entries]
    base.NumberOfFrames = len(entries)
    base.PixelData = pack_bits(np.stack([label[t, z] == s for s, t, _, z, _ in entries]).astype(np.uint8))
    return base
