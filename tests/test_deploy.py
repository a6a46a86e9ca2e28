"""The deployment files (deploy/, Dockerfile) agree with the code they deploy.

Every command is a real ``lungcds`` subcommand with real options, every ``LUNGCDS_*`` variable
is a real setting and loads, ports match the settings' defaults, probes and the autoscaling
metric exist in the app, and the files validate with the real tools where they are installed
(``docker compose config``, ``kubectl kustomize``, ``kubernetes-validate``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from typer.testing import CliRunner

from server.cli.main import app as cli_app
from server.core.config import Settings, load_settings
from server.tasks.app import CPU_QUEUE, GPU_QUEUE, redis_lists

if TYPE_CHECKING:
    from server.tasks.queue import QueueGateway

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE_FILES = (DEPLOY / "compose.yaml", DEPLOY / "compose.tls.yaml")
K8S_BASE = DEPLOY / "k8s" / "base"
K8S_OVERLAYS = sorted(path.parent for path in (DEPLOY / "k8s" / "overlays").glob("*/kustomization.yaml"))
SETTING_VARIABLES = frozenset(f"LUNGCDS_{name.upper()}" for name in Settings.model_fields)
DEFAULTS = Settings.model_fields
DICOM_PORT = int(DEFAULTS["dicom_port"].default)
API_PORT = int(DEFAULTS["api_port"].default)
TEST_PASSWORD = "0123456789abcdef"
runner = CliRunner()


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _k8s_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted((DEPLOY / "k8s").rglob("*.yaml")):
        if path.name != "kustomization.yaml":
            for doc in _documents(path):
                yield path, doc


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in _k8s_documents() if doc["kind"] == kind}


def _pod_spec(name: str) -> dict[str, Any]:
    spec: dict[str, Any] = _by_kind("Deployment")[name]["spec"]["template"]["spec"]
    return spec


def _interpolate(text: str) -> str:
    """Compose's ``${NAME:-default}`` and ``${NAME:?message}``, as with an env file giving the password."""
    text = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: m.group(2), text)
    return re.sub(r"\$\{(\w+):\?[^}]*\}", TEST_PASSWORD, text)


def _compose_services() -> dict[str, dict[str, Any]]:
    """The services of compose.yaml with the TLS layer's environment merged in (as Compose does)."""
    base = yaml.safe_load(_interpolate(COMPOSE_FILES[0].read_text()))["services"]
    layer = yaml.safe_load(_interpolate(COMPOSE_FILES[1].read_text()))["services"]
    for name, extra in layer.items():
        base[name]["environment"] = {**base[name].get("environment", {}), **extra.get("environment", {})}
    services: dict[str, dict[str, Any]] = base
    return services


def _lungcds_commands() -> Iterator[tuple[str, list[str]]]:
    """Every lungcds command line of compose, Kubernetes and systemd: (where, arguments)."""
    for name, service in _compose_services().items():
        if "build" in service:
            yield f"compose {name}", [str(arg) for arg in service["command"]]
    for name, deployment in _by_kind("Deployment").items():
        spec = deployment["spec"]["template"]["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            if container["image"] == "lungcds":
                yield f"k8s {name}/{container['name']}", [str(arg) for arg in container["args"]]
    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        for line in unit.read_text().splitlines():
            if line.startswith(("ExecStart=", "ExecStartPre=")):
                words = line.split("=", 1)[1].split()
                assert words[0].endswith("/lungcds"), line
                yield f"{unit.name}", words[1:]


def _subcommand(args: list[str]) -> list[str]:
    """The leading words that name the (sub)command, e.g. ``["db", "upgrade"]``."""
    words = []
    for arg in args:
        if arg.startswith("-"):
            break
        words.append(arg)
    return words


def test_every_yaml_file_parses() -> None:
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) >= 12
    for path in files:
        assert _documents(path), f"{path} is empty"


@pytest.mark.parametrize(("where", "args"), list(_lungcds_commands()), ids=lambda v: v if isinstance(v, str) else "")
def test_commands_are_real_subcommands_with_real_options(where: str, args: list[str]) -> None:
    words = _subcommand(args)
    result = runner.invoke(cli_app, [*words, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, f"{where}: `lungcds {' '.join(words)}` is not a command: {result.output}"
    options = {arg.split("=", 1)[0] for arg in args if arg.startswith("--")}
    for option in options:
        assert re.search(rf"{re.escape(option)}\b", result.output), f"{where}: {option} is not an option of {words}"


def test_workers_consume_the_real_queues() -> None:
    consumed: dict[str, set[str]] = {}
    for where, args in _lungcds_commands():
        if _subcommand(args) == ["worker"]:
            queues = args[args.index("--queues") + 1] if "--queues" in args else "gpu,cpu"
            consumed[where] = set(queues.split(","))
    assert consumed
    assert set().union(*consumed.values()) == {GPU_QUEUE, CPU_QUEUE}
    assert consumed["compose worker-gpu"] == consumed["k8s lungcds-worker-gpu/worker"] == {GPU_QUEUE}
    assert consumed["compose worker-cpu"] == consumed["k8s lungcds-worker-cpu/worker"] == {CPU_QUEUE}


def _variables_in_use() -> Iterator[tuple[str, str]]:
    for name, service in _compose_services().items():
        for variable in service.get("environment", {}):
            yield f"compose {name}", variable
    for path, doc in _k8s_documents():
        for variable in {**doc.get("data", {}), **doc.get("stringData", {})}:
            yield path.name, variable
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            for entry in container.get("env", []):
                yield path.name, entry["name"]
    for line in (DEPLOY / "env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            yield "env.example", line.split("=", 1)[0]


def test_every_lungcds_variable_is_a_setting() -> None:
    used = [(where, name) for where, name in _variables_in_use() if name.startswith("LUNGCDS_")]
    assert len(used) > 20
    unknown = [(where, name) for where, name in used if name not in SETTING_VARIABLES]
    # LUNGCDS_IMAGE and the host ports are compose interpolation variables, not settings.
    allowed = {"LUNGCDS_IMAGE", "LUNGCDS_DICOM_HOST_PORT", "LUNGCDS_API_HOST_PORT"}
    assert [item for item in unknown if item[1] not in allowed] == []
    assert {name for _, name in unknown} <= allowed


def _load_environment(monkeypatch: pytest.MonkeyPatch, environment: dict[str, Any]) -> Settings:
    for name in list(os.environ):
        if name.startswith("LUNGCDS_"):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        if name.startswith("LUNGCDS_"):
            monkeypatch.setenv(name, str(value))
    return load_settings()


@pytest.mark.parametrize("service", ["api", "worker-cpu", "worker-gpu", "migrate"])
def test_compose_environment_loads_as_settings(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _load_environment(monkeypatch, _compose_services()[service]["environment"])
    assert not settings.embedded
    assert settings.database_url.startswith("postgresql+psycopg://") and settings.broker_url.startswith("redis://")
    assert settings.device == ("cuda" if service == "worker-gpu" else "cpu")
    if service in ("api", "worker-cpu"):
        assert settings.dicom_tls_certificate is not None and settings.dicom_tls_ca is not None


def test_k8s_environment_loads_as_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    environment = {**_by_kind("ConfigMap")["lungcds-settings"]["data"]}
    environment.update(_by_kind("Secret")["lungcds-secrets"]["stringData"])
    settings = _load_environment(monkeypatch, environment)
    assert not settings.embedded and settings.destinations
    assert urlsplit(settings.broker_url).hostname in _by_kind("Service")
    assert urlsplit(settings.database_url).hostname in _by_kind("Service")


def test_example_settings_file_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LUNGCDS_"):
            monkeypatch.delenv(name)
    settings = load_settings(DEPLOY / "lungcds.example.toml")
    assert settings.dicom_port == DICOM_PORT and settings.api_port == API_PORT


def test_ports_agree_with_the_settings_defaults() -> None:
    services = _compose_services()
    published = {int(str(port).rsplit(":", 1)[1]) for port in services["api"]["ports"]}
    assert published == {DICOM_PORT, API_PORT}
    assert services["api"]["environment"]["LUNGCDS_DICOM_PORT"] == str(DICOM_PORT)
    assert services["api"]["environment"]["LUNGCDS_API_PORT"] == str(API_PORT)
    settings = _by_kind("ConfigMap")["lungcds-settings"]["data"]
    assert (int(settings["LUNGCDS_DICOM_PORT"]), int(settings["LUNGCDS_API_PORT"])) == (DICOM_PORT, API_PORT)
    container_ports = {p["name"]: p["containerPort"] for p in _pod_spec("lungcds-api")["containers"][0]["ports"]}
    assert container_ports == {"dicom": DICOM_PORT, "http": API_PORT}
    services_k8s = _by_kind("Service")
    assert services_k8s["lungcds-dicom"]["spec"]["type"] in ("LoadBalancer", "NodePort")
    assert services_k8s["lungcds-api"]["spec"]["type"] == "ClusterIP"
    for name in ("lungcds-dicom", "lungcds-api"):
        for port in services_k8s[name]["spec"]["ports"]:
            assert container_ports[port["targetPort"]] == port["port"]
    exposed = re.search(r"^EXPOSE (.+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert exposed is not None and {int(p) for p in exposed.group(1).split()} == {DICOM_PORT, API_PORT}


@pytest.fixture(scope="module")
def api_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The REST app as ``lungcds serve`` builds it, on a migrated SQLite database."""
    from fastapi.testclient import TestClient

    from server.api.main import create_app
    from server.core.db import make_engine, upgrade

    settings = load_settings(data_dir=tmp_path_factory.mktemp("deploy") / "data")
    upgrade(settings.database_url)
    with TestClient(create_app(settings, make_engine(settings.database_url)), raise_server_exceptions=False) as client:
        yield client


def test_probes_and_scrape_paths_exist(api_client: Any) -> None:
    paths = set()
    for _, doc in _k8s_documents():
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("containers", []):
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if "httpGet" in container.get(probe, {}):
                    paths.add(container[probe]["httpGet"]["path"])
    assert {"/api/v1/health/ready", "/api/v1/health/live"} <= paths
    healthcheck = " ".join(_compose_services()["api"]["healthcheck"]["test"])
    paths.update(re.findall(r"http://127\.0\.0\.1:\d+(/[\w/]+)", healthcheck))
    paths.add(
        _by_kind("Deployment")["lungcds-api"]["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"]
    )
    answers = {path: api_client.get(path).status_code for path in sorted(paths)}
    # Unauthenticated, and not 404: ready may say 503 where the test machine's disk is low.
    assert all(code in (200, 503) for code in answers.values()), answers
    assert answers["/api/v1/health/live"] == 200 and answers["/metrics"] == 200


def test_autoscaling_reads_the_gpu_queue_depth(tmp_path: Path) -> None:
    from server.api.metrics import DatabaseCollector
    from server.core.db import make_engine, upgrade

    class _Queue:
        def depths(self) -> dict[str, int]:
            return {GPU_QUEUE: 3, CPU_QUEUE: 1}

    hpa = _documents(DEPLOY / "k8s/overlays/prometheus-hpa/hpa.yaml")[0]["spec"]
    metric = hpa["metrics"][0]["external"]["metric"]
    settings = load_settings(data_dir=tmp_path / "data")
    upgrade(settings.database_url)
    families = {
        family.name: family
        for family in DatabaseCollector(make_engine(settings.database_url), cast("QueueGateway", _Queue())).collect()
    }
    samples = {tuple(sorted(s.labels.items())): s.value for s in families[metric["name"]].samples}
    assert samples[tuple(sorted(metric["selector"]["matchLabels"].items()))] == 3
    assert hpa["scaleTargetRef"]["name"] == "lungcds-worker-gpu"

    keda = _documents(DEPLOY / "k8s/overlays/keda/scaledobject.yaml")[0]["spec"]
    assert {t["type"] for t in keda["triggers"]} == {"redis"}
    assert [t["metadata"]["listName"] for t in keda["triggers"]] == list(redis_lists(GPU_QUEUE))
    trigger = keda["triggers"][0]
    broker = urlsplit(_by_kind("ConfigMap")["lungcds-settings"]["data"]["LUNGCDS_BROKER_URL"])
    assert trigger["metadata"]["address"].split(".")[0] == broker.hostname
    assert trigger["metadata"]["databaseIndex"] == broker.path.strip("/")
    assert keda["scaleTargetRef"]["name"] in _by_kind("Deployment")


def test_gpu_workers_get_a_gpu_and_cuda() -> None:
    compose = _compose_services()["worker-gpu"]
    devices = compose["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in device["capabilities"] for device in devices)
    assert compose["environment"]["LUNGCDS_DEVICE"] == "cuda"
    spec = _pod_spec("lungcds-worker-gpu")
    container = spec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"name": "LUNGCDS_DEVICE", "value": "cuda"} in container["env"]
    assert spec["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    assert (
        "--concurrency" in container["args"] and container["args"][container["args"].index("--concurrency") + 1] == "1"
    )


def test_postgres_is_healthy_before_lungcds_starts() -> None:
    services = _compose_services()
    assert "healthcheck" in services["postgres"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker-cpu", "worker-gpu"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    init = _pod_spec("lungcds-api")["initContainers"][0]["args"]
    assert _subcommand(init) == ["db", "upgrade"]


def test_dockerfile_builds_a_cuda_torch_image_for_the_project() -> None:
    text = (ROOT / "Dockerfile").read_text()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    torch = next(Requirement(r) for r in pyproject["project"]["dependencies"] if Requirement(r).name == "torch")
    version = re.search(r"^ARG TORCH_VERSION=(\S+)$", text, re.MULTILINE)
    index = re.search(r"^ARG TORCH_INDEX_URL=(\S+)$", text, re.MULTILINE)
    assert version is not None and torch.specifier.contains(version.group(1))
    assert index is not None and re.fullmatch(r"https://download\.pytorch\.org/whl/cu12\d", index.group(1))
    assert text.index('--index-url "${TORCH_INDEX_URL}"') < text.index("RUN pip install .")
    assert len(re.findall(r"^FROM ", text, re.MULTILINE)) >= 2 and "python:3.11-slim" in text
    user = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert user and user[-1] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["lungcds"\]$', text, re.MULTILINE)
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY (\w+) \./\1$", text, re.MULTILINE))
    assert copied == packages
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert {line[1:] for line in ignore if line.startswith("!")} >= packages | {"pyproject.toml", "README.md"}


def _compose_command() -> list[str] | None:
    for command in (["docker", "compose"], ["docker-compose"]):
        if (
            shutil.which(command[0])
            and subprocess.run([*command, "version"], capture_output=True, check=False).returncode == 0
        ):
            return command
    return None


def test_docker_compose_config_validates() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    files = [arg for path in COMPOSE_FILES for arg in ("-f", str(path))]
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("LUNGCDS_", "POSTGRES_"))}
    ok = subprocess.run(
        [*command, *files, "config", "-q"],
        env={**environment, "POSTGRES_PASSWORD": TEST_PASSWORD},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    # The password is not in the files: without it, Compose refuses to start anything.
    missing = subprocess.run(
        [*command, *files, "config", "-q"], env=environment, capture_output=True, text=True, timeout=60, check=False
    )
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr


@pytest.mark.parametrize("directory", [K8S_BASE, *K8S_OVERLAYS], ids=lambda p: p.name)
def test_kustomizations_build(directory: Path) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    built = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert built.returncode == 0, built.stderr
    documents = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    assert all(doc["metadata"].get("namespace", "lungcds") == "lungcds" for doc in documents)
    assert {"Namespace", "ConfigMap", "Secret", "Deployment", "Service", "StatefulSet"} <= {
        d["kind"] for d in documents
    }


def test_k8s_manifests_match_the_kubernetes_schemas() -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (pip install kubernetes-validate)"
    )
    checked = 0
    for path, doc in _k8s_documents():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: no schema in kubernetes-validate; its fields are checked above
        try:
            kubernetes_validate.validate(doc, "1.30", strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: {list(exc.path)}: {exc.message}")
        checked += 1
    assert checked >= 12
