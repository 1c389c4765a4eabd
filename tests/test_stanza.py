"""Tests for kubernetai.plugins.kubernetai.config: one kubernetai stanza's options, as CoreDNS 1.14 checks them."""

from __future__ import annotations

import datetime
import hashlib
import math
from pathlib import Path

import pytest

import kubernetai.corefile as corefile
from kubernetai.corefile import CorefileError
from kubernetai.pkg.fall import Fall
from kubernetai.pkg.gosyntax import parse_duration
from kubernetai.pkg.selectors import parse_to_label_selector
from kubernetai.plugins.kubernetai.apiclient import kube_client_config, plain_http_credentials
from kubernetai.plugins.kubernetai.config import DEFAULT_STARTUP_TIMEOUT, StanzaConfig, parse_stanza
from kubernetai.plugins.kubernetai.limiter import RequestLimiter


def stanzas(text: str, filename: str = "Corefile", **kw) -> list[StanzaConfig]:
    """Every kubernetai/kubernetes stanza of the first server block."""
    block = corefile.parse(text, filename, **kw)[0]
    zones = [k.zone for k in block.keys]
    return [parse_stanza(d, zones) for d in block.directives if d.name in ("kubernetai", "kubernetes")]


def stanza(body: str, keys: str = ".", **kw) -> StanzaConfig:
    """The one stanza of ``keys { body }``; line 2 is the body's first line."""
    (config,) = stanzas(f"{keys} {{\n{body}\n}}\n", **kw)
    return config


# --------------------------------------------------------------------------
# Valid stanzas

VALID = [
    pytest.param("kubernetai coredns.local", {"zones": ("coredns.local.",)}, id="one-zone"),
    pytest.param("kubernetai coredns.local test.local", {"zones": ("coredns.local.", "test.local.")}, id="two-zones"),
    pytest.param("kubernetai coredns.local {\n}", {"zones": ("coredns.local.",)}, id="empty-block"),
    pytest.param("kubernetai Cluster.LOCAL", {"zones": ("cluster.local.",)}, id="zone-lowercased"),
    pytest.param("kubernetai dns://cluster.local:1053", {"zones": ("cluster.local.",)}, id="zone-scheme-port-dropped"),
    pytest.param("kubernetai cluster.local cluster.local.", {"zones": ("cluster.local.",)}, id="duplicate-zone"),
    pytest.param(
        "kubernetai cluster.local 10.0.0.0/23",
        {"zones": ("cluster.local.", "0.0.10.in-addr.arpa.", "1.0.10.in-addr.arpa.")},
        id="cidr-expanded",
    ),
    pytest.param(
        "kubernetai coredns.local {\n endpoint http://localhost:9090 http://localhost:9091\n}",
        {"endpoint": "http://localhost:9090"},
        id="endpoint-first-only",
    ),
    pytest.param("kubernetai coredns.local {\n endpoint 192.168.99.100:8080\n}", {"endpoint": "http://192.168.99.100:8080"}, id="endpoint-no-scheme"),
    pytest.param("kubernetai coredns.local {\n endpoint k8s.example\n tls c k ca\n}", {"endpoint": "https://k8s.example"},
                 id="endpoint-host-only-with-tls"),
    pytest.param("kubernetai coredns.local {\n endpoint http://[::1]:8080\n}", {"endpoint": "http://[::1]:8080"}, id="endpoint-ipv6"),
    pytest.param("kubernetai coredns.local {\n endpoint https://k8s.example/prefix/\n}", {"endpoint": "https://k8s.example/prefix"},
                 id="endpoint-path-prefix"),
    pytest.param("kubernetai coredns.local {\n endpoint http://k8s_api.local:8080\n}", {"endpoint": "http://k8s_api.local:8080"},
                 id="endpoint-underscore-as-go-resolves"),
    pytest.param("kubernetai coredns.local {\n startup_timeout 2562047h47m16.854775807s\n}",
                 {"startup_timeout": 9223372036.854775807}, id="startup-timeout-go-maximum"),
    pytest.param(
        "kubernetai coredns.local {\n endpoint k8s:6443\n tls c k ca\n}",
        {"endpoint": "https://k8s:6443", "tls": ("c", "k", "ca")},
        id="endpoint-no-scheme-tls-https",
    ),
    pytest.param("kubernetai coredns.local {\n endpoint https://k8s:6443/\n}", {"endpoint": "https://k8s:6443"}, id="endpoint-trailing-slash"),
    pytest.param("kubernetai coredns.local {\n namespaces demo\n}", {"namespaces": frozenset({"demo"})}, id="namespaces-one"),
    pytest.param(
        "kubernetai coredns.local {\n namespaces demo test\n namespaces more\n}",
        {"namespaces": frozenset({"demo", "test", "more"})},
        id="namespaces-accumulate",
    ),
    pytest.param("kubernetai coredns.local {\n labels environment=prod\n}", {"labels": "environment=prod"}, id="labels"),
    pytest.param(
        "kubernetai coredns.local {\n labels environment in (production, staging, qa),application=nginx\n}",
        {"labels": "application=nginx,environment in (production,qa,staging)"},
        id="labels-set-based",
    ),
    pytest.param('kubernetai coredns.local {\n labels ""\n}', {"labels": None}, id="labels-empty"),
    pytest.param(
        "kubernetai coredns.local {\n namespace_labels istio-injection=enabled\n}",
        {"namespace_labels": "istio-injection=enabled"},
        id="namespace-labels",
    ),
    pytest.param("kubernetai coredns.local {\n pods disabled\n}", {"pods": "disabled"}, id="pods-disabled"),
    pytest.param("kubernetai coredns.local {\n pods insecure\n}", {"pods": "insecure"}, id="pods-insecure"),
    pytest.param("kubernetai coredns.local {\n pods verified\n}", {"pods": "verified"}, id="pods-verified"),
    pytest.param("kubernetai coredns.local {\n endpoint_pod_names\n}", {"endpoint_pod_names": True}, id="endpoint-pod-names"),
    pytest.param("kubernetai coredns.local {\n ttl 56\n}", {"ttl": 56}, id="ttl"),
    pytest.param("kubernetai coredns.local {\n ttl 0\n}", {"ttl": 0}, id="ttl-0"),
    pytest.param("kubernetai coredns.local {\n ttl 3600\n}", {"ttl": 3600}, id="ttl-max"),
    pytest.param("kubernetai coredns.local {\n ttl +30\n}", {"ttl": 30}, id="ttl-plus-sign"),
    pytest.param("kubernetai coredns.local {\n noendpoints\n}", {"noendpoints": True}, id="noendpoints"),
    pytest.param("kubernetai coredns.local {\n zonal\n}", {"zonal": True}, id="zonal"),
    pytest.param("kubernetai coredns.local {\n fallthrough\n}", {"fall": Fall((".",))}, id="fallthrough-all"),
    pytest.param(
        "kubernetai coredns.local {\n fallthrough ip6.arpa inaddr.arpa foo.com\n}",
        {"fall": Fall(("ip6.arpa.", "inaddr.arpa.", "foo.com."))},
        id="fallthrough-zones",
    ),
    pytest.param(
        "kubernetai coredns.local {\n fallthrough 10.0.0.0/8 FOO.com\n}",
        {"fall": Fall(("10.in-addr.arpa.", "foo.com."))},
        id="fallthrough-cidr",
    ),
    pytest.param("kubernetai coredns.local {\n ignore empty_service\n}", {"ignore_empty_service": True}, id="ignore-empty-service"),
    pytest.param("kubernetai coredns.local {\n kubeconfig file\n}", {"kubeconfig": ("file", None)}, id="kubeconfig"),
    pytest.param("kubernetai coredns.local {\n kubeconfig file context\n}", {"kubeconfig": ("file", "context")}, id="kubeconfig-context"),
    pytest.param(
        "kubernetai coredns.local clusterset.local {\n multicluster clusterset.local\n}",
        {"multicluster_zones": ("clusterset.local.",)},
        id="multicluster",
    ),
    pytest.param("kubernetai coredns.local {\n multicluster\n}", {"multicluster_zones": ()}, id="multicluster-no-zones"),
    pytest.param("kubernetai coredns.local {\n startup_timeout 1s\n}", {"startup_timeout": 1.0}, id="startup-timeout"),
    pytest.param("kubernetai coredns.local {\n startup_timeout 1m30s\n}", {"startup_timeout": 90.0}, id="startup-timeout-compound"),
    pytest.param("kubernetai coredns.local {\n startup_timeout 0\n}", {"startup_timeout": 0.0}, id="startup-timeout-zero"),
    pytest.param(
        "kubernetai coredns.local {\n apiserver_qps 50.0\n apiserver_burst 100\n apiserver_max_inflight 25\n}",
        {"apiserver_qps": 50.0, "apiserver_burst": 100, "apiserver_max_inflight": 25},
        id="apiserver-limits",
    ),
    pytest.param("kubernetai coredns.local {\n apiserver_qps 1e2\n}", {"apiserver_qps": 100.0}, id="apiserver-qps-exponent"),
    pytest.param("kubernetai coredns.local {\n apiserver_qps inf\n}", {"apiserver_qps": math.inf}, id="apiserver-qps-inf"),
    pytest.param(
        "kubernetai coredns.local {\n apiserver_qps 0\n apiserver_burst 0\n apiserver_max_inflight 0\n}",
        {"apiserver_qps": 0.0, "apiserver_burst": 0, "apiserver_max_inflight": 0},
        id="apiserver-zero",
    ),
    pytest.param(
        "kubernetai coredns.local test.local {\n"
        " endpoint http://localhost:8080\n"
        " namespaces demo test\n"
        " labels environment in (production, staging, qa),application=nginx\n"
        " fallthrough\n"
        "}",
        {
            "zones": ("coredns.local.", "test.local."),
            "endpoint": "http://localhost:8080",
            "namespaces": frozenset({"demo", "test"}),
            "labels": "application=nginx,environment in (production,qa,staging)",
            "fall": Fall((".",)),
        },
        id="coredns-combined",
    ),
]


@pytest.mark.parametrize("body, expected", VALID)
def test_valid_stanza_fields(body: str, expected: dict) -> None:
    """Each snippet parses to the expected StanzaConfig fields."""
    config = stanza(body)
    for name, value in expected.items():
        assert getattr(config, name) == value, name


def test_defaults() -> None:
    """A bare stanza takes the server block's zones and CoreDNS's defaults."""
    config = stanza("kubernetai", keys="cluster.local:53")
    assert config == StanzaConfig(zones=("cluster.local.",), filename="Corefile", line=2)
    assert config.ttl == 5 and config.pods == "disabled" and config.fall == Fall()
    assert config.startup_timeout == DEFAULT_STARTUP_TIMEOUT == 5.0
    assert config.connection == "in-cluster"
    assert config.primary_zone == "cluster.local."
    assert config.warnings == ()


def test_server_block_zones_all_used() -> None:
    """Without arguments the stanza serves every zone of the server block, in order."""
    config = stanza("kubernetai", keys="cluster.local 10.0.0.0/24 example.org")
    assert config.zones == ("cluster.local.", "0.0.10.in-addr.arpa.", "example.org.")


def test_kubeadm_default_stanza() -> None:
    """The stanza kubeadm ships parses as kube-dns compatible (ttl 30, pods insecure, reverse fallthrough)."""
    text = (Path(__file__).parent / "corefiles" / "kubeadm.Corefile").read_text()
    (config,) = stanzas(text.replace("kubernetes ", "kubernetai "))
    assert config.zones == ("cluster.local.", "in-addr.arpa.", "ip6.arpa.")
    assert config.pods == "insecure"
    assert config.ttl == 30
    assert config.fall == Fall(("in-addr.arpa.", "ip6.arpa."))
    assert config.primary_zone == "cluster.local."
    assert config.connection == "in-cluster"
    assert config.warnings == ()
    assert config.fall.through("1.0.96.10.in-addr.arpa.")
    assert not config.fall.through("missing.default.svc.cluster.local.")


def test_deployment_default_stanza() -> None:
    """coredns/deployment's stanza with REVERSE_CIDRS expands the CIDR into reverse zones."""
    (config,) = stanzas(
        ".:53 {\n    kubernetai cluster.local 10.96.0.0/12 {\n      fallthrough in-addr.arpa ip6.arpa\n    }\n}\n"
    )
    assert config.zones[0] == "cluster.local."
    assert config.zones[1:] == tuple(f"{n}.10.in-addr.arpa." for n in range(96, 112))
    assert config.warnings == ()


def test_kubernetai_readme_examples() -> None:
    """The kubernetai README's Corefiles: three clusters, and local-then-remote fallthrough."""
    three = stanzas(
        ". {\n errors\n log\n"
        " kubernetai cluster.local {\n   endpoint http://192.168.99.100\n }\n"
        " kubernetai assemblage.local {\n   endpoint http://192.168.99.101\n }\n"
        " kubernetai conglomeration.local {\n   endpoint http://192.168.99.102\n }\n}\n"
    )
    assert [(c.zones, c.endpoint, c.line) for c in three] == [
        (("cluster.local.",), "http://192.168.99.100", 4),
        (("assemblage.local.",), "http://192.168.99.101", 7),
        (("conglomeration.local.",), "http://192.168.99.102", 10),
    ]
    local, remote = stanzas(
        ". {\n kubernetai cluster.local {\n   ignore empty_service\n   fallthrough\n }\n"
        " kubernetai cluster.local {\n   endpoint https://remote-k8s-cluster\n }\n}\n"
    )
    assert local.ignore_empty_service and local.fall == Fall((".",)) and local.connection == "in-cluster"
    assert remote.endpoint == "https://remote-k8s-cluster" and remote.fall == Fall()


def test_environment_substitution() -> None:
    """Arguments come through the Corefile's {$VAR} substitution."""
    config = stanza("kubernetai {$DOMAIN} {\n ttl {$TTL}\n}", environ={"DOMAIN": "c.example", "TTL": "17"})
    assert config.zones == ("c.example.",) and config.ttl == 17


def test_reverse_only_bare_arpa_is_primary() -> None:
    """CoreDNS's IsReverse wants '.in-addr.arpa.', so a stanza for just 'in-addr.arpa' is accepted with it as primary."""
    config = stanza("kubernetai in-addr.arpa")
    assert config.primary_zone == "in-addr.arpa."


def test_primary_zone_skips_reverse() -> None:
    """The primary zone is the first non-reverse zone."""
    assert stanza("kubernetai 10.0.0.0/8 cluster.local").primary_zone == "cluster.local."


def test_kubernetes_directive_name() -> None:
    """parse_stanza also reads a 'kubernetes' directive, naming it in messages."""
    with pytest.raises(CorefileError) as e:
        stanza("kubernetes cluster.local {\n ttl 4000\n}")
    assert str(e.value) == "Corefile:3: kubernetes: ttl must be in range [0, 3600]: 4000"


# --------------------------------------------------------------------------
# Errors: file:line, CoreDNS's wording, the offending token

ERRORS = [
    # (body, message substring including file:line, offending token)
    pytest.param(
        "kubernetai coredns.local {\n endpoint\n}",
        "Corefile:3: kubernetai: Wrong argument count or unexpected line ending after 'endpoint'",
        "endpoint",
        id="endpoint-no-args",
    ),
    pytest.param(
        "kubernetai coredns.local {\n namespaces\n}",
        "Corefile:3: kubernetai: Wrong argument count or unexpected line ending after 'namespaces'",
        "namespaces",
        id="namespaces-no-args",
    ),
    pytest.param(
        "kubernetai coredns.local {\n labels\n}",
        "Corefile:3: kubernetai: Wrong argument count or unexpected line ending after 'labels'",
        "labels",
        id="labels-no-args",
    ),
    pytest.param(
        "kubernetai coredns.local {\n labels environment in (production, qa\n}",
        "Corefile:3: kubernetai: unable to parse label selector value: 'environment in (production, qa': "
        "couldn't parse the selector string \"environment in (production, qa\": unable to parse requirement: "
        "found '', expected: ',' or ')'",
        "environment in (production, qa",
        id="labels-unclosed",
    ),
    pytest.param(
        "kubernetai coredns.local {\n labels app!=web\n}",
        "Corefile:3: kubernetai: unable to parse label selector value: 'app!=web': \"!=\" is not a valid label selector operator",
        "app!=web",
        id="labels-not-equals-refused",
    ),
    pytest.param(
        "kubernetai coredns.local {\n labels tier>1\n}",
        "\"gt\" isn't supported in label selectors",
        "tier>1",
        id="labels-gt-refused",
    ),
    pytest.param(
        "kubernetai coredns.local {\n namespace_labels -bad=x\n}",
        "Corefile:3: kubernetai: unable to parse namespace_label selector value: '-bad=x': couldn't parse the selector string",
        "-bad=x",
        id="namespace-labels-bad-key",
    ),
    pytest.param(
        "kubernetai coredns.local {\n pods giant_seed\n}",
        "Corefile:3: kubernetai: wrong value for pods: giant_seed,  must be one of: disabled, verified, insecure",
        "giant_seed",
        id="pods-bad-mode",
    ),
    pytest.param(
        "kubernetai coredns.local {\n pods\n}",
        "Corefile:3: kubernetai: Wrong argument count or unexpected line ending after 'pods'",
        "pods",
        id="pods-no-args",
    ),
    pytest.param(
        "kubernetai coredns.local {\n pods insecure verified\n}",
        "Corefile:3: kubernetai: Wrong argument count or unexpected line ending after 'verified'",
        "verified",
        id="pods-two-args",
    ),
    pytest.param(
        "kubernetai coredns.local {\n pods Insecure\n}",
        "wrong value for pods: Insecure",
        "Insecure",
        id="pods-case-sensitive",
    ),
    pytest.param(
        "kubernetai coredns.local {\n kubeconfig\n}",
        "Corefile:3: kubernetai: Wrong argument count or unexpected line ending after 'kubeconfig'",
        "kubeconfig",
        id="kubeconfig-no-args",
    ),
    pytest.param(
        "kubernetai coredns.local {\n kubeconfig file context extraarg\n}",
        "Corefile:3: kubernetai: Wrong argument count or unexpected line ending after 'extraarg'",
        "extraarg",
        id="kubeconfig-three-args",
    ),
    pytest.param(
        "kubernetai coredns.local {\n tls cert key\n}",
        "Corefile:3: kubernetai: Wrong argument count or unexpected line ending after 'key'",
        "key",
        id="tls-two-args",
    ),
    pytest.param(
        "kubernetai coredns.local {\n tls cert key ca extra\n}",
        "Corefile:3: kubernetai: Wrong argument count or unexpected line ending after 'extra'",
        "extra",
        id="tls-four-args",
    ),
    pytest.param(
        "kubernetai coredns.local {\n ttl\n}",
        "Corefile:3: kubernetai: Wrong argument count or unexpected line ending after 'ttl'",
        "ttl",
        id="ttl-no-args",
    ),
    pytest.param(
        "kubernetai coredns.local {\n ttl -1\n}", "Corefile:3: kubernetai: ttl must be in range [0, 3600]: -1", "-1", id="ttl-negative"
    ),
    pytest.param(
        "kubernetai coredns.local {\n ttl 3601\n}", "Corefile:3: kubernetai: ttl must be in range [0, 3600]: 3601", "3601", id="ttl-3601"
    ),
    pytest.param(
        "\n\nkubernetai coredns.local {\n ttl 4000\n}", "Corefile:5: kubernetai: ttl must be in range [0, 3600]: 4000", "4000", id="ttl-4000"
    ),
    pytest.param(
        "kubernetai coredns.local {\n ttl 30s\n}",
        'Corefile:3: kubernetai: invalid ttl "30s": strconv.Atoi: parsing "30s": invalid syntax',
        "30s",
        id="ttl-not-integer",
    ),
    pytest.param(
        "kubernetai coredns.local {\n ttl 99999999999999999999\n}",
        "value out of range",
        "99999999999999999999",
        id="ttl-overflow",
    ),
    pytest.param(
        "kubernetai coredns.local {\n noendpoints ixnay on the endpointsay\n}",
        "Corefile:3: kubernetai: Wrong argument count or unexpected line ending after 'endpointsay'",
        "endpointsay",
        id="noendpoints-args",
    ),
    pytest.param(
        "kubernetai coredns.local {\n endpoint_pod_names giant_seed\n}",
        "Corefile:3: kubernetai: Wrong argument count or unexpected line ending after 'giant_seed'",
        "giant_seed",
        id="endpoint-pod-names-args",
    ),
    pytest.param(
        "kubernetai coredns.local {\n zonal us-west-2a\n}",
        "Corefile:3: kubernetai: Wrong argument count or unexpected line ending after 'us-west-2a'",
        "us-west-2a",
        id="zonal-args",
    ),
    pytest.param(
        "kubernetai coredns.local {\n zonal\n noendpoints\n}",
        "Corefile:4: kubernetai: zonal requires the endpoint cache; remove noendpoints",
        "noendpoints",
        id="zonal-noendpoints",
    ),
    pytest.param(
        "kubernetai coredns.local {\n ignore ixnay on the endpointsay\n}",
        "Corefile:3: kubernetai: unable to parse ignore value: 'ixnay'",
        "ixnay",
        id="ignore-bad-value",
    ),
    pytest.param(
        "kubernetai coredns.local {\n namespaces foo bar\n namespace_labels istio-injection=enabled\n}",
        "Corefile:4: kubernetai: namespaces and namespace_labels cannot both be set",
        "namespace_labels",
        id="namespaces-and-namespace-labels",
    ),
    pytest.param(
        "kubernetai coredns.local {\n namespace_labels a=b\n namespaces foo\n}",
        "Corefile:4: kubernetai: namespaces and namespace_labels cannot both be set",
        "namespaces",
        id="namespace-labels-and-namespaces",
    ),
    pytest.param(
        "kubernetai coredns.local {\n multicluster clusterset.local\n}",
        "Corefile:3: kubernetai: is not authoritative for the multicluster zone clusterset.local. "
        "(authoritative zones: [coredns.local.])",
        "clusterset.local.",
        id="multicluster-not-authoritative",
    ),
    pytest.param(
        "kubernetai coredns.local clusterset.local {\n multicluster clusterset.local test.local\n}",
        "is not authoritative for the multicluster zone test.local. (authoritative zones: [coredns.local. clusterset.local.])",
        "test.local.",
        id="multicluster-second-zone",
    ),
    pytest.param(
        "kubernetai cluster.local {\n multicluster set.cluster.local\n}",
        "is not authoritative for the multicluster zone set.cluster.local.",
        "set.cluster.local.",
        id="multicluster-subzone-is-not-enough",
    ),
    pytest.param(
        "kubernetai coredns.local {\n startup_timeout\n}",
        "Corefile:3: kubernetai: Wrong argument count or unexpected line ending after 'startup_timeout'",
        "startup_timeout",
        id="startup-timeout-no-args",
    ),
    pytest.param(
        "kubernetai coredns.local {\n startup_timeout 5\n}",
        'Corefile:3: kubernetai: failed to parse startup_timeout: 5, time: missing unit in duration "5"',
        "5",
        id="startup-timeout-no-unit",
    ),
    pytest.param(
        "kubernetai coredns.local {\n startup_timeout 5sec\n}",
        'failed to parse startup_timeout: 5sec, time: unknown unit "sec" in duration "5sec"',
        "5sec",
        id="startup-timeout-bad-unit",
    ),
    pytest.param(
        "kubernetai coredns.local {\n startup_timeout -1s\n}",
        "Corefile:3: kubernetai: startup_timeout must not be negative: -1s",
        "-1s",
        id="startup-timeout-negative",
    ),
    pytest.param(
        "kubernetai coredns.local {\n apiserver_qps -10\n}",
        "Corefile:3: kubernetai: apiserver_qps must be >= 0",
        "-10",
        id="qps-negative",
    ),
    pytest.param(
        "kubernetai coredns.local {\n apiserver_qps fast\n}",
        'Corefile:3: kubernetai: invalid apiserver_qps "fast": strconv.ParseFloat: parsing "fast": invalid syntax',
        "fast",
        id="qps-syntax",
    ),
    pytest.param(
        "kubernetai coredns.local {\n apiserver_qps 1e39\n}",
        'invalid apiserver_qps "1e39": strconv.ParseFloat: parsing "1e39": value out of range',
        "1e39",
        id="qps-float32-overflow",
    ),
    pytest.param(
        "kubernetai coredns.local {\n apiserver_qps NaN\n}", 'invalid apiserver_qps "NaN": not a number', "NaN", id="qps-nan"
    ),
    pytest.param(
        "kubernetai coredns.local {\n apiserver_qps 1 2\n}",
        "Wrong argument count or unexpected line ending after '2'",
        "2",
        id="qps-two-args",
    ),
    pytest.param(
        "kubernetai coredns.local {\n apiserver_burst -5\n}",
        "Corefile:3: kubernetai: apiserver_burst must be >= 0",
        "-5",
        id="burst-negative",
    ),
    pytest.param(
        "kubernetai coredns.local {\n apiserver_burst 1.5\n}",
        'invalid apiserver_burst "1.5": strconv.Atoi: parsing "1.5": invalid syntax',
        "1.5",
        id="burst-not-integer",
    ),
    pytest.param(
        "kubernetai coredns.local {\n apiserver_max_inflight -1\n}",
        "Corefile:3: kubernetai: apiserver_max_inflight must be >= 0",
        "-1",
        id="max-inflight-negative",
    ),
    pytest.param(
        "kubernetai coredns.local {\n apiserver_max_inflight\n}",
        "Wrong argument count or unexpected line ending after 'apiserver_max_inflight'",
        "apiserver_max_inflight",
        id="max-inflight-no-args",
    ),
    pytest.param(
        "kubernetai coredns.local {\n foo bar\n}", "Corefile:3: kubernetai: unknown property 'foo'", "foo", id="unknown-property"
    ),
    pytest.param(
        "kubernetai coredns.local {\n TTL 30\n}", "Corefile:3: kubernetai: unknown property 'TTL'", "TTL", id="property-case-sensitive"
    ),
    pytest.param(
        "kubernetai coredns.local {\n fallthrough {\n   in-addr.arpa\n }\n}",
        "Corefile:3: kubernetai: 'fallthrough' takes no block",
        "{",
        id="option-with-block",
    ),
    pytest.param(
        "kubernetai 10.0.0.0/8 ip6.arpa.in-addr.arpa 1.ip6.arpa",
        "Corefile:2: kubernetai: non-reverse zone name must be used",
        "kubernetai",
        id="only-reverse-zones",
    ),
    pytest.param(
        "kubernetai cluster.local bad..zone",
        "Corefile:2: kubernetai: invalid zone 'bad..zone': zone is not a valid domain name: bad..zone",
        "bad..zone",
        id="invalid-zone",
    ),
    pytest.param(
        "kubernetai {$UNSET_CLUSTER_DOMAIN}",
        "Corefile:2: kubernetai: empty zone argument",
        "",
        id="empty-zone-from-env",
    ),
    pytest.param(
        "kubernetai cluster.local {\n fallthrough in-addr.arpa bad..zone\n}",
        "Corefile:3: kubernetai: invalid fallthrough zone 'bad..zone'",
        "bad..zone",
        id="invalid-fallthrough-zone",
    ),
    pytest.param(
        "kubernetai cluster.local {\n endpoint ftp://k8s\n}",
        "Corefile:3: kubernetai: invalid endpoint URL 'ftp://k8s': scheme must be http or https",
        "ftp://k8s",
        id="endpoint-bad-scheme",
    ),
    pytest.param(
        "kubernetai cluster.local {\n endpoint https://k8s:99999\n}",
        "Corefile:3: kubernetai: invalid endpoint URL 'https://k8s:99999'",
        "https://k8s:99999",
        id="endpoint-bad-port",
    ),
    pytest.param(
        "kubernetai cluster.local {\n endpoint nan\n}",
        "Corefile:3: kubernetai: invalid endpoint URL 'nan': without a scheme, tls or a port, client-go reads it "
        "as http://nan:80 (plain HTTP on port 80), which is not where an API server listens: write the URL in "
        "full, e.g. https://nan:6443",
        "nan",
        id="endpoint-bare-word",
    ),
    pytest.param(
        "kubernetai cluster.local {\n endpoint 192.168.99.100\n}",
        "invalid endpoint URL '192.168.99.100': without a scheme, tls or a port, client-go reads it as "
        "http://192.168.99.100:80",
        "192.168.99.100",
        id="endpoint-bare-address",
    ),
    pytest.param("kubernetai cluster.local {\n endpoint https://\n}",
                 "invalid endpoint URL 'https://': not a URL, nor a HOST:PORT pair", "https://", id="endpoint-no-host"),
    pytest.param("kubernetai cluster.local {\n endpoint k8s/api\n}",
                 "invalid endpoint URL 'k8s/api': not a URL, nor a HOST:PORT pair", "k8s/api", id="endpoint-shorthand-path"),
    pytest.param("kubernetai cluster.local {\n endpoint http://k8s:0\n}",
                 "invalid endpoint URL 'http://k8s:0': port 0", "http://k8s:0", id="endpoint-port-0"),
    pytest.param("kubernetai cluster.local {\n endpoint http://-k8s-:80\n}",
                 "invalid endpoint URL 'http://-k8s-:80': '-k8s-' is not a host name", "http://-k8s-:80",
                 id="endpoint-bad-host-name"),
    pytest.param("kubernetai cluster.local {\n endpoint http://10.0.0.999:80\n}",
                 "'10.0.0.999' is neither an IP address nor a host name", "http://10.0.0.999:80", id="endpoint-bad-address"),
    pytest.param("kubernetai cluster.local {\n endpoint https://[zz]\n}",
                 "invalid endpoint URL 'https://[zz]': 'zz' does not appear to be an IPv4 or IPv6 address", "https://[zz]",
                 id="endpoint-bad-brackets"),
    pytest.param("kubernetai cluster.local {\n endpoint https://admin:pw@k8s\n}",
                 "a user name or password in the URL is not supported (use kubeconfig)", "https://admin:pw@k8s",
                 id="endpoint-userinfo"),
    pytest.param("kubernetai cluster.local {\n endpoint https://b\u00fccher.example\n}",
                 "the host holds U+00FC (LATIN SMALL LETTER U WITH DIAERESIS): write the host name in ASCII",
                 "https://b\u00fccher.example", id="endpoint-non-ascii-host"),
    pytest.param("kubernetai clu\u200bster.local",
                 "invalid zone 'clu\\u200bster.local': zone 'clu\\u200bster.local' holds U+200B (ZERO WIDTH SPACE)",
                 "clu\u200bster.local", id="zone-zero-width-space"),
    pytest.param("kubernetai cluster.local:nan",
                 "invalid zone 'cluster.local:nan': port 'nan' is not a number", "cluster.local:nan", id="zone-port-nan"),
    pytest.param(
        'kubernetai cluster.local {\n tls cert "" ca\n}',
        "Corefile:3: kubernetai: empty KEY file name",
        "",
        id="tls-empty-file",
    ),
]


@pytest.mark.parametrize("body, message, token", ERRORS)
def test_stanza_errors(body: str, message: str, token: str) -> None:
    """Each bad snippet is refused with CoreDNS's wording, at file:line, naming the offending token."""
    with pytest.raises(CorefileError) as e:
        stanza(body, environ={})
    assert message in str(e.value)
    assert e.value.token == token
    assert str(e.value).startswith("Corefile:")


def test_error_in_imported_file(tmp_path: Path) -> None:
    """An error in an imported snippet file names that file and its line."""
    (tmp_path / "k8s.conf").write_text("kubernetai cluster.local {\n    ttl 9999\n}\n")
    main = tmp_path / "Corefile"
    main.write_text(". {\n    import k8s.conf\n}\n")
    with pytest.raises(CorefileError) as e:
        stanzas(main.read_text(), str(main))
    assert str(e.value) == f"{tmp_path / 'k8s.conf'}:2: kubernetai: ttl must be in range [0, 3600]: 9999"


# --------------------------------------------------------------------------
# Accepted with a warning (CoreDNS accepts these silently)

WARNINGS = [
    pytest.param(
        "kubernetai coredns.local {\n endpoint http://a http://b\n}",
        "Corefile:3: kubernetai: Multiple endpoints have been deprecated, only the first specified endpoint 'http://a' is used",
        id="multiple-endpoints",
    ),
    pytest.param(
        "kubernetai coredns.local {\n ignore empty_service ixnay on the endpointsay\n}",
        "Corefile:3: kubernetai: 'ignore': extra arguments ignored (as CoreDNS does): ixnay on the endpointsay",
        id="ignore-extra-args",
    ),
    pytest.param("kubernetai coredns.local {\n ignore\n}", "Corefile:3: kubernetai: 'ignore' without a value does nothing", id="ignore-bare"),
    pytest.param("kubernetai coredns.local {\n ttl 30 60\n}", "'ttl': extra arguments ignored (as CoreDNS does): 60", id="ttl-extra"),
    pytest.param(
        "kubernetai coredns.local {\n tls c k ca\n}",
        "Corefile:3: kubernetai: tls is ignored without endpoint (connecting in-cluster)",
        id="tls-without-endpoint",
    ),
    pytest.param(
        "kubernetai coredns.local {\n endpoint https://x\n tls c k ca\n kubeconfig kc\n}",
        "Corefile:5: kubernetai: endpoint and tls ignored: kubeconfig is set and takes precedence",
        id="kubeconfig-wins",
    ),
    pytest.param(
        "kubernetai coredns.local {\n ttl 10\n ttl 20\n}",
        "Corefile:4: kubernetai: 'ttl' is given again (first at line 3); the last one is used",
        id="repeated-option",
    ),
    pytest.param(
        "kubernetai coredns.local {\n namespaces Default kube-system\n}",
        "namespace 'Default' is not a valid namespace name (RFC 1123 label): it matches nothing",
        id="namespace-not-a-label",
    ),
    pytest.param(
        "kubernetai coredns.local {\n labels a=1,a=2\n}",
        "'a=1' is replaced by 'a=2' (only the last value of a key is kept)",
        id="selector-duplicate-key",
    ),
    pytest.param(
        "kubernetai coredns.local {\n startup_timeout 2562047h\n}",
        "Corefile:3: kubernetai: startup_timeout 2562047h: until this stanza has synced, the server answers no "
        "query for up to about 292 years (CoreDNS waits as long)",
        id="startup-timeout-forever",
    ),
    pytest.param(
        "kubernetai coredns.local {\n startup_timeout 72h\n}",
        "startup_timeout 72h: until this stanza has synced, the server answers no query for up to about 3 days",
        id="startup-timeout-days",
    ),
]


@pytest.mark.parametrize("body, warning", WARNINGS)
def test_stanza_warnings(body: str, warning: str) -> None:
    """Things CoreDNS accepts but ignores are accepted, with a located warning."""
    config = stanza(body)
    assert any(warning in w for w in config.warnings), config.warnings


def test_last_option_wins() -> None:
    """A repeated option replaces the earlier one, as in CoreDNS."""
    config = stanza("kubernetai coredns.local {\n ttl 10\n ttl 20\n fallthrough a.b\n fallthrough\n}")
    assert config.ttl == 20 and config.fall == Fall((".",))


def test_zone_outside_server_block_warns() -> None:
    """A stanza zone disjoint from the server block's zones is allowed (as in CoreDNS) but warned about."""
    config = stanza("kubernetai example.org cluster.local", keys="cluster.local")
    assert config.zones == ("example.org.", "cluster.local.")
    assert config.warnings == (
        "Corefile:2: kubernetai: zone example.org. outside this server block's zones (cluster.local.): "
        "queries for it never reach this stanza",
    )
    assert stanza("kubernetai local", keys="cluster.local").warnings == ()  # a parent still sees cluster.local
    assert stanza("kubernetai example.org", keys=".").warnings == ()


# --------------------------------------------------------------------------
# Fingerprint


def test_fingerprint_ignores_placement_and_startup() -> None:
    """Moving a stanza, changing startup_timeout or spelling a default explicitly keeps the fingerprint."""
    a = stanza("kubernetai cluster.local {\n ttl 30\n}")
    b = stanza("\n\n\nkubernetai cluster.local {\n  startup_timeout 30s\n  ttl 30\n  apiserver_qps 5\n  apiserver_burst 0\n  pods disabled\n}")
    assert a != b
    assert a.fingerprint() == b.fingerprint()


@pytest.mark.parametrize(
    "change",
    [
        "ttl 31",
        "pods verified",
        "endpoint http://elsewhere",
        "namespaces default",
        "labels app=web",
        "namespace_labels team=dns",
        "fallthrough",
        "noendpoints",
        "zonal",
        "endpoint_pod_names",
        "ignore empty_service",
        "apiserver_qps 10",
        "apiserver_max_inflight 2",
        "kubeconfig /nonexistent",
    ],
)
def test_fingerprint_changes(change: str) -> None:
    """Any option that affects the connection or the answers changes the fingerprint."""
    base = stanza("kubernetai cluster.local {\n ttl 30\n}")
    changed = stanza(f"kubernetai cluster.local {{\n ttl 30\n {change}\n}}")
    assert base.fingerprint() != changed.fingerprint()


def test_fingerprint_ignores_options_that_are_ignored() -> None:
    """endpoint and tls do not matter once kubeconfig is set."""
    a = stanza("kubernetai cluster.local {\n kubeconfig /kc\n}")
    b = stanza("kubernetai cluster.local {\n kubeconfig /kc\n endpoint https://x\n tls c k ca\n}")
    assert a.fingerprint() == b.fingerprint()


def test_fingerprint_follows_kubeconfig_content(tmp_path: Path) -> None:
    """The same kubeconfig path with different content gives a different fingerprint."""
    kc = tmp_path / "kubeconfig"
    kc.write_text(KUBECONFIG)
    first = stanza(f"kubernetai cluster.local {{\n kubeconfig {kc}\n}}")
    assert first.kubeconfig_digest == hashlib.sha256(KUBECONFIG.encode()).hexdigest()
    again = stanza(f"kubernetai cluster.local {{\n kubeconfig {kc}\n}}")
    assert first.fingerprint() == again.fingerprint()
    kc.write_text(KUBECONFIG.replace("current-context: alpha", "current-context: beta"))
    assert stanza(f"kubernetai cluster.local {{\n kubeconfig {kc}\n}}").fingerprint() != first.fingerprint()


# --------------------------------------------------------------------------
# Fall


FALL = [
    (Fall(), "anything.cluster.local.", False),
    (Fall((".",)), "anything.cluster.local.", True),
    (Fall((".",)), ".", True),
    (Fall(("in-addr.arpa.", "ip6.arpa.")), "1.0.96.10.in-addr.arpa.", True),
    (Fall(("in-addr.arpa.", "ip6.arpa.")), "in-addr.arpa.", True),
    (Fall(("in-addr.arpa.", "ip6.arpa.")), "1.0.96.10.IN-ADDR.ARPA.", True),
    (Fall(("in-addr.arpa.", "ip6.arpa.")), "1.0.96.10.in-addr.arpa", True),
    (Fall(("in-addr.arpa.", "ip6.arpa.")), "svc.cluster.local.", False),
    (Fall(("in-addr.arpa.",)), "xin-addr.arpa.", False),
    (Fall(("example.org.",)), "a.example.org.", True),
    (Fall(("example.org.",)), "a\\.example.org.", False),
    (Fall(("example.org.",)), "a.b\\\\.example.org.", True),
    (Fall(("example.org.",)), "example.com.", False),
    (Fall(("example.org.",)), "org.", False),
]


@pytest.mark.parametrize("fall, qname, expected", FALL)
def test_fall_through(fall: Fall, qname: str, expected: bool) -> None:
    """Fall.through matches whole labels, case-insensitively, with or without the trailing dot."""
    assert fall.through(qname) is expected


# --------------------------------------------------------------------------
# Durations

DURATIONS = [
    ("5s", 5.0),
    ("1m30s", 90.0),
    ("1.5h", 5400.0),
    ("300ms", 0.3),
    ("1h2m3.5s", 3723.5),
    ("-2s", -2.0),
    ("+3s", 3.0),
    ("0", 0.0),
    ("-0", 0.0),
    ("1.s", 1.0),
    (".5s", 0.5),
    ("100ns", 1e-7),
    ("10us", 1e-5),
    ("10\u00b5s", 1e-5),
    ("10\u03bcs", 1e-5),
    ("2562047h47m16.854775807s", 9223372036.854775807),
]


@pytest.mark.parametrize("text, seconds", DURATIONS)
def test_parse_duration(text: str, seconds: float) -> None:
    """parse_duration reads Go time.ParseDuration syntax."""
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12, abs=1e-15)


DURATION_ERRORS = [
    ("", 'time: invalid duration ""'),
    ("5", 'time: missing unit in duration "5"'),
    ("5x", 'time: unknown unit "x" in duration "5x"'),
    ("5S", 'time: unknown unit "S" in duration "5S"'),
    ("1h-1s", 'time: unknown unit "h-" in duration "1h-1s"'),
    (".s", 'time: invalid duration ".s"'),
    ("s", 'time: invalid duration "s"'),
    ("- 1s", 'time: invalid duration "- 1s"'),
    (" 1s", 'time: invalid duration " 1s"'),
    ("1_000s", 'time: unknown unit "_" in duration "1_000s"'),
    ("9223372036854775808ns", 'time: invalid duration "9223372036854775808ns"'),
    ("2562048h", 'time: invalid duration "2562048h"'),
]


@pytest.mark.parametrize("text, message", DURATION_ERRORS)
def test_parse_duration_errors(text: str, message: str) -> None:
    """parse_duration refuses what Go refuses, with Go's message."""
    with pytest.raises(ValueError) as e:
        parse_duration(text)
    assert str(e.value) == message


# --------------------------------------------------------------------------
# Label selectors

SELECTORS = [
    ("environment=prod", "environment=prod"),
    ("environment==prod", "environment=prod"),
    ("environment in (production, staging, qa),application=nginx", "application=nginx,environment in (production,qa,staging)"),
    ("tier notin (frontend)", "tier notin (frontend)"),
    ("x in (foo,,baz),y,z notin ()", "x in (,baz,foo),y,z notin ()"),
    ("!legacy", "!legacy"),
    ("app", "app"),
    ("a=", "a="),
    ("", ""),
    ("  a = b ,  c  ", "a=b,c"),
    ("example.com/team=dns", "example.com/team=dns"),
    ("a in (x,x,y)", "a in (x,y)"),
    ("in=notin", "in=notin"),
]


@pytest.mark.parametrize("text, canonical", SELECTORS)
def test_parse_to_label_selector(text: str, canonical: str) -> None:
    """Selectors come out in the canonical form that is sent to the API server."""
    assert parse_to_label_selector(text)[0] == canonical


SELECTOR_ERRORS = [
    ("a!=b", '"!=" is not a valid label selector operator'),
    ("a<3", '"lt" isn\'t supported in label selectors'),
    ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
    ("a in b", "unable to parse requirement: found 'b' expected: '('"),
    ("a=b c", "found 'c', expected: ',' or 'end of string'"),
    ("a,", "found '', expected: identifier after ','"),
    ("=b", "found '=', expected: !, identifier, or 'end of string'"),
    ("!a=b", "found '=', expected: ',' or 'end of string'"),
    ("a=b=c", "found '=', expected: ',' or 'end of string'"),
    ("Bad_=x", 'key: Invalid value: "Bad_": name part must consist of alphanumeric characters'),
    ("a=Bad_", 'values[0][a]: Invalid value: "Bad_": a valid label must be an empty string'),
    ("EXAMPLE.com/a", "prefix part a lowercase RFC 1123 subdomain"),
    ("a/b/c", "a valid label key must consist of alphanumeric characters"),
    ("a=" + "x" * 64, "must be no more than 63 bytes"),
]


@pytest.mark.parametrize("text, message", SELECTOR_ERRORS)
def test_parse_to_label_selector_errors(text: str, message: str) -> None:
    """Bad selectors are refused with apimachinery's message."""
    with pytest.raises(ValueError) as e:
        parse_to_label_selector(text)
    assert message in str(e.value)


# --------------------------------------------------------------------------
# Client configuration

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: one
  cluster:
    server: http://127.0.0.1:8001
- name: two
  cluster:
    server: https://two.example:6443/
    insecure-skip-tls-verify: true
users:
- name: someone
  user:
    token: secret-token
contexts:
- name: alpha
  context: {cluster: one, user: someone}
- name: beta
  context: {cluster: two, user: someone}
current-context: alpha
"""


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig with two contexts, alpha (current) and beta."""
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    return path


def test_client_endpoint() -> None:
    """endpoint alone: that host, no client certificate, system trust store."""
    cfg = kube_client_config(stanza("kubernetai cluster.local {\n endpoint http://192.168.99.100:8080\n}"))
    assert cfg.host == "http://192.168.99.100:8080"
    assert cfg.cert_file is None and cfg.key_file is None and cfg.ssl_ca_cert is None
    assert cfg.api_key == {}
    assert cfg.keep_alive is True


def test_client_endpoint_tls(tmp_path: Path) -> None:
    """endpoint + tls CERT KEY CACERT: client certificate, key and CA for the server."""
    for name in ("client.crt", "client.key", "ca.crt"):
        (tmp_path / name).write_text("PEM\n")
    cert, key, ca = (str(tmp_path / n) for n in ("client.crt", "client.key", "ca.crt"))
    config = stanza(f"kubernetai cluster.local {{\n endpoint k8s.example:6443\n tls {cert} {key} {ca}\n}}")
    cfg = kube_client_config(config)
    assert cfg.host == "https://k8s.example:6443"
    assert (cfg.cert_file, cfg.key_file, cfg.ssl_ca_cert) == (cert, key, ca)
    assert cfg.verify_ssl is True


def test_client_tls_missing_file(tmp_path: Path) -> None:
    """A tls file that cannot be read is reported at the tls line."""
    (tmp_path / "c").write_text("x")
    (tmp_path / "k").write_text("x")
    missing = str(tmp_path / "nope.crt")
    config = stanza(f"kubernetai cluster.local {{\n endpoint https://k8s\n tls {tmp_path / 'c'} {tmp_path / 'k'} {missing}\n}}")
    with pytest.raises(CorefileError) as e:
        kube_client_config(config)
    assert str(e.value).startswith(f"Corefile:4: kubernetai: unable to read certificate authority '{missing}'")
    assert e.value.token == missing


@pytest.mark.parametrize(
    "context, host, verify",
    [(None, "http://127.0.0.1:8001", True), ("alpha", "http://127.0.0.1:8001", True), ("beta", "https://two.example:6443", False)],
)
def test_client_kubeconfig_contexts(kubeconfig: Path, context: str | None, host: str, verify: bool) -> None:
    """kubeconfig FILE [CONTEXT]: the context's cluster (current-context without one) and credentials."""
    args = f"{kubeconfig} {context}" if context else str(kubeconfig)
    config = stanza(f"kubernetai cluster.local {{\n kubeconfig {args}\n endpoint http://ignored\n}}")
    cfg = kube_client_config(config)
    assert cfg.host == host
    assert cfg.verify_ssl is verify
    assert cfg.auth_settings()["BearerToken"]["value"] == "Bearer secret-token"


def test_client_kubeconfig_not_written(kubeconfig: Path) -> None:
    """Loading a kubeconfig never writes it back."""
    before = kubeconfig.stat().st_mtime_ns, kubeconfig.read_text()
    cfg = kube_client_config(stanza(f"kubernetai cluster.local {{\n kubeconfig {kubeconfig}\n}}"))
    cfg.auth_settings()
    assert (kubeconfig.stat().st_mtime_ns, kubeconfig.read_text()) == before


def test_client_kubeconfig_unknown_context(kubeconfig: Path) -> None:
    """An unknown context is reported at the kubeconfig line."""
    config = stanza(f"kubernetai cluster.local {{\n ttl 30\n kubeconfig {kubeconfig} gamma\n}}")
    with pytest.raises(CorefileError) as e:
        kube_client_config(config)
    assert str(e.value).startswith(f"Corefile:4: kubernetai: cannot use kubeconfig '{kubeconfig}' context 'gamma':")
    assert "gamma" in str(e.value) and e.value.token == "gamma"


def test_client_kubeconfig_missing(tmp_path: Path) -> None:
    """A kubeconfig file that does not exist is reported at the kubeconfig line."""
    path = tmp_path / "absent"
    config = stanza(f"kubernetai cluster.local {{\n kubeconfig {path}\n}}")
    assert config.kubeconfig_digest is None
    with pytest.raises(CorefileError) as e:
        kube_client_config(config)
    assert str(e.value) == f"Corefile:3: kubernetai: cannot read kubeconfig '{path}': no such file"


def test_client_kubeconfig_invalid(tmp_path: Path) -> None:
    """A kubeconfig that is not valid YAML is reported at the kubeconfig line."""
    path = tmp_path / "broken"
    path.write_text("clusters: [\n")
    with pytest.raises(CorefileError) as e:
        kube_client_config(stanza(f"kubernetai cluster.local {{\n kubeconfig {path}\n}}"))
    assert str(e.value).startswith(f"Corefile:3: kubernetai: cannot use kubeconfig '{path}':")


@pytest.mark.parametrize("context, user, warning", [
    pytest.param(None, None, "a bearer token would be sent to http://127.0.0.1:8001 over plain HTTP", id="token"),
    pytest.param(None, {"username": "admin", "password": "pw"},
                 "a user name and password would be sent to http://127.0.0.1:8001 over plain HTTP", id="password"),
    pytest.param(None, {"tokenFile": "token"}, "a bearer token would be sent", id="token-file"),
    pytest.param("beta", None, None, id="https"),
    pytest.param(None, {}, None, id="no-credentials"),
])
def test_credentials_over_plain_http(kubeconfig: Path, context: str | None, user: dict | None,
                                     warning: str | None) -> None:
    """A kubeconfig sending a token or a password to an http:// server gets a warning at its line."""
    import yaml

    if user is not None:
        (kubeconfig.parent / "token").write_text("from-a-file\n")
        data = yaml.safe_load(kubeconfig.read_text())
        for entry in data["users"]:
            entry["user"] = user
        kubeconfig.write_text(yaml.safe_dump(data))
    args = f"{kubeconfig} {context}" if context else str(kubeconfig)
    config = stanza(f"kubernetai cluster.local {{\n ttl 30\n kubeconfig {args}\n}}")
    note = plain_http_credentials(config, kube_client_config(config))
    if warning is None:
        assert note is None
    else:
        assert note is not None and note.startswith(f"Corefile:4: kubernetai: {warning}")


def test_kubeconfig_that_is_not_a_regular_file(tmp_path: Path) -> None:
    """A kubeconfig that is a FIFO is refused at once (it is not read at parse time either)."""
    import os

    fifo = tmp_path / "kubeconfig"
    os.mkfifo(fifo)
    config = stanza(f"kubernetai cluster.local {{\n kubeconfig {fifo}\n}}")
    assert config.kubeconfig_digest is None
    with pytest.raises(CorefileError) as e:
        kube_client_config(config)
    assert str(e.value) == f"Corefile:3: kubernetai: cannot read kubeconfig '{fifo}': not a regular file (a FIFO)"


@pytest.fixture
def service_account(tmp_path: Path) -> dict:
    """A fake in-cluster service account: environment, token file and CA file."""
    token = tmp_path / "token"
    token.write_text("token-one")
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    return {
        "environ": {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"},
        "incluster_token_file": str(token),
        "incluster_ca_file": str(ca),
    }


def test_client_in_cluster(service_account: dict) -> None:
    """No endpoint or kubeconfig: the service account, the CA and the kubernetes Service address."""
    cfg = kube_client_config(stanza("kubernetai cluster.local"), **service_account)
    assert cfg.host == "https://10.96.0.1:443"
    assert cfg.ssl_ca_cert == service_account["incluster_ca_file"]
    assert cfg.auth_settings()["BearerToken"]["value"] == "bearer token-one"


def test_client_in_cluster_ipv6(service_account: dict) -> None:
    """An IPv6 service host is bracketed."""
    service_account["environ"]["KUBERNETES_SERVICE_HOST"] = "fd00::1"
    cfg = kube_client_config(stanza("kubernetai cluster.local"), **service_account)
    assert cfg.host == "https://[fd00::1]:443"


def test_client_in_cluster_token_rotation(service_account: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rotated service-account token is re-read once the cached one is over a minute old."""
    from kubernetes.config import incluster_config

    cfg = kube_client_config(stanza("kubernetai cluster.local"), **service_account)
    Path(service_account["incluster_token_file"]).write_text("token-two")
    assert cfg.auth_settings()["BearerToken"]["value"] == "bearer token-one"  # cached for a minute

    real = datetime.datetime

    class Later(real):
        @classmethod
        def now(cls, tz=None):
            return real.now(tz) + datetime.timedelta(minutes=2)

    monkeypatch.setattr(incluster_config.datetime, "datetime", Later)
    assert cfg.auth_settings()["BearerToken"]["value"] == "bearer token-two"


def test_client_in_cluster_without_environment(service_account: dict) -> None:
    """Outside a cluster, the in-cluster default fails with client-go's message, at the stanza."""
    service_account["environ"] = {}
    with pytest.raises(CorefileError) as e:
        kube_client_config(stanza("\nkubernetai cluster.local"), **service_account)
    assert str(e.value).startswith(
        "Corefile:3: kubernetai: unable to load in-cluster configuration, KUBERNETES_SERVICE_HOST and "
        "KUBERNETES_SERVICE_PORT must be defined"
    )


def test_client_in_cluster_without_token(service_account: dict, tmp_path: Path) -> None:
    """A missing service account token is reported at the stanza."""
    service_account["incluster_token_file"] = str(tmp_path / "absent")
    with pytest.raises(CorefileError) as e:
        kube_client_config(stanza("kubernetai cluster.local"), **service_account)
    assert "Service token file does not exist" in str(e.value)


# --------------------------------------------------------------------------
# Request throttling


def test_effective_limits() -> None:
    """Unset or 0 limits fall back to client-go's 5 QPS / burst 10 and no in-flight cap."""
    default = stanza("kubernetai cluster.local")
    assert (default.effective_qps, default.effective_burst, default.effective_max_inflight) == (5.0, 10, None)
    zero = stanza("kubernetai cluster.local {\n apiserver_qps 0\n apiserver_burst 0\n apiserver_max_inflight 0\n}")
    assert (zero.effective_qps, zero.effective_burst, zero.effective_max_inflight) == (5.0, 10, None)
    set_ = stanza("kubernetai cluster.local {\n apiserver_qps 2.5\n apiserver_burst 3\n apiserver_max_inflight 4\n}")
    assert (set_.effective_qps, set_.effective_burst, set_.effective_max_inflight) == (2.5, 3, 4)
    limiter = set_.request_limiter()
    assert (limiter.qps, limiter.burst, limiter.max_inflight) == (2.5, 3, 4)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_token_bucket_burst_then_rate() -> None:
    """The bucket lets a burst through, then spaces requests at 1/qps, and refills with time."""
    clock = FakeClock()
    limiter = RequestLimiter(2.0, 3, clock=clock, sleep=clock.sleep)
    assert [limiter.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.reserve() == pytest.approx(0.5)
    assert limiter.reserve() == pytest.approx(1.0)  # queued behind the previous one
    clock.now += 10.0
    assert limiter.reserve() == 0.0
    limiter.wait()
    limiter.wait()
    limiter.wait()
    assert clock.slept == [pytest.approx(0.5)]


def test_token_bucket_unlimited() -> None:
    """qps inf never waits."""
    limiter = RequestLimiter(math.inf, 1)
    assert all(limiter.reserve() == 0.0 for _ in range(100))


def test_max_inflight() -> None:
    """At most max_inflight requests are held at once; the next one times out."""
    limiter = RequestLimiter(math.inf, 1, 2)
    with limiter.request(), limiter.request():
        with pytest.raises(TimeoutError):
            with limiter.request(timeout=0.01):
                pass
    with limiter.request():
        pass


def test_max_inflight_waits_for_a_slot() -> None:
    """Without a timeout, a request waits until another one leaves its slot."""
    import threading

    limiter = RequestLimiter(math.inf, 1, 1)
    entered = threading.Event()

    def second() -> None:
        with limiter.request():
            entered.set()

    with limiter.request():
        worker = threading.Thread(target=second)
        worker.start()
        assert not entered.wait(0.05)
    assert entered.wait(5)
    worker.join(5)


def test_qps_float32_underflow_is_zero() -> None:
    """A QPS too small for float32 becomes 0, as in CoreDNS, so the default applies."""
    config = stanza("kubernetai cluster.local {\n apiserver_qps 1e-50\n}")
    assert config.apiserver_qps == 0.0 and config.effective_qps == 5.0


def test_limiter_rejects_nonsense() -> None:
    """A limiter needs a positive rate and a burst of at least one."""
    with pytest.raises(ValueError):
        RequestLimiter(0, 1)
    with pytest.raises(ValueError):
        RequestLimiter(1, 0)
