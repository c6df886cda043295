"""A throw-away PostgreSQL server for tests: Debian's `postgresql` package, on loopback, in a temp
folder, removed afterwards.

The studies' shared Optuna database (`--optuna-storage postgresql://...`) is tested against a real
server rather than SQLite, because what matters is several processes writing one study over the
network protocol. Debian installs the server binaries outside PATH (/usr/lib/postgresql/<major>/bin);
`make setup` installs the package. The server refuses to run as root, so under root (CI, the dev
machines) it runs as the `postgres` user that the package creates, in a folder it owns.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from free_ports import free_port

DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"
START_TIMEOUT_S = 60


def server_bindir() -> Path | None:
    """Folder with initdb/pg_ctl: on PATH, else the newest Debian major version."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent  # the real bindir, also for symlinks on PATH
    found = sorted(glob.glob(DEBIAN_BINDIRS), key=lambda p: int(Path(p).parent.name))
    return Path(found[-1]) if found else None


class PostgresServer:
    """``with PostgresServer() as url:`` gives ``postgresql://optuna@127.0.0.1:PORT/optuna``
    (trust authentication, loopback only) and stops and deletes the server on exit."""

    user = "optuna"
    database = "optuna"

    def __init__(self) -> None:
        bindir = server_bindir()
        if bindir is None:
            raise RuntimeError("no PostgreSQL server binaries: run `make setup` "
                               "(installs Debian's postgresql package)")
        self.bindir = bindir
        self.run_as = "postgres" if os.geteuid() == 0 else None  # its own user and group
        self.root = Path(tempfile.mkdtemp(prefix="logah-pg-"))
        if self.run_as:
            shutil.chown(self.root, user=self.run_as, group=self.run_as)
        self.port = free_port()
        self.url = f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, tool: str, *args: str) -> None:
        as_user = {"user": self.run_as, "group": self.run_as, "extra_groups": []} if self.run_as else {}
        proc = subprocess.run([str(self.bindir / tool), *args], cwd=self.root, **as_user,
                              capture_output=True, text=True, timeout=START_TIMEOUT_S)
        if proc.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({proc.returncode}): {proc.stderr}{proc.stdout}{tail}")

    def start(self) -> str:
        data = str(self.root / "data")
        self._run("initdb", "-D", data, "-U", self.user, "--auth=trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
        self._run("pg_ctl", "-D", data, "-o", options, "-l", str(self.root / "server.log"),
                  "-w", "-t", str(START_TIMEOUT_S), "start")
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, self.database)
        return self.url

    def stop(self) -> None:
        data = self.root / "data"
        if (data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> str:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
