"""RBAC: `kubernetai rbac`'s ClusterRoles, the sandbox enforcing them, and a server that
syncs with exactly those permissions (twistd, a sandbox process started with `--rbac` on the
command's output, dnspython)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from conftest import free_dns_port
from test_e2e import SOURCE_ENV, answers, ask
from test_ready import Twistd, get, try_get

from kubernetai import cli
from kubernetai.app import rbac as app_rbac
from kubernetai.app.load import compile_corefile
from kubernetai.corefile import parse, parse_file
from kubernetai.sandbox import rbac
from kubernetai.sandbox.server import Sandbox

CORE = ["namespaces", "services"]
BOTH = ["list", "watch"]


def run_rbac(capsys: pytest.CaptureFixture[str], path: Path, *args: str
             ) -> tuple[int, str, str]:
    code = cli.main(["rbac", "--corefile", str(path), *args])
    out, err = capsys.readouterr()
    return code, out, err


def roles_of(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
             *args: str) -> list[dict[str, Any]]:
    """The ClusterRoles `kubernetai rbac` prints for this Corefile text."""
    path = tmp_path / "Corefile"
    path.write_text(text)
    code, out, err = run_rbac(capsys, path, *args)
    assert code == 0, err
    return [doc for doc in yaml.safe_load_all(out) if doc is not None]


def rules(role: dict[str, Any]) -> list[tuple[str, list[str], list[str]]]:
    """(group, resources, verbs) of each rule, in order."""
    out = []
    for rule in role["rules"]:
        assert len(rule["apiGroups"]) == 1, rule
        out.append((rule["apiGroups"][0], rule["resources"], rule["verbs"]))
    return out


def block(*stanzas: str) -> str:
    return "cluster.local east.local clusterset.local {\n" + "".join(stanzas) + "}\n"


def stanza(zones: str, *options: str) -> str:
    body = "".join(f"        {option}\n" for option in options)
    return f"    kubernetai {zones} {{\n{body}    }}\n"


# -- the rules of `kubernetai rbac` --------------------------------------------------------


def test_in_cluster_defaults(tmp_path, capsys, monkeypatch):
    """No endpoint or kubeconfig: the in-cluster service account's ClusterRole, derived
    without connecting (no KUBERNETES_SERVICE_HOST here); services, namespaces and
    EndpointSlices, listed and watched."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    [role] = roles_of(tmp_path, capsys, block(stanza("cluster.local")))
    assert role == {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "kubernetai", "labels": {"app.kubernetes.io/name": "kubernetai"}},
        "rules": [{"apiGroups": [""], "resources": CORE, "verbs": BOTH},
                  {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                   "verbs": BOTH}]}


@pytest.mark.parametrize(("mode", "pods"), [("verified", True), ("insecure", False),
                                             ("disabled", False)])
def test_pods_only_when_verified(tmp_path, capsys, mode, pods):
    """`pods verified` watches pods; `insecure` answers from the name alone."""
    [role] = roles_of(tmp_path, capsys, block(stanza("cluster.local", f"pods {mode}")))
    core = ["namespaces", "pods", "services"] if pods else CORE
    assert rules(role)[0] == ("", core, BOTH)


def test_noendpoints_on_every_stanza_of_a_connection(tmp_path, capsys):
    """EndpointSlices are left out only when no stanza of the connection watches them."""
    kubeconfig = "kubeconfig /etc/kubernetai/east.kubeconfig"
    [one] = roles_of(tmp_path, capsys, block(
        stanza("cluster.local", kubeconfig, "noendpoints", "fallthrough"),
        stanza("cluster.local", kubeconfig)))
    assert [group for group, _, _ in rules(one)] == ["", "discovery.k8s.io"]
    [none] = roles_of(tmp_path, capsys, block(
        stanza("cluster.local", kubeconfig, "noendpoints", "fallthrough"),
        stanza("cluster.local", kubeconfig, "noendpoints")))
    assert rules(none) == [("", CORE, BOTH)]


def test_multicluster(tmp_path, capsys):
    """`multicluster`: ServiceImports, and the multicluster EndpointSlices even with
    `noendpoints` (watched_for watches them for the clusterset zone)."""
    [role] = roles_of(tmp_path, capsys, block(
        stanza("cluster.local clusterset.local", "multicluster clusterset.local",
               "noendpoints")))
    assert rules(role) == [("", CORE, BOTH), ("discovery.k8s.io", ["endpointslices"], BOTH),
                           ("multicluster.x-k8s.io", ["serviceimports"], BOTH)]


def test_two_stanzas_on_one_kubeconfig_share_one_role(tmp_path, capsys):
    """One connection, one identity: one ClusterRole with the union of what its stanzas
    need, preceded by one comment line per stanza. The kubeconfig need not exist."""
    path = tmp_path / "Corefile"
    path.write_text(block(
        stanza("cluster.local", "kubeconfig /nowhere/kc", "pods verified"),
        stanza("east.local clusterset.local", "kubeconfig /nowhere/kc",
               "multicluster clusterset.local")))
    code, out, _ = run_rbac(capsys, path)
    assert code == 0
    assert out.splitlines()[:3] == [
        f"# {path}:2 cluster.local. (kubeconfig /nowhere/kc)",
        f"# {path}:6 east.local. clusterset.local. (kubeconfig /nowhere/kc)",
        "apiVersion: rbac.authorization.k8s.io/v1"]
    [role] = [doc for doc in yaml.safe_load_all(out) if doc]
    assert rules(role) == [("", ["namespaces", "pods", "services"], BOTH),
                           ("discovery.k8s.io", ["endpointslices"], BOTH),
                           ("multicluster.x-k8s.io", ["serviceimports"], BOTH)]


def test_two_connections_two_roles_in_order_of_first_use(tmp_path, capsys):
    """A role per connection (kubeconfig and context, endpoint, in-cluster), named NAME,
    NAME-2, ... in the order the connections are first used; a connection used again later
    joins its first role."""
    path = tmp_path / "Corefile"
    path.write_text(block(
        stanza("cluster.local", "endpoint https://10.1.0.1:6443", "pods verified",
               "fallthrough"),
        stanza("cluster.local", "kubeconfig kc east", "fallthrough"),
        stanza("cluster.local", "kubeconfig ./kc west", "fallthrough"),
        stanza("cluster.local", "endpoint https://10.1.0.1:6443", "noendpoints",
               "fallthrough"),
        stanza("east.local")))
    code, out, _ = run_rbac(capsys, path, "--name", "system:kubernetai")
    assert code == 0
    documents = out.split("---\n")
    assert [d.splitlines()[0] for d in documents] == [
        f"# {path}:2 cluster.local. (endpoint https://10.1.0.1:6443)",
        f"# {path}:7 cluster.local. (kubeconfig kc east)",
        f"# {path}:11 cluster.local. (kubeconfig ./kc west)",
        f"# {path}:20 east.local. (in-cluster)"]
    assert documents[0].splitlines()[1] == \
        f"# {path}:15 cluster.local. (endpoint https://10.1.0.1:6443)"
    roles = [doc for doc in yaml.safe_load_all(out) if doc]
    assert [r["metadata"]["name"] for r in roles] == [
        "system:kubernetai", "system:kubernetai-2", "system:kubernetai-3",
        "system:kubernetai-4"]
    assert rules(roles[0])[0] == ("", ["namespaces", "pods", "services"], BOTH)
    assert [rules(r)[0] for r in roles[1:]] == [("", CORE, BOTH)] * 3


def test_corefile_order_across_ports(tmp_path):
    """A block on a later port written first still comes first."""
    text = ("east.local:5353 {\n    kubernetai east.local {\n        endpoint http://a:80\n"
            "    }\n}\ncluster.local:53 {\n    kubernetai cluster.local {\n"
            "        endpoint http://b:80\n    }\n}\n")
    blocks = parse(text)
    docs = app_rbac.rules_for(compile_corefile(blocks), blocks=blocks)
    assert [doc.connection for doc in docs] == ["endpoint http://a:80", "endpoint http://b:80"]


def test_output_is_deterministic(tmp_path, capsys):
    text = block(stanza("cluster.local", "pods verified"), stanza("east.local"))
    path = tmp_path / "Corefile"
    path.write_text(text)
    first = run_rbac(capsys, path)
    assert first == run_rbac(capsys, path)
    plans = compile_corefile(parse_file(str(path)))
    assert app_rbac.render(app_rbac.rules_for(plans)) == first[1]


def test_corefile_error_is_located(tmp_path, capsys):
    path = tmp_path / "Corefile"
    path.write_text("cluster.local {\n    kubernetai cluster.local {\n        pods maybe\n"
                    "    }\n}\n")
    code, out, err = run_rbac(capsys, path)
    assert code == 1 and out == ""
    assert err.startswith(f"{path}:3: ") and err.count("\n") == 1


def test_no_stanza_needs_nothing(tmp_path, capsys):
    path = tmp_path / "Corefile"
    path.write_text(".:53 {\n    whoami\n}\n")
    assert run_rbac(capsys, path) == (
        0, "", f"{path}: no kubernetai stanza: no API server access is needed\n")


def test_bad_role_name_is_refused(tmp_path, capsys):
    path = tmp_path / "Corefile"
    path.write_text(block(stanza("cluster.local")))
    with pytest.raises(SystemExit) as info:
        cli.main(["rbac", "--corefile", str(path), "--name", "a/b"])
    assert info.value.code == 2
    assert "not a ClusterRole name" in capsys.readouterr().err


# -- the sandbox enforcing ClusterRoles ------------------------------------------------------

ROLE = """\
apiVersion: v1
kind: ServiceAccount
metadata: {name: kubernetai, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: reader}
rules:
- apiGroups: [""]
  resources: [services, namespaces]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [pods]
  verbs: [get]
  resourceNames: [allowed]
- nonResourceURLs: ["/healthz"]
  verbs: [get]
"""


@pytest.fixture
def enforcing(reactor_running: None, tmp_path: Path) -> Iterator[Sandbox]:
    path = tmp_path / "role.yaml"
    path.write_text(ROLE)
    server = Sandbox(rbac=rbac.load([path]))
    server.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
                  {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "allowed", "namespace": "shop"}}])
    server.start()
    yield server
    server.stop()


def http(url: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def denied(message: str, **details: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": "Forbidden", "details": details, "code": 403}


USER = '"system:serviceaccount:kube-system:kubernetai"'


def test_allowed_requests_are_served(enforcing):
    assert http(enforcing.url + "/api/v1/services")[0] == 200
    with urllib.request.urlopen(enforcing.url + "/api/v1/namespaces?watch=1&timeoutSeconds=1",
                                timeout=10) as watch:
        assert watch.status == 200 and b'"ADDED"' in watch.read()
    assert http(enforcing.url + "/api/v1/namespaces/shop/pods/allowed")[0] == 200
    assert enforcing.forbidden_counts() == {}


def test_forbidden_at_the_cluster_scope(enforcing):
    """kube-apiserver's Status, word for word, for a list outside every rule."""
    assert http(enforcing.url + "/api/v1/pods") == (403, denied(
        f'pods is forbidden: User {USER} cannot list resource "pods" in API group "" at the '
        "cluster scope", kind="pods"))


def test_forbidden_in_a_namespace_and_in_a_group(enforcing):
    """A namespaced request names its namespace; a group's resource is qualified by it."""
    assert http(enforcing.url + "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices"
                "?watch=true") == (403, denied(
        f'endpointslices.discovery.k8s.io is forbidden: User {USER} cannot watch resource '
        '"endpointslices" in API group "discovery.k8s.io" in the namespace "shop"',
        group="discovery.k8s.io", kind="endpointslices"))


def test_forbidden_names_the_object(enforcing):
    """A get names its object (resourceNames allows only `allowed`), as does a watch whose
    fieldSelector requires one name; a namespace object is in its own namespace."""
    assert http(enforcing.url + "/api/v1/namespaces/shop/pods/other") == (403, denied(
        f'pods "other" is forbidden: User {USER} cannot get resource "pods" in API group "" '
        'in the namespace "shop"', name="other", kind="pods"))
    assert http(enforcing.url + "/api/v1/namespaces/shop") == (403, denied(
        f'namespaces "shop" is forbidden: User {USER} cannot get resource "namespaces" in '
        'API group "" in the namespace "shop"', name="shop", kind="namespaces"))
    code, body = http(enforcing.url + "/api/v1/namespaces/shop/pods"
                      "?watch=1&fieldSelector=metadata.name%3Dallowed")
    assert code == 403 and body["message"].startswith('pods "allowed" is forbidden: ')


def test_writes_need_their_verb(enforcing):
    code, body = http(enforcing.url + "/api/v1/namespaces/shop/services", "POST",
                      {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
                       "spec": {"ports": [{"port": 80}]}})
    assert code == 403 and "cannot create resource \"services\"" in body["message"]


def test_discovery_and_control_are_not_checked(enforcing):
    """As system:discovery allows them to everyone; the sandbox's own control paths too.
    The 403s are counted by (verb, resource)."""
    for path in ("/version", "/api", "/api/v1", "/apis", "/apis/discovery.k8s.io/v1",
                 "/openapi/v3", "/healthz"):
        assert http(enforcing.url + path)[0] == 200, path
    http(enforcing.url + "/api/v1/pods")
    http(enforcing.url + "/api/v1/pods")
    http(enforcing.url + "/api/v1/endpoints?watch=1")
    code, counts = http(enforcing.url + "/_sandbox/requests")
    assert code == 200
    assert counts["forbidden"] == [{"verb": "list", "resource": "pods", "count": 2},
                                   {"verb": "watch", "resource": "endpoints", "count": 1}]
    assert enforcing.forbidden_counts() == {("list", "pods"): 2, ("watch", "endpoints"): 1}


def test_wildcards_and_subresources():
    """`*` matches any verb, group or resource; `*/SUB` a subresource of any resource."""
    policy = rbac.from_documents([{
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "all"},
        "rules": [{"apiGroups": ["*"], "resources": ["endpointslices"], "verbs": ["*"]},
                  {"apiGroups": [""], "resources": ["*"], "verbs": ["list"]},
                  {"apiGroups": [""], "resources": ["*/status"], "verbs": ["get"]}]}])

    def allows(verb: str, group: str, resource: str, subresource: str = "") -> bool:
        return policy.allows(rbac.Attributes(verb, group, resource, subresource))
    assert allows("delete", "discovery.k8s.io", "endpointslices")
    assert allows("list", "", "pods")
    assert not allows("watch", "", "pods")
    assert not allows("list", "multicluster.x-k8s.io", "serviceimports")
    assert allows("get", "", "services", "status")
    assert not allows("get", "", "pods", "log")


@pytest.mark.parametrize(("method", "path", "query", "expected"), [
    ("GET", "/api/v1/pods", {}, ("list", "", "pods", "", None, None)),
    ("GET", "/api/v1/namespaces/shop/pods", {"watch": "true"},
     ("watch", "", "pods", "", "shop", None)),
    ("GET", "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices/x", {},
     ("get", "discovery.k8s.io", "endpointslices", "", "shop", "x")),
    ("GET", "/api/v1/namespaces/shop", {}, ("get", "", "namespaces", "", "shop", "shop")),
    ("PUT", "/api/v1/namespaces/shop/finalize", {},
     ("update", "", "namespaces", "finalize", "shop", "shop")),
    ("GET", "/api/v1/namespaces/shop/pods/web-0/log", {},
     ("get", "", "pods", "log", "shop", "web-0")),
    ("DELETE", "/api/v1/namespaces/shop/services", {},
     ("deletecollection", "", "services", "", "shop", None)),
    ("GET", "/api/v1/services", {"fieldSelector": "metadata.namespace=a,metadata.name==b"},
     ("list", "", "services", "", None, "b")),
    ("GET", "/api/v1/watch/nodes", {}, ("watch", "", "nodes", "", None, None)),
    ("GET", "/api/v1", {}, None),
    ("GET", "/apis/discovery.k8s.io/v1", {}, None),
    ("GET", "/version", {}, None),
])
def test_request_attributes(method, path, query, expected):
    """As kube-apiserver's RequestInfo reads a request."""
    found = rbac.attributes(method, path, query)
    assert (found if found is None else (found.verb, found.group, found.resource,
                                         found.subresource, found.namespace,
                                         found.name)) == expected


def test_a_resource_not_served_is_forbidden_first(enforcing):
    """Authorization comes before routing: no permission, 403 even where the sandbox would
    answer 404; with permission, the 404."""
    assert http(enforcing.url + "/api/v1/nodes") == (403, denied(
        f'nodes is forbidden: User {USER} cannot list resource "nodes" in API group "" at '
        "the cluster scope", kind="nodes"))
    enforcing.settings.rbac = rbac.from_documents([{
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "nodes"},
        "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}]}])
    assert http(enforcing.url + "/api/v1/nodes")[0] == 404


@pytest.mark.parametrize(("text", "why"), [
    ("kind: ServiceAccount\n", "no ClusterRole"),
    ("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nrules:\n- verbs: [list]\n"
     "  resources: [pods]\n", "at least one api group"),
    ("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nrules:\n- verbs: list\n",
     "verbs must be a list of strings"),
    ("a: [\n", "not YAML"),
])
def test_unusable_rbac_files(tmp_path, text, why):
    path = tmp_path / "role.yaml"
    path.write_text(text)
    with pytest.raises(rbac.RbacError, match=why):
        rbac.load([path])


def test_sandbox_command_refuses_an_unusable_file(tmp_path, capsys):
    path = tmp_path / "role.yaml"
    path.write_text("kind: ServiceAccount\n")
    assert cli.main(["sandbox", "--rbac", str(path)]) == 2
    assert capsys.readouterr().err.startswith("kubernetai sandbox: --rbac: ")


# -- end to end: a server with exactly its ClusterRole -----------------------------------------

OBJECTS = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "cart", "namespace": "shop"},
     "spec": {"clusterIP": "10.96.1.1", "ports": [{"name": "http", "port": 80}]}},
    {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
     "metadata": {"name": "cart-1", "namespace": "shop",
                  "labels": {"kubernetes.io/service-name": "cart"}},
     "addressType": "IPv4", "endpoints": [{"addresses": ["10.244.0.8"]}],
     "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]},
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "cart-0", "namespace": "shop"},
     "spec": {"containers": [{"name": "c", "image": "i"}]},
     "status": {"phase": "Running", "podIP": "10.244.0.8", "podIPs": [{"ip": "10.244.0.8"}]}},
    {"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
     "metadata": {"name": "cart", "namespace": "shop"},
     "spec": {"type": "ClusterSetIP", "ips": ["10.99.0.1"],
              "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
]

# Two stanzas on one cluster (one kubeconfig, so one identity and one ClusterRole): the
# first needs pods, the second ServiceImports. The first is on line 4.
COREFILE = """\
cluster.local:{dns} east.local:{dns} clusterset.local:{dns} {{
    bind 127.0.0.1
    ready 127.0.0.1:{ready}
    kubernetai cluster.local {{
        kubeconfig {kubeconfig}
        pods verified
        startup_timeout 5m
    }}
    kubernetai east.local clusterset.local {{
        kubeconfig {kubeconfig}
        multicluster clusterset.local
    }}
}}
"""
FIRST_STANZA = "kubernetai(Corefile:4 cluster.local.)"


class SandboxProcess:
    """`kubernetai sandbox` in a process of its own, as an operator would start it."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.log = directory / "sandbox.log"
        with self.log.open("w") as errors:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kubernetai", "sandbox", *args],
                stdout=subprocess.PIPE, stderr=errors, env=SOURCE_ENV, text=True)
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        kubeconfig = self.process.stdout.readline().strip()
        if not self.url.startswith("http") or not kubeconfig.startswith("kubeconfig: "):
            self.stop()
            raise AssertionError(f"the sandbox did not start: {self.log.read_text()}")

    def control(self, path: str, body: Any = None) -> Any:
        code, answer = http(self.url + path, "GET" if body is None else "POST", body)
        assert code == 200, answer
        return answer

    def counts(self) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
        """The requests served and those refused with 403, by (verb, resource)."""
        answer = self.control("/_sandbox/requests")
        return tuple({(c["verb"], c["resource"]): c["count"] for c in answer[key]}
                     for key in ("requests", "forbidden"))  # type: ignore[return-value]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Any]:
    """Write the Corefile, run `kubernetai rbac` on it (a process, as in CI), and give a
    function that starts a sandbox enforcing a role file and the server against it."""
    dns, ready = free_dns_port(), free_dns_port()
    kubeconfig = tmp_path / "kubeconfig"  # written by the sandbox, after `rbac` has run
    corefile = tmp_path / "Corefile"
    corefile.write_text(COREFILE.format(dns=dns, ready=ready, kubeconfig=kubeconfig))
    manifests = tmp_path / "objects.yaml"
    manifests.write_text(yaml.safe_dump_all(OBJECTS))
    printed = subprocess.run([sys.executable, "-m", "kubernetai", "rbac", "--corefile",
                              str(corefile)], capture_output=True, text=True, env=SOURCE_ENV,
                             cwd=tmp_path, timeout=60, check=True).stdout
    started: list[Any] = []

    class Deployment:
        role_text = printed
        dns_port, ready_port = dns, ready

        @staticmethod
        def start(role_text: str) -> tuple[SandboxProcess, Twistd]:
            role = tmp_path / f"role-{len(started)}.yaml"
            role.write_text(role_text)
            sandbox = SandboxProcess(tmp_path, "--manifests", str(manifests), "--rbac",
                                     str(role), "--write-kubeconfig", str(kubeconfig))
            started.append(sandbox)
            server = Twistd(tmp_path, corefile.read_text())
            started.append(server)
            return sandbox, server

    yield Deployment
    for process in reversed(started):
        process.stop()


def granted(role_text: str) -> set[tuple[str, str]]:
    """Every (verb, resource) the ClusterRoles of a `kubernetai rbac` output allow."""
    return {(verb, resource)
            for role in yaml.safe_load_all(role_text) if role
            for rule in role["rules"] for resource in rule["resources"]
            for verb in rule["verbs"]}


def test_syncs_with_exactly_the_printed_role(deployment):
    """The sandbox enforces exactly what `kubernetai rbac` printed: the server syncs and
    answers for both stanzas, nothing it asks is refused, and it uses every permission the
    role grants (the lists show after its watches are cut: it checks the server's history
    with a one-item list before watching again)."""
    role = deployment.role_text
    assert granted(role) == {(verb, resource) for verb in BOTH for resource in (
        "namespaces", "pods", "services", "endpointslices", "serviceimports")}
    sandbox, server = deployment.start(role)
    server.wait(lambda: try_get(deployment.ready_port) == (200, "OK"), what="/ready OK",
                timeout=60)
    dns = deployment.dns_port
    assert answers(ask(dns, "cart.shop.svc.cluster.local")) == ["10.96.1.1"]
    assert answers(ask(dns, "10-244-0-8.shop.pod.cluster.local")) == ["10.244.0.8"]
    assert answers(ask(dns, "cart.shop.svc.east.local")) == ["10.96.1.1"]
    assert answers(ask(dns, "cart.shop.svc.clusterset.local")) == ["10.99.0.1"]
    sandbox.control("/_sandbox/faults", {"action": "cut-watches"})

    def used() -> Any:
        requests, forbidden = sandbox.counts()
        return set(requests) >= granted(role) and (requests, forbidden)
    requests, forbidden = server.wait(used, what="every granted permission used", timeout=60)
    assert forbidden == {}
    assert set(requests) == granted(role)
    assert answers(ask(dns, "cart.shop.svc.clusterset.local")) == ["10.99.0.1"]


def test_without_pods_the_verified_stanza_never_syncs(deployment):
    """The same role less pods: the stanza with `pods verified` is refused (403 counted on
    pods, said in the log) and never ready; the other stanza, which needs no pods, is."""
    roles = [role for role in yaml.safe_load_all(deployment.role_text) if role]
    core = roles[0]["rules"][0]
    assert core["apiGroups"] == [""]
    core["resources"].remove("pods")
    sandbox, server = deployment.start(yaml.safe_dump_all(roles, sort_keys=False))

    def refused() -> Any:
        _, forbidden = sandbox.counts()
        return {verb for verb, resource in forbidden if resource == "pods"} == set(BOTH) \
            and forbidden
    forbidden = server.wait(refused, what="403s on pods (watch-list, then list)", timeout=60)
    assert {resource for _, resource in forbidden} == {"pods"}
    server.wait(lambda: try_get(deployment.ready_port) == (503, FIRST_STANZA),
                what="/ready naming only the stanza with pods verified", timeout=30)

    def refused_pods() -> int:
        return sum(count for (_, resource), count in sandbox.counts()[1].items()
                   if resource == "pods")
    seen = refused_pods()
    server.wait(lambda: refused_pods() > seen,
                what="another refused pods request (the informer retries)", timeout=90)
    assert get(deployment.ready_port) == (503, FIRST_STANZA)  # still not ready after it
    assert "pods is forbidden" in server.output()
