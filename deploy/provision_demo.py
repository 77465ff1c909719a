"""A provisioned FLARE deployment on one machine, end to end (``make provision-demo``).

::

    python deploy/provision_demo.py --workdir runs/provision [--rounds 1] [--pretrained runs/demo/pretrain/model.pt]

1. builds a wheel of this checkout and installs it (not editable) into ``<workdir>/venv``: every
   participant runs that installed package, not the checkout (the heavy dependencies — torch, MONAI,
   FLARE — come from this interpreter's site-packages through a path entry, so nothing is downloaded);
2. makes three small phantom sites with the project's generator (or takes ``--phantoms``) and a
   base model ``W_0`` (``--pretrained``, or an untrained quick-profile network);
3. writes ``<workdir>/project.yml`` with two free ports (:func:`cardiolora.fl.provision.write_project`),
   runs ``nvflare provision`` into ``<workdir>/provision/`` (root CA, one certificate per participant:
   mutual TLS), and writes each participant's ``local/cardiolora_site.json``;
4. starts the server and the three sites, each its own process from its own kit
   (``startup/sub_start.sh --once``, the venv's ``python3``);
5. as the admin (``new_secure_session`` with the admin kit): exports the quick-profile
   ``rate_my_lora`` job from the installed package into ``<workdir>/jobs/`` (``--fresh``: a repeated demo
   never resumes an older run's state), submits it, follows ``show_stats``, waits,
   ``download_job_result`` into ``<workdir>/admin_downloads/``;
6. ``shutdown all``, waits for every process, and prints per-site Dice and bytes.

``tests/test_provision.py`` runs :func:`run_demo` with one round on the test suite's tiny phantoms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from cardiolora.fl import provision as prov
from cardiolora.fl.job_info import SUMMARY_FILE

REPO = Path(__file__).resolve().parents[1]
#: What the wheel is built from (custom/cardiolora links to bundles/, inference/ and jobs/).
WHEEL_SOURCES = ("pyproject.toml", "README.md", "custom", "bundles", "inference", "jobs")
JOB = "rate_my_lora"


def install_participant_venv(dest: Path, repo: Path = REPO, python: str = sys.executable) -> Path:
    """A venv at `dest` with the wheel of `repo` installed (not editable); returns its ``bin``.

    The wheel is built from a copy of the sources (setuptools writes ``build/`` and ``*.egg-info``
    next to them: never into the checkout). The venv has no dependencies of its own: a ``.pth``
    names `python`'s site-packages (whose own ``.pth`` files, e.g. an editable install of the
    checkout, are not processed from there), so ``import cardiolora`` is the installed wheel.

    Raises:
        RuntimeError: if building or installing fails (with pip's output).
    """
    if dest.exists():
        shutil.rmtree(dest)
    build = dest.parent / f"{dest.name}.build"
    if build.exists():
        shutil.rmtree(build)
    src = build / "src"
    src.mkdir(parents=True)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "exported")
    for name in WHEEL_SOURCES:
        if (repo / name).is_dir():
            shutil.copytree(repo / name, src / name, symlinks=True, ignore=skip)
        else:
            shutil.copy2(repo / name, src / name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = dict(capture_output=True, text=True, timeout=900, check=False, env=env)
    steps = [
        [python, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(build / "wheels")],
        [python, "-m", "venv", "--without-pip", str(dest)],
    ]
    for cmd in steps:
        done = subprocess.run(cmd, cwd=build, **run)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    wheel = next((build / "wheels").glob("cardiolora-*.whl"))
    py = dest / "bin" / "python"
    done = subprocess.run(
        [python, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", str(wheel)], **run
    )
    if done.returncode != 0:
        raise RuntimeError(f"installing {wheel} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], **run
    ).stdout.strip()
    (Path(purelib) / "_project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    shutil.rmtree(build)
    return dest / "bin"


def make_sites(workdir: Path, sites: Sequence[str], phantoms: Path | None = None) -> Path:
    """Per-site data folders with 1 validation and 1 test case each, from the project's phantoms.

    Args:
        workdir: ``<workdir>/data/<site>/datalist.json`` are written.
        sites: the site names (``site-1``..: phantom vendors GE, Philips, Siemens).
        phantoms: a phantom folder of :func:`cardiolora.data.generate.generate_sites` with those
            sites, or None to generate a small one in ``<workdir>/phantoms``.

    Returns:
        ``<workdir>/data``.
    """
    from cardiolora.data.dataset import load_datalist, write_datalist
    from cardiolora.data.generate import SiteSpec, generate_sites

    if phantoms is None:
        phantoms = workdir / "phantoms"
        vendors = ("ge", "philips", "siemens")
        specs = [SiteSpec(s, vendors[i % 3], 3 if i % 3 == 1 else 4) for i, s in enumerate(sites)]
        generate_sites(phantoms, specs, seed=7, dicom_subjects=0, progress=False)
    root = workdir / "data"
    for site in sites:
        src = phantoms / "sites" / site
        splits = {
            "train": load_datalist(src, "train"),
            "val": load_datalist(src, "val")[:1],
            "test": load_datalist(src, "test")[:1],
        }
        write_datalist(splits, root / site / "datalist.json")
    return root


def base_model(workdir: Path, pretrained: Path | None) -> Path:
    """`pretrained`, or an untrained quick-profile network (seed 0) saved to ``<workdir>/data/base_model.pt``."""
    if pretrained is not None:
        if not Path(pretrained).is_file():
            raise FileNotFoundError(f"{pretrained}: no base model (make one with `cardiolora pretrain`).")
        return Path(pretrained).resolve()
    from cardiolora.fl.network import bundle_network
    from cardiolora.networks import plain_state_dict

    torch.manual_seed(0)
    path = workdir / "data" / "base_model.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(plain_state_dict(bundle_network("quick", 0)), path)
    return path


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}; see {log}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"the server did not listen on port {port} within {timeout} s; see {log}")


def kill_leftovers(marker: str) -> list[int]:
    """Kill (by pid) the processes whose command line names `marker` (our kits' folder); nothing else."""
    killed = []
    for pid_dir in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd and int(pid_dir.name) != os.getpid():
            try:
                os.kill(int(pid_dir.name), signal.SIGKILL)
                killed.append(int(pid_dir.name))
            except OSError:
                pass
    return killed


def run_demo(
    workdir: str | os.PathLike,
    rounds: int = 1,
    sites: Sequence[str] = prov.DEFAULT_SITES,
    pretrained: Path | None = None,
    phantoms: Path | None = None,
    venv_bin: Path | None = None,
    timeout: float = 1800,
) -> dict:
    """Provision, start, submit, wait, download, stop (see the module docstring).

    Args:
        workdir: the demo's folder (replaced parts: ``venv``, ``provision``, ``jobs``, ``out``).
        rounds: federated rounds of the job.
        sites: site names.
        pretrained: the base model ``W_0`` (None: an untrained network; Dice is then near 0).
        phantoms: phantom folder with the sites (None: generate one).
        venv_bin: ``bin`` of a venv with cardiolora installed (None: build one in ``<workdir>/venv``).
        timeout: seconds the job may take.

    Returns:
        ``{"job_id", "status", "seconds", "ports", "kits", "result", "summary", "sites": {site:
        {"dice_global", "dice_personalised", "bytes_up", "bytes_down", "output"}}, "stats", "killed",
        "leftovers", "interpreters"}``.

    Raises:
        RuntimeError: if a step fails (the message names its log).
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("provision", "jobs", "out", "admin_downloads", "server_state"):
        shutil.rmtree(workdir / name, ignore_errors=True)
    venv_bin = Path(venv_bin) if venv_bin is not None else install_participant_venv(workdir / "venv")
    data = make_sites(workdir, sites, phantoms)
    base = base_model(workdir, pretrained)

    fl_port, admin_port = prov.free_ports(2)
    project = prov.write_project(
        workdir / "project.yml", fed_learn_port=fl_port, admin_port=admin_port, sites=tuple(sites)
    )
    kits = prov.provision(project, workdir / "provision")
    prov.write_site_file(kits.server, {"pretrained_path": str(base), "state_dir": str(workdir / "server_state")})
    for site in sites:
        out = workdir / "out" / site
        prov.write_site_file(
            kits.sites[site],
            {"dataset_dir": str(data / site), "output_dir": str(out), "num_threads": 1},
            {"model": str(out / JOB / "latest" / "personalised_model.pt"), "profile": "quick"},
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDIOLORA")}
    env.update({"HOME": str(workdir / "home"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    (workdir / "home").mkdir(exist_ok=True)

    # the admin exports the job from the installed package (no checkout needed)
    job_dir = workdir / "jobs" / JOB
    export = subprocess.run(
        [str(venv_bin / "python"), "-m", f"cardiolora.jobs.{JOB}.job", "--export-dir", str(job_dir)]
        + ["--rounds", str(rounds), "--min-clients", str(len(sites)), "--fresh"],
        capture_output=True,
        text=True,
        env={k: v for k, v in env.items() if k != "PYTHONPATH"},
        cwd=workdir,
        timeout=300,
        check=False,
    )
    if export.returncode != 0:
        raise RuntimeError(f"exporting the job failed:\n{export.stdout}{export.stderr}")

    processes: list[subprocess.Popen] = []
    session = None
    killed: list[int] = []
    interpreters: set[str] = set()
    try:
        server = prov.start_participant(kits.server, venv_bin, env)
        processes.append(server)
        _wait_for_port(admin_port, server, kits.server / "console.txt")
        processes += [prov.start_participant(kits.sites[s], venv_bin, env) for s in sites]
        session = prov.admin_session(kits.admin)
        prov.wait_for_clients(session, sites)
        interpreters = _interpreters(str(kits.root))
        outcome = prov.run_job(session, job_dir, workdir / "admin_downloads", timeout=timeout)
    finally:
        killed = prov.shutdown(session, processes)
        leftovers = kill_leftovers(str(kits.root))
    if outcome["status"] != "FINISHED:COMPLETED":
        log = kits.server / outcome["job_id"] / "log.txt"
        raise RuntimeError(f"job {outcome['job_id']} ended {outcome['status']}; see {log} and {kits.server}/log.txt")
    result = Path(outcome["result"]) / "workspace"
    summary = json.loads((result / SUMMARY_FILE).read_text())
    table = json.loads((result / "cross_site_eval.json").read_text())
    dice = table["mean_over_structures"]["dice"]
    per_site = {
        s: {
            "dice_global": dice.get("global", {}).get(s),
            "dice_personalised": dice.get(s, {}).get(s),
            "bytes_up": summary["bytes"].get(s, {}).get("up"),
            "bytes_down": summary["bytes"].get(s, {}).get("down"),
            "output": str(workdir / "out" / s / JOB / outcome["job_id"]),
        }
        for s in sites
    }
    return {
        **outcome,
        "ports": {"fed_learn_port": fl_port, "admin_port": admin_port},
        "kits": {"root": str(kits.root), "admin": str(kits.admin)},
        "result": str(result),
        "summary": summary,
        "sites": per_site,
        "killed": killed,
        "leftovers": leftovers,
        "interpreters": sorted(interpreters),
    }


def _interpreters(marker: str) -> set[str]:
    """The interpreters of the running Python processes whose command line names `marker` (our
    participants): the command's first word as the process's own ``PATH`` resolves it (the kits
    start a bare ``python3``)."""
    found = set()
    for pid_dir in Path("/proc").glob("[0-9]*"):
        try:
            argv = (pid_dir / "cmdline").read_bytes().decode(errors="replace").split("\0")
            environ = (pid_dir / "environ").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if marker not in " ".join(argv) or "python" not in Path(argv[0]).name:
            continue
        path = dict(kv.split("=", 1) for kv in environ if "=" in kv).get("PATH", "")
        found.add(argv[0] if os.sep in argv[0] else shutil.which(argv[0], path=path) or argv[0])
    return found


def report(outcome: dict) -> str:
    """Per-site Dice (mean over LV/MYO/RV on each site's test split) and bytes, as a Markdown table."""
    lines = [
        f"job {outcome['job_id']}: {outcome['status']} in {outcome['seconds']:.0f} s (submit to end); "
        f"ports {outcome['ports']['fed_learn_port']} (FL) / {outcome['ports']['admin_port']} (admin); "
        f"results in {outcome['result']}",
        "",
        "| site | Dice W_T | Dice personalised | bytes up | bytes down |",
        "|---|---|---|---|---|",
    ]

    def num(x, fmt):
        return format(x, fmt) if isinstance(x, (int, float)) else "—"

    for site, r in outcome["sites"].items():
        lines.append(
            f"| {site} | {num(r['dice_global'], '.4f')} | {num(r['dice_personalised'], '.4f')} | "
            f"{num(r['bytes_up'], ',')} | {num(r['bytes_down'], ',')} |"
        )
    lines.append("")
    lines.append(
        f"stopped: {len(outcome['sites']) + 1} participants by `shutdown all`; killed after the timeout: "
        f"{outcome['killed'] or 'none'}; left running: {outcome['leftovers'] or 'none'}"
    )
    failed = outcome["summary"].get("failed_sites") or {}
    for site, f in failed.items():
        lines.append(f"failed: {site} at `{f['task']}`: {f['reason']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python deploy/provision_demo.py", description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("runs/provision"), help="the demo's folder")
    p.add_argument("--rounds", type=int, default=1, help="federated rounds of the quick-profile job")
    p.add_argument("--pretrained", type=Path, help="base model W_0 (default: an untrained network)")
    p.add_argument("--phantoms", type=Path, help="phantom folder with site-1..3 (default: generate a small one)")
    p.add_argument("--venv-bin", type=Path, help="bin/ of a venv with cardiolora installed (default: build one)")
    args = p.parse_args(argv)
    try:
        outcome = run_demo(
            args.workdir, args.rounds, pretrained=args.pretrained, phantoms=args.phantoms, venv_bin=args.venv_bin
        )
    except (RuntimeError, TimeoutError, FileNotFoundError) as err:
        print(f"provision_demo: {err}", file=sys.stderr)
        return 2
    print(report(outcome))
    return 0


if __name__ == "__main__":
    sys.exit(main())
