"""Generate a set of phantom sites on disk in every form the project reads.

``cardiolora phantoms --out DIR`` writes::

    DIR/manifest.json                 what was generated (sites, profiles, counts, seed)
    DIR/mnms2/                        every site in the M&Ms-2 layout (split sites by VENDOR)
    DIR/acdc/<site>/patientNNN/       each site in the ACDC layout
    DIR/dicom/<site>/<subject>/       full DICOM cine studies (with localiser and long-axis series)
    DIR/truth.csv, DIR/truth.json     true ED/ES phases and clinical values per subject
    DIR/sites/<site>/datalist.json    patient-level train/val/test split of each site
    DIR/montage.png                   a few subjects per site, to see how the sites differ

Generation is deterministic in the seed, and a rerun with the same settings reuses what is
already there (the manifest records the settings; a different setting is refused rather than
mixing two generations).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cardiolora.atomic import save_figure, write_json
from cardiolora.data.acdc import index_acdc, write_acdc
from cardiolora.data.cine import CineStudy
from cardiolora.data.dataset import DATALIST_NAME, write_datalist
from cardiolora.data.mnms2 import write_mnms2
from cardiolora.data.phantom import SCANNER_PROFILES, make_subject
from cardiolora.data.splits import split_records
from cardiolora.data.truth import write_truth
from cardiolora.dicom.mr_writer import write_dicom_cine, write_dicom_localizers
from cardiolora.plotting import pyplot

__all__ = ["SiteSpec", "DEFAULT_SITES", "subject_seed", "generate_sites", "montage", "site_datalist"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteSpec:
    """One phantom site.

    Attributes:
        name: site name (folder name, FLARE client name), e.g. ``"site-1"``.
        profile: scanner profile (``cardiolora.data.phantom.SCANNER_PROFILES``).
        n_subjects: number of subjects.
    """

    name: str
    profile: str
    n_subjects: int


#: The embedded default: a reference vendor for pretraining and three federated sites with
#: different scanner profiles, one of them holding half the cases (as the paper's imbalance).
DEFAULT_SITES: tuple[SiteSpec, ...] = (
    SiteSpec("reference", "reference", 40),
    SiteSpec("site-1", "ge", 24),
    SiteSpec("site-2", "philips", 12),
    SiteSpec("site-3", "siemens", 24),
)


def subject_seed(seed: int, site_index: int, subject_index: int) -> int:
    """Seed of one subject: independent streams per (seed, site, subject) via ``SeedSequence``.

    Args:
        seed: the generation seed.
        site_index: index of the site in the site list.
        subject_index: index of the subject in its site.

    Returns:
        A 32-bit seed.
    """
    return int(np.random.SeedSequence([seed, site_index, subject_index]).generate_state(1)[0])


def _check_sites(sites: Sequence[SiteSpec]) -> None:
    names = [s.name for s in sites]
    if not sites:
        raise ValueError("`sites` is empty.")
    if len(set(names)) != len(names):
        raise ValueError(f"`sites` has duplicate names: {names}.")
    for s in sites:
        if s.profile not in SCANNER_PROFILES:
            raise ValueError(f"site `{s.name}`: unknown profile {s.profile!r}; known: {sorted(SCANNER_PROFILES)}.")
        if s.n_subjects < 3:
            raise ValueError(f"site `{s.name}`: `n_subjects` must be >= 3 (train/val/test), got {s.n_subjects}.")


def generate_sites(
    out_dir: str | os.PathLike,
    sites: Sequence[SiteSpec] = DEFAULT_SITES,
    seed: int = 0,
    dicom_subjects: int = 1,
    split_seed: int = 0,
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    progress: bool = True,
) -> dict:
    """Generate phantom sites in the M&Ms-2, ACDC and DICOM forms, truth tables and datalists.

    Args:
        out_dir: output folder.
        sites: the sites to make.
        seed: generation seed.
        dicom_subjects: subjects per site also written as full DICOM cine studies (0: none).
        split_seed: seed of the patient-level splits.
        ratios: train/val/test ratios.
        progress: show a progress bar.

    Returns:
        The manifest (also written to ``out_dir/manifest.json``).

    Raises:
        ValueError: if the site list is invalid, or `out_dir` holds a generation made with other
            settings (the message names the manifest and the differing settings).
    """
    _check_sites(sites)
    out = Path(out_dir)
    settings = {
        "sites": [asdict(s) for s in sites],
        "seed": seed,
        "dicom_subjects": dicom_subjects,
        "split_seed": split_seed,
        "ratios": list(ratios),
    }
    manifest_path = out / "manifest.json"
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if old.get("settings") == settings and old.get("complete"):
            logger.info("phantoms in %s are complete; reusing them", out)
            return old
        if old.get("settings") != settings:
            diff = sorted(k for k in settings if old.get("settings", {}).get(k) != settings[k])
            raise ValueError(
                f"{manifest_path}: this folder holds phantoms generated with other settings ({diff}); "
                "choose another --out or delete the folder."
            )
        # same settings, but an earlier run stopped half-way: generation is deterministic, so the
        # partial output is removed and made again (the writers refuse to overwrite subjects).
        for sub in ("mnms2", "acdc", "dicom", "sites"):
            shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json({"settings": settings, "complete": False}, manifest_path)

    all_studies: list[CineStudy] = []
    total = sum(s.n_subjects for s in sites)
    bar = tqdm(total=total, desc="phantoms", unit="subject", disable=not progress)
    code = 1
    site_info = {}
    for si, site in enumerate(sites):
        studies = []
        for k in range(site.n_subjects):
            sid = f"{site.name}-{k + 1:03d}"
            sub_seed = subject_seed(seed, si, k)
            if k < dicom_subjects:
                full = make_subject(sub_seed, site.profile, subject_id=sid, phases="all")
                dcm_dir = out / "dicom" / site.name / sid
                files = write_dicom_cine(full, dcm_dir, uid_seed=f"{seed}-{sid}")
                write_dicom_localizers(full, dcm_dir, files[0], uid_seed=f"{seed}-{sid}")
                study = _ed_es_view(full)
            else:
                study = make_subject(sub_seed, site.profile, subject_id=sid, phases="ed_es")
            study.meta["site"] = site.name
            studies.append(study)
            bar.update(1)
        write_acdc(studies, out / "acdc" / site.name)
        write_mnms2(studies, out / "mnms2", start_code=code)
        code += len(studies)
        all_studies.extend(studies)
        records = index_acdc(out / "acdc" / site.name)
        site_dir = out / "sites" / site.name
        datalist = site_datalist(records, site_dir, split_seed, ratios, {"site": site.name, "profile": site.profile})
        site_info[site.name] = {
            "profile": site.profile,
            "n_subjects": site.n_subjects,
            "datalist": str(datalist.relative_to(out)),
        }
    bar.close()
    write_truth(all_studies, out / "truth.csv")
    write_truth(all_studies, out / "truth.json")
    montage(
        out / "montage.png",
        {s.name: [st for st in all_studies if st.meta["site"] == s.name] for s in sites},
        {s.name: s.profile for s in sites},
    )
    manifest = {"settings": settings, "complete": True, "sites": site_info}
    write_json(manifest, manifest_path)
    return manifest


def _ed_es_view(study: CineStudy) -> CineStudy:
    """The ED and ES frames of a full cine as a two-phase study (for the NIfTI layouts)."""
    idx = [study.ed_phase, study.es_phase]
    return CineStudy(
        subject_id=study.subject_id,
        image=study.image[idx],
        label=None if study.label is None else study.label[idx],
        spacing_zyx=study.spacing_zyx,
        affine_lps=study.affine_lps,
        trigger_times_ms=np.asarray(study.trigger_times_ms)[idx],
        ed_phase=0,
        es_phase=1,
        vendor=study.vendor,
        slice_thickness_mm=study.slice_thickness_mm,
        truth=dict(study.truth),
        meta=dict(study.meta),
    )


def site_datalist(
    records: Sequence,
    site_dir: str | os.PathLike,
    split_seed: int = 0,
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    meta: Mapping | None = None,
) -> Path:
    """Split a site's records by patient and write ``site_dir/datalist.json`` (relative paths).

    Args:
        records: the site's `CaseRecord` list.
        site_dir: the site's dataset folder (its FLARE ``dataset_dir``).
        split_seed: split seed.
        ratios: train/val/test ratios.
        meta: extra information stored in the datalist.

    Returns:
        The datalist path.
    """
    site_dir = Path(site_dir)
    site_dir.mkdir(parents=True, exist_ok=True)
    splits = split_records(list(records), ratios=ratios, seed=split_seed)
    rel = {}
    for key, recs in splits.items():
        rows = []
        for r in recs:
            d = r.to_dict()
            for f in ("image", "label"):
                if d.get(f):
                    d[f] = os.path.relpath(d[f], site_dir)
            rows.append(d)
        rel[key] = rows
    info = {"split_seed": split_seed, "ratios": list(ratios), **(dict(meta) if meta else {})}
    return write_datalist(rel, site_dir / DATALIST_NAME, meta=info)


def montage(
    path: str | os.PathLike,
    studies: Mapping[str, Sequence[CineStudy]],
    profiles: Mapping[str, str] | None = None,
    per_site: int = 4,
) -> Path:
    """Draw a PNG montage: one row per site, mid-ventricular ED slices of a few subjects.

    Each tile shows the image as the scanner stores it (its own intensity window); every second
    tile adds the label contours of LV (red), myocardium (green) and RV (blue), so both the raw
    look of each vendor profile and the anatomy are visible.

    Args:
        path: PNG to write.
        studies: site name → its studies (the first `per_site` are shown).
        profiles: site name → profile name, for the row labels.
        per_site: subjects per row.

    Returns:
        The PNG path.

    Raises:
        ValueError: if `studies` is empty or a site has no study.
    """
    plt = pyplot()

    if not studies or any(len(v) == 0 for v in studies.values()):
        raise ValueError("`studies` must map every site to at least one study.")
    n = min(per_site, min(len(v) for v in studies.values()))
    fig, axes = plt.subplots(len(studies), n, figsize=(2.4 * n, 2.6 * len(studies)), dpi=90, squeeze=False)
    for si, (site, site_studies) in enumerate(studies.items()):
        for k, st in enumerate(site_studies[:n]):
            z = st.n_slices // 2
            img = st.image[st.ed_phase, z]
            ax = axes[si, k]
            ax.imshow(img, cmap="gray", vmin=0, vmax=float(np.percentile(img, 99.5)))
            if k % 2 == 1 and st.label is not None:
                lab = st.label[st.ed_phase, z]
                for val, color in ((1, "red"), (2, "lime"), (3, "deepskyblue")):
                    if (lab == val).any():
                        ax.contour(lab == val, levels=[0.5], colors=color, linewidths=0.7)
            ax.set_xticks([])
            ax.set_yticks([])
            sx = st.spacing_zyx[2]
            ax.set_title(f"{st.subject_id}\n{img.shape[1]}x{img.shape[0]} @ {sx:.2f} mm", fontsize=7)
        label = f"{site}\n({profiles[site]})" if profiles and site in profiles else site
        axes[si, 0].set_ylabel(label, fontsize=9)
    fig.suptitle("Phantom sites: mid-ventricular ED slice (every second tile with label contours)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
