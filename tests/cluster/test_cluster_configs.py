"""Cluster configs against the installed Ray and the project: the launcher YAML validates against the
schema shipped inside ``ray``; every KubeRay manifest runs a job module that exists with options its
parser accepts, on images pinned to the Ray version in ``requirements.lock``, with GPUs where the job wants them."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
IMAGE_TAG = re.compile(r":(?P<ray>\d+\.\d+\.\d+)-py(?P<py>\d{3})(?:-(?P<flavour>\w+))?$")


def lock_version(package: str) -> str:
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() == package:
            return version.strip()
    raise AssertionError(f"{package} is not pinned in requirements.lock")


def ray_schema() -> dict:
    import ray

    return json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


def image_pinned(image: str) -> None:
    m = IMAGE_TAG.search(image)
    assert m, f"image {image} has no <ray version>-py<python> tag"
    assert m["ray"] == lock_version("ray"), f"{image}: Ray {m['ray']} but the lock pins {lock_version('ray')}"
    assert m["py"] == "311", f"{image}: the lock is for Python 3.11"


def test_launcher_yaml_validates_against_rays_schema():
    cfg = yaml.safe_load((CLUSTER / "launcher.yaml").read_text())
    schema = ray_schema()
    jsonschema.validate(cfg, schema)
    broken = copy.deepcopy(cfg)
    broken["available_node_types"]["gpu_worker"]["resources"]["GPU"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    broken = copy.deepcopy(cfg)
    broken["head_node_typo"] = broken.pop("head_node_type")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_launcher_has_cpu_head_and_gpu_workers_on_the_pinned_image():
    cfg = yaml.safe_load((CLUSTER / "launcher.yaml").read_text())
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and "--num-gpus=0" in " ".join(cfg["head_start_ray_commands"])
    workers = [t for name, t in types.items() if name != cfg["head_node_type"]]
    assert workers and all(t["resources"]["GPU"] >= 1 and t["max_workers"] >= 1 for t in workers)
    image_pinned(cfg["docker"]["image"])
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+(\S+)", dockerfile, re.M)[1]
    assert base.startswith("rayproject/ray:")
    image_pinned(base)
    assert "requirements.lock" in dockerfile


def _manifests() -> list[tuple[Path, dict]]:
    return [(p, yaml.safe_load(p.read_text())) for p in sorted((CLUSTER / "kuberay").glob("*.yaml"))]


def _containers(cluster_spec: dict) -> list[tuple[str, dict]]:
    groups = [("head", cluster_spec["headGroupSpec"])] + [(g["groupName"], g) for g in cluster_spec["workerGroupSpecs"]]
    return [(name, c) for name, g in groups for c in g["template"]["spec"]["containers"]]


def _gpus(container: dict) -> int:
    return int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))


def wants_gpus(job: str, argv: list[str]) -> int:
    """GPUs the job asks for, read from its parsed options (0: CPU job)."""
    from jobs.cli import load_job

    args = load_job(job).parser().parse_args(argv)
    if job == "segment":
        return 0 if args.device == "cpu" else (args.num_actors or 1)
    if job == "train":
        return (args.workers or 1) if args.gpu else 0
    if job == "lineaments":
        return 1 if args.target in ("train",) or args.model else 0
    return 0


def test_kuberay_manifests_cover_segment_train_and_stitch():
    kinds = {}
    for path, doc in _manifests():
        assert doc["apiVersion"] == "ray.io/v1", path
        kinds.setdefault(doc["kind"], []).append(shlex.split(doc["spec"].get("entrypoint", ""))[2:3])
    assert len(kinds["RayCluster"]) >= 1
    assert sorted(e[0] for e in kinds["RayJob"]) == ["jobs.segment", "jobs.stitch", "jobs.train"]


@pytest.mark.parametrize("path", [p for p, _ in _manifests()], ids=lambda p: p.name)
def test_kuberay_manifest_images_and_ray_version_match_the_lock(path):
    doc = yaml.safe_load(path.read_text())
    spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
    assert spec["rayVersion"] == lock_version("ray")
    for _group, c in _containers(spec):
        image_pinned(c["image"])
    head = spec["headGroupSpec"]
    assert head["rayStartParams"].get("num-gpus") == "0" and all(
        _gpus(c) == 0 for c in head["template"]["spec"]["containers"]
    )


@pytest.mark.parametrize("path", [p for p, d in _manifests() if d["kind"] == "RayJob"], ids=lambda p: p.name)
def test_rayjob_entrypoint_module_exists_and_resources_fit_the_job(path):
    doc = yaml.safe_load(path.read_text())
    argv = shlex.split(doc["spec"]["entrypoint"])
    assert argv[:2] == ["python", "-m"], argv
    module = argv[2]
    assert importlib.util.find_spec(module) is not None, f"{path.name}: no module {module}"
    job = module.removeprefix("jobs.")
    need = wants_gpus(job, argv[3:])
    spec = doc["spec"]["rayClusterSpec"]
    workers = spec["workerGroupSpecs"]
    gpus = sum(g["replicas"] * max((_gpus(c) for c in g["template"]["spec"]["containers"]), default=0) for g in workers)
    if need:
        assert gpus >= need, f"{path.name}: the job wants {need} GPUs, the cluster has {gpus}"
        for g in workers:
            assert any(t.get("key") == "nvidia.com/gpu" for t in g["template"]["spec"].get("tolerations", [])), (
                f"{path.name}: GPU group {g['groupName']} lacks the nvidia.com/gpu toleration"
            )
    else:
        assert gpus == 0, f"{path.name}: a CPU job reserves {gpus} GPUs"
    env = yaml.safe_load(doc["spec"].get("runtimeEnvYAML", "{}")) or {}
    assert "working_dir" not in env or "://" in env["working_dir"], "RayJob working_dir must be a remote URI"


def test_runtime_env_ships_the_project_without_local_state():
    from ray.runtime_env import RuntimeEnv

    env = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    RuntimeEnv(**env)
    assert (CLUSTER / env["working_dir"]).resolve() == ROOT or (ROOT / env["working_dir"]).resolve() == ROOT
    for excluded in (".venv/", ".git/", "demo_out/", "bench_out/"):
        assert excluded in env["excludes"]
