"""The deployment files in deploy/: the Dockerfile, docker-compose.yml and the Kubernetes manifests.

Nothing is built or started; every file is parsed and checked against the project itself: each
command line is parsed by the real ``echomimic`` command line, each ``ECHOMIMIC_*`` variable must
be one the service reads (and its value must be accepted by ``Settings.from_env``), ports, probes
and resources must fit together.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


# ------------------------------------------------------------------------------------------------
# what the project reads and accepts
# ------------------------------------------------------------------------------------------------


class _Recorder(Mapping):
    """An empty environment that notes every variable looked up."""

    def __init__(self):
        self.seen: set[str] = set()

    def __getitem__(self, key):
        self.seen.add(key)
        raise KeyError(key)

    def get(self, key, default=None):
        self.seen.add(key)
        return default

    def __contains__(self, key):
        self.seen.add(key)
        return False

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0


@pytest.fixture(scope="module")
def known_env() -> set[str]:
    """Every ECHOMIMIC_* variable the service reads: the settings, and the analysis cache's."""
    from echomimic.service.settings import Settings

    recorder = _Recorder()
    Settings.from_env(recorder)
    cache_src = (ROOT / "src/echomimic/analysis/cache.py").read_text()
    names = recorder.seen | set(re.findall(r"\bECHOMIMIC_[A-Z_]+\b", cache_src))
    assert {"ECHOMIMIC_DATA_DIR", "ECHOMIMIC_S3_BUCKET", "ECHOMIMIC_CACHE_DIR"} <= names
    return names


AWS_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
           "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"}


def check_env(env: Mapping[str, str], known: set[str], where: str) -> None:
    """Names the service reads (or boto3's), values the settings accept."""
    from echomimic.service.settings import Settings

    for name in env:
        if name.startswith("AWS_"):
            assert name in AWS_ENV, f"{where}: {name} is not a variable boto3 reads"
        else:
            assert name in known, f"{where}: {name} is not read by echomimic"
    Settings.from_env({k: str(v) for k, v in env.items()})      # raises on a bad value


def parse_cli(argv: list[str], where: str) -> tuple[str, dict]:
    """Parse ``echomimic <command> ...`` with the real command line; returns the command and its
    parameters (fails on an unknown command or option, or a bad value)."""
    import click
    import typer.main

    from echomimic.cli import app

    assert argv and Path(argv[0]).name == "echomimic", f"{where}: runs {argv[:1]}, not echomimic"
    group = typer.main.get_command(app)
    assert len(argv) > 1, f"{where}: no command"
    ctx = click.Context(group, info_name="echomimic")
    cmd = group.get_command(ctx, argv[1])
    assert cmd is not None, f"{where}: echomimic has no command {argv[1]!r}"
    try:
        sub = cmd.make_context(argv[1], list(argv[2:]), parent=ctx)
    except click.UsageError as exc:
        pytest.fail(f"{where}: `{shlex.join(argv)}` is refused: {exc}")
    return argv[1], dict(sub.params)


# ------------------------------------------------------------------------------------------------
# Dockerfile
# ------------------------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, "the Dockerfile ends inside a continued line"
    return out


def _exec_form(args: str, where: str) -> list[str]:
    try:
        value = json.loads(args)
    except ValueError:
        pytest.fail(f"{where} is not in exec form (a JSON list): {args}")
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), where
    return value


def test_dockerfile(known_env):
    text = (DEPLOY / "Dockerfile").read_text()
    ins = dockerfile_instructions(text)
    kinds = [k for k, _ in ins]
    assert set(kinds) <= {"ARG", "FROM", "ENV", "WORKDIR", "COPY", "RUN", "USER", "VOLUME",
                          "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD", "LABEL"}, kinds
    # base images: python 3.11 slim (an ARG default before the first FROM is resolved)
    args = dict(re.match(r"(\w+)=(\S+)", a).groups() for k, a in ins[:kinds.index("FROM")]
                if k == "ARG")
    froms = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], a).split()[0]
             for k, a in ins if k == "FROM"]
    assert froms and all(f == "python:3.11-slim" for f in froms), froms
    final = max(i for i, k in enumerate(kinds) if k == "FROM")
    stage = ins[final:]
    # installs pinned by constraints.txt, of extras that exist
    runs = " ".join(a for k, a in ins if k == "RUN")
    assert re.search(r"pip install -c constraints\.txt \"?\.\[\$\{EXTRAS\}\]", runs), runs
    extras = re.search(r"ARG EXTRAS=(\S+)", text).group(1).split(",")
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "service" in extras and set(extras) <= set(declared), extras
    for _, a in ((k, a) for k, a in ins if k == "COPY" and "--from" not in a):
        for src in a.split()[:-1]:
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for needed in ("pyproject.toml", "constraints.txt", "README.md", "src/"):
        assert f"!{needed}" in ignore, f"{needed} is not sent to the build"
    # a non-root user from then on
    users = [a for k, a in stage if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), users
    assert kinds.index("USER", final) > max(i for i, k in enumerate(kinds) if k == "RUN")
    # environment: only variables the service reads
    env: dict[str, str] = {}
    for k, a in stage:
        if k == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", a)))
    check_env({k: v for k, v in env.items() if k.startswith("ECHOMIMIC_")}, known_env, "Dockerfile")
    assert env["ECHOMIMIC_DATA_DIR"] in [a.strip('[]"') for k, a in stage if k == "VOLUME"]
    # the default command serves on every interface, on the exposed port, and is healthchecked
    exposed = [int(a.split("/")[0]) for k, a in stage if k == "EXPOSE"]
    cmd = _exec_form(next(a for k, a in stage if k == "CMD"), "CMD")
    name, params = parse_cli(cmd, "Dockerfile CMD")
    assert name == "serve" and params["host"] == "0.0.0.0" and exposed == [params["port"]]
    health = next(a for k, a in stage if k == "HEALTHCHECK")
    assert f"127.0.0.1:{params['port']}/healthz" in health
    assert "--interval=" in health and "--timeout=" in health


# ------------------------------------------------------------------------------------------------
# docker compose
# ------------------------------------------------------------------------------------------------


def test_docker_compose(known_env):
    doc = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = doc["services"]
    assert {"api", "worker", "redis"} <= set(services)
    for name in ("api", "worker"):
        svc = services[name]
        build = svc["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        env = svc["environment"]
        check_env(env, known_env, f"compose {name}")
        broker = urlsplit(env["ECHOMIMIC_BROKER_URL"])
        assert broker.scheme == "redis" and broker.hostname in services and broker.port == 6379
        assert "redis" in svc["depends_on"]
        # the data folder is on a declared volume shared by API and workers
        mounts = dict(v.split(":", 1)[::-1] for v in svc["volumes"])
        assert mounts[env["ECHOMIMIC_DATA_DIR"]] in doc["volumes"]
    api_cmd, api = parse_cli(services["api"]["command"], "compose api")
    assert api_cmd == "serve" and api["host"] == "0.0.0.0" and api["workers"] == 0
    assert any(p.rsplit(":", 1)[-1] == str(api["port"]) for p in services["api"]["ports"])
    health = " ".join(services["api"]["healthcheck"]["test"])
    assert re.search(rf"127\.0\.0\.1:{api['port']}/(healthz|readyz)", health)
    worker_cmd, _ = parse_cli(services["worker"]["command"], "compose worker")
    assert worker_cmd == "worker"
    assert services["worker"]["volumes"] == services["api"]["volumes"]
    redis_health = services["redis"]["healthcheck"]["test"]
    assert "redis-cli" in redis_health and "ping" in redis_health


# ------------------------------------------------------------------------------------------------
# Kubernetes
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict]:
    """Every object of the kustomization, by (kind, name)."""
    folder = DEPLOY / "k8s"
    kustom = yaml.safe_load((folder / "kustomization.yaml").read_text())
    listed = set(kustom["resources"])
    on_disk = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, f"kustomization.yaml lists {sorted(listed)}, folder has {sorted(on_disk)}"
    objects: dict[tuple[str, str], dict] = {}
    for name in sorted(listed):
        for doc in yaml.safe_load_all((folder / name).read_text()):
            if doc is None:
                continue
            assert {"apiVersion", "kind", "metadata"} <= set(doc), f"{name}: not a k8s object"
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in objects, f"{key} defined twice"
            objects[key] = doc
    return objects


def _deployments(k8s) -> dict[str, dict]:
    return {name: d for (kind, name), d in k8s.items() if kind == "Deployment"}


def _quantity(value) -> float:
    """A CPU or memory quantity as a number (cores, bytes)."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert m and (not m.group(2) or m.group(2) in units), f"bad quantity {value!r}"
    return float(m.group(1)) * units.get(m.group(2), 1)


def test_k8s_config_and_secret(k8s, known_env):
    config = k8s[("ConfigMap", "echomimic-config")]["data"]
    secret = k8s[("Secret", "echomimic-secrets")]["stringData"]
    check_env({**config, **secret}, known_env, "ConfigMap + Secret")
    assert not set(config) & set(secret)
    assert "ECHOMIMIC_DB_URL" in secret and "ECHOMIMIC_SIGNING_KEY" in secret
    assert not any(k.startswith("AWS_SECRET") for k in config), "credentials belong in the Secret"
    # several pods: a shared database, queue and object store, not files on one pod's disk
    assert not secret["ECHOMIMIC_DB_URL"].startswith("sqlite")
    assert config["ECHOMIMIC_S3_BUCKET"]
    services = {name: s for (kind, name), s in k8s.items() if kind == "Service"}
    for var in ("ECHOMIMIC_BROKER_URL", "ECHOMIMIC_CACHE_URL"):
        url = urlsplit(config[var])
        assert url.scheme == "redis" and url.hostname in services, f"{var}: no Service {url.hostname}"
        assert url.port in [p["port"] for p in services[url.hostname]["spec"]["ports"]]


def test_k8s_deployments(k8s):
    deployments = _deployments(k8s)
    assert {"echomimic-api", "echomimic-worker", "echomimic-worker-gpu"} <= set(deployments)
    for name, dep in deployments.items():
        spec = dep["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items(), f"{name}: selector"
        pod = spec["template"]["spec"]
        for c in pod["containers"]:
            res = c["resources"]
            for kind in ("cpu", "memory"):
                assert _quantity(res["requests"][kind]) <= _quantity(res["limits"][kind]), (name, kind)
            if name.startswith("echomimic-redis"):
                continue
            assert pod["securityContext"]["runAsNonRoot"] is True, name
            assert c["image"].startswith("echomimic:"), name
            refs = {(("ConfigMap" if "configMapRef" in e else "Secret"),
                     (e.get("configMapRef") or e.get("secretRef"))["name"]) for e in c["envFrom"]}
            assert refs == {("ConfigMap", "echomimic-config"), ("Secret", "echomimic-secrets")}
            assert refs <= set(k8s), f"{name}: envFrom names a missing object"
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            assert k8s[("ConfigMap", "echomimic-config")]["data"]["ECHOMIMIC_DATA_DIR"] in mounts
            assert {m["name"] for m in c["volumeMounts"]} <= {v["name"] for v in pod["volumes"]}


def test_k8s_api_probes_and_service(k8s):
    dep = _deployments(k8s)["echomimic-api"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    cmd, params = parse_cli(c["command"], "api Deployment")
    assert cmd == "serve" and params["host"] == "0.0.0.0" and params["workers"] == 0
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert list(ports.values()) == [params["port"]]

    def port_of(probe):
        port = probe["httpGet"]["port"]
        return ports[port] if isinstance(port, str) else port

    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert port_of(c[probe]) == params["port"], probe
    assert dep["spec"]["replicas"] >= 2
    svc = k8s[("Service", "echomimic-api")]["spec"]
    assert svc["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    target = svc["ports"][0]["targetPort"]
    assert (ports[target] if isinstance(target, str) else target) == params["port"]


def test_k8s_workers_and_gpu(k8s):
    deployments = _deployments(k8s)
    for name in ("echomimic-worker", "echomimic-worker-gpu"):
        (c,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        cmd, params = parse_cli(c["command"], name)
        assert cmd == "worker" and params["concurrency"] >= 1
        assert "ports" not in c
        gpu = c["resources"]["limits"].get("nvidia.com/gpu")
        if name.endswith("-gpu"):
            assert int(gpu) == 1 and int(c["resources"]["requests"]["nvidia.com/gpu"]) == 1
            tolerations = deployments[name]["spec"]["template"]["spec"]["tolerations"]
            assert any(t["key"] == "nvidia.com/gpu" for t in tolerations)
            assert c["image"] != "echomimic:latest"          # the image with the neural extra
        else:
            assert gpu is None
            # one job at a time needs about two cores
            assert _quantity(c["resources"]["requests"]["cpu"]) >= params["concurrency"] * 2 - 1e-9
    for name, dep in deployments.items():
        if name not in ("echomimic-worker-gpu",):
            for c in dep["spec"]["template"]["spec"]["containers"]:
                assert "nvidia.com/gpu" not in c["resources"].get("limits", {}), name
