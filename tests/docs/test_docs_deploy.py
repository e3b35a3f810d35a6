"""deploy/: the Dockerfile (checked statically: no container engine runs in the tests) and the Kubernetes
manifests (validated with kubernetes-validate), both cross-checked against the server itself: its routes, what
its probes answer while init() runs and while draining, its default port, its variable names and its launcher.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from azmlinfsrv.launch import resolve
from azureml_inference_server_http import constants
from azureml_inference_server_http.config import ServerConfig
from azureml_inference_server_http.server import create_app
from azureml_inference_server_http.server import get_state

from .conftest import DEPLOY
from .conftest import ROOT
from .test_docs_reference import code_env_names
from .test_docs_reference import serve_flags

MANIFESTS = DEPLOY / "kubernetes"
DOCKERFILE = DEPLOY / "Dockerfile"
# The oldest Kubernetes the manifests promise to work on (autoscaling/v2 and policy/v1 are GA there), and the newest
# schema kubernetes-validate ships.
K8S_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
# Variables of the image's runtime rather than of the server.
RUNTIME_ENV = {
    "PATH",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PIP_DISABLE_PIP_VERSION_CHECK",
    "PIP_NO_CACHE_DIR",
}
UPSTREAM_INDEX_NAME = "azureml-inference-server-http"


# -- loading -------------------------------------------------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(path for path in MANIFESTS.glob("*.yaml") if path.name != "kustomization.yaml")


def load_resources() -> dict[str, dict[str, Any]]:
    """Every Kubernetes resource in deploy/kubernetes, keyed by kind."""
    resources: dict[str, dict[str, Any]] = {}
    for path in manifest_files():
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document:
                assert document["kind"] not in resources, f"two {document['kind']} resources"
                resources[document["kind"]] = document
    return resources


@pytest.fixture(scope="module")
def resources() -> dict[str, dict[str, Any]]:
    return load_resources()


@pytest.fixture(scope="module")
def container(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers = resources["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def container_env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


def container_port(container: dict[str, Any], name_or_number: str | int) -> int:
    for port in container["ports"]:
        if name_or_number in (port.get("name"), port["containerPort"]):
            return int(port["containerPort"])
    raise AssertionError(f"the container has no port {name_or_number!r}")


class Dockerfile:
    """Instructions of a Dockerfile (continuations joined), split into stages."""

    def __init__(self, text: str) -> None:
        joined = re.sub(r"\\\n", " ", text)
        self.stages: list[list[tuple[str, str]]] = []
        self.args: dict[str, str] = {}
        for raw in joined.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            instruction, _, rest = line.partition(" ")
            instruction = instruction.upper()
            if instruction == "FROM":
                self.stages.append([])
            if instruction == "ARG" and "=" in rest:
                name, _, value = rest.strip().partition("=")
                self.args[name] = value
            if self.stages:
                self.stages[-1].append((instruction, rest.strip()))

    @property
    def final(self) -> list[tuple[str, str]]:
        return self.stages[-1]

    def all(self, instruction: str, stage: list[tuple[str, str]] | None = None) -> list[str]:
        items = stage if stage is not None else [item for s in self.stages for item in s]
        return [rest for name, rest in items if name == instruction]

    def exec_form(self, instruction: str) -> list[str]:
        values = self.all(instruction, self.final)
        assert len(values) == 1, f"the final stage needs exactly one {instruction}"
        parsed = json.loads(values[0])
        assert isinstance(parsed, list), f"{instruction} must use the exec (JSON) form so signals reach the process"
        return [str(item) for item in parsed]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for rest in self.all("ENV", self.final):
            for token in shlex.split(rest):
                name, _, value = token.partition("=")
                values[name] = value
        return values

    def substitute(self, text: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: self.args.get(m.group(1), m.group(0)), text)


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return Dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def server_routes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The server's real routes: path -> endpoint name."""
    folder = tmp_path_factory.mktemp("routes")
    script = folder / "score.py"
    script.write_text("def init():\n    pass\n\n\ndef run(data):\n    return data\n", encoding="utf-8")
    app = create_app(entry_script=str(script), environ={"AML_APP_ROOT": str(folder)})
    return {rule.rule: rule.endpoint for rule in app.url_map.iter_rules()}


# -- Kubernetes: schema validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes(path: Path, version: str) -> None:
    for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        kubernetes_validate.validate(document, version, strict=True)


def test_manifest_validation_catches_a_typo(resources: dict[str, dict[str, Any]]) -> None:
    broken = json.loads(json.dumps(resources["Deployment"]))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def test_manifests_hold_the_expected_resources(resources: dict[str, dict[str, Any]]) -> None:
    assert set(resources) == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}


def test_kustomization_lists_every_manifest_and_the_image(container: dict[str, Any]) -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text(encoding="utf-8"))
    assert sorted(kustomization["resources"]) == [path.name for path in manifest_files()]
    image_names = {image["name"] for image in kustomization["images"]}
    assert container["image"].rsplit(":", 1)[0] in image_names


# -- Kubernetes: consistency with the server -------------------------------------------------------------------------


def test_probes_use_the_servers_health_routes(container: dict[str, Any], server_routes: dict[str, str]) -> None:
    expected = {"startupProbe": "ready", "readinessProbe": "ready", "livenessProbe": "live"}
    for probe, endpoint in expected.items():
        path = container[probe]["httpGet"]["path"]
        assert server_routes.get(path) == endpoint, f"{probe} uses {path}, which is not the {endpoint} route"


def test_probes_target_the_port_the_server_listens_on(container: dict[str, Any]) -> None:
    port = container_port(container, "http")
    assert port == constants.DEFAULT_SERVER_PORT
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container_port(container, container[probe]["httpGet"]["port"]) == port


def test_probe_routes_answer_as_the_manifest_expects(tmp_path: Path, container: dict[str, Any]) -> None:
    """Startup/readiness say 503 during init() and draining; liveness says 200 throughout."""
    flag = tmp_path / "init-may-finish"
    script = tmp_path / "score.py"
    script.write_text(
        "import os\nimport time\n\n\ndef init():\n"
        "    deadline = time.monotonic() + 10\n"
        f"    while not os.path.exists({str(flag)!r}) and time.monotonic() < deadline:\n"
        "        time.sleep(0.01)\n\n\ndef run(data):\n    return {}\n",
        encoding="utf-8",
    )
    app = create_app(entry_script=str(script), environ={"AML_APP_ROOT": str(tmp_path)}, background_init=True)
    client = app.test_client()
    ready = container["readinessProbe"]["httpGet"]["path"]
    startup = container["startupProbe"]["httpGet"]["path"]
    live = container["livenessProbe"]["httpGet"]["path"]

    assert client.get(startup).status_code == 503
    assert client.get(ready).get_json()["phase"] == "initializing"
    assert client.get(live).status_code == 200

    flag.write_text("go", encoding="utf-8")
    deadline = time.monotonic() + 10
    while client.get(ready).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.get(ready).status_code == 200
    assert client.get(startup).status_code == 200

    get_state(app).start_draining()
    assert client.get(ready).status_code == 503
    assert client.get(ready).get_json()["phase"] == "draining"
    assert client.get(live).status_code == 200


def test_container_env_names_are_read_by_the_server(container: dict[str, Any]) -> None:
    unknown = set(container_env(container)) - code_env_names()
    assert not unknown, f"the Deployment sets variables the server never reads: {sorted(unknown)}"


def test_container_env_values_are_accepted(container: dict[str, Any]) -> None:
    env = container_env(container)
    ServerConfig.from_env({**env, "AML_APP_ROOT": str(ROOT / "deploy")})
    resolve(env)


def test_termination_grace_covers_the_drain(resources: dict[str, dict[str, Any]], container: dict[str, Any]) -> None:
    pod = resources["Deployment"]["spec"]["template"]["spec"]
    env = container_env(container)
    settings = resolve(env)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = int(command[1])
    grace = int(pod["terminationGracePeriodSeconds"])
    drain = pre_stop + settings.graceful_timeout
    assert drain + 5 <= grace <= drain + 30, f"terminationGracePeriodSeconds {grace} does not match a {drain} s drain"


def test_scoring_timeout_fits_in_the_drain(container: dict[str, Any]) -> None:
    env = container_env(container)
    config = ServerConfig.from_env({**env, "AML_APP_ROOT": str(ROOT / "deploy")})
    settings = resolve(env)
    assert 0 < config.scoring_timeout_ms <= settings.graceful_timeout * 1000
    assert settings.worker_timeout * 1000 >= config.scoring_timeout_ms


def test_resources_are_set_for_the_autoscaler(resources: dict[str, dict[str, Any]], container: dict[str, Any]) -> None:
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]
    hpa = resources["HorizontalPodAutoscaler"]["spec"]
    target = hpa["scaleTargetRef"]
    deployment = resources["Deployment"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert {metric["resource"]["name"] for metric in hpa["metrics"]} <= set(container["resources"]["requests"])
    assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    assert resources["PodDisruptionBudget"]["spec"]["minAvailable"] < hpa["minReplicas"]


def test_selectors_match_the_pods(resources: dict[str, dict[str, Any]], container: dict[str, Any]) -> None:
    labels = resources["Deployment"]["spec"]["template"]["metadata"]["labels"]
    selectors = [
        resources["Deployment"]["spec"]["selector"]["matchLabels"],
        resources["Service"]["spec"]["selector"],
        resources["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= labels.items()
    for port in resources["Service"]["spec"]["ports"]:
        assert container_port(container, port["targetPort"]) == constants.DEFAULT_SERVER_PORT


def test_metrics_annotations_name_the_metrics_route(
    resources: dict[str, dict[str, Any]], container: dict[str, Any], server_routes: dict[str, str]
) -> None:
    annotations = resources["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert server_routes.get(annotations["prometheus.io/path"]) == "metrics"
    assert int(annotations["prometheus.io/port"]) == container_port(container, "http")


def test_pod_runs_as_the_images_non_root_user(
    resources: dict[str, dict[str, Any]], container: dict[str, Any], dockerfile: Dockerfile
) -> None:
    pod_security = resources["Deployment"]["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    (user,) = dockerfile.all("USER", dockerfile.final)
    assert str(pod_security["runAsUser"]) == user.split(":")[0]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    if security.get("readOnlyRootFilesystem"):
        # gunicorn's worker heartbeat files and the metrics directory need a writable /tmp.
        assert "/tmp" in {mount["mountPath"] for mount in container["volumeMounts"]}


# -- Dockerfile ------------------------------------------------------------------------------------------------------


def test_dockerfile_uses_slim_python_bases(dockerfile: Dockerfile) -> None:
    for image in dockerfile.all("FROM"):
        name = dockerfile.substitute(image.split()[0])
        assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", name), name


def test_dockerfile_runs_as_non_root(dockerfile: Dockerfile) -> None:
    users = dockerfile.all("USER", dockerfile.final)
    assert users, "the final stage has no USER"
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_dockerfile_has_an_init_process(dockerfile: Dockerfile) -> None:
    entrypoint = dockerfile.exec_form("ENTRYPOINT")
    assert Path(entrypoint[0]).name == "tini"
    installs = " ".join(dockerfile.all("RUN", dockerfile.final))
    assert re.search(r"apt-get install\b.*\btini\b", installs)


def test_dockerfile_exposes_the_default_port(dockerfile: Dockerfile) -> None:
    assert dockerfile.all("EXPOSE", dockerfile.final) == [str(constants.DEFAULT_SERVER_PORT)]


def test_dockerfile_cmd_starts_azmlinfsrv_with_real_flags(dockerfile: Dockerfile) -> None:
    command = dockerfile.exec_form("CMD")
    assert command[0] == "azmlinfsrv"
    flags = {arg for arg in command[1:] if arg.startswith("--")}
    assert flags <= serve_flags()
    assert "--entry_script" in flags
    port = command[command.index("--port") + 1] if "--port" in command else str(constants.DEFAULT_SERVER_PORT)
    assert dockerfile.all("EXPOSE", dockerfile.final) == [port]


def test_dockerfile_healthcheck_asks_the_readiness_route(dockerfile: Dockerfile, server_routes: dict[str, str]) -> None:
    (healthcheck,) = dockerfile.all("HEALTHCHECK", dockerfile.final)
    match = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w/]+)", healthcheck)
    assert match, healthcheck
    assert match.group(1) == str(constants.DEFAULT_SERVER_PORT)
    assert server_routes.get(match.group(2)) == "ready"


def test_dockerfile_installs_the_server_from_this_checkout(dockerfile: Dockerfile) -> None:
    copied: dict[str, str] = {}
    for rest in dockerfile.all("COPY"):
        parts = [part for part in rest.split() if not part.startswith("--")]
        if "--from" in rest:
            continue
        *sources, destination = parts
        for source in sources:
            source = dockerfile.substitute(source)
            assert (ROOT / source).exists(), f"COPY source {source} is not in the repository"
            copied[destination.rstrip("/")] = source
    installs = [rest for rest in dockerfile.all("RUN") if "pip install" in rest]
    local_install = [rest for rest in installs if "/src/packages/" in rest]
    assert len(local_install) == 1, "the local packages must be installed in one resolver call"
    arguments = [arg for arg in shlex.split(local_install[0].split("pip install", 1)[1]) if not arg.startswith("-")]
    installed = {copied[arg.rstrip("/")] for arg in arguments}
    assert {"packages/core", "packages/cli"} <= installed
    for rest in installs:
        requirements = shlex.split(rest.split("pip install", 1)[1])
        assert not any(req.lower().startswith(UPSTREAM_INDEX_NAME) for req in requirements), rest


def test_dockerfile_env_names_are_known(dockerfile: Dockerfile) -> None:
    unknown = set(dockerfile.env()) - code_env_names() - RUNTIME_ENV
    assert not unknown, f"the image sets variables the server never reads: {sorted(unknown)}"


def test_dockerfile_default_app_has_a_script_and_its_model(dockerfile: Dockerfile) -> None:
    app_dir = ROOT / dockerfile.args["APP_DIR"]
    assert (app_dir / "score.py").is_file()
    model_dir = dockerfile.env()[constants.ENV_MODEL_DIR]
    assert model_dir.startswith("/var/azureml-app/")
    assert (app_dir / model_dir.removeprefix("/var/azureml-app/")).is_dir()
    assert dockerfile.env()[constants.ENV_APP_ROOT] == "/var/azureml-app"


def test_dockerfile_parser_reads_continuations() -> None:
    parsed = Dockerfile('FROM a AS b\nRUN x \\\n    && y\nFROM c\nUSER 5\nCMD ["z"]\n')
    assert parsed.all("RUN") == ["x      && y"]
    assert parsed.all("USER", parsed.final) == ["5"]
    assert parsed.exec_form("CMD") == ["z"]


# -- Dockerfile: the app folder and its requirements, chosen by build arguments ---------------------------------------


def _requirements_step(dockerfile: Dockerfile) -> tuple[str, str]:
    """The build stage's RUN that installs the app's requirements: (its --mount option, its shell script)."""
    build = dockerfile.stages[0]
    steps = [rest for rest in dockerfile.all("RUN", build) if rest.startswith("--mount=") and "REQUIREMENTS" in rest]
    assert len(steps) == 1, "the build stage needs one RUN that installs the app's requirements"
    mount, _, script = steps[0].partition(" ")
    return mount, script.strip()


def test_dockerfile_app_dir_and_requirements_are_build_args(dockerfile: Dockerfile) -> None:
    # Declared before the first FROM with their defaults, so both stages see the same values.
    assert dockerfile.args["APP_DIR"] == "examples/numpy_model"
    assert dockerfile.args["REQUIREMENTS"] == "requirements.txt"
    for stage in dockerfile.stages:
        declared = {rest.partition("=")[0] for rest in dockerfile.all("ARG", stage)}
        for name in ("APP_DIR", "REQUIREMENTS"):
            if any("${" + name + "}" in rest for _, rest in stage):
                # An undeclared ARG is empty inside a stage: the requirements step would silently install nothing.
                assert name in declared, f"a stage uses {name} without declaring it"
    mount, _ = _requirements_step(dockerfile)
    options = dict(item.partition("=")[::2] for item in mount.removeprefix("--mount=").split(","))
    assert options["type"] == "bind"
    assert options["source"] == "${APP_DIR}"
    copies = [rest for rest in dockerfile.all("COPY", dockerfile.final) if "${APP_DIR}" in rest]
    assert len(copies) == 1 and copies[0].split()[-1] == dockerfile.env()[constants.ENV_APP_ROOT]
    # Nothing installs an app dependency by name: the app's requirements file is the one place for them.
    named = [rest for rest in dockerfile.all("RUN") if re.search(r"pip install (?!-r\b)(?!/src/packages/)", rest)]
    assert not named, named


def test_default_app_requirements_match_the_examples_extra(dockerfile: Dockerfile) -> None:
    app_dir = ROOT / dockerfile.args["APP_DIR"]
    requirements = app_dir / dockerfile.args["REQUIREMENTS"]
    assert requirements.is_file()
    listed = {
        line.strip() for line in requirements.read_text(encoding="utf-8").splitlines() if line.strip()[:1] not in "#"
    }
    assert "numpy>=1.24" in listed
    # The quick start installs the same through the meta-package's "examples" extra.
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    extra = re.search(r"^examples = \[(.*?)\]", pyproject, re.MULTILINE | re.DOTALL)
    assert extra, "pyproject.toml has no examples extra"
    assert listed <= set(re.findall(r'"([^"]+)"', extra.group(1)))


@pytest.fixture
def run_requirements_step(dockerfile: Dockerfile, tmp_path: Path) -> Any:
    """Runs the Dockerfile's requirements step with sh, the bind mount replaced by a folder and pip by a recorder."""
    import os
    import shutil
    import subprocess

    sh = shutil.which("sh")
    if sys.platform == "win32" or sh is None:
        pytest.skip("the image's RUN steps are POSIX shell")
    _, script = _requirements_step(dockerfile)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "pip-calls"
    pip = bin_dir / "pip"
    pip.write_text(f'#!/bin/sh\necho "$*" >> {shlex.quote(str(record))}\n', encoding="utf-8")
    pip.chmod(0o755)
    app = tmp_path / "app"
    app.mkdir()

    def run(files: dict[str, str], requirements: str | None) -> tuple[int, list[str], str]:
        for name, text in files.items():
            (app / name).write_text(text, encoding="utf-8")
        args = {"APP_DIR": "apps/my_model", "REQUIREMENTS": dockerfile.args["REQUIREMENTS"]}
        if requirements is not None:
            args["REQUIREMENTS"] = requirements
        env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **args}
        # Docker mounts the app folder at the target of --mount; here it is a real folder.
        body = script.replace("/src/app", str(app))
        done = subprocess.run([sh, "-ec", body], env=env, capture_output=True, text=True, timeout=30)
        calls = record.read_text(encoding="utf-8").splitlines() if record.exists() else []
        return done.returncode, calls, done.stdout + done.stderr

    return run


def test_requirements_step_installs_the_apps_requirements_txt(run_requirements_step: Any, tmp_path: Path) -> None:
    code, calls, output = run_requirements_step({"requirements.txt": "numpy>=1.24\n"}, None)
    assert code == 0, output
    assert calls == [f"install -r {tmp_path / 'app' / 'requirements.txt'}"]


def test_requirements_step_without_a_requirements_txt_installs_nothing(run_requirements_step: Any) -> None:
    code, calls, output = run_requirements_step({"score.py": "def init(): pass\n"}, None)
    assert code == 0, output
    assert calls == []
    assert "no requirements.txt" in output


def test_requirements_step_reads_the_file_named_by_the_build_arg(run_requirements_step: Any, tmp_path: Path) -> None:
    files = {"requirements.txt": "pytest\n", "requirements-prod.txt": "numpy\n"}
    code, calls, output = run_requirements_step(files, "requirements-prod.txt")
    assert code == 0, output
    assert calls == [f"install -r {tmp_path / 'app' / 'requirements-prod.txt'}"]


def test_requirements_step_fails_on_a_missing_named_file(run_requirements_step: Any) -> None:
    code, calls, output = run_requirements_step({}, "requirements-prod.txt")
    assert code != 0
    assert calls == []
    assert "REQUIREMENTS=requirements-prod.txt" in output


def test_requirements_step_installs_nothing_when_the_arg_is_empty(run_requirements_step: Any) -> None:
    code, calls, output = run_requirements_step({"requirements.txt": "numpy\n"}, "")
    assert code == 0, output
    assert calls == []


@pytest.mark.parametrize(
    "line", ["azureml-inference-server-http==1.5.1", "  AzureML_Inference.Server-HTTP", "azureml-inference-server-http"]
)
def test_requirements_step_refuses_upstreams_distribution(run_requirements_step: Any, line: str) -> None:
    code, calls, output = run_requirements_step({"requirements.txt": f"numpy\n{line}\n"}, None)
    assert code != 0
    assert calls == []
    assert "upstream" in output


def test_requirements_step_accepts_names_that_only_start_like_upstreams(run_requirements_step: Any) -> None:
    code, calls, output = run_requirements_step({"requirements.txt": "azureml-inference-server-http-extras\n"}, None)
    assert code == 0, output
    assert len(calls) == 1


def test_deployment_docs_explain_the_build_args(dockerfile: Dockerfile) -> None:
    text = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    for name in ("APP_DIR", "REQUIREMENTS"):
        assert f"--build-arg {name}=" in text, name
        assert name in dockerfile.args
    assert "inside the checkout" in text
    assert "edit" in text  # says that the Dockerfile needs none
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    for folder in ("docs", "tests", "benchmarks"):
        # The page warns about exactly the folders the context leaves out.
        assert (folder in ignored) == (f"`{folder}/`" in text), folder
