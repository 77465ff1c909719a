"""A provisioned FLARE deployment (``nvflare provision``): project file, startup kits, participants, admin.

The pieces an operator runs, each a small function, so the one-machine demo
(``deploy/provision_demo.py``, ``make provision-demo``) and a real deployment use the same steps:

1. :func:`project_config` / :func:`write_project` — the ``project.yml`` of FLARE's provisioning tool
   (``api_version: 3``): one server, the sites, one project admin, and the builders of FLARE's own
   default project (``WorkspaceBuilder``, ``StaticFileBuilder``, ``CertBuilder`` — a root CA and one
   certificate per participant, so every connection is mutual TLS — and ``SignatureBuilder``).
   The committed ``jobs/provision/project.yml`` is :func:`write_project` with the defaults.
2. :func:`provision` — ``nvflare provision -p project.yml -w <workspace>``: one startup kit per
   participant in ``<workspace>/<project>/prod_NN/<name>/``.
3. :func:`write_site_file` — each participant's own ``local/cardiolora_site.json`` (the ``fl``
   section, and for a site the ``inference`` section pointing at its newest personalised model).
4. :func:`start_participant` — the kit's own ``startup/sub_start.sh --once``: FLARE's server or client
   process in the foreground, its own process group, the given venv's ``bin`` first on ``PATH``
   (the kits start a bare ``python3``), so the participant runs that venv's ``cardiolora``.
5. :func:`admin_session` / :func:`wait_for_clients` / :func:`run_job` — the admin's side with
   FLARE's admin API (``new_secure_session`` with the admin's kit): submit, follow ``show_stats``,
   wait, download the results.
6. :func:`shutdown` — ``shutdown all`` through the admin API, then wait for every process (and kill,
   by process group, any that did not stop).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cardiolora.fl.job_info import SUMMARY_FILE

__all__ = [
    "DEFAULT_PROJECT",
    "DEFAULT_SITES",
    "DEFAULT_ADMIN",
    "DEFAULT_PORTS",
    "Kits",
    "free_ports",
    "project_config",
    "write_project",
    "provision",
    "write_site_file",
    "start_participant",
    "admin_session",
    "wait_for_clients",
    "run_job",
    "shutdown",
]

#: Project name (the folder under the provisioning workspace).
DEFAULT_PROJECT = "cardiolora"
#: The sites of the demo (their names are the FLARE client names the jobs use).
DEFAULT_SITES = ("site-1", "site-2", "site-3")
#: The project admin who submits jobs (the name is in the admin's certificate).
DEFAULT_ADMIN = "admin@cardiolora.example"
#: Ports of the committed project file: FL traffic and the admin API (any free pair works).
DEFAULT_PORTS = (8102, 8103)


@dataclass(frozen=True)
class Kits:
    """Where the startup kits of one provisioning are.

    Attributes:
        root: ``<workspace>/<project>/prod_NN``.
        server: the server's kit.
        sites: ``{site: kit}``.
        admin: the admin's kit.
    """

    root: Path
    server: Path
    sites: dict[str, Path]
    admin: Path


def free_ports(n: int = 2, host: str = "127.0.0.1") -> tuple[int, ...]:
    """`n` distinct TCP ports that are free on `host` now (the OS picks them).

    Args:
        n: how many.
        host: the interface.

    Returns:
        The ports.
    """
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return tuple(s.getsockname()[1] for s in sockets)
    finally:
        for s in sockets:
            s.close()


def _org(name: str) -> str:
    """An organisation name FLARE accepts (``^[A-Za-z0-9_]+$``): the site name with ``_``."""
    return "".join(c if c.isalnum() else "_" for c in name)


def project_config(
    server: str = "localhost",
    fed_learn_port: int = DEFAULT_PORTS[0],
    admin_port: int = DEFAULT_PORTS[1],
    sites: Sequence[str] = DEFAULT_SITES,
    admin: str = DEFAULT_ADMIN,
    project: str = DEFAULT_PROJECT,
) -> dict[str, Any]:
    """The provisioning project (what ``project.yml`` holds).

    Args:
        server: the server's host name: the name clients and admins connect to, and the name in its
            certificate (``localhost`` on one machine; a hospital network uses the server's FQDN).
        fed_learn_port: the port of FL traffic (sites → server).
        admin_port: the port of the admin API (admins → server); may differ from `fed_learn_port`.
        sites: the client names (one organisation each).
        admin: the project admin's e-mail (the admin kit's name; role ``project_admin``).
        project: the project name.

    Returns:
        The project dict (``api_version: 3``).

    Raises:
        ValueError: for ports outside 1..65535 or equal, no sites, or a repeated name.
    """
    for arg, port in (("fed_learn_port", fed_learn_port), ("admin_port", admin_port)):
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"`{arg}` must be a TCP port in 1..65535, got {port!r}.")
    if fed_learn_port == admin_port:
        raise ValueError(f"`fed_learn_port` and `admin_port` must differ, both are {fed_learn_port}.")
    if not sites or len(set(sites)) != len(sites) or server in sites:
        raise ValueError(f"`sites` must be distinct names other than the server's, got {list(sites)!r}.")
    participants: list[dict[str, Any]] = [
        {
            "name": server,
            "type": "server",
            "org": _org(project),
            "fed_learn_port": fed_learn_port,
            "admin_port": admin_port,
        }
    ]
    participants += [{"name": s, "type": "client", "org": _org(s)} for s in sites]
    participants.append({"name": admin, "type": "admin", "org": _org(project), "role": "project_admin"})
    return {
        "api_version": 3,
        "name": project,
        "description": "cardiolora: federated LoRA fine-tuning of the cardiac MRI U-Net (jobs/README.md)",
        "participants": participants,
        "builders": [
            {
                "path": "nvflare.lighter.impl.workspace.WorkspaceBuilder",
                "args": {"template_file": ["master_template.yml"]},
            },
            {"path": "nvflare.lighter.impl.static_file.StaticFileBuilder", "args": {"config_folder": "config"}},
            {"path": "nvflare.lighter.impl.cert.CertBuilder"},
            {"path": "nvflare.lighter.impl.signature.SignatureBuilder"},
        ],
    }


def write_project(path: str | os.PathLike, **kwargs: Any) -> Path:
    """Write :func:`project_config` (``**kwargs``) as YAML to `path`.

    Returns:
        `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = (
        "# FLARE provisioning project of cardiolora: nvflare provision -p project.yml -w <workspace>\n"
        "# Written by cardiolora.fl.provision.write_project; jobs/README.md, 'Provisioned deployment'.\n"
    )
    path.write_text(head + yaml.safe_dump(project_config(**kwargs), sort_keys=False))
    return path


def provision(
    project_yml: str | os.PathLike, workspace: str | os.PathLike, python: str = sys.executable, timeout: float = 300
) -> Kits:
    """Run ``nvflare provision`` and find the kits it wrote.

    Args:
        project_yml: the project file.
        workspace: the provisioning workspace (FLARE keeps its CA state there: provisioning again
            into the same workspace reuses the root CA and writes ``prod_NN+1``).
        python: the interpreter whose FLARE provisions.
        timeout: seconds.

    Returns:
        The kits of the newest ``prod_NN``.

    Raises:
        RuntimeError: if provisioning fails (with FLARE's output).
    """
    project = yaml.safe_load(Path(project_yml).read_text())
    workspace = Path(workspace)
    done = subprocess.run(
        [python, "-m", "nvflare.cli", "provision", "-p", str(project_yml), "-w", str(workspace)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    prods = sorted((workspace / project["name"]).glob("prod_*"))
    if done.returncode != 0 or not prods:
        raise RuntimeError(f"nvflare provision -p {project_yml} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    root = prods[-1]
    by_type: dict[str, list[str]] = {}
    for p in project["participants"]:
        by_type.setdefault(p["type"], []).append(p["name"])
    return Kits(
        root=root,
        server=root / by_type["server"][0],
        sites={s: root / s for s in by_type.get("client", [])},
        admin=root / by_type["admin"][0],
    )


def write_site_file(kit: str | os.PathLike, fl: Mapping[str, Any], inference: Mapping[str, Any] | None = None) -> Path:
    """Write a participant's ``<kit>/local/cardiolora_site.json`` (:mod:`cardiolora.site_file`).

    Args:
        kit: the participant's startup kit (its workspace root).
        fl: the ``fl`` section (:mod:`cardiolora.fl.site_config`).
        inference: the ``inference`` section (``cardiolora segment --config``), or None.

    Returns:
        The file.
    """
    body: dict[str, Any] = {"fl": dict(fl)}
    if inference is not None:
        body["inference"] = dict(inference)
    path = Path(kit) / "local" / "cardiolora_site.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=1))
    return path


def start_participant(
    kit: str | os.PathLike, venv_bin: str | os.PathLike, env: Mapping[str, str] | None = None
) -> subprocess.Popen:
    """Start one participant with its kit's ``startup/sub_start.sh --once`` (server or client).

    Args:
        kit: the participant's startup kit (also its workspace).
        venv_bin: the ``bin`` folder of the venv that holds ``cardiolora`` and ``nvflare``; put first
            on ``PATH`` so the kit's ``python3`` is that venv's.
        env: the environment (default: this process's), without ``PYTHONPATH`` or ``CARDIOLORA_SITE_CONFIG``
            (the participant reads its own ``local/`` file).

    Returns:
        The process (its own process group; the log is ``<kit>/log.txt`` and ``<kit>/console.txt``).
    """
    kit = Path(kit)
    env = {k: v for k, v in (env or os.environ).items() if k not in ("PYTHONPATH", "CARDIOLORA_SITE_CONFIG")}
    env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PYTHONUNBUFFERED", "1")
    console = open(kit / "console.txt", "ab")  # noqa: SIM115 - kept open by the child
    try:
        return subprocess.Popen(
            ["bash", str(kit / "startup" / "sub_start.sh"), "--once"],
            cwd=kit,
            env=env,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        console.close()


def admin_session(admin_kit: str | os.PathLike, admin: str = DEFAULT_ADMIN, timeout: float = 60):
    """The admin's session (FLARE's ``new_secure_session`` with the admin's kit: mutual TLS).

    Args:
        admin_kit: the admin's startup kit.
        admin: the admin's name (as provisioned).
        timeout: seconds to connect.

    Returns:
        A ``nvflare.fuel.flare_api.flare_api.Session`` (close it).
    """
    from nvflare.fuel.flare_api.flare_api import new_secure_session

    return new_secure_session(admin, str(admin_kit), timeout=timeout)


def wait_for_clients(session, sites: Sequence[str], timeout: float = 180) -> None:
    """Wait until every site in `sites` is connected to the server.

    Raises:
        TimeoutError: naming the sites that did not connect.
    """
    deadline = time.monotonic() + timeout
    while True:
        connected = {c.name for c in session.get_connected_client_list()}
        if set(sites) <= connected:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"sites {sorted(set(sites) - connected)} did not connect within {timeout} s.")
        time.sleep(1)


def run_job(session, job_folder: str | os.PathLike, download_to: str | os.PathLike, timeout: float = 1800) -> dict:
    """Submit `job_folder`, follow ``show_stats`` until the job ends, download the results.

    Args:
        session: the admin session.
        job_folder: an exported job folder (FLARE signs it in place when submitting).
        download_to: where ``download_job_result`` writes (``<download_to>/<job id>/``).
        timeout: seconds the job may take.

    Returns:
        ``{"job_id", "status", "result" (the downloaded folder or None), "stats" (the distinct
        ``cardiolora`` stats seen while the job ran), "summary_while_running" (the first
        ``job_summary.json`` read with ``cat server <job id>/job_summary.json``, or None),
        "progress_lines" (the controller's ``progress {...}`` lines found by ``grep server progress <job
        id>/log.txt``), "seconds"}``.

    Raises:
        TimeoutError: if the job does not end in time (it is aborted first).
    """
    start = time.monotonic()
    job_id = session.submit_job(str(job_folder))
    seen: list[dict] = []
    summary_seen = None
    progress_lines: list[str] = []
    status = ""
    while time.monotonic() - start < timeout:
        status = session.get_job_meta(job_id).get("status", "")
        if status.startswith("FINISHED"):
            break
        if status == "RUNNING":
            if summary_seen is None:  # the admin console's `cat server <job id>/job_summary.json`
                try:
                    text = session.cat_target("server", file=f"{job_id}/{SUMMARY_FILE}")
                    summary_seen = json.loads(text) if text.lstrip().startswith("{") else None
                except Exception:  # not written yet (before `init` ends), or the job is ending
                    pass
            # show_stats only once the controller runs: FLARE 2.9's job process answers it with an
            # error (logged in the server's job log) while its engine is still starting
            stats = None
            if summary_seen is not None:
                try:
                    stats = session.show_stats(job_id, "server").get("server", {}).get("cardiolora")
                except Exception:  # the job process is ending
                    stats = None
            if stats and (not seen or stats != seen[-1]):
                seen.append(stats)
                try:  # the admin console's `grep server progress <job id>/log.txt`
                    found = session.grep_target("server", pattern="progress", file=f"{job_id}/log.txt")
                    progress_lines = [line for line in found.splitlines() if "progress {" in line]
                except Exception:
                    pass
        time.sleep(2)
    else:
        session.abort_job(job_id)
        raise TimeoutError(f"job {job_id} did not finish in {timeout} s (last status {status!r}); aborted.")
    Path(download_to).mkdir(parents=True, exist_ok=True)
    result = session.download_job_result(job_id, destination=str(download_to)) if status else None
    return {
        "job_id": job_id,
        "status": status,
        "result": result,
        "stats": seen,
        "summary_while_running": summary_seen,
        "progress_lines": progress_lines,
        "seconds": round(time.monotonic() - start, 1),
    }


def shutdown(session, processes: Sequence[subprocess.Popen], timeout: float = 90) -> list[int]:
    """``shutdown all`` through the admin API, then wait for the participants' processes.

    Args:
        session: the admin session, or None if it could not be opened (the processes are then
            stopped by signal).
        processes: the participants' processes (:func:`start_participant`).
        timeout: seconds to wait before killing their process groups.

    Returns:
        The process ids that had to be killed.
    """
    if session is not None:
        try:
            session.shutdown("all", wait=True, timeout=timeout)  # closes the session too
        except Exception:  # a server already gone: the processes are stopped below
            pass
    deadline = time.monotonic() + timeout
    for p in processes:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    killed = []
    for p in processes:
        try:
            os.killpg(p.pid, signal.SIGTERM if p.poll() is None else 0)
        except (ProcessLookupError, PermissionError):
            continue
        if p.poll() is None:
            killed.append(p.pid)
    time.sleep(2)
    for p in processes:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        p.wait()
    return killed
