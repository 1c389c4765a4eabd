"""The deployment kit in deploy/: manifests valid against the Kubernetes OpenAPI schemas,
kustomizations that render what they should, a Corefile that `kubernetai check` accepts in
the pod's file layout, ClusterRoles equal to what `kubernetai rbac` prints for it, and a
Deployment and image whose security settings, probes and ports agree with the Corefile.

No container engine and no cluster here: the image is not built (its Containerfile is read
instead), `kubectl kustomize` renders offline, and `kubernetes-validate` stands in for the
API server's validation (`kubectl create --dry-run=client` needs a server for discovery).
"""

from __future__ import annotations

import configparser
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubernetai.corefile import Directive, parse_file
from kubernetai.pkg.gosyntax import parse_duration

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
# The schemas every manifest must validate against (kubernetes-validate ships 1.25-1.37).
K8S_VERSION = "1.33"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
MOUNT = "/etc/kubernetai"  # where the Deployment mounts the Corefile and the Secret


def manifest_files() -> list[Path]:
    """Every Kubernetes manifest under deploy/ (kustomizations are kustomize's own kind)."""
    return sorted(p for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def one(path: Path) -> dict[str, Any]:
    docs = documents(path)
    assert len(docs) == 1, f"{path}: {len(docs)} documents"
    return docs[0]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def kit() -> list[dict[str, Any]]:
    """The documents `kubectl apply -k deploy/` applies, read from the files it lists."""
    listed = one(DEPLOY / "kustomization.yaml")["resources"]
    return [doc for name in listed for doc in documents(DEPLOY / name)]


def pod_spec() -> dict[str, Any]:
    return find(kit(), "Deployment", "kubernetai")["spec"]["template"]["spec"]


def container() -> dict[str, Any]:
    (only,) = pod_spec()["containers"]
    return only


def subset(small: dict[str, Any], big: dict[str, Any]) -> bool:
    return all(big.get(key) == value for key, value in small.items())


# -- schemas ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_manifest_validates_against_the_schemas(path: Path) -> None:
    """Strict: an unknown or misspelt field fails, as does a kind without a schema."""
    import kubernetes_validate
    from kubernetes_validate.utils import all_versions

    assert K8S_VERSION in {v.rsplit(".", 1)[0] for v in all_versions()}
    docs = documents(path)
    assert docs, f"{path} holds no manifest"
    for doc in docs:
        assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == K8S_VERSION


def test_strict_validation_catches_a_misspelt_field() -> None:
    """The check above is worth something: a typo in a probe is an error, not ignored."""
    import kubernetes_validate

    deployment = find(kit(), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


# -- kustomize ----------------------------------------------------------------------------

KUSTOMIZATIONS = {
    "": [("ClusterRole", "kubernetai"), ("ClusterRoleBinding", "kubernetai"),
         ("ConfigMap", "kubernetai"), ("Deployment", "kubernetai"),
         ("PodDisruptionBudget", "kubernetai"), ("Service", "kube-dns"),
         ("ServiceAccount", "kubernetai")],
    "remote-cluster": [("ClusterRole", "kubernetai-remote-reader"),
                       ("ClusterRoleBinding", "kubernetai-remote-reader"),
                       ("Secret", "kubernetai-remote-reader-token"),
                       ("ServiceAccount", "kubernetai-remote-reader")],
    "autoscaler": [("ClusterRole", "kubernetai-autoscaler"),
                   ("ClusterRoleBinding", "kubernetai-autoscaler"),
                   ("ConfigMap", "kubernetai-autoscaler"), ("Deployment", "kubernetai-autoscaler"),
                   ("Role", "kubernetai-autoscaler"), ("RoleBinding", "kubernetai-autoscaler"),
                   ("ServiceAccount", "kubernetai-autoscaler")],
}
# In deploy/ but applied otherwise (deploy/kustomization.yaml says why).
NOT_IN_THE_KUSTOMIZATION = {"remote-kubeconfig-secret.yaml"}


@pytest.mark.parametrize("folder", sorted(KUSTOMIZATIONS), ids=lambda f: f or "deploy")
def test_kustomize_renders_exactly_the_expected_objects(folder: str) -> None:
    if not os.access(KUBECTL, os.X_OK):
        pytest.skip(f"kubectl not found ({KUBECTL}): cannot render the kustomization")
    import kubernetes_validate

    env = {**os.environ, "KUBECONFIG": os.devnull}  # kustomize needs no cluster
    done = subprocess.run([KUBECTL, "kustomize", str(DEPLOY / folder)], capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    rendered = [doc for doc in yaml.safe_load_all(done.stdout) if doc is not None]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in rendered) == KUSTOMIZATIONS[folder]
    for doc in rendered:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("folder", sorted(KUSTOMIZATIONS), ids=lambda f: f or "deploy")
def test_kustomization_lists_every_manifest_beside_it(folder: str) -> None:
    """A manifest added to a folder but not to its kustomization would never be applied."""
    here = DEPLOY / folder
    listed = set(one(here / "kustomization.yaml")["resources"])
    present = {p.name for p in here.glob("*.yaml")} - {"kustomization.yaml"}
    expected = present - (NOT_IN_THE_KUSTOMIZATION if not folder else set())
    assert listed == expected


# -- the Corefile -------------------------------------------------------------------------


def corefile_text() -> str:
    return (DEPLOY / "Corefile").read_text()


def test_configmap_holds_deploy_corefile() -> None:
    configmap = find(kit(), "ConfigMap", "kubernetai")
    assert configmap["data"] == {"Corefile": corefile_text()}


def pod_filesystem(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The files the server reads in a kubernetai pod, laid out under `tmp_path`.

    /etc/kubernetai as the kubelet writes a projected volume (a timestamped folder,
    `..data` linking to it, each file a link through `..data`), with the Corefile from the
    ConfigMap and remote/kubeconfig from the Secret manifest's placeholder; the service
    account's token and CA; the Corefile's paths under /etc/kubernetai moved to match.
    Returns the Corefile's path and the pod's environment.
    """
    etc = tmp_path / "etc-kubernetai"
    real = etc / "..2026_01_01_00_00_00.000000001"
    (real / "remote").mkdir(parents=True)
    (etc / "..data").symlink_to(real.name)
    configmap = find(kit(), "ConfigMap", "kubernetai")
    secret = one(DEPLOY / "remote-kubeconfig-secret.yaml")
    volume = next(v for v in pod_spec()["volumes"] if v["name"] == "config")
    for source in volume["projected"]["sources"]:
        if "configMap" in source:
            data = configmap["data"]
            items = source["configMap"]["items"]
        else:
            assert source["secret"]["name"] == secret["metadata"]["name"]
            data = secret["stringData"]
            items = source["secret"]["items"]
        for item in items:
            (real / item["path"]).write_text(data[item["key"]])
    (etc / "Corefile").symlink_to("..data/Corefile")
    (etc / "remote").symlink_to("..data/remote")
    corefile = etc / "Corefile"
    corefile.write_text(corefile.read_text().replace(MOUNT + "/", f"{etc}/"))
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("a-token-the-kubelet-wrote")
    (account / "ca.crt").write_text("the cluster CA")
    (account / "namespace").write_text("kube-system")
    env = {key: value for key, value in os.environ.items() if not key.startswith("KUBE")}
    env.update(KUBERNETES_SERVICE_HOST="10.96.0.1", KUBERNETES_SERVICE_PORT="443",
               KUBERNETAI_SERVICEACCOUNT_DIR=str(account))
    return corefile, env


def test_corefile_passes_check_in_the_pods_file_layout(tmp_path: Path) -> None:
    """As the server loads it at start-up in the pod: in-cluster credentials, the remote
    kubeconfig and its context from the Secret, every directive set up."""
    corefile, env = pod_filesystem(tmp_path)
    done = subprocess.run([sys.executable, "-m", "kubernetai", "check", str(corefile)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (f"{corefile}: OK: 1 server block(s), 2 kubernetai stanza(s), "
                           "port(s) 53\n")
    assert done.stderr == ""


def test_check_fails_without_the_remote_kubeconfig(tmp_path: Path) -> None:
    """The layout above is what makes check pass: without the Secret it names the stanza."""
    corefile, env = pod_filesystem(tmp_path)
    (corefile.parent / "..data" / "remote" / "kubeconfig").unlink()
    done = subprocess.run([sys.executable, "-m", "kubernetai", "check", str(corefile)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 1
    assert "kubeconfig" in done.stderr and "no such file" in done.stderr


@dataclass(frozen=True)
class Ports:
    dns: int
    health: int
    lameduck: float
    ready: int
    metrics: int
    kubeconfigs: tuple[str, ...]


def walk(directives: tuple[Directive, ...]) -> Iterator[Directive]:
    for directive in directives:
        yield directive
        yield from walk(directive.block)


def port_of(directive: Directive, default: int) -> int:
    return int(directive.args[0].rsplit(":", 1)[1]) if directive.args else default


def corefile_ports() -> Ports:
    """What the shipped Corefile listens on and reads, as its directives say."""
    (block,) = parse_file(DEPLOY / "Corefile")
    by_name = {d.name: d for d in block.directives}
    health = by_name["health"]
    lameduck = [parse_duration(d.args[0]) for d in health.block if d.name == "lameduck"]
    kubeconfigs = tuple(d.args[0] for d in walk(block.directives) if d.name == "kubeconfig")
    (dns_port,) = {key.port for key in block.keys}
    return Ports(dns=dns_port, health=port_of(health, 8080), lameduck=lameduck[0],
                 ready=port_of(by_name["ready"], 8181),
                 metrics=port_of(by_name["prometheus"], 9153), kubeconfigs=kubeconfigs)


# -- RBAC ---------------------------------------------------------------------------------


def kubernetai_rbac() -> tuple[list[dict[str, Any]], list[list[str]]]:
    """`kubernetai rbac --corefile deploy/Corefile` as an operator runs it, from a checkout
    outside any cluster: the ClusterRoles and the comment lines before each."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("KUBE")}
    done = subprocess.run([sys.executable, "-m", "kubernetai", "rbac", "--corefile",
                           "deploy/Corefile"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    chunks = done.stdout.split("---\n")
    roles = [yaml.safe_load(chunk) for chunk in chunks]
    comments = [[line for line in chunk.splitlines() if line.startswith("# ")]
                for chunk in chunks]
    return roles, comments


def comments_before_the_manifest(path: Path) -> list[str]:
    """The `# FILE:LINE ZONES (connection)` lines a ClusterRole file copied from the command."""
    return [line for line in path.read_text().splitlines()
            if line.startswith("# deploy/Corefile:")]


def test_clusterroles_are_what_kubernetai_rbac_prints() -> None:
    """deploy/clusterrole.yaml is the command's first document (in-cluster), and
    deploy/remote-cluster/clusterrole.yaml has the rules of its second (the kubeconfig)."""
    roles, comments = kubernetai_rbac()
    assert len(roles) == 2, roles

    here = one(DEPLOY / "clusterrole.yaml")
    assert here["rules"] == roles[0]["rules"]
    assert here["metadata"] == roles[0]["metadata"]
    assert comments_before_the_manifest(DEPLOY / "clusterrole.yaml") == comments[0]

    remote = one(DEPLOY / "remote-cluster" / "clusterrole.yaml")
    assert remote["rules"] == roles[1]["rules"]
    assert remote["metadata"]["labels"] == roles[1]["metadata"]["labels"]
    assert comments_before_the_manifest(DEPLOY / "remote-cluster" / "clusterrole.yaml") \
        == comments[1]


def test_the_bindings_join_the_roles_to_the_accounts_that_use_them() -> None:
    docs = kit()
    account = find(docs, "ServiceAccount")
    binding = find(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole",
                                  "name": find(docs, "ClusterRole")["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount",
                                    "name": account["metadata"]["name"],
                                    "namespace": account["metadata"]["namespace"]}]
    assert pod_spec()["serviceAccountName"] == account["metadata"]["name"]
    assert pod_spec()["automountServiceAccountToken"] is True  # the in-cluster stanza's token

    remote = [doc for path in sorted((DEPLOY / "remote-cluster").glob("*.yaml"))
              if path.name != "kustomization.yaml" for doc in documents(path)]
    reader = find(remote, "ServiceAccount")["metadata"]
    binding = find(remote, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == find(remote, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": reader["name"],
                                    "namespace": reader["namespace"]}]
    token = find(remote, "Secret")
    assert token["type"] == "kubernetes.io/service-account-token"
    assert token["metadata"]["namespace"] == reader["namespace"]
    assert token["metadata"]["annotations"] == {
        "kubernetes.io/service-account.name": reader["name"]}


# -- the Deployment, the Service, the budget ----------------------------------------------


def test_deployment_runs_unprivileged() -> None:
    spec = pod_spec()
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0 and pod["runAsGroup"] > 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    # Port 53 for a non-root user, without a capability that would not be effective.
    assert {"name": "net.ipv4.ip_unprivileged_port_start", "value": str(corefile_ports().dns)} \
        in pod["sysctls"]
    own = container()["securityContext"]
    assert own["runAsNonRoot"] is True
    assert own["readOnlyRootFilesystem"] is True
    assert own["allowPrivilegeEscalation"] is False
    assert own["capabilities"] == {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}
    assert "privileged" not in own and "runAsUser" not in own
    assert not spec.get("hostNetwork") and not spec.get("hostPID")
    assert pod["runAsUser"] == containerfile().user[0]


def test_deployment_is_placed_and_sized_as_cluster_dns() -> None:
    deployment = find(kit(), "Deployment")
    spec = pod_spec()
    assert deployment["spec"]["replicas"] == 2
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert spec["dnsPolicy"] == "Default"
    (term,) = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchExpressions"] == [
        {"key": "k8s-app", "operator": "In", "values": ["kube-dns"]}]
    resources = container()["resources"]
    assert resources["requests"]["cpu"] == "100m"
    # Sized from bench/scale.py's RSS: 155 MiB at peak with `pods verified` at 10k services.
    assert resources["requests"]["memory"] == "100Mi"
    assert resources["limits"] == {"memory": "256Mi"}
    rollout = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rollout["maxUnavailable"] == 0  # a new replica is ready before an old one goes


def test_labels_let_it_replace_coredns_in_place() -> None:
    """The kube-dns Service selects these pods as it selects CoreDNS's; the Deployment and
    the budget select only these."""
    docs = kit()
    labels = find(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert labels["k8s-app"] == "kube-dns"
    service = find(docs, "Service", "kube-dns")
    assert service["metadata"]["namespace"] == "kube-system"
    assert service["spec"]["selector"] == {"k8s-app": "kube-dns"}
    assert service["metadata"]["labels"]["k8s-app"] == "kube-dns"
    selector = find(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert subset(selector, labels) and set(selector) > {"k8s-app"}
    budget = find(docs, "PodDisruptionBudget")["spec"]
    assert budget["selector"]["matchLabels"] == selector
    assert budget.get("maxUnavailable") == 1 or budget.get("minAvailable") == 1
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] not in
            ("ClusterRole", "ClusterRoleBinding")} == {"kube-system"}


def test_probes_ports_and_grace_match_the_corefile() -> None:
    ports = corefile_ports()
    own = container()
    liveness, readiness = own["livenessProbe"]["httpGet"], own["readinessProbe"]["httpGet"]
    assert (liveness["path"], liveness["port"]) == ("/health", ports.health)
    assert (readiness["path"], readiness["port"]) == ("/ready", ports.ready)
    declared = {(p["containerPort"], p["protocol"]): p["name"] for p in own["ports"]}
    assert declared == {(ports.dns, "UDP"): "dns", (ports.dns, "TCP"): "dns-tcp",
                        (ports.metrics, "TCP"): "metrics", (ports.health, "TCP"): "liveness-probe",
                        (ports.ready, "TCP"): "readiness-probe"}
    # SIGTERM: lameduck, then about a second to stop, inside the grace period.
    grace = pod_spec()["terminationGracePeriodSeconds"]
    assert ports.lameduck + 2 <= grace <= ports.lameduck + 30

    service = find(kit(), "Service", "kube-dns")
    assert [(p["name"], p["port"], p["protocol"], p["targetPort"])
            for p in service["spec"]["ports"]] == [
        ("dns", 53, "UDP", ports.dns), ("dns-tcp", 53, "TCP", ports.dns),
        ("metrics", 9153, "TCP", ports.metrics)]
    assert service["metadata"]["annotations"] == {"prometheus.io/port": str(ports.metrics),
                                                  "prometheus.io/scrape": "true"}
    assert service["spec"]["clusterIP"] == "10.96.0.10"


def test_the_corefile_and_the_kubeconfig_are_where_the_server_reads_them() -> None:
    """The container's --corefile, the Corefile's kubeconfig paths and the projected volume
    agree, and nothing is mounted with subPath (the kubelet would not update it)."""
    own = container()
    args = own.get("args", containerfile().cmd)
    corefile = args[args.index("--corefile") + 1]
    (mount,) = [m for m in own["volumeMounts"] if m["name"] == "config"]
    assert mount["mountPath"] == MOUNT and mount["readOnly"] is True
    assert not any("subPath" in m for m in own["volumeMounts"])
    volume = next(v for v in pod_spec()["volumes"] if v["name"] == "config")["projected"]
    projected = {f"{MOUNT}/{item['path']}" for source in volume["sources"]
                 for kind in ("configMap", "secret") if kind in source
                 for item in source[kind]["items"]}
    assert projected == {corefile, *corefile_ports().kubeconfigs}
    assert volume["defaultMode"] == 0o440 and pod_spec()["securityContext"]["fsGroup"] > 0
    # The kubernetes client writes certificate-authority-data to a file: /tmp is writable.
    (tmp,) = [m for m in own["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in next(v for v in pod_spec()["volumes"] if v["name"] == tmp["name"])


def test_remote_kubeconfig_secret_has_the_contexts_the_corefile_names() -> None:
    secret = one(DEPLOY / "remote-kubeconfig-secret.yaml")
    kubeconfig = yaml.safe_load(secret["stringData"]["kubeconfig"])
    contexts = {c["name"] for c in kubeconfig["contexts"]}
    (block,) = parse_file(DEPLOY / "Corefile")
    named = [d.args for d in walk(block.directives) if d.name == "kubeconfig"]
    assert named and all(len(args) == 2 and args[1] in contexts for args in named)
    assert secret["metadata"]["namespace"] == "kube-system"


# -- the autoscaler -----------------------------------------------------------------------


def test_autoscaler_targets_the_deployment_with_linear_parameters() -> None:
    docs = [doc for path in sorted((DEPLOY / "autoscaler").glob("*.yaml"))
            if path.name != "kustomization.yaml" for doc in documents(path)]
    params = find(docs, "ConfigMap")
    linear = json.loads(params["data"]["linear"])
    assert linear["min"] >= 2 and linear["preventSinglePointFailure"] is True
    assert linear["coresPerReplica"] > 0 and linear["nodesPerReplica"] > 0
    args = dict(arg.lstrip("-").split("=", 1) for arg in
                find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"])
    assert args["target"] == "deployment/" + find(kit(), "Deployment")["metadata"]["name"]
    assert args["configmap"] == params["metadata"]["name"]
    assert args["namespace"] == "kube-system"
    role = find(docs, "Role")
    names = {tuple(rule["resources"]): rule["resourceNames"] for rule in role["rules"]}
    assert names == {("deployments/scale",): ["kubernetai"],
                     ("configmaps",): [params["metadata"]["name"]]}


# -- the image ----------------------------------------------------------------------------


@dataclass
class Containerfile:
    """The parts of deploy/Containerfile the tests look at, per instruction."""

    stages: list[list[tuple[str, str]]]  # each stage's (INSTRUCTION, arguments)

    @property
    def runtime(self) -> list[tuple[str, str]]:
        return self.stages[-1]

    def last(self, instruction: str) -> str:
        found = [args for name, args in self.runtime if name == instruction]
        assert found, f"no {instruction} in the runtime stage"
        return found[-1]

    @property
    def user(self) -> tuple[int, int]:
        user, group = self.last("USER").split(":")
        return int(user), int(group)

    @property
    def entrypoint(self) -> list[str]:
        return json.loads(self.last("ENTRYPOINT"))  # exec form: no shell

    @property
    def cmd(self) -> list[str]:
        return json.loads(self.last("CMD"))


def containerfile() -> Containerfile:
    """Instructions with continuation lines joined and comments dropped, split by FROM."""
    lines: list[str] = []
    pending = ""
    for raw in (DEPLOY / "Containerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    assert not pending, "the Containerfile ends in a continuation"
    stages: list[list[tuple[str, str]]] = []
    for line in lines:
        name, _, args = line.partition(" ")
        if name.upper() == "FROM":
            stages.append([])
        elif stages:
            stages[-1].append((name.upper(), args.strip()))
    return Containerfile(stages)


def test_image_runs_twistd_with_the_kubernetai_plugin() -> None:
    image = containerfile()
    command = image.entrypoint + image.cmd
    assert command == ["/opt/kubernetai/venv/bin/twistd", "--nodaemon", "--pidfile=",
                       "kubernetai", "--corefile", f"{MOUNT}/Corefile"]
    assert container().get("args", image.cmd) == image.cmd
    assert "command" not in container()  # the image's entrypoint runs
    # `kubernetai` is the twistd plugin's name, and the plugin ships in the wheel.
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins
    assert "kubernetai" in {maker.tapname for maker in getPlugins(IServiceMaker)}
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert "twisted.plugins" in setup["options.packages.find"]["include"].split()
    # The build stage checks the same inside the image.
    assert any(name == "RUN" and "twistd kubernetai --help" in args
               for name, args in image.stages[0])


def test_image_is_non_root_without_a_shell_at_run_time() -> None:
    image = containerfile()
    user, group = image.user
    assert user > 0 and group > 0
    # Nothing in the runtime stage needs a shell: no RUN, exec forms only.
    names = [name for name, _ in image.runtime]
    assert "RUN" not in names
    healthcheck = image.last("HEALTHCHECK")
    probe = json.loads(healthcheck.split("CMD", 1)[1])
    assert probe[0] == "/opt/kubernetai/venv/bin/python"
    assert f"http://127.0.0.1:{corefile_ports().health}/health" in probe[-1]
    exposed = set(image.last("EXPOSE").split())
    assert {"53/udp", "53/tcp", "8080/tcp", "8181/tcp", "9153/tcp"} <= exposed


def test_image_copies_only_what_exists_and_is_not_ignored() -> None:
    """Every COPY from the build context names a file or folder of the repository, and the
    ignore file lets it through."""
    image = containerfile()
    sources = []
    for stage in image.stages:
        for name, args in stage:
            if name == "COPY" and not args.startswith("--from"):
                *copied, _destination = shlex.split(args)
                sources += copied
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
    ignore = (DEPLOY / "Containerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert {source.rstrip("/") for source in sources} <= allowed
