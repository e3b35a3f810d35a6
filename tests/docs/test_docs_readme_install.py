"""The README's quick start and docs/getting-started.md, run as written after installing exactly as they say.

Each test copies the checkout into a temporary directory, reads the commands out of the Markdown (never a copy of
them kept here) and runs them there: the install into a fresh virtual environment (pip, from the package index),
then every documented server, request and command, checking the documented answers. The only substitutions:

* ``python3`` and ``python`` are the interpreter running this test (so it is a supported Python);
* ``source .venv/bin/activate`` is done the way the script does it: the environment's scripts first on ``PATH``
  and ``VIRTUAL_ENV`` set;
* ``--host 127.0.0.1 --port <free port>`` is appended to each documented server command, and the documented
  ``curl`` requests go to that port as HTTP requests from this process (the documented 0.0.0.0:5001 may be taken,
  and a test listens on 127.0.0.1 only);
* on Windows, ``.venv/bin/`` is ``.venv/Scripts/``, as the README says.

Installing takes a minute or more. Every server runs in a process group of its own, stopped by the group's id;
the temporary directory, virtual environment included, is removed at the end.
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
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import pytest
from azmlinfsrv.launch import resolve
from azmlinfsrv_testing import ServerProcess
from azmlinfsrv_testing import free_port
from azmlinfsrv_testing.settings import without_server_settings

from .conftest import ROOT
from .conftest import doc_sections
from .conftest import read_doc

pytestmark = pytest.mark.e2e

INSTALL_TIMEOUT = 900.0
COMMAND_TIMEOUT = 120.0
START_TIMEOUT = 60.0
# Sections of getting-started.md that need more than Python: docker and a cluster. test_docs_deploy.py checks the
# files they use; every other section is run.
NOT_RUN = {"Build a container image", "Run it on Kubernetes"}
SCRIPTS = "Scripts" if sys.platform == "win32" else "bin"


# -- reading the Markdown ----------------------------------------------------------------------------------------------


@dataclass
class Block:
    lang: str
    body: str


def fenced_blocks(text: str) -> list[Block]:
    return [Block(lang, body) for lang, body in re.findall(r"^```(\w*)\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)]


def shell_commands(body: str) -> list[list[str]]:
    """The commands of a bash block: lines (continuations joined), comments dropped, ``&&`` chains split."""
    commands: list[list[str]] = []
    for line in re.sub(r"\\\n", " ", body).splitlines():
        words = shlex.split(line, comments=True)
        current: list[str] = []
        for word in words:
            if word == "&&":
                commands.append(current)
                current = []
            else:
                current.append(word)
        if current:
            commands.append(current)
    return commands


@dataclass
class Curl:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    data: bytes | None = None


def parse_curl(words: list[str]) -> Curl:
    """The request a documented ``curl`` command sends (the options the docs use; anything else is an error)."""
    assert words[0] == "curl"
    request = Curl(method="", url="")
    rest = iter(words[1:])
    for word in rest:
        if word == "-X":
            request.method = next(rest)
        elif word == "-H":
            name, _, value = next(rest).partition(":")
            request.headers[name.strip()] = value.strip()
        elif word in ("-d", "--data"):
            request.data = next(rest).encode("utf-8")
        elif word == "-s":
            pass
        elif word.startswith("-"):
            raise AssertionError(f"the test does not know curl's {word}: teach parse_curl")
        else:
            request.url = word
    request.method = request.method or ("POST" if request.data is not None else "GET")
    assert request.url, words
    return request


# -- running it ------------------------------------------------------------------------------------------------------


class Shell:
    """Runs documented commands in a copy of the checkout, with the substitutions the module docstring lists."""

    def __init__(self, cwd: Path, log_dir: Path) -> None:
        self.cwd = cwd
        self.log_dir = log_dir
        environ = without_server_settings(os.environ)
        for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"):
            environ.pop(name, None)
        # Nothing from the test's own environment may answer for the new one: drop its scripts folder from PATH.
        own_scripts = str(Path(sys.executable).parent)
        path = [part for part in environ.get("PATH", "").split(os.pathsep) if part and part != own_scripts]
        environ["PATH"] = os.pathsep.join(path)
        environ["PYTHONUNBUFFERED"] = "1"
        self.env = environ
        self.servers: list[ServerProcess] = []
        self.port = 0

    def program(self, name: str) -> str:
        if name in ("python", "python3"):
            return sys.executable
        if "/" in name or "\\" in name:
            local = name.replace("/bin/", f"/{SCRIPTS}/") if name.startswith(".venv/") else name
            found = shutil.which(str(self.cwd / local))
        else:
            found = shutil.which(name, path=self.env["PATH"])
        assert found, f"{name}: no such program after the documented steps"
        return found

    def run(self, words: list[str], timeout: float = COMMAND_TIMEOUT) -> str:
        """Runs a command to completion; it must exit 0. Returns its stdout."""
        if words[0] == "source":
            venv = self.cwd / Path(words[1]).parent.parent
            self.env["VIRTUAL_ENV"] = str(venv)
            self.env["PATH"] = os.pathsep.join([str(venv / SCRIPTS), self.env["PATH"]])
            return ""
        if words[0] == "echo" and len(words) == 4 and words[2] == ">":
            (self.cwd / words[3]).write_text(words[1] + "\n", encoding="utf-8")
            return ""
        done = subprocess.run(
            [self.program(words[0]), *words[1:]],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        stdout = done.stdout.decode("utf-8", "replace")
        stderr = done.stderr.decode("utf-8", "replace")
        assert done.returncode == 0, f"{shlex.join(words)} exited {done.returncode}:\n{stdout}\n{stderr}"
        return stdout

    def start_server(self, words: list[str]) -> ServerProcess:
        """Starts a documented server command on 127.0.0.1 and a free port, in a process group of its own."""
        self.stop_servers()
        self.port = free_port()
        command = [self.program(words[0]), *words[1:], "--host", "127.0.0.1", "--port", str(self.port)]
        log_path = self.log_dir / f"server-{len(os.listdir(self.log_dir))}.log"
        kwargs: dict[str, object] = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        else:
            kwargs["start_new_session"] = True
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                **kwargs,  # type: ignore[call-overload]
            )
        server = ServerProcess(process, command, self.port, str(log_path))
        self.servers.append(server)
        server.wait_healthy(START_TIMEOUT)
        return server

    def stop_servers(self) -> None:
        while self.servers:
            self.servers.pop().stop()

    def request(self, curl: Curl) -> tuple[int, bytes]:
        """Sends a documented request to the running server: the documented URL with the server's port."""
        url = re.sub(r"^http://(?:127\.0\.0\.1|localhost):\d+", f"http://127.0.0.1:{self.port}", curl.url)
        assert url.startswith(f"http://127.0.0.1:{self.port}/"), f"{curl.url} is not a request to the local server"
        request = urllib.request.Request(url, data=curl.data, headers=curl.headers, method=curl.method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as error:
            return int(error.code), error.read()


@pytest.fixture
def shell() -> Iterator[Shell]:
    """A fresh copy of the checkout in a temporary directory, removed afterwards with any server still running."""
    with tempfile.TemporaryDirectory(prefix="azmlinfsrv-docs-", ignore_cleanup_errors=True) as temp:
        checkout = Path(temp) / "checkout"
        copy_checkout(checkout)
        logs = Path(temp) / "logs"
        logs.mkdir()
        runner = Shell(checkout, logs)
        try:
            yield runner
        finally:
            runner.stop_servers()


def copy_checkout(destination: Path) -> None:
    """The repository's files as a fresh clone holds them (tracked and new files; nothing ignored, no .venv)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode("utf-8")
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the work tree is not there
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def assert_json_answer(status: int, body: bytes, expected: str) -> None:
    assert status == 200, body
    assert json.loads(body) == json.loads(expected)


def normalized_report(text: str) -> list[str]:
    """A validate report without what changes from run to run: timings and the absolute path of the script."""
    text = re.sub(r"\d+\.\d+ s\b", "<t> s", text)
    text = re.sub(r"^(Validating )\S*?(examples/\S+)$", r"\1.../\2", text, flags=re.MULTILINE)
    return [line.rstrip() for line in text.strip().splitlines()]


# -- the README ------------------------------------------------------------------------------------------------------


def test_readme_quick_start(shell: Shell) -> None:
    section = doc_sections((ROOT / "README.md").read_text(encoding="utf-8"))["Quick start"]
    blocks = [block for block in fenced_blocks(section) if block.lang == "bash"]
    install = [block for block in blocks if "pip install" in block.body]
    assert len(install) == 1, "the quick start installs with one command"
    commands = shell_commands(install[0].body)
    *setup, serve = commands
    assert len(install[0].body.strip().splitlines()) == 1, "the install is one command line"
    assert [words[:3] for words in setup] == [
        ["python3", "-m", "venv"],
        [".venv/bin/pip", "install", "./packages/core"],
    ]
    for words in setup:
        shell.run(words, timeout=INSTALL_TIMEOUT)
    assert serve[0] == ".venv/bin/azmlinfsrv"
    shell.start_server(serve)

    (requests,) = [block for block in blocks if block.body.lstrip().startswith("curl ")]
    lines = requests.body.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("# "), "a request, then its answer as a comment"
    status, body = shell.request(parse_curl(shlex.split(lines[0])))
    assert_json_answer(status, body, lines[1][2:])


def test_readme_states_the_listening_address() -> None:
    """The README says the server listens on 0.0.0.0 unless --host says otherwise; the launcher agrees."""
    section = doc_sections((ROOT / "README.md").read_text(encoding="utf-8"))["Quick start"]
    assert resolve({}).host == "0.0.0.0"
    assert "`0.0.0.0`" in section
    assert "`--host 127.0.0.1`" in section
    assert "python3-venv" in section


# -- getting-started.md ----------------------------------------------------------------------------------------------


def test_getting_started_runs_as_written(shell: Shell) -> None:
    sections = doc_sections(read_doc("getting-started.md"))
    assert NOT_RUN <= set(sections)
    ran: list[str] = []
    for heading, text in sections.items():
        if heading in NOT_RUN:
            continue
        blocks = fenced_blocks(text)
        for index, block in enumerate(blocks):
            if block.lang != "bash":
                continue  # the score script (checked by test_docs_example_copies.py) and expected output
            following = blocks[index + 1] if index + 1 < len(blocks) else None
            commands = shell_commands(block.body)
            for position, words in enumerate(commands):
                last = position == len(commands) - 1
                ran.append(shlex.join(words))
                if words[0] == "curl":
                    assert last and following is not None and following.lang == "json", "a request shows its answer"
                    status, body = shell.request(parse_curl(words))
                    assert_json_answer(status, body, following.body)
                elif words[0] == "azmlinfsrv" and "--entry_script" in words and "validate" not in words:
                    shell.start_server(words)
                else:
                    timeout = INSTALL_TIMEOUT if "install" in words else COMMAND_TIMEOUT
                    output = shell.run(words, timeout=timeout)
                    if last and following is not None and following.lang == "text":
                        assert normalized_report(output) == normalized_report(following.body)
    # The page's own sequence: install, check the command, serve and ask two scripts, validate one.
    assert any(command.startswith("pip install ") for command in ran)
    assert "azmlinfsrv --help" in ran
    assert sum(command.startswith("curl ") for command in ran) == 2
    assert any(command.startswith("azmlinfsrv validate ") for command in ran)


def test_curl_parser_reads_the_documented_options() -> None:
    request = parse_curl(
        shlex.split("""curl -s http://127.0.0.1:5001/score -H "Content-Type: application/json" -d '{}'""")
    )
    assert (request.method, request.url, request.headers, request.data) == (
        "POST",
        "http://127.0.0.1:5001/score",
        {"Content-Type": "application/json"},
        b"{}",
    )
    assert parse_curl(["curl", "-X", "GET", "http://127.0.0.1:5001/"]).method == "GET"
    with pytest.raises(AssertionError, match="--compressed"):
        parse_curl(["curl", "--compressed", "http://127.0.0.1:5001/"])


def test_shell_commands_split_chains_and_drop_comments() -> None:
    body = "python -m venv .venv\nsource .venv/bin/activate   # Windows: x\na && b c \\\n  d\n"
    assert shell_commands(body) == [
        ["python", "-m", "venv", ".venv"],
        ["source", ".venv/bin/activate"],
        ["a"],
        ["b", "c", "d"],
    ]
