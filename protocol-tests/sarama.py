"""The Sarama (Go) client for protocol tests: `sarama_client/main.go` built against
Debian's golang-github-shopify-sarama-dev (Sarama 1.22.1) in GOPATH mode, so nothing is
downloaded. `scripts/test` installs golang-go and that package.

The binary is built once per source version into target/sarama-client/ and reused.
"""

import hashlib
import json
import logging
import os
import pathlib
import shutil
import subprocess

import clients

log = logging.getLogger(__name__)

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE = pathlib.Path(__file__).resolve().parent / "sarama_client" / "main.go"
GOPATH = "/usr/share/gocode"
SARAMA_SOURCE = pathlib.Path(GOPATH) / "src/github.com/Shopify/sarama"
BUILD_TIMEOUT_S = 600
# Above the client's own 30 s consume timeout, so it reports what it read first.
RUN_TIMEOUT_S = 60
# A group member gives up on its own after this: longer than a test's waits add up to,
# shorter than pytest's 180 s timeout.
MEMBER_TIMEOUT_S = 150


def binary():
    """The built client, building it first if this source version has not been built."""
    go = shutil.which("go")
    assert go, "go is not installed (scripts/test installs golang-go)"
    assert SARAMA_SOURCE.is_dir(), \
        f"{SARAMA_SOURCE} is missing (scripts/test installs golang-github-shopify-sarama-dev)"
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    out = ROOT / "target" / "sarama-client" / digest / "sarama_client"
    if out.exists():
        return str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GO111MODULE="off", GOPATH=GOPATH, GOFLAGS="",
               GOCACHE=str(ROOT / "target" / "go-cache"))
    partial = out.with_suffix(".partial")
    result = subprocess.run([go, "build", "-o", str(partial), str(SOURCE)], env=env,
                            capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert result.returncode == 0, f"go build failed:\n{result.stderr}"
    partial.rename(out)
    return str(out)


class Result:
    """A finished run: its exit code and the JSON objects it printed."""

    def __init__(self, code, lines, stderr):
        self.code = code
        self.lines = lines
        self.stderr = stderr

    @property
    def error(self):
        """The {"error": ...} line of a failed run, else None."""
        failed = [line for line in self.lines if "error" in line and "during" in line]
        return failed[-1] if failed else None

    def __repr__(self):
        return f"Result(code={self.code}, lines={self.lines!r}, stderr={self.stderr[-2000:]!r})"


def run(broker, command, *args, timeout_s=RUN_TIMEOUT_S, check=True):
    """Runs one subcommand against the broker and returns its Result; with check, asserts
    it exited 0."""
    argv = [binary(), command, "-brokers", broker.bootstrap, *[str(a) for a in args]]
    log.info("running %s", " ".join(argv))
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,
                               stdin=subprocess.DEVNULL, preexec_fn=clients.die_with_parent)
    lines = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    result = Result(completed.returncode, lines, completed.stderr)
    if check:
        assert completed.returncode == 0, f"sarama_client {command} failed: {result!r}"
    return result


def group_member(broker, name, group_id, topics, *args):
    """A running Sarama consumer-group member (`group` subcommand) whose JSON lines are
    collected; its events have kind assigned, revoked, record, error (reported by Sarama
    while it runs), failed (it exits 1) or closed."""
    argv = [binary(), "group", "-brokers", broker.bootstrap, "-group", group_id,
            "-topics", ",".join(topics), "-timeout", f"{MEMBER_TIMEOUT_S}s",
            *[str(a) for a in args]]
    return clients.JsonLinesProcess(argv, name)
