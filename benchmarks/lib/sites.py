"""The sites of the federated comparison (`lib.harness`): phantoms, the ACDC protocol, M&Ms-2 by vendor.

Each ``prepare_*`` writes ``<workdir>/data/<source>/.../<site>/datalist.json`` and returns (sites
root, the federated sites); the ``reference`` site's data pretrain the base (`lib.runners`).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from cardiolora.data.dataset import DATALIST_NAME
from cardiolora.data.generate import DEFAULT_SITES, generate_sites, site_datalist
from cardiolora.data.loaders import index_dataset, load_case
from cardiolora.data.records import CaseRecord

__all__ = [
    "ACDC_APPEARANCE",
    "ACDC_SITES",
    "ACDC_SITE_RATIOS",
    "REFERENCE_RATIOS",
    "appearance_transform",
    "prepare_phantoms",
    "prepare_acdc",
    "prepare_mnms2",
]

# ------------------------------------------------------------------------------------------------
# ACDC: three pathology groups seen through three fixed scanner-style appearance changes
# ------------------------------------------------------------------------------------------------

#: ACDC protocol: site name → (ACDC group, fraction of its patients kept, appearance parameters).
#: The base model is pretrained on groups NOR + MINF (untransformed).
ACDC_SITES: dict[str, tuple[str, float]] = {"site-1": ("DCM", 1.0), "site-2": ("HCM", 0.5), "site-3": ("RV", 1.0)}
#: Patient-level train/val/test ratios of the ACDC sites (16 patients → 10/2/4, the half HCM site's
#: 8 → 5/1/2): ten test patients in all for the paired per-patient comparison. The reference keeps
#: `REFERENCE_RATIOS`.
ACDC_SITE_RATIOS: tuple[float, float, float] = (0.6, 0.15, 0.25)
REFERENCE_RATIOS: tuple[float, float, float] = (0.8, 0.1, 0.1)
#: Per site: gamma on the [0, 1]-normalised image, contrast factor around the mean, a linear bias
#: field of this peak amplitude (multiplicative, ±), Gaussian blur sigma (pixels, in-plane) and
#: Gaussian noise std (fraction of the intensity range; seeded by the case id, so deterministic).
ACDC_APPEARANCE: dict[str, dict[str, float]] = {
    "site-1": {"gamma": 0.7, "contrast": 1.2, "bias": 0.15, "blur": 0.0, "noise": 0.02},
    "site-2": {"gamma": 1.4, "contrast": 0.8, "bias": 0.0, "blur": 1.0, "noise": 0.0},
    "site-3": {"gamma": 1.0, "contrast": 1.0, "bias": 0.3, "blur": 0.6, "noise": 0.05},
}


def appearance_transform(image: np.ndarray, params: Mapping[str, float], key: str) -> np.ndarray:
    """Apply a fixed scanner-style appearance change to one ``(Z, Y, X)`` image (labels untouched).

    With ``x`` the image min-max normalised to [0, 1] (per volume), ``b(y, x) = 1 + bias·(u + v)/2``
    a linear bias field over the normalised in-plane coordinates ``u, v ∈ [-1, 1]``:
    ``out = blur_σ(clip(contrast·(x^γ − mean) + mean, 0, 1) · b) + N(0, noise²)``, scaled back to the
    input range. The noise is drawn from a generator seeded with ``crc32(key)``: the same
    image and key always give the same result.

    Args:
        image: the image ``(Z, Y, X)`` (any real dtype).
        params: ``gamma`` (> 0), ``contrast`` (> 0), ``bias`` (in [0, 1)), ``blur`` (>= 0, pixels),
            ``noise`` (>= 0).
        key: seed key of the noise (e.g. the case id).

    Returns:
        The transformed image, ``float32``, same shape.

    Raises:
        ValueError: if `image` is not 3D or a parameter is out of range (named).
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 3:
        raise ValueError(f"`image` must be 3D (Z, Y, X), got shape {img.shape}.")
    p = {"gamma": 1.0, "contrast": 1.0, "bias": 0.0, "blur": 0.0, "noise": 0.0, **dict(params)}
    for name, ok in (
        ("gamma", p["gamma"] > 0),
        ("contrast", p["contrast"] > 0),
        ("bias", 0 <= p["bias"] < 1),
        ("blur", p["blur"] >= 0),
        ("noise", p["noise"] >= 0),
    ):
        if not ok:
            raise ValueError(f"`params[{name!r}]` out of range: {p[name]}.")
    lo, hi = float(img.min()), float(img.max())
    x = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    x = x ** p["gamma"]
    m = float(x.mean())
    x = np.clip(p["contrast"] * (x - m) + m, 0.0, 1.0)
    if p["bias"]:
        v, u = np.meshgrid(np.linspace(-1, 1, x.shape[1]), np.linspace(-1, 1, x.shape[2]), indexing="ij")
        x = x * (1.0 + p["bias"] * (u + v) / 2.0)[None]
    if p["blur"]:
        x = ndimage.gaussian_filter(x, sigma=(0.0, p["blur"], p["blur"]))
    if p["noise"]:
        rng = np.random.default_rng(zlib.crc32(key.encode()))
        x = x + rng.normal(0.0, p["noise"], size=x.shape)
    return (lo + x * (hi - lo if hi > lo else 1.0)).astype(np.float32)


def _write_nifti_case(rec, out_dir: Path, params: Mapping[str, float] | None, spacing_default: float):
    """Write one case (transformed image, labels in the ACDC convention) as NIfTI; return its record."""
    case = load_case(rec)
    image = case.image if params is None else appearance_transform(case.image, params, rec.case_id)
    spacing = case.spacing_zyx or (
        float(rec.meta.get("slice_spacing_mm") or 10.0),
        float(rec.meta.get("in_plane_spacing_mm") or spacing_default),
        float(rec.meta.get("in_plane_spacing_mm") or spacing_default),
    )
    label = case.label.copy()
    acdc = label.copy()  # back to the ACDC convention (1 RV, 3 LV) so the record reads as `acdc`
    acdc[label == 1], acdc[label == 3] = 3, 1
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    pdir = out_dir / rec.patient_id
    pdir.mkdir(parents=True, exist_ok=True)
    img_path, lab_path = pdir / f"{rec.case_id}.nii.gz", pdir / f"{rec.case_id}_gt.nii.gz"
    nib.save(nib.Nifti1Image(image.transpose(2, 1, 0).astype(np.float32), affine), str(img_path))
    nib.save(nib.Nifti1Image(acdc.transpose(2, 1, 0).astype(np.uint8), affine), str(lab_path))
    meta = {k: v for k, v in rec.meta.items() if k != "in_plane_spacing_mm"}
    return CaseRecord.from_dict(
        {**rec.to_dict(), "image": str(img_path), "label": str(lab_path), "source": "acdc", "meta": meta}
    )


# ------------------------------------------------------------------------------------------------
# data sources
# ------------------------------------------------------------------------------------------------


def prepare_phantoms(workdir: Path, progress: bool = False) -> tuple[Path, list[str]]:
    """Generate the default phantom sites under ``<workdir>/data/phantoms``; returns (sites root, sites)."""
    out = Path(workdir) / "data" / "phantoms"
    generate_sites(out, DEFAULT_SITES, progress=progress)
    return out / "sites", [s.name for s in DEFAULT_SITES if s.name != "reference"]


def _half_patients(records: Sequence, fraction: float, seed: int) -> list:
    """Keep `fraction` of the patients (a fixed, seeded choice by crc32 rank); all of a patient's cases."""
    pids = sorted({r.patient_id for r in records}, key=lambda p: (zlib.crc32(f"{seed}:{p}".encode()), p))
    keep = set(pids[: max(1, round(len(pids) * fraction))])
    return [r for r in records if r.patient_id in keep]


def prepare_acdc(workdir: Path, source: str | os.PathLike, seed: int = 0) -> tuple[Path, list[str]]:
    """ACDC protocol: reference = NOR + MINF; sites DCM, HCM (half its patients), RV with appearance changes.

    Writes ``<workdir>/data/acdc/nifti/<site>/...`` (transformed NIfTI copies; reused when there)
    and ``<workdir>/data/acdc/sites/<site>/datalist.json``.

    Raises:
        ValueError: if a group has fewer than 3 patients (named).
    """
    root = Path(workdir) / "data" / "acdc"
    sites_root = root / "sites"
    records = list(index_dataset(source))
    plan = {"reference": (("NOR", "MINF"), 1.0, None)}
    plan.update({s: ((g,), f, ACDC_APPEARANCE[s]) for s, (g, f) in ACDC_SITES.items()})
    for site, (groups, fraction, params) in plan.items():
        if (sites_root / site / DATALIST_NAME).is_file():
            continue
        recs = [r for r in records if (r.group or "").upper() in groups]
        recs = _half_patients(recs, fraction, seed) if fraction < 1 else recs
        if len({r.patient_id for r in recs}) < 3:
            raise ValueError(f"{source}: groups {groups} have fewer than 3 patients for site `{site}`.")
        written = [_write_nifti_case(r, root / "nifti" / site, params, 1.5) for r in recs]
        site_datalist(
            written,
            sites_root / site,
            seed,
            ratios=REFERENCE_RATIOS if site == "reference" else ACDC_SITE_RATIOS,
            meta={"source": str(source), "groups": list(groups), "appearance": params, "fraction": fraction},
        )
    return sites_root, list(ACDC_SITES)


def prepare_mnms2(
    workdir: Path, source: str | os.PathLike, reference: str | None = None, seed: int = 0
) -> tuple[Path, list[str]]:
    """M&Ms-2: one site per VENDOR; the vendor with most patients (or `reference`) pretrains the base.

    Sites are named ``site-1..`` in sorted vendor order (the mapping is in each datalist's meta).

    Raises:
        ValueError: if fewer than two vendors besides the reference are found.
    """
    records = list(index_dataset(source, layout="mnms2"))
    by_vendor: dict[str, list] = {}
    for r in records:
        by_vendor.setdefault(str(r.vendor), []).append(r)
    ref = reference or max(sorted(by_vendor), key=lambda v: len({r.patient_id for r in by_vendor[v]}))
    if ref not in by_vendor:
        raise ValueError(f"{source}: `reference` vendor {ref!r} not found (vendors: {sorted(by_vendor)}).")
    others = [v for v in sorted(by_vendor) if v != ref]
    if len(others) < 2:
        raise ValueError(f"{source}: need at least two vendors besides {ref!r}, found {others}.")
    sites_root = Path(workdir) / "data" / "mnms2" / "sites"
    names = {"reference": ref, **{f"site-{i + 1}": v for i, v in enumerate(others)}}
    for site, vendor in names.items():
        if not (sites_root / site / DATALIST_NAME).is_file():
            site_datalist(by_vendor[vendor], sites_root / site, seed, meta={"source": str(source), "vendor": vendor})
    return sites_root, [s for s in names if s != "reference"]
