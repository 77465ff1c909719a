"""benchmarks/robustness.py: the phantom-vendor and RVSC sections on an untrained quick network,
the ACDC section on an empty or crafted comparison folder, the README block."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from cardiolora.networks import lora_unet, plain_state_dict

REPO = Path(__file__).resolve().parents[1]
RVSC = REPO.parent / "shared" / "data" / "rvsc_dicom" / "patient09"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("robustness", REPO / "benchmarks" / "robustness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(bench, tmp_path_factory):
    """One run of the command: 1 phantom subject per vendor, RVSC (skipped without the data), empty ACDC."""
    tmp = tmp_path_factory.mktemp("robustness")
    torch.manual_seed(0)
    model = tmp / "model.pt"
    torch.save(plain_state_dict(lora_unet("quick")), model)
    work = tmp / "work"
    argv = ["--model", str(model), "--profile", "quick", "--workdir", str(work), "--subjects", "1"]
    argv += ["--rvsc", str(RVSC), "--compare", str(tmp / "no-comparison"), "--no-readme"]
    assert bench.main(argv) == 0
    return work, json.loads((work / "robustness.json").read_text())


def _in_unit(value):
    return value is None or 0.0 <= value <= 1.0


def test_phantom_section_structure_and_range(bench, quick_run):
    work, result = quick_run
    sec = result["phantoms"]
    assert sec["status"] == "ok" and sec["subjects"] == 1 and sec["generated"] is True
    assert list(sec["vendors"]) == list(bench.VENDORS)
    for vendor, v in sec["vendors"].items():
        assert v["cases"] == 2 == len(v["rows"]), vendor  # ED and ES of one subject
        assert [r["phase"] for r in v["rows"]] == ["ED", "ES"] and set(v["by_phase"]) == {"ED", "ES"}
        assert v["by_phase"]["ES"]["raw"]["RV"] == pytest.approx(v["rows"][1]["raw"]["RV"])
        for variant in ("raw", "cleaned"):
            assert set(v[variant]) == {"mean", "LV", "MYO", "RV"}
            assert all(_in_unit(x) for x in v[variant].values()), (vendor, variant, v[variant])
            for row in v["rows"]:
                assert all(_in_unit(x) for x in row[variant].values())
    assert (work / "phantoms" / "ge" / "patient001" / "Info.cfg").is_file()
    folders, generated = bench.make_phantoms(work / "phantoms", 1, 0)  # same settings: reused
    assert not generated and folders["ge"] == work / "phantoms" / "ge"
    assert result["seconds"] > 0 and result["command"].startswith(".venv/bin/python benchmarks/robustness.py")
    md = (work / "robustness.md").read_text()
    assert "| philips |" in md and "| siemens |" in md


def test_rvsc_section(quick_run):
    _, result = quick_run
    sec = result["rvsc"]
    if not RVSC.is_dir():
        assert sec["status"] == "skipped" and str(RVSC) in sec["reason"]
        return
    assert sec["status"] == "ok"
    assert [r["case_id"] for r in sec["cases"]] == ["P09-0020", "P09-0022", "P09-0023"]
    for r in sec["cases"]:
        assert _in_unit(r["rv_dice"]) and _in_unit(r["rv_dice_cleaned"])
        assert set(r["rv_dice_flipped"]) == {"none", "left-right", "up-down", "both"}
        assert r["rv_dice_flipped"]["none"] == pytest.approx(r["rv_dice"])
        assert sum(r["truth_rv_as"].values()) == pytest.approx(1.0)
        assert r["spacing_zyx_mm"][0] == pytest.approx(7.0)
    assert Path(sec["overlay"]).is_file()


def test_acdc_section_not_run_on_empty_folder(bench, quick_run, tmp_path):
    _, result = quick_run
    assert result["acdc"]["status"] == "not_run"
    assert "Not run yet" in result["acdc"]["message"] and "benchmarks/compare.py" in result["acdc"]["message"]
    direct = bench.acdc_section(tmp_path, "quick")
    assert direct["status"] == "not_run"
    assert "Not run yet" in bench.render_markdown({**result, "acdc": direct})


def _rows(means):
    return [{"patient_id": f"p{i}", "dice": {"LV": m, "MYO": m, "RV": None}, "mean": m} for i, m in enumerate(means)]


def test_acdc_section_reads_finished_seeds(bench, tmp_path):
    # a crafted comparison folder: two sites, no base model, Rate-My-LoRA finished for seeds 0 and 2
    for site in ("reference", "site-1", "site-2"):
        (tmp_path / "data" / "acdc" / "sites" / site).mkdir(parents=True)
        entry = {"case_id": "c", "image": "x.nii.gz", "group": "DCM" if site == "site-1" else "HCM"}
        (tmp_path / "data" / "acdc" / "sites" / site / "datalist.json").write_text(json.dumps({"test": [entry]}))
    for seed, shift in (("0", 0.0), ("2", 0.2)):
        done = tmp_path / f"seed{seed}" / "rate_my_lora" / "done.json"
        done.parent.mkdir(parents=True)
        per_case = {"site-1": _rows([0.5 + shift, 0.7 + shift]), "site-2": _rows([0.4 + shift])}
        done.write_text(json.dumps({"matrix": {}, "per_case": per_case}))
    pending = tmp_path / "seed0" / "fedpetuning" / "done.json"
    pending.parent.mkdir(parents=True)
    pending.write_text(json.dumps({"matrix": {}}))
    sec = bench.acdc_section(tmp_path, "quick")
    assert sec["status"] == "ok" and "base" not in sec
    assert sec["sites"] == {"site-1": "DCM", "site-2": "HCM"}
    assert sec["seeds"] == {"rate_my_lora": ["0", "2"]}
    rml = sec["methods"]["rate_my_lora"]
    assert rml["site-1"]["mean"] == pytest.approx(0.7) and rml["site-1"]["seeds"] == 2
    assert rml["site-1"]["cases"] == 2 and rml["site-1"]["RV"] is None
    assert rml["site-2"]["LV"] == pytest.approx(0.5)
    assert any(str(pending) in n for n in sec["notes"])
    md = "\n".join(bench.render_acdc(sec))
    assert "Rate-My-LoRA: seeds 0, 2" in md and "| site-1 | DCM | 2 |" in md


@pytest.mark.parametrize(
    "name, text",
    [
        ("before M&Ms-2", "# B\n\n### Results: ACDC\n\nx\n\n### Results: M&Ms-2\n\ny\n"),
        ("no M&Ms-2 heading", "# B\n\ntext\n"),
    ],
)
def test_ensure_block(bench, tmp_path, name, text):
    out = bench.ensure_block(text)
    assert out.count("<!-- robustness:start -->") == 1 and out.count("### Cross-vendor robustness") == 1
    assert bench.ensure_block(out) == out
    if "M&Ms-2" in text:
        assert out.index("<!-- robustness:end -->") < out.index("### Results: M&Ms-2")
    readme = tmp_path / "README.md"
    readme.write_text(text)
    bench.update_readme(readme, "`cmd`\n\nbody")
    again = readme.read_text()
    assert "`cmd`\n\nbody\n<!-- robustness:end -->" in again
    assert again.replace("`cmd`\n\nbody\n", "") == out
