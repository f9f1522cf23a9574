"""The cluster configs in clusters/ are valid for Ray 2.60 and place work where clusters/README.md says.

* Ray cluster-launcher YAMLs (aws, gcp, local): the same ``prepare_config`` + ``validate_config``
  (jsonschema against ray/autoscaler/ray-schema.json) that ``ray up`` runs before it talks to a cloud.
* KubeRay manifests: parsed, required fields checked, and each RayCluster spec run through Ray's own
  KubeRay autoscaler translation (``_derive_autoscaling_config_from_ray_cr``, which also calls
  ``validate_config``).  The KubeRay CRD's OpenAPI schema is not available offline (no ``kubernetes``
  package, no CRD in any installed package), so the CRD itself is not schema-checked here.
* The cluster study (search_spaces/dql_eta_cluster.yaml) fits the node types it is written for.

No test here starts Ray or touches a network.
"""
import copy
import math
import os
import stat
import subprocess
import tomllib

import pytest
import yaml

ray = pytest.importorskip("ray")
jsonschema = pytest.importorskip("jsonschema")

from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTERS = os.path.join(ROOT, "clusters")
LAUNCHER = ["aws", "gcp", "local"]
CLOUD = ["aws", "gcp"]
STUDY = os.path.join(ROOT, "search_spaces", "dql_eta_cluster.yaml")


def load(name: str) -> dict:
    with open(os.path.join(CLUSTERS, name)) as f:
        return yaml.safe_load(f)


def pins() -> dict[str, str]:
    """``{"torch": "2.13.0", "ray": "2.60.0"}`` from pyproject.toml's dependencies."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    out = {}
    for d in deps:
        if "==" in d:
            name, version = d.split("==")
            out[name.split("[")[0].strip()] = version.strip()
    return out


def prepared(name: str) -> dict:
    """What `ray up` validates: the config merged with the provider's defaults."""
    return prepare_config(copy.deepcopy(load(f"{name}.yaml")))


def node_types(cfg: dict) -> tuple[dict, dict, dict]:
    """(head, gpu, rollout) node types of a cloud config."""
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    gpu = [t for n, t in types.items() if t["resources"].get("GPU", 0) > 0]
    rollout = [t for n, t in types.items() if t["resources"].get("rollout", 0) > 0]
    assert len(gpu) == 1 and len(rollout) == 1, list(types)
    return head, gpu[0], rollout[0]


# ----------------------------------------------------------------------------- cluster launcher


@pytest.mark.parametrize("name", LAUNCHER)
def test_launcher_config_passes_rays_validator(name):
    cfg = prepared(name)
    validate_config(cfg)  # raises jsonschema.ValidationError / ValueError on a bad config
    assert cfg["cluster_name"]
    assert cfg["head_node_type"] in cfg["available_node_types"]


@pytest.mark.parametrize("name", CLOUD)
def test_validator_rejects_broken_config(name):
    """The check above is live: the schema rejects what the configs must not contain."""
    cfg = prepared(name)
    _, _, rollout = node_types(cfg)
    rollout["resources"]["rollout"] = 0.5  # the launcher schema wants integer resource counts
    with pytest.raises(jsonschema.ValidationError):
        validate_config(cfg)
    cfg = prepared(name)
    cfg["max_workers"] = 0  # smaller than the sum of min_workers once a type has min_workers
    node_types(cfg)[1]["min_workers"] = 1
    with pytest.raises(ValueError, match="max_workers"):
        validate_config(cfg)


@pytest.mark.parametrize("name", CLOUD)
def test_cloud_node_types_and_resources(name):
    from ray._private.label_utils import validate_node_label_syntax

    cfg = prepared(name)
    head, gpu, rollout = node_types(cfg)
    # head: trial drivers and Train controllers only
    assert head["resources"].get("GPU", 0) == 0 and "rollout" not in head["resources"]
    assert head["max_workers"] == 0 and head["resources"]["CPU"] >= 2
    # GPU workers: at least one GPU and enough CPUs for 4 quarter-GPU trials; never rollout actors
    assert gpu["resources"]["GPU"] >= 1 and gpu["resources"]["CPU"] >= 4
    assert "rollout" not in gpu["resources"]
    # rollout workers: CPU only, one `rollout` unit per CPU
    assert rollout["resources"].get("GPU", 0) == 0
    assert rollout["resources"]["rollout"] == rollout["resources"]["CPU"] >= 1
    # autoscaling from zero, bounded, and the global bound covers every type's maximum
    for t in (gpu, rollout):
        assert 0 == t["min_workers"] < t["max_workers"] <= cfg["max_workers"]
    assert gpu["max_workers"] + rollout["max_workers"] <= cfg["max_workers"]
    for t in cfg["available_node_types"].values():
        validate_node_label_syntax(t.get("labels") or {})


@pytest.mark.parametrize("name", CLOUD)
def test_cloud_images_setup_and_auth(name):
    raw = load(f"{name}.yaml")
    cfg = prepared(name)
    head, gpu, rollout = node_types(cfg)
    p = pins()
    ray_tag = f"rayproject/ray:{ray.__version__}-py311"
    assert p["ray"] == ray.__version__
    docker = raw["docker"]
    assert docker["head_image"] == f"{ray_tag}-cpu" and docker["worker_image"] == f"{ray_tag}-gpu"
    assert rollout["docker"]["worker_image"] == f"{ray_tag}-cpu"
    torch_pin = f'"torch=={p["torch"]}"'
    # GPU nodes: the CUDA wheel of the pinned torch (PyPI's Linux wheel), never the CPU index
    assert any(c.startswith(f"pip install {torch_pin}") and "whl/cpu" not in c for c in gpu["worker_setup_commands"])
    # CPU nodes (rollout, head): the CPU wheel of the same version
    cpu_torch = f"pip install {torch_pin} --index-url https://download.pytorch.org/whl/cpu"
    assert cpu_torch in rollout["worker_setup_commands"] and cpu_torch in raw["setup_commands"]
    for cmds in (gpu["worker_setup_commands"], rollout["worker_setup_commands"], raw["setup_commands"]):
        assert "pip install ~/diffusion-rl" in cmds  # the project's dependencies
    # the repo and the cluster's auth token are synced to every node; Ray starts with token auth
    assert raw["file_mounts"]["~/diffusion-rl"] == "."
    assert raw["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    starts = " ".join(raw["head_start_ray_commands"] + raw["worker_start_ray_commands"])
    assert starts.count("RAY_AUTH_MODE=token") == 2
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in " ".join(raw["head_start_ray_commands"])


def test_aws_node_configs_are_valid_run_instances_parameters():
    """Each node_config goes to EC2 RunInstances: check it against botocore's offline service model."""
    botocore_session = pytest.importorskip("botocore.session")
    from botocore.validate import ParamValidator

    shape = botocore_session.get_session().get_service_model("ec2").operation_model("RunInstances").input_shape
    instance_types = set(shape.members["InstanceType"].enum)
    for name, t in load("aws.yaml")["available_node_types"].items():
        report = ParamValidator().validate({**t["node_config"], "MinCount": 1, "MaxCount": 1}, shape)
        assert not report.has_errors(), f"{name}: {report.generate_report()}"
        assert t["node_config"]["InstanceType"] in instance_types, name


def _fake_bin(tmp_path, gpu: bool):
    """A PATH with stand-ins for `ray` (prints its arguments), `nvidia-smi` and `nproc`."""
    b = tmp_path / ("gpu" if gpu else "cpu")
    b.mkdir()
    scripts = {"ray": 'for a in "$@"; do echo "ARG $a"; done',
               "nvidia-smi": "exit 0" if gpu else "exit 1",
               "nproc": "echo 16"}
    for name, body in scripts.items():
        (b / name).write_text(f"#!/bin/bash\n{body}\n")
        (b / name).chmod(stat.S_IRWXU)
    return str(b)


@pytest.mark.parametrize("gpu", [False, True])
def test_local_worker_start_command_picks_role(tmp_path, gpu):
    """On-prem workers: CPU-only hosts advertise `rollout` (one per core), GPU hosts do not."""
    cfg = prepared("local")
    assert cfg["provider"]["type"] == "local" and cfg["provider"]["head_ip"] and cfg["provider"]["worker_ips"]
    (node_type,) = cfg["available_node_types"].values()
    assert node_type["min_workers"] == node_type["max_workers"] == len(cfg["provider"]["worker_ips"])
    cmd = load("local.yaml")["worker_start_ray_commands"][-1]
    env = {"PATH": _fake_bin(tmp_path, gpu) + os.pathsep + os.environ["PATH"], "RAY_HEAD_IP": "10.0.0.10",
           "HOME": str(tmp_path)}
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    args = [l[4:] for l in out.stdout.splitlines() if l.startswith("ARG ")]
    assert "--address=10.0.0.10:6379" in args
    resources = next(a for a in args if a.startswith("--resources="))
    assert yaml.safe_load(resources.split("=", 1)[1]) == ({} if gpu else {"rollout": 16})


# ----------------------------------------------------------------------------- KubeRay


def _derive(spec: dict, name: str = "diffusion-rl") -> dict:
    """Ray's KubeRay autoscaler translation of a RayCluster spec (it runs validate_config)."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    cr = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": name, "namespace": "default"},
          "spec": copy.deepcopy(spec)}
    return _derive_autoscaling_config_from_ray_cr(cr)


def check_ray_cluster_spec(spec: dict) -> dict:
    assert spec["rayVersion"] == ray.__version__
    assert spec["authOptions"]["mode"] == "token"
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == f"rayproject/ray:{ray.__version__}-py311"
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"gpu", "rollout"}
    gpu_c = groups["gpu"]["template"]["spec"]["containers"][0]
    roll_c = groups["rollout"]["template"]["spec"]["containers"][0]
    assert gpu_c["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    assert roll_c["image"] == f"rayproject/ray:{ray.__version__}-py311"
    for c in (head, gpu_c, roll_c):
        assert c["resources"]["requests"]["cpu"] == c["resources"]["limits"]["cpu"]
        assert c["resources"]["requests"]["memory"] == c["resources"]["limits"]["memory"]
        assert {"name": "shared", "mountPath": "/shared"} in c["volumeMounts"]
    assert gpu_c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in roll_c["resources"]["limits"]
    assert groups["rollout"]["rayStartParams"]["resources"] == '"{\\"rollout\\": 8}"'
    for g in groups.values():
        assert 0 == g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]

    types = _derive(spec)["available_node_types"]
    assert types["gpu"]["resources"]["GPU"] == 1 and "rollout" not in types["gpu"]["resources"]
    assert types["rollout"]["resources"]["rollout"] == types["rollout"]["resources"]["CPU"] == 8
    assert "GPU" not in types["rollout"]["resources"]
    head_type = next(t for n, t in types.items() if n not in groups)
    assert "GPU" not in head_type["resources"] and "rollout" not in head_type["resources"]
    return types


def test_kuberay_raycluster():
    cr = load("kuberay/raycluster.yaml")
    assert cr["apiVersion"] == "ray.io/v1" and cr["kind"] == "RayCluster" and cr["metadata"]["name"]
    check_ray_cluster_spec(cr["spec"])


def test_kuberay_rayjob():
    from ray.runtime_env import RuntimeEnv

    job = load("kuberay/rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob" and job["metadata"]["name"]
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    entry = spec["entrypoint"].split()
    assert entry[:3] == ["python", "-m", "platform.sweep"]
    assert os.path.exists(os.path.join(ROOT, entry[3])), entry[3]  # the study ships with the repo
    check_ray_cluster_spec(spec["rayClusterSpec"])
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    RuntimeEnv(**runtime_env)  # Ray's own runtime_env validation (URI form, pip list)
    assert runtime_env["working_dir"].startswith("https://") and runtime_env["working_dir"].endswith(".zip")
    assert runtime_env["pip"] == [f"torch=={pins()['torch']}", "${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}"]


# ----------------------------------------------------------------------------- the cluster study


def test_cluster_study_fits_the_cluster_configs():
    from platform.search import trial_resources
    from platform.spec import load_spec

    spec = load_spec(STUDY)
    r, s = spec.resources, spec.search
    assert r.gpus_per_worker == 0.25 and r.eval_resources == {"rollout": 1.0}
    assert s.max_concurrent > 1  # an autoscaling cluster starts without GPUs: the automatic limit would be 1
    per_trial_gpu = trial_resources(spec)["GPU"]
    worker = {"CPU": r.cpus_per_worker, "GPU": r.gpus_per_worker}
    actor = {"CPU": r.cpus_per_eval_actor, **r.eval_resources}

    def fits(req, res):
        return all(res.get(k, 0) >= v for k, v in req.items())

    derived = {"kuberay/raycluster.yaml": check_ray_cluster_spec(load("kuberay/raycluster.yaml")["spec"])}
    for name in CLOUD:
        head, gpu, rollout = node_types(prepared(name))
        derived[name] = {"head": head, "gpu": gpu, "rollout": rollout}
    for name, types in derived.items():
        head, gpu, rollout = types["headgroup" if "headgroup" in types else "head"], types["gpu"], types["rollout"]
        assert fits(worker, gpu["resources"]) and not fits(worker, head["resources"]), name
        assert fits(actor, rollout["resources"]) and not fits(actor, gpu["resources"]), name
        assert not fits(actor, head["resources"]), name
        # 4 trials share a GPU, CPU-wise too
        per_gpu = round(1 / r.gpus_per_worker)
        assert per_gpu == 4 and per_gpu * r.cpus_per_worker <= gpu["resources"]["CPU"], name
        # max_concurrent trials fit the GPU and rollout capacity at full scale
        assert s.max_concurrent * per_trial_gpu <= gpu["max_workers"] * gpu["resources"]["GPU"], name
        units = rollout["max_workers"] * min(rollout["resources"]["rollout"], rollout["resources"]["CPU"])
        assert s.max_concurrent * r.eval_actors * max(actor.values()) <= units, name
    assert math.isclose(per_trial_gpu, 0.25)
