"""The deployment files: Kubernetes manifests validated offline against a pinned Kubernetes
version's schemas (kubernetes-validate bundles them), and the replicas' compose file read for
what it must hold (services, pinned images, the order of start, a proxy that does not buffer
event streams)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.31.0"  # the oldest minor still supported upstream when this was written
PINNED = re.compile(r"^[\w.\-/]+:(?!latest$)[\w][\w.\-]*$")  # name:tag, a tag that is not latest


def _manifests() -> dict[str, dict[str, Any]]:
    """Every resource under deploy/k8s by ``kind/name`` (kustomization.yaml is kustomize's)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return found


def _containers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    spec = resource["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def test_every_manifest_is_valid_for_the_pinned_kubernetes_version() -> None:
    manifests = _manifests()
    assert set(manifests) == {
        "ConfigMap/satrouter",
        "Secret/satrouter",
        "Job/satrouter-migrate-0-1-0",
        "Deployment/satrouter",
        "Service/satrouter",
        "PodDisruptionBudget/satrouter",
    }
    for resource in manifests.values():
        # strict: an unknown field (a typo such as readinesProbe) is an error, not ignored.
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_the_validator_catches_a_mistake() -> None:
    # The check above means something only if a broken manifest fails it.
    deployment = copy.deepcopy(_manifests()["Deployment/satrouter"])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    deployment = copy.deepcopy(_manifests()["Deployment/satrouter"])
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_the_deployment_runs_two_probed_replicas_that_the_service_and_budget_select() -> None:
    m = _manifests()
    deployment = m["Deployment/satrouter"]
    assert deployment["spec"]["replicas"] == 2
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert m["Service/satrouter"]["spec"]["selector"].items() <= pod_labels.items()
    pdb = m["PodDisruptionBudget/satrouter"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["minAvailable"] == 1
    (container,) = _containers(deployment)
    assert container["args"] == ["satrouter", "serve"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    port = m["Service/satrouter"]["spec"]["ports"][0]["targetPort"]
    assert port in {p["name"] for p in container["ports"]}


def test_the_migration_job_and_the_replicas_read_the_same_settings() -> None:
    m = _manifests()
    (migrate,) = _containers(m["Job/satrouter-migrate-0-1-0"])
    (serve,) = _containers(m["Deployment/satrouter"])
    assert migrate["args"] == ["satrouter", "migrate"]
    assert migrate["image"] == serve["image"]
    assert migrate["envFrom"] == serve["envFrom"]
    for source in serve["envFrom"]:
        kind = "ConfigMap" if "configMapRef" in source else "Secret"
        name = (source.get("configMapRef") or source["secretRef"])["name"]
        assert f"{kind}/{name}" in m
    # The database URL is a secret (it holds the password), and names PostgreSQL.
    secret = m["Secret/satrouter"]["stringData"]
    assert secret["SATROUTER_DATABASE_URL"].startswith("postgresql://")
    assert "SATROUTER_DATABASE_URL" not in m["ConfigMap/satrouter"]["data"]


def test_every_image_is_pinned() -> None:
    images = [
        c["image"]
        for r in _manifests().values()
        if "template" in r.get("spec", {})
        for c in _containers(r)
    ]
    compose = yaml.safe_load((DEPLOY / "compose.replicas.yaml").read_text())
    images += [s["image"] for s in compose["services"].values() if "image" in s]
    base = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    images += [s["image"] for s in base["services"].values() if "image" in s]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    images += re.findall(r"^FROM\s+(\S+)", dockerfile, flags=re.M)
    assert len(images) >= 8
    loose = [image for image in images if not PINNED.match(image)]
    assert not loose, f"images without a fixed version: {loose}"


def test_the_replicas_compose_file() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.replicas.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "lnbits", "migrate", "satrouter-a", "satrouter-b", "proxy"}
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["lnbits"]["image"].startswith("lnbits/lnbits:")
    assert services["proxy"]["image"].startswith("caddy:")
    # migrate runs once, after the database answers; the replicas start after it succeeded.
    assert services["migrate"]["command"] == ["satrouter", "migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    for name in ("satrouter-a", "satrouter-b"):
        replica = services[name]
        assert replica["command"] == ["satrouter", "serve"]
        assert replica["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert replica["environment"]["SATROUTER_DATABASE_URL"].startswith("postgresql://")
        assert "ports" not in replica  # reached through the proxy only
        # X-Forwarded-For is believed from the proxy's fixed address, and only from it.
        proxy_ip = services["proxy"]["networks"]["backend"]["ipv4_address"]
        assert replica["environment"]["SATROUTER_TRUSTED_PROXIES"] == proxy_ip
    # An empty database password is refused by compose itself (${VAR:?...}).
    assert "${POSTGRES_PASSWORD:?" in services["postgres"]["environment"]["POSTGRES_PASSWORD"]


def test_the_proxy_balances_both_replicas_with_tls_and_no_buffering() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.replicas.yaml").read_text())
    mounts = compose["services"]["proxy"]["volumes"]
    assert "./Caddyfile:/etc/caddy/Caddyfile:ro" in mounts
    assert {"80:80", "443:443"} <= set(compose["services"]["proxy"]["ports"])
    caddyfile = (DEPLOY / "Caddyfile").read_text()
    directives = [line.split("#")[0].split() for line in caddyfile.splitlines()]
    directives = [d for d in directives if d]
    proxy = next(d for d in directives if d[0] == "reverse_proxy")
    assert set(proxy[1:-1]) == {"satrouter-a:8080", "satrouter-b:8080"}
    # Server-sent events (task events, streamed chat) are flushed at once, not buffered.
    assert ["flush_interval", "-1"] in directives
    assert ["health_uri", "/readyz"] in directives
    # A site address (not :80 or http://) is what makes Caddy serve it over TLS.
    site = directives[0][0]
    assert not site.startswith(("http://", ":")), site


def test_the_pods_run_as_the_images_own_non_root_user() -> None:
    (user,) = re.findall(r"^USER\s+(\d+)\s*$", (DEPLOY / "Dockerfile").read_text(), flags=re.M)
    for name in ("Deployment/satrouter", "Job/satrouter-migrate-0-1-0"):
        pod = _manifests()[name]["spec"]["template"]["spec"]["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] == int(user) != 0
