"""Per-patient scores of the federated comparison and the paired statistics on them.

The comparison's tables (`lib.harness`) give one number per method, site and seed. To say
whether one method beats another on *the same patients*, this module keeps every test case's
per-structure Dice of each method's in-client model, averages a patient's ED and ES cases and the
seeds, and compares two methods patient by patient:

* difference per patient ``d_i = s_A(i) - s_B(i)`` where ``s_M(i)`` is method M's mean foreground
  Dice on patient i (mean over its cases and over the seeds that scored it);
* mean and standard deviation of ``d_i``, wins (``d_i > 0``), losses (``d_i < 0``), ties;
* the two-sided Wilcoxon signed-rank test on ``d_i`` (exact for n ≤ 25 without ties, SciPy) and
  the two-sided sign test ``p = min(1, 2 · P[X ≤ min(wins, losses)])``, ``X ~ Bin(wins + losses,
  1/2)``.

With ten test patients neither test can reach a small p unless nearly every patient moves the
same way; the counts are reported beside the p-values for that reason.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from cardiolora.data.dataset import load_datalist
from cardiolora.evaluation import evaluate_records
from cardiolora.labels import STRUCTURE_NAMES
from cardiolora.networks import load_weights, lora_unet

from .methods import DP_NOISE_MULTIPLIERS, method_spec

__all__ = [
    "STRUCTURES",
    "in_client_models",
    "per_case_scores",
    "own_model_entries",
    "patient_scores",
    "paired_comparison",
    "structure_table",
    "rating_events",
    "PAIRS",
    "paired_summary",
    "render_paired_markdown",
]

#: The structures of the per-structure tables, in table order (``LV``, ``MYO``, ``RV``).
STRUCTURES: tuple[str, ...] = tuple(STRUCTURE_NAMES.values())

#: The metrics kept per case (``metrics``: the case's mean over LV, MYO and RV), those of Tables 1 and 2.
CASE_METRICS: tuple[str, ...] = ("dice", "voe", "hd", "assd")


def in_client_models(method: str, folder: str | os.PathLike, sites: Sequence[str]) -> dict[str, Path]:
    """Where each site's in-client model of one finished method run is (the adapter methods: the
    site's newest finished job, ``sites/<site>/<job>/latest/``, or ``sites/<site>/<job>/`` for a run
    made before site outputs were kept per job id).

    Args:
        method: a method of `lib.methods.METHOD_SPECS`: the local runs' models, FedAvg's global
            model, the centralised model, or any other FLARE job's personalised models
            (``sites/<site>/<job>/latest/personalised_model.pt``).
        folder: the method's run folder (``<workdir>/seed<s>/<method>``).
        sites: the sites.

    Returns:
        ``{site: weights file}`` (one shared file for the single-model methods).

    Raises:
        ValueError: if `method` is unknown.
        FileNotFoundError: if a model file is missing (the path is named).
    """
    folder = Path(folder)
    spec = method_spec(method)
    if spec.runner == "local":
        paths = {s: folder / s / "model.pt" for s in sites}
    elif spec.runner == "centralised":
        paths = {s: folder / "model.pt" for s in sites}
    elif spec.job == "fedavg_full":
        paths = {s: folder / "results" / "fedavg_full" / "global_model.pt" for s in sites}
    else:  # the site's newest finished job (`latest`), or the job folder of a run made before job ids
        paths = {}
        for s in sites:
            job_dir = folder / "sites" / s / spec.job
            latest = job_dir / "latest" / "personalised_model.pt"
            before_job_ids = job_dir / "personalised_model.pt"
            paths[s] = before_job_ids if before_job_ids.is_file() and not latest.is_file() else latest
    for site, p in paths.items():
        if not p.is_file():
            raise FileNotFoundError(f"{p}: the {method} model of {site} is missing (was the run finished?).")
    return paths


def per_case_scores(
    models: Mapping[str, str | os.PathLike],
    sites_root: str | os.PathLike,
    profile: str,
) -> dict[str, list[dict[str, Any]]]:
    """Each site's model on its own test split, case by case (raw labels, Dice per structure).

    Args:
        models: ``{site: weights file}`` (see `in_client_models`).
        sites_root: folder of ``<site>/datalist.json``.
        profile: run profile of the weights.

    Returns:
        ``{site: [{"case_id", "patient_id", "phase", "dice": {structure: value}, "mean",
        "metrics": {metric: value}}]}``; a structure absent from both prediction and truth has Dice
        ``None``; ``metrics`` holds the case's NaN-aware mean over LV, MYO and RV of each metric of
        `CASE_METRICS` (``segmentation_scores(...)["mean"]``, what a site's evaluation summary
        averages), ``None`` where undefined.

    Raises:
        ValueError, cardiolora.data.records.DataError: from `cardiolora.evaluation.evaluate_records`.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for site, path in models.items():
        net = lora_unet(profile)
        load_weights(net, path)
        net.eval()
        rows = evaluate_records(net, load_datalist(Path(sites_root) / site, "test"), profile)
        out[site] = [
            {
                "case_id": r["case_id"],
                "patient_id": r["patient_id"],
                "phase": r["phase"],
                "dice": {k: _finite((r["scores"].get(k) or {}).get("dice")) for k in STRUCTURES},
                "mean": _finite(r["case_dice"]),
                "metrics": {m: _finite(r["scores"]["mean"].get(m)) for m in CASE_METRICS},
            }
            for r in rows
        ]
    return out


def own_model_entries(cases: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, dict[str, float | None]]:
    """Each site's own model on its own test split, as one score-matrix diagonal entry per site.

    For metric :math:`m` and site s with per-case values :math:`m_1..m_n` (each the case's mean over
    LV, MYO and RV; ``None`` skipped): :math:`\\bar m_s = \\frac{1}{n} \\sum_i m_i` — the same number
    as the ``"mean"`` row of the site's evaluation summary (`cardiolora.metrics.aggregate_scores`),
    so it can stand in for the diagonal of a job's cross-site table.

    Args:
        cases: ``{site: rows}`` of `per_case_scores` (rows with ``metrics``).

    Returns:
        ``{site: {metric: mean or None}}`` for the metrics of `CASE_METRICS`.

    Raises:
        ValueError: if a row has no ``metrics`` (scored before they were kept; the site is named).

    Example:
        >>> own_model_entries({"a": [{"metrics": {"dice": 0.75, "voe": 30.0, "hd": None, "assd": 1.0}},
        ...                          {"metrics": {"dice": 0.25, "voe": 50.0, "hd": None, "assd": 3.0}}]})
        {'a': {'dice': 0.5, 'voe': 40.0, 'hd': None, 'assd': 2.0}}
    """
    out: dict[str, dict[str, float | None]] = {}
    for site, rows in cases.items():
        if any("metrics" not in r for r in rows):
            raise ValueError(
                f"`cases` of site {site!r}: rows without `metrics` (score them again with per_case_scores)."
            )
        out[site] = {}
        for m in CASE_METRICS:
            values = [r["metrics"][m] for r in rows if r["metrics"].get(m) is not None]
            out[site][m] = float(np.mean(values)) if values else None
    return out


def _finite(value: Any) -> float | None:
    """A float, or None for a missing or non-finite value."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def patient_scores(per_case_by_seed: Sequence[Mapping[str, Sequence[Mapping[str, Any]]]]) -> dict[str, float]:
    """Mean case Dice per test patient, over its cases and over the seeds.

    ``s(i) = mean_seeds( mean_{cases of i}( case_dice ) )``.

    Args:
        per_case_by_seed: one `per_case_scores` result per seed.

    Returns:
        ``{"<site>/<patient_id>": s(i)}`` (patients with no finite score left out).
    """
    by_patient: dict[str, list[float]] = {}
    for per_case in per_case_by_seed:
        seed_means: dict[str, list[float]] = {}
        for site, rows in per_case.items():
            for row in rows:
                if row.get("mean") is not None:
                    seed_means.setdefault(f"{site}/{row['patient_id']}", []).append(float(row["mean"]))
        for key, vals in seed_means.items():
            by_patient.setdefault(key, []).append(float(np.mean(vals)))
    return {k: float(np.mean(v)) for k, v in sorted(by_patient.items())}


def paired_comparison(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, Any]:
    """Paired per-patient comparison of method A against method B.

    ``d_i = a_i - b_i`` over the patients both score; mean ± std of ``d_i``; wins, losses and
    ties (``|d_i| < 1e-6``); Wilcoxon signed-rank p (two-sided, SciPy's exact method when it
    applies) and sign-test p ``min(1, 2·P[Bin(n', 1/2) ≤ min(wins, losses)])``, n' = wins + losses.

    Args:
        a: ``{patient: score}`` of method A (see `patient_scores`).
        b: the same for method B.

    Returns:
        ``{"n", "mean_diff", "std_diff", "wins", "losses", "ties", "wilcoxon_p", "sign_p",
        "patients"}``; p-values are None when every difference is zero or n < 2.

    Raises:
        ValueError: if the two methods share no patient.
    """
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("`a` and `b` share no patient: nothing to pair.")
    d = np.array([a[k] - b[k] for k in common], dtype=float)
    tie = np.abs(d) < 1e-6
    wins, losses, ties = int(np.sum((d > 0) & ~tie)), int(np.sum((d < 0) & ~tie)), int(np.sum(tie))
    wilcoxon_p = sign_p = None
    if len(d) >= 2 and wins + losses > 0:
        wilcoxon_p = float(stats.wilcoxon(d[~tie], alternative="two-sided").pvalue) if wins + losses >= 2 else 1.0
        sign_p = float(min(1.0, 2 * stats.binom.cdf(min(wins, losses), wins + losses, 0.5)))
    return {
        "n": len(common),
        "mean_diff": float(np.mean(d)),
        "std_diff": float(np.std(d)),
        "wins": wins,
        "losses": losses,
        "ties": ties,
        "wilcoxon_p": wilcoxon_p,
        "sign_p": sign_p,
        "patients": {k: float(x) for k, x in zip(common, d, strict=True)},
    }


def structure_table(
    per_case: Mapping[str, Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]]],
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """The paper-style per-structure table: in-client Dice of LV, MYO and RV, mean ± std over seeds.

    Per seed, a site's structure score is the mean over its test cases (cases where the structure
    is absent from both prediction and truth left out); then mean and population std over seeds.

    Args:
        per_case: ``{method: {seed: per_case_scores result}}``.

    Returns:
        ``{method: {site: {structure: {"mean", "std", "n"}}}}``.
    """
    table: dict = {}
    for method, by_seed in per_case.items():
        sites = sorted({s for pc in by_seed.values() for s in pc})
        table[method] = {}
        for site in sites:
            row = {}
            for k in STRUCTURES:
                per_seed = []
                for pc in by_seed.values():
                    vals = [r["dice"][k] for r in pc.get(site, []) if r["dice"].get(k) is not None]
                    if vals:
                        per_seed.append(float(np.mean(vals)))
                row[k] = (
                    {"mean": float(np.mean(per_seed)), "std": float(np.std(per_seed)), "n": len(per_seed)}
                    if per_seed
                    else {"mean": float("nan"), "std": float("nan"), "n": 0}
                )
            table[method][site] = row
    return table


def rating_events(history: Mapping[str, Any] | Sequence[Mapping[str, Any]], threshold: float = 1.0) -> list[dict]:
    """The rounds where Rate-My-LoRA's rating acted: a site's adapter weighted ``w_t(c) < threshold``.

    ``w_t(c)`` is Eq. 1's rating of site c's adapter in round t (1 when its merge did not hurt
    the others more than it helped itself).

    Args:
        history: a job's ``rml_history.json`` content (its ``rounds`` list or the list).
        threshold: ratings below this count as acting.

    Returns:
        ``[{"round", "site", "rating", "lambda"}]`` in round order.
    """
    rounds = history.get("rounds", []) if isinstance(history, Mapping) else history
    events = []
    for rec in rounds:
        if rec.get("task") is not None:
            continue
        for site, vals in sorted((rec.get("sites") or {}).items()):
            w = vals.get("rating")
            if w is not None and float(w) < threshold - 1e-9:
                events.append(
                    {"round": rec.get("round"), "site": site, "rating": float(w), "lambda": rec.get("lambda")}
                )
    return events


#: The paired comparisons of the summary: (method A, method B), A − B per patient.
PAIRS: tuple[tuple[str, str], ...] = (
    ("rate_my_lora", "fedpetuning"),
    ("rate_my_lora", "local"),
    ("rate_my_lora", "fedavg_full"),
    ("rate_my_lora", "centralised"),
    ("rate_my_lora_tensor", "rate_my_lora"),
    ("dual_lora_rated", "dual_lora_size"),
    ("dual_lora_rated", "rate_my_lora"),
    ("dual_lora_size", "fedpetuning"),
    *((f"rate_my_lora_dp_{level}", "rate_my_lora") for level in DP_NOISE_MULTIPLIERS),
)


def paired_summary(
    per_case: Mapping[str, Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]]],
    rating: Mapping[str, Sequence[Mapping[str, Any]]],
) -> dict[str, Any]:
    """The per-patient part of a comparison summary.

    Args:
        per_case: ``{method: {seed: per_case_scores result}}``.
        rating: ``{seed: rating_events of that seed's Rate-My-LoRA job}``.

    Returns:
        ``{"per_case", "structures" (structure_table), "patients" ({method: patient_scores}),
        "paired" ({"A_vs_B": paired_comparison}), "rating_events" (rating)}``; pairs whose
        methods did not both run are left out.
    """
    patients = {m: patient_scores(list(by_seed.values())) for m, by_seed in per_case.items()}
    paired = {
        f"{a}_vs_{b}": paired_comparison(patients[a], patients[b]) for a, b in PAIRS if a in patients and b in patients
    }
    return {
        "per_case": dict(per_case),
        "structures": structure_table(per_case),
        "patients": patients,
        "paired": paired,
        "rating_events": dict(rating),
    }


def _cell(c: Mapping[str, float]) -> str:
    if not c.get("n"):
        return "—"
    return f"{c['mean']:.3f} ± {c['std']:.3f}" if c["n"] > 1 else f"{c['mean']:.3f}"


def _p(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def render_paired_markdown(summary: Mapping[str, Any], titles: Mapping[str, str] | None = None) -> str:
    """Markdown of the per-structure table, the paired comparisons and the rating events.

    Args:
        summary: a comparison summary holding `paired_summary`'s fields.
        titles: method → display title (default: the method keys).

    Returns:
        Markdown text (empty when the summary has no per-case scores).
    """
    structures = summary.get("structures") or {}
    if not structures:
        return ""
    titles = dict(titles or {})
    sites = sorted({s for by_site in structures.values() for s in by_site})
    head = " | ".join(f"{s} {k}" for s in sites for k in STRUCTURES)
    lines = [
        "",
        "**Table 3 — in-client Dice per structure** (each site's model on its own test split; per seed the "
        "mean over the site's test cases, then mean ± std over seeds):",
        "",
        f"| method | {head} |",
        "|---|" + "---|" * (len(sites) * len(STRUCTURES)),
    ]
    for method, by_site in structures.items():
        cells = " | ".join(_cell((by_site.get(s) or {}).get(k) or {}) for s in sites for k in STRUCTURES)
        lines.append(f"| {titles.get(method, method)} | {cells} |")
    paired = summary.get("paired") or {}
    if paired:
        n = max(v["n"] for v in paired.values())
        lines += [
            "",
            f"**Paired comparison per test patient** ({n} patients; a patient's score is the mean foreground "
            "Dice of its ED and ES cases, averaged over the seeds; difference A − B):",
            "",
            "| A vs B | mean difference ± std | A better / worse / tied | Wilcoxon p | sign-test p |",
            "|---|---|---|---|---|",
        ]
        for key, c in paired.items():
            a, b = key.split("_vs_")
            lines.append(
                f"| {titles.get(a, a)} vs {titles.get(b, b)} | {c['mean_diff']:+.4f} ± {c['std_diff']:.4f} | "
                f"{c['wins']} / {c['losses']} / {c['ties']} | {_p(c['wilcoxon_p'])} | {_p(c['sign_p'])} |"
            )
    events = summary.get("rating_events")
    if events is not None and "rate_my_lora" in structures:
        lines += ["", "**When the rating acted** (Rate-My-LoRA rounds where a site's adapter got w_t(c) < 1):", ""]
        for seed in sorted(events, key=int):
            ev = events[seed]
            text = ", ".join(f"round {e['round']} {e['site']} w = {e['rating']:.2f}" for e in ev) or "never"
            lines.append(f"- seed {seed}: {text}")
    return "\n".join(lines) + "\n"
