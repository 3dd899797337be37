"""deploy/kubernetes/ is checked, not just written: every core resource against Kubernetes'
own schemas (kubernetes-validate, strict), the RayCluster's pod templates as core PodTemplates
and its spec against the fields KubeRay's ray.io/v1 reads, and the manifests against each other
and against Stockade's CLI (secrets, claims, the Ray address, the flags, Ray's token auth)."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import Any, Iterator

import kubernetes_validate
import pytest
import typer.main
import yaml

from stockade.cli.main import app

ROOT = Path(__file__).parents[3]
DEPLOY = ROOT / "deploy" / "kubernetes"
KUBERNETES = "1.32.0"
NAMESPACE = "stockade"
#: The RayCluster fields (ray.io/v1) the manifests may use: what KubeRay's CRD defines.
RAY_SPEC = {"rayVersion", "headGroupSpec", "workerGroupSpecs", "enableInTreeAutoscaling", "autoscalerOptions"}
RAY_HEAD = {"rayStartParams", "template", "serviceType", "headService"}
RAY_WORKER = {
    "groupName",
    "replicas",
    "minReplicas",
    "maxReplicas",
    "rayStartParams",
    "template",
    "scaleStrategy",
}


def documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in documents() if d["kind"] == kind]


def pod_templates() -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, pod template) of every workload, the RayCluster's groups included."""
    for doc in documents():
        spec = doc.get("spec", {})
        if doc["kind"] in ("Deployment", "StatefulSet"):
            yield doc["metadata"]["name"], spec["template"]
        elif doc["kind"] == "RayCluster":
            yield "ray-head", spec["headGroupSpec"]["template"]
            for group in spec["workerGroupSpecs"]:
                yield f"ray-{group['groupName']}", group["template"]


def containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, template in pod_templates():
        for container in template["spec"]["containers"]:
            yield name, container


def command_line(container: dict[str, Any]) -> list[str]:
    """The container's command as words (a ``sh -c`` script split as the shell would)."""
    words = [*container.get("command", []), *container.get("args", [])]
    if words[:2] == ["sh", "-c"]:
        return shlex.split(words[2])
    return [str(w) for w in words]


def test_every_core_resource_passes_the_kubernetes_schema() -> None:
    checked = 0
    for doc in documents():
        if doc["kind"] == "RayCluster":
            continue
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        checked += 1
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]
    assert checked >= 8


def test_the_schema_check_catches_a_broken_manifest() -> None:
    """The check can fail: an unknown field and a wrong type are refused."""
    [deployment] = of_kind("Deployment")
    unknown = copy.deepcopy(deployment)
    unknown["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    wrong = copy.deepcopy(deployment)
    wrong["spec"]["replicas"] = "two"
    for broken in (unknown, wrong):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_the_raycluster_is_what_kuberay_reads() -> None:
    [ray] = of_kind("RayCluster")
    assert ray["apiVersion"] == "ray.io/v1" and ray["metadata"]["namespace"] == NAMESPACE
    # Stockade starts each host's Ray node itself: KubeRay must not generate the command.
    assert ray["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    spec = ray["spec"]
    assert set(spec) <= RAY_SPEC and set(spec["headGroupSpec"]) <= RAY_HEAD
    for group in spec["workerGroupSpecs"]:
        assert set(group) <= RAY_WORKER
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for name, template in pod_templates():
        pod = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template}
        kubernetes_validate.validate(pod, KUBERNETES, strict=True)


def test_secrets_and_claims_that_pods_use_exist() -> None:
    [secret] = of_kind("Secret")
    keys = set(secret["stringData"])
    claims = {d["metadata"]["name"] for d in of_kind("PersistentVolumeClaim")}
    for name, template in pod_templates():
        for container in template["spec"]["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert (ref["name"], ref["key"] in keys) == (secret["metadata"]["name"], True), (
                        name,
                        ref,
                    )
        for volume in template["spec"].get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, (name, volume)


def test_every_ray_process_has_token_authentication_on() -> None:
    """The head, the hosts and the API replicas (Ray drivers) all run with RAY_AUTH_MODE=token
    and the one token from the secret."""
    for name, container in containers():
        if name == "stockade-postgres":
            continue
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token", name
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "ray-auth-token", name


def _options(*path: str) -> set[str]:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return {opt for param in command.params for opt in param.opts}


def test_commands_use_real_flags_and_the_head_services_address() -> None:
    """`stockade serve` and `stockade host` are called with flags the CLI has, and both reach
    the head through the Service KubeRay makes for it (<cluster>-head-svc)."""
    [ray] = of_kind("RayCluster")
    head = ray["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    port = re.search(r"--port=(\d+)", " ".join(head["command"]))
    assert port is not None
    address = f"{ray['metadata']['name']}-head-svc.{NAMESPACE}.svc:{port.group(1)}"
    seen = set()
    for name, container in containers():
        words = command_line(container)
        for verb in ("serve", "host"):
            if f"stockade {verb} " not in " ".join(words) + " ":
                continue
            at = " ".join(words).index(f"stockade {verb} ")
            args = " ".join(words)[at:].split()[2:]
            flags = {a.split("=")[0] for a in args if a.startswith("--")}
            assert flags <= _options(verb), (name, flags - _options(verb))
            assert args[args.index("--cluster") + 1] == address, name
            seen.add(verb)
    assert seen == {"serve", "host"}


def test_the_image_installs_what_scripts_install_does() -> None:
    """deploy/Dockerfile's Debian packages include scripts/install's (outside --test)."""
    install = (ROOT / "scripts" / "install").read_text()
    listed = re.search(r"DEBIAN_PACKAGES=\(([^)]*)\)", install)
    assert listed is not None
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    missing = set(listed.group(1).split()) - set(dockerfile.replace("\\", " ").split())
    assert not missing, f"deploy/Dockerfile lacks {sorted(missing)}"
