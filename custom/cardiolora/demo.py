"""The end-to-end demo on the embedded default data (the README's main command).

Stages, each reusing what an earlier run left in the work folder:

1. generate the phantom sites (reference vendor + three federated sites, one with half the cases);
2. pretrain the base U-Net on the reference site with the bundle (quick profile);
3. evaluate the base model on every site's test split (the domain gap federation has to close);
4. run Rate-My-LoRA in the NVIDIA FLARE simulator with the three sites (adapters only travel),
   personalise one local epoch at each site, cross-site evaluation;
5. site inference: a new phantom DICOM cine study of ``site-1`` (one not in any split: localiser,
   long-axis and short-axis series) segmented by the site application with ``site-1``'s
   personalised model (DICOM SEG and SR, NIfTI, report, pictures), scored against the phantom's truth;

then print where the outputs are and Dice per site before and after federation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from cardiolora.bundle import run_workflow
from cardiolora.data.dataset import load_datalist
from cardiolora.data.generate import DEFAULT_SITES, generate_sites, subject_seed
from cardiolora.data.phantom import make_subject
from cardiolora.dicom.mr_writer import write_dicom_cine, write_dicom_localizers
from cardiolora.evaluation import evaluate_records
from cardiolora.fl.run import run_simulation
from cardiolora.labels import STRUCTURE_NAMES
from cardiolora.metrics import dice
from cardiolora.networks import load_weights, lora_unet
from cardiolora.site.app import run_segment
from cardiolora.site.workflow import load_workflow

__all__ = ["run_demo"]

logger = logging.getLogger(__name__)


def _stage(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


FL_SITES = ("site-1", "site-2", "site-3")
#: The site whose personalised model segments the demo's DICOM study.
DEMO_SITE = "site-1"
#: Subject index of the demo study in its site's seed stream: beyond any site's subjects, so the
#: study is in no train / val / test split.
DEMO_SUBJECT_INDEX = 999


def _fmt(v: float | None) -> str:
    return "   n/a" if v is None else f"{v:6.3f}"


def print_dice_table(base: dict[str, float], after: dict[str, dict[str, float | None]]) -> None:
    """Print the mean case Dice per site: base, global W_T and personalised."""
    print("\nmean case Dice on each site's test split")
    print(f"  {'site':10s} {'base':>6s} {'global':>6s} {'personalised':>12s}")
    for s in FL_SITES:
        a = after.get(s, {})
        print(f"  {s:10s} {_fmt(base.get(s))} {_fmt(a.get('global'))} {_fmt(a.get('personalised')):>12s}")


def federation_table(results: Path, base: dict[str, float]) -> dict[str, dict[str, float | None]]:
    """Print and return mean Dice per site: base, global W_T and personalised (from cross_site_eval.json)."""
    cross = json.loads((results / "cross_site_eval.json").read_text())
    dice = cross["mean_over_structures"]["dice"]
    after = {s: {"global": dice.get("global", {}).get(s), "personalised": dice.get(s, {}).get(s)} for s in FL_SITES}
    print_dice_table(base, after)
    history = json.loads((results / "rml_history.json").read_text())
    up = sum(
        (v or {}).get("bytes_up", 0) or 0
        for r in history.get("rounds", [])
        if isinstance(r.get("sites"), dict)
        for v in r["sites"].values()
    )
    print(f"bytes sent up by all sites over the job: {up / 1e6:.2f} MB")
    print(f"round curves: {results / 'rml_curves.png'}; tables: {results / 'cross_site_eval.json'}")
    print(f"site models: {results.parents[1] / 'sites'}/<site>/rate_my_lora/latest/personalised_model.pt")
    return after


def demo_study(folder: Path, site: str = DEMO_SITE, seed: int = 0, n_phases: int | None = None) -> tuple[Path, Any]:
    """Write (or reuse) a new phantom DICOM cine study of `site` under ``folder/<study id>``.

    The subject comes from the same generator and scanner profile as the site's data
    (:func:`cardiolora.data.generate.subject_seed` with index :data:`DEMO_SUBJECT_INDEX`, so it is
    in none of the site's splits) and is written as a study of three series: the short-axis cine,
    a localiser and a long-axis cine, as a scanner exports it.

    Args:
        folder: where the study folder goes (created).
        site: a :data:`~cardiolora.data.generate.DEFAULT_SITES` name.
        seed: the phantom generation seed.
        n_phases: cine phases; ``None``: drawn from the profile's range.

    Returns:
        ``(study folder, CineStudy with labels and truth)``.

    Raises:
        ValueError: if `site` is not a default site.
    """
    names = [s.name for s in DEFAULT_SITES]
    if site not in names:
        raise ValueError(f"`site` must be one of {names}, got {site!r}.")
    index = names.index(site)
    sid = f"{site}-demo"
    study = make_subject(
        subject_seed(seed, index, DEMO_SUBJECT_INDEX), DEFAULT_SITES[index].profile, subject_id=sid, n_phases=n_phases
    )
    out = Path(folder) / sid
    done = out / ".complete"
    if not done.is_file():
        if out.exists():  # an interrupted write: the study is deterministic, make it again
            shutil.rmtree(out)
        files = write_dicom_cine(study, out / "SA", uid_seed=f"demo-{seed}-{sid}")
        lax = min(3, study.n_phases)
        write_dicom_localizers(study, out / "other", files[0], uid_seed=f"demo-{seed}-{sid}", n_lax_phases=lax)
        done.write_text("written by cardiolora demo\n")
    return out, study


def site_inference(
    workdir: Path, model: Path, profile: str, site: str = DEMO_SITE, progress: bool = True, n_phases: int | None = None
) -> dict[str, Any]:
    """Stage 5: segment the demo study with the site's model and score it against the phantom's truth.

    Runs the site application (:func:`cardiolora.site.app.run_segment` with the site-inference
    bundle's workflow, what ``cardiolora segment`` runs) on :func:`demo_study`; a finished output
    from an earlier run is kept and reused.

    Args:
        workdir: the demo's work folder (study under ``site_study/``, outputs under ``site_inference/``).
        model: the site's plain model weights (``personalised_model.pt``).
        profile: the run profile of the weights.
        site: which site's study.
        progress: show the per-study progress bar.
        n_phases: cine phases of the study (``None``: the profile's draw).

    Returns:
        ``{"study", "output", "status", "seg", "sr", "report_json", "report_csv", "pictures",
        "dice_vs_truth": {structure: Dice}, "measured": {...}, "truth": {...}}``.

    Raises:
        RuntimeError: if the site application did not produce the study's output (its reason).
    """
    study_dir, study = demo_study(Path(workdir) / "site_study", site, n_phases=n_phases)
    out_root = Path(workdir) / "site_inference"
    logging.getLogger("highdicom").setLevel(logging.WARNING)  # one INFO line per copied DICOM module
    workflow = load_workflow({"model": str(model), "profile": profile, "device": "cpu", "progress": progress})
    outcome = run_segment(study_dir, out_root, workflow).outcomes[0]
    if outcome.status not in ("done", "exists") or outcome.output is None:
        raise RuntimeError(f"site inference on {study_dir} ended `{outcome.status}`: {outcome.reason}")
    target = outcome.output
    report = json.loads((target / "report.json").read_text())
    labels = np.asarray(nib.load(target / "nifti" / "labels.nii.gz").dataobj).transpose(3, 2, 1, 0)
    scores = {STRUCTURE_NAMES[k]: dice(labels == k, study.label == k) for k in (1, 2, 3)}
    keys = ("ed_phase", "es_phase", "lv_edv_ml", "lv_esv_ml", "lv_ef_pct", "rv_edv_ml", "rv_ef_pct", "lv_mass_g")
    function = report.get("function") or {}
    truth = {**study.truth, "ed_phase": study.ed_phase, "es_phase": study.es_phase}
    return {
        "study": str(study_dir),
        "output": str(target),
        "status": outcome.status,
        "seg": sorted(str(target / p) for p in report["outputs"].get("dicom_seg", [])),
        "sr": str(target / report["outputs"]["dicom_sr"]) if "dicom_sr" in report["outputs"] else None,
        "report_json": str(target / "report.json"),
        "report_csv": str(target / "report.csv"),
        "pictures": [
            str(target / report["outputs"][k]) for k in ("overlay_png", "volume_curve_png") if k in report["outputs"]
        ],
        "dice_vs_truth": scores,
        "measured": {k: function.get(k) for k in keys},
        "truth": {k: truth.get(k) for k in keys},
    }


def print_site_inference(result: dict[str, Any]) -> None:
    """Print where the site inference outputs are and how they compare with the truth."""
    seg = result["seg"]
    print(f"study:    {result['study']}")
    print(f"outputs:  {result['output']} ({result['status']})")
    if seg:
        print(f"DICOM SEG: {', '.join(seg)}")
    if result.get("sr"):
        print(f"DICOM SR:  {result['sr']} (volumes, EF, LV mass, ED/ES)")
    print(f"report:   {result['report_json']} and {result['report_csv']}")
    for png in result["pictures"]:
        print(f"picture:  {png}")
    d = result["dice_vs_truth"]
    print("Dice vs the phantom's truth over the whole cine: " + ", ".join(f"{k} {v:.3f}" for k, v in d.items()))
    m, t = result["measured"], result["truth"]
    print(f"  {'':12s} {'measured':>9s} {'truth':>9s}")
    for k in m:
        mv, tv = m[k], t[k]
        print(f"  {k:12s} {'n/a' if mv is None else f'{mv:9.1f}':>9s} {'n/a' if tv is None else f'{tv:9.1f}':>9s}")


def run_demo(workdir: Path, profile: str = "quick", progress: bool = True, rounds: int = 3) -> dict:
    """Run the demo stages in `workdir`; returns a summary dict (also written as summary.json).

    Args:
        workdir: the demo's work folder (created; reused on reruns).
        profile: run profile.
        progress: show progress bars.
        rounds: federated rounds.

    Returns:
        ``{"phantoms", "pretrain", "base_dice": {site: mean Dice}, "after": {site: {"global",
        "personalised"}}, "fl_results", "site_inference": (see :func:`site_inference`), "seconds"}``.
    """
    workdir = Path(workdir).resolve()
    t0 = time.time()
    _stage("1/5 phantom sites")
    phantoms = workdir / "phantoms"
    manifest = generate_sites(phantoms, DEFAULT_SITES, progress=progress)
    for name, info in manifest["sites"].items():
        print(f"  {name:10s} profile {info['profile']:9s} {info['n_subjects']:3d} subjects")
    print(f"montage: {phantoms / 'montage.png'}")

    _stage("2/5 pretrain the base U-Net on the reference site")
    pre_dir = workdir / "pretrain"
    weights = pre_dir / "model.pt"
    if (pre_dir / "model_final.pt").is_file() and weights.is_file():
        print(f"reusing {weights}")
    else:
        run_workflow(
            "train",
            {
                "dataset_dir": str(phantoms / "sites" / "reference"),
                "output_dir": str(pre_dir),
                "model_dir": str(pre_dir),
                "profile": profile,
                "progress": progress,
            },
        )
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    (pre_dir / "model.sha256").write_text(f"{digest}  model.pt\n")
    print(f"weights: {weights} (sha256 {digest[:16]}...); validation curve: {pre_dir / 'val_curve.png'}")

    _stage("3/5 base model on every site's test split")
    net = lora_unet(profile)
    load_weights(net, weights)
    base = {}
    for name in manifest["sites"]:
        rows = evaluate_records(
            net, load_datalist(phantoms / "sites" / name, "test"), profile, torch.device("cpu"), distances=False
        )
        base[name] = sum(r["case_dice"] for r in rows) / len(rows)
        print(f"  {name:10s} mean case Dice {base[name]:.3f} ({len(rows)} test cases)")
    _stage(f"4/5 Rate-My-LoRA in the FLARE simulator ({len(FL_SITES)} sites, {rounds} rounds)")
    fl_dir = workdir / "fl"
    results = fl_dir / "results" / "rate_my_lora"
    # each site's newest finished job (<site>/<job>/latest, cardiolora.fl.job_info.mark_latest)
    site_model = fl_dir / "sites" / DEMO_SITE / "rate_my_lora" / "latest" / "personalised_model.pt"
    if (results / "cross_site_eval.json").is_file() and site_model.is_file():
        print(f"reusing {results}")
    else:
        out = run_simulation(
            "rate_my_lora",
            phantoms / "sites",
            weights,
            fl_dir,
            rounds=rounds,
            profile=profile,
            sites=list(FL_SITES),
            min_clients=len(FL_SITES),
        )
        print(f"simulator finished in {out['seconds']:.0f} s (log: {fl_dir / 'simulator.log'})")
    after = federation_table(results, base)

    _stage(f"5/5 site inference: a new {DEMO_SITE} DICOM cine study with {DEMO_SITE}'s personalised model")
    inference = site_inference(workdir, site_model, profile, DEMO_SITE, progress=progress)
    print_site_inference(inference)

    _stage("summary")
    print(f"site inference outputs: {inference['output']}")
    print(f"  DICOM SEG: {Path(inference['output']) / 'seg'}  SR: {inference.get('sr')}")
    print(f"  report:    {inference['report_json']}")
    print(f"  pictures:  {', '.join(inference['pictures'])}")
    print_dice_table(base, after)
    summary = {
        "phantoms": str(phantoms),
        "pretrain": str(weights),
        "base_dice": base,
        "after": after,
        "fl_results": str(results),
        "site_inference": inference,
        "seconds": round(time.time() - t0, 1),
    }
    (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\ndone in {summary['seconds']} s; summary: {workdir / 'summary.json'}")
    return summary
