"""The files in cluster/ are accepted by the tools that read them, and keep the promises the project
relies on: study drivers on the head, GPU workers that scale from zero, token authentication, no
port open to the world, and the pinned stack of pyproject.toml on every node.

Nothing here contacts a cloud or a Kubernetes API: the launcher configs go through Ray's own
`prepare_config` + `validate_config` (what `ray up` runs first), the pod templates through the
Kubernetes JSON schemas that `kubernetes-validate` ships, and the runtime env through the parser
and packager `ray job submit` uses.
"""

from __future__ import annotations

import re
import runpy
import shlex
import tomllib
import zipfile
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config  # Ray's own (private) API
from ray.dashboard.modules.dashboard_sdk import parse_runtime_env_args
from ray._private.runtime_env.packaging import create_package
from ray.runtime_env import RuntimeEnv

from logah.study.cli import parse_options
from logah.study.spec import plan_study

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
LAUNCHER_CONFIGS = ["aws.yaml", "gcp.yaml"]
IMAGE_WORKDIR = "/home/ray/logah"  # where cluster/Dockerfile puts the repository
K8S_VERSION = kubernetes_validate.latest_version()


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pinned_version(package: str) -> str:
    """The `==` pin of a dependency in pyproject.toml."""
    for requirement in _pyproject()["project"]["dependencies"]:
        match = re.fullmatch(rf"{re.escape(package)}(\[[^\]]*\])?==(\S+)", requirement)
        if match:
            return match.group(2)
    raise AssertionError(f"{package} is not pinned in pyproject.toml")


RAY_VERSION = pinned_version("ray")
PYTHON_TAG = "py" + re.search(r">=(\d+)\.(\d+)", _pyproject()["project"]["requires-python"]).expand(r"\1\2")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# -- Ray cluster launcher ----------------------------------------------------------------------

@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_config_passes_ray_validation(name):
    config = load(CLUSTER / name)
    prepared = prepare_config(config)
    validate_config(prepared)
    # Our node types replace Ray's defaults (no stray default CPU worker type merged in).
    assert set(prepared["available_node_types"]) == set(config["available_node_types"])


def _rename(mapping: dict, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


BREAKAGES = {
    "head node type missing": (lambda c: c["available_node_types"].pop(c["head_node_type"]),
                               "head_node_type` must be one of"),
    "misspelt node-type field": (lambda c: _rename(c["available_node_types"]["gpu_l4_1x"],
                                                   "min_workers", "min_worker"),
                                 "'min_worker' was unexpected"),
    "misspelt top-level field": (lambda c: _rename(c, "idle_timeout_minutes", "idle_timeout"),
                                 "'idle_timeout' was unexpected"),
    "fractional GPU count": (lambda c: c["available_node_types"]["gpu_l4_1x"]["resources"]
                             .update(GPU=0.5), "0.5 is not of type 'integer'"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_broken_launcher_config_fails_ray_validation(name, breakage):
    config = load(CLUSTER / name)
    break_it, message = BREAKAGES[breakage]
    break_it(config)
    with pytest.raises((jsonschema.ValidationError, ValueError), match=re.escape(message)):
        validate_config(prepare_config(config))


def _head_and_workers(config: dict) -> tuple[dict, dict[str, dict]]:
    types = config["available_node_types"]
    head = config["head_node_type"]
    return types[head], {name: t for name, t in types.items() if name != head}


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_head_hosts_drivers_and_gpu_workers_scale_from_zero(name):
    config = load(CLUSTER / name)
    head, workers = _head_and_workers(config)
    assert head["resources"]["train_driver"] >= 1
    assert head["resources"]["CPU"] == 0 and "GPU" not in head["resources"]
    assert workers
    for worker in workers.values():
        assert worker["resources"]["GPU"] >= 1 and "train_driver" not in worker["resources"]
        assert worker["min_workers"] == 0 and worker["max_workers"] >= 1
    assert sum(w["max_workers"] for w in workers.values()) <= config["max_workers"]
    assert 0 < config["idle_timeout_minutes"] <= 30


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_token_auth_and_no_world_open_port(name):
    text = (CLUSTER / name).read_text()
    config = yaml.safe_load(text)
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]  # every process, every node
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    head_start = next(c for c in config["head_start_ray_commands"] if "ray start --head" in c)
    assert "--dashboard-host=127.0.0.1" in head_start  # dashboard + Jobs API: SSH tunnel only
    assert "0.0.0.0" not in text  # no wildcard bind, no world-open firewall rule


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_installs_the_pinned_project(name):
    config = load(CLUSTER / name)
    assert config["file_mounts"]["~/logah"] == "."
    assert "pip install -q ~/logah" in config["setup_commands"]
    # Versions come from pyproject.toml only: no command installs a framework of its own.
    commands = " ".join(config["setup_commands"] + config["head_setup_commands"])
    assert not re.search(r"\b(ray|torch|optuna)\b", commands)
    assert config["docker"]["head_image"] == f"rayproject/ray:{RAY_VERSION}-{PYTHON_TAG}-cpu"
    assert config["docker"]["worker_image"] == f"rayproject/ray:{RAY_VERSION}-{PYTHON_TAG}-gpu"


STUDIES_MOUNT = "/mnt/logah"  # the shared study folder on every node: --storage /mnt/logah/studies


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_mounts_one_shared_study_folder_on_every_node(name):
    config = load(CLUSTER / name)
    # On each host, before its container starts (initialization_commands run on every node)...
    mounts = [c for c in config["initialization_commands"] if "mount -t nfs" in c]
    assert len(mounts) == 1 and mounts[0].rstrip().endswith(f" {STUDIES_MOUNT}")
    # ... and into the container that runs Ray.
    assert f"--volume {STUDIES_MOUNT}:{STUDIES_MOUNT}" in config["docker"]["run_options"]


def test_gcp_gpu_vms_stop_on_host_maintenance():
    _, workers = _head_and_workers(load(CLUSTER / "gcp.yaml"))
    for worker in workers.values():  # Compute Engine refuses GPU VMs that live-migrate
        assert worker["node_config"]["scheduling"]["onHostMaintenance"] == "TERMINATE"


# -- KubeRay -----------------------------------------------------------------------------------

RAYCLUSTER = CLUSTER / "kuberay" / "raycluster.yaml"
RAYJOB = CLUSTER / "kuberay" / "rayjob.yaml"
STUDIES_PVC = CLUSTER / "kuberay" / "studies-pvc.yaml"


def _cluster_specs() -> dict[str, dict]:
    return {"raycluster": load(RAYCLUSTER)["spec"], "rayjob": load(RAYJOB)["spec"]["rayClusterSpec"]}


def _pod_templates(spec: dict) -> dict[str, dict]:
    groups = {"head": spec["headGroupSpec"]["template"]}
    groups.update({g["groupName"]: g["template"] for g in spec["workerGroupSpecs"]})
    return groups


POD_TEMPLATES = [(f, g) for f, spec in _cluster_specs().items() for g in _pod_templates(spec)]


@pytest.mark.parametrize(("path", "kind"), [(RAYCLUSTER, "RayCluster"), (RAYJOB, "RayJob")])
def test_kuberay_manifest_parses_as_one_ray_io_v1_object(path, kind):
    (doc,) = yaml.safe_load_all(path.read_text())
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", kind)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])  # a DNS label


def test_studies_volume_claim_passes_kubernetes_schema():
    claim = load(STUDIES_PVC)
    kubernetes_validate.validate(claim, K8S_VERSION, strict=True)
    assert (claim["apiVersion"], claim["kind"]) == ("v1", "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every pod writes the study folder


def _validate_pod_template(template: dict) -> None:
    wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
    kubernetes_validate.validate(wrapped, K8S_VERSION, strict=True)  # strict: unknown fields fail


@pytest.mark.parametrize(("manifest", "group"), POD_TEMPLATES)
def test_kuberay_pod_template_passes_kubernetes_schema(manifest, group):
    _validate_pod_template(_pod_templates(_cluster_specs()[manifest])[group])


POD_BREAKAGES = {
    "misspelt container field": lambda c: _rename(c, "resources", "resource"),
    "port as a string": lambda c: c.update(ports=[{"containerPort": "8265", "name": "dashboard"}]),
    "env var without a name": lambda c: c["env"][0].pop("name"),
}


@pytest.mark.parametrize("breakage", POD_BREAKAGES)
def test_broken_pod_template_fails_kubernetes_schema(breakage):
    template = _pod_templates(load(RAYCLUSTER)["spec"])["head"]
    POD_BREAKAGES[breakage](template["spec"]["containers"][0])
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate_pod_template(template)


def _containers(spec: dict) -> list[dict]:
    return [c for t in _pod_templates(spec).values() for c in t["spec"]["containers"]]


@pytest.mark.parametrize("manifest", ["raycluster", "rayjob"])
def test_kuberay_cluster_spec_keeps_the_project_promises(manifest):
    spec = _cluster_specs()[manifest]
    assert spec["rayVersion"] == RAY_VERSION
    assert spec["authOptions"] == {"mode": "token"}
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["version"] == "v2"
    assert 0 < spec["autoscalerOptions"]["idleTimeoutSeconds"] <= 1800

    head = spec["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP" and not head.get("enableIngress")
    assert head["resources"]["CPU"] == "0" and int(head["resources"]["train_driver"]) >= 1
    assert "nvidia.com/gpu" not in head["template"]["spec"]["containers"][0]["resources"]["limits"]

    assert spec["workerGroupSpecs"]
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] == 0 and group.get("replicas", 0) == 0
        assert group["maxReplicas"] >= 1
        (container,) = group["template"]["spec"]["containers"]
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert int(limits["nvidia.com/gpu"]) >= 1 and requests["nvidia.com/gpu"] == limits["nvidia.com/gpu"]

    claim = load(STUDIES_PVC)["metadata"]["name"]
    for template in _pod_templates(spec).values():  # the same shared study folder in every pod
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        (mount,) = [m for m in template["spec"]["containers"][0]["volumeMounts"]
                    if m["mountPath"] == STUDIES_MOUNT]
        assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == claim

    containers = _containers(spec)
    assert len({c["image"] for c in containers}) == 1  # one project image everywhere
    for container in containers:  # the database password only ever comes from a Secret
        (pgpassword,) = [e for e in container["env"] if e["name"] == "PGPASSWORD"]
        assert "value" not in pgpassword and "secretKeyRef" in pgpassword["valueFrom"]


def test_rayjob_runs_the_rank_sweep_on_the_raycluster_spec():
    job = load(RAYJOB)["spec"]
    assert job["rayClusterSpec"] == load(RAYCLUSTER)["spec"]  # the two manifests cannot drift
    argv = shlex.split(job["entrypoint"])
    assert argv[:2] == ["python", "studies/rank_sweep.py"]  # the local command, unchanged
    # The study's own command line accepts it (nothing is written, no cluster needed).
    study = runpy.run_path(str(ROOT / argv[1]))["STUDY"]
    plan = plan_study(study, parse_options(study, argv[2:]))
    assert plan.options.preset == "paper" and plan.options.gpu
    assert plan.study_dir.is_relative_to(STUDIES_MOUNT)  # on the volume every pod mounts
    assert plan.optuna_storage.startswith("postgresql://")  # one study several jobs can add to
    assert job["shutdownAfterJobFinishes"] is True and job["submissionMode"] == "K8sJobMode"
    runtime_env = yaml.safe_load(job["runtimeEnvYAML"])
    assert runtime_env["working_dir"] == IMAGE_WORKDIR
    assert runtime_env["env_vars"] == load(CLUSTER / "runtime_env.yaml")["env_vars"]


# -- ray job submit and the image ----------------------------------------------------------------

def test_runtime_env_is_what_ray_job_submit_accepts_and_ships_the_tree(tmp_path):
    runtime_env = parse_runtime_env_args(runtime_env=str(CLUSTER / "runtime_env.yaml"))
    RuntimeEnv(**runtime_env)  # Ray's own validation of every field
    assert runtime_env["working_dir"] == "."
    package = tmp_path / "working_dir.zip"  # what the client uploads, from the repository root
    create_package(str(ROOT / runtime_env["working_dir"]), package, include_gitignore=True,
                   excludes=runtime_env["excludes"])
    names = zipfile.ZipFile(package).namelist()
    assert {"pyproject.toml", "logah/__init__.py", "cluster/runtime_env.yaml"} <= set(names)
    assert not [n for n in names if n == ".git" or n.startswith((".git/", ".venv/", "runs/"))]
    assert package.stat().st_size < 20 << 20


def test_image_recipe_matches_the_pins():
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{RAY_VERSION}-{PYTHON_TAG}-gpu\n" in dockerfile
    assert f"COPY --chown=ray:users . {IMAGE_WORKDIR}\n" in dockerfile
    assert f"pip install --no-cache-dir {IMAGE_WORKDIR} " in dockerfile  # the pins of pyproject.toml
    ignored = (CLUSTER / "Dockerfile.dockerignore").read_text().split()
    assert {".git", ".venv", "runs"} <= set(ignored)
