"""A real PostgreSQL for the tests: Debian's server binaries (make test installs the postgresql package), a new
cluster made with initdb in a temporary folder, started with pg_ctl on a free loopback port, removed at the end.

PostgreSQL refuses to run as root, so as root (CI, this container) the cluster belongs to the postgres user the
Debian package creates, and its commands run through runuser.
"""

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from devtools import free_port


def server_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    assert found, "PostgreSQL's server is not installed: `make test` installs Debian's postgresql"
    return Path(found[-1]).parent


@dataclass
class Postgres:
    folder: Path
    port: int
    owner: str | None  # the user the server runs as, when the tests run as root

    @property
    def url(self) -> str:
        return f"postgresql://churn@127.0.0.1:{self.port}/churn"

    def run(self, program: str, *args: str) -> None:
        command = [str(server_bin() / program), *args]
        if self.owner:
            command = ["runuser", "-u", self.owner, "--", *command]
        subprocess.run(command, check=True, capture_output=True, cwd=self.folder)

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off"
        self.run(
            "pg_ctl",
            "-D",
            str(self.folder / "data"),
            "-l",
            str(self.folder / "server.log"),
            "-w",
            "-o",
            options,
            "start",
        )

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")


@contextlib.contextmanager
def running_postgres():
    """A started cluster with a database churn owned by the role churn (trust authentication on loopback)."""
    owner = "postgres" if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="churn-postgres-"))
    if owner:
        account = pwd.getpwnam(owner)
        os.chown(folder, account.pw_uid, account.pw_gid)
    server = Postgres(folder, free_port(), owner)
    try:
        server.run("initdb", "-D", str(folder / "data"), "-U", "churn", "--auth=trust", "--no-sync")
        server.start()
        server.run("createdb", "-h", "127.0.0.1", "-p", str(server.port), "-U", "churn", "churn")
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
