"""A real Orthanc PACS with its DICOMweb plugin on 127.0.0.1, for the tests; and small faulty servers.

:func:`start_orthanc` starts ``Orthanc <config>`` as a subprocess with its own configuration in a
temporary folder (free HTTP and DICOM ports, storage in that folder, no remote access, no
authentication, the DICOMweb plugin of Debian's ``orthanc-dicomweb``), waits until its REST API
and the DICOMweb root answer, and :meth:`Orthanc.stop` ends it. Debian's ``orthanc`` service is
never used. :class:`FaultyServer` answers every request with an HTTP error or after a delay;
:class:`Proxy` forwards to Orthanc and can add an instance to QIDO-RS answers (a partial study) or
refuse STOW-RS. The tests run these two in their own process (:class:`ServerProcess`, this file
as a script), as a real server would be.
"""

from __future__ import annotations

import glob
import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

#: Where Debian's orthanc-dicomweb puts the plugin (``dpkg -L orthanc-dicomweb``).
PLUGIN_GLOBS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so*")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def orthanc_binary() -> str:
    """The Orthanc executable, or skip the test saying why (``.ci/run`` installs it)."""
    binary = shutil.which("Orthanc") or next(iter(glob.glob("/usr/sbin/Orthanc")), None)
    if binary is None:
        pytest.skip("Orthanc is not installed (Debian packages orthanc, orthanc-dicomweb): no PACS to test against")
    return binary


def dicomweb_plugin() -> str:
    """The DICOMweb plugin's shared library (Orthanc without it is a broken install: fail, do not skip)."""
    for pattern in PLUGIN_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    pytest.fail(
        f"Orthanc is installed but its DICOMweb plugin is not (looked for {PLUGIN_GLOBS}): install orthanc-dicomweb"
    )


class Orthanc:
    """A running Orthanc (see :func:`start_orthanc`).

    Attributes:
        url: its REST root, ``http://127.0.0.1:<port>``.
        dicomweb: its DICOMweb root, ``<url>/dicom-web``.
        log: the file holding its output.
    """

    def __init__(self, process: subprocess.Popen, port: int, log: Path) -> None:
        self.process, self.log = process, log
        self.url = f"http://127.0.0.1:{port}"
        self.dicomweb = f"{self.url}/dicom-web"

    def upload(self, files: list[Path]) -> None:
        """Store DICOM files through Orthanc's own REST API (``POST /instances``), not DICOMweb."""
        for f in files:
            r = requests.post(f"{self.url}/instances", data=Path(f).read_bytes(), timeout=30)
            r.raise_for_status()

    def series_of(self, study_uid: str) -> list[dict]:
        """QIDO-RS of the study's series (modality, SeriesInstanceUID, number of instances)."""
        r = requests.get(f"{self.dicomweb}/studies/{study_uid}/series", timeout=30)
        r.raise_for_status()
        return [
            {"modality": s["00080060"]["Value"][0], "series_uid": s["0020000E"]["Value"][0],
             "n": int(s["00201209"]["Value"][0])}
            for s in r.json()
        ]  # fmt: skip

    def stop(self) -> None:
        """End the process (SIGTERM, then SIGKILL after 10 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_orthanc(folder: Path, timeout: float = 30.0) -> Orthanc:
    """Start a private Orthanc with the DICOMweb plugin (module docstring); skip if Orthanc is absent.

    Args:
        folder: its configuration, storage and log.
        timeout: seconds to wait for it to answer.

    Returns:
        The running server.
    """
    binary, plugin = orthanc_binary(), dicomweb_plugin()
    port = free_port()
    config = {
        "Name": "cardiolora-test",
        "HttpPort": port,
        "DicomPort": free_port(),
        "DicomAet": "CARDIOLORATEST",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "Plugins": [plugin],
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "SaveJobs": False,
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
    }
    (folder / "orthanc.json").write_text(json.dumps(config, indent=1))
    log = folder / "orthanc.log"
    with log.open("w") as out:
        process = subprocess.Popen([binary, str(folder / "orthanc.json")], stdout=out, stderr=subprocess.STDOUT)
    server = Orthanc(process, port, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {process.returncode}; its log:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{server.dicomweb}/studies", timeout=2).status_code == 200:
                return server
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(
        f"Orthanc did not answer on {server.url} within {timeout} s; its log:\n{log.read_text()[-3000:]}"
    )


class _Server:
    """An HTTP server on a free port of 127.0.0.1 in a thread; records the requests it got."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.requests: list[tuple[str, str]] = []
        self.log: Path | None = None
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/dicom-web"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def record(self, method: str, path: str) -> None:
        """Note a request (and append it to `log` when set) before it is answered."""
        self.requests.append((method, path))
        if self.log is not None:
            with self.log.open("a") as f:
                f.write(f"{method} {path}\n")

    def methods(self) -> list[str]:
        return [m for m, _ in self.requests]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class FaultyServer(_Server):
    """Answers every request with `status` (after `delay` seconds)."""

    def __init__(self, status: int = 500, delay: float = 0.0) -> None:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                outer.record(self.command, self.path)
                time.sleep(delay)
                body = b'{"error": "the test server fails on purpose"}'
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up (timeout)
                    pass

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(Handler)


class Proxy(_Server):
    """Forwards to `target` (Orthanc's DICOMweb root). `extra_instance`: QIDO-RS answers listing a
    series' instances get one more (so WADO-RS returns fewer than listed); `refuse_store`: POST
    (STOW-RS) answers 500 without forwarding."""

    def __init__(self, target: str, extra_instance: bool = False, refuse_store: bool = False) -> None:
        outer = self
        base = target.rstrip("/").rsplit("/dicom-web", 1)[0]

        class Handler(http.server.BaseHTTPRequestHandler):
            def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                outer.record("GET", self.path)
                r = requests.get(base + self.path, headers={"Accept": self.headers.get("Accept", "*/*")}, timeout=30)
                body = r.content
                path = self.path.split("?", 1)[0]
                items = r.json() if r.ok and "json" in r.headers.get("Content-Type", "") else []
                if extra_instance and items and "/series/" in path and path.endswith("/instances"):
                    items.append({"00080018": {"vr": "UI", "Value": ["1.2.826.0.1.3680043.8.498.999"]}})
                    body = json.dumps(items).encode()
                self._send(r.status_code, {"Content-Type": r.headers.get("Content-Type", "application/json")}, body)

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                    return self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                parts = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(parts)

            def do_POST(self) -> None:
                outer.record("POST", self.path)
                data = self._body()
                if refuse_store:
                    self._send(500, {"Content-Type": "text/plain"}, b"storage is full (test proxy)")
                    return
                headers = {k: self.headers[k] for k in ("Content-Type", "Accept") if self.headers.get(k)}
                r = requests.post(base + self.path, data=data, headers=headers, timeout=30)
                self._send(r.status_code, {"Content-Type": r.headers.get("Content-Type", "")}, r.content)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(Handler)


class ServerProcess:
    """A :class:`FaultyServer` or :class:`Proxy` in its own process (``python orthanc_server.py``).

    Args:
        folder: where its request log goes.
        args: ``["faulty", STATUS, DELAY]`` or ``["proxy", TARGET, "extra" | "refuse"]``.
    """

    def __init__(self, folder: Path, *args: str) -> None:
        import sys

        self.log = folder / f"requests-{free_port()}.log"
        self.process = subprocess.Popen(
            [sys.executable, __file__, str(self.log), *args], stdout=subprocess.PIPE, text=True
        )
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.stop()
            raise RuntimeError(f"the test server {args} did not start")

    def methods(self) -> list[str]:
        """The HTTP methods of the requests it got, in order."""
        return [line.split()[0] for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process.stdout.close()


def _main(argv: list[str]) -> None:
    log, kind, *rest = argv
    if kind == "faulty":
        server: _Server = FaultyServer(int(rest[0]), float(rest[1]))
    else:
        server = Proxy(rest[0], extra_instance=rest[1] == "extra", refuse_store=rest[1] == "refuse")
    server.log = Path(log)
    print(server.url, flush=True)
    server.thread.join()


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])
