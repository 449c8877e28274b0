"""A real PostgreSQL server from Debian's `postgresql` package, for tests that need the shared store.

    with postgres_cluster() as (host, port):    # trust auth for SUPERUSER
        ...

The cluster lives in a temporary directory: initdb, pg_ctl start on a free loopback port (its unix socket
in the same directory), pg_ctl stop. As root the server runs as the `postgres` OS user, since PostgreSQL
refuses to run as root.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

SUPERUSER = "voxgate"


def _server_binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        pytest.fail(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): "
            "install them with `apt-get install -y postgresql` (the Makefile's setup does this)",
            pytrace=False,
        )
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def postgres_cluster() -> Iterator[tuple[str, int]]:
    """A running PostgreSQL cluster; yields (host, port) with trust auth for SUPERUSER."""
    bindir = _server_binaries()
    as_user: list[str] = []
    # Under /tmp directly: pytest's tmp_path sits below a root-only (0700) directory.
    workdir = Path(tempfile.mkdtemp(prefix="voxgate-pg-"))
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root but there is no `postgres` OS user to run the server", pytrace=False)
        os.chown(workdir, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, log = workdir / "data", workdir / "server.log"
    port = _free_port()

    def run(*args: str) -> None:
        done = subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            server_log = log.read_text() if log.exists() else ""
            pytest.fail(f"{args[0]} failed:\n{done.stdout}\n{done.stderr}\n{server_log}", pytrace=False)

    try:
        run(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off -c timezone=Asia/Tokyo"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start")
        try:
            yield "127.0.0.1", port
        finally:
            subprocess.run(
                [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                capture_output=True,
                timeout=60,
                check=False,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.asynccontextmanager
async def fresh_database(host: str, port: int) -> AsyncIterator[str]:
    """A new, empty database on the cluster for the block; yields its URL, drops it afterwards."""
    name = "t_" + secrets.token_hex(4)
    admin = await asyncpg.connect(host=host, port=port, user=SUPERUSER, database="postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql://{SUPERUSER}@{host}:{port}/{name}"
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()
