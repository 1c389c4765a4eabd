"""Several server blocks on one port told apart by `bind`, as CoreDNS allows.

Each listen address of a port is its own server (CoreDNS's ``groupConfigsByListenAddr``):
a query is answered by the blocks bound to the address it arrived on. The same zone and
port twice on one address, or bound in one block and unbound in another, is CoreDNS's
start-up error. End-to-end: the real server over UDP and TCP on 127.0.0.1 and 127.0.0.2
(and 127.0.0.3 after a reload), in this process and under twistd with SIGUSR1; the mix of a
block without `bind` (every address) and a bound one in a network namespace of its own, so
that "every address" is the loopback interface only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

import kubernetai.corefile as corefile
from kubernetai.app.load import PortPlan, compile_corefile, plans_of
from kubernetai.app.server import KubernetaiService, _conflict, build_factory
from kubernetai.corefile import CorefileError
from kubernetai.pkg.reactor_thread import in_reactor
from kubernetai.plugins.bind import interfaces
from kubernetai.sandbox.ports import free_port
from kubernetai.sandbox.server import Sandbox

ROOT = Path(__file__).resolve().parent.parent
TWISTD = str(Path(sys.executable).parent / "twistd")
SOURCE_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def compiled(text: str, port_override: int | None = None) -> list[PortPlan]:
    return compile_corefile(corefile.parse(text, "Corefile"), port_override=port_override)


def refused(text: str) -> CorefileError:
    with pytest.raises(CorefileError) as info:
        compiled(text)
    return info.value


# -- grouping -----------------------------------------------------------------------------


def test_same_zone_on_two_addresses_is_two_servers() -> None:
    """Two blocks of one zone and port bound to different addresses: one port, two listen
    groups, each routing the zone to its own block."""
    (plan,) = compiled("cluster.local:1053 {\n    bind 127.0.0.1\n    whoami\n}\n"
                       "cluster.local:1053 {\n    bind 127.0.0.2\n    errors\n    whoami\n}\n")
    first, second = plan.blocks
    assert [(g.address, g.blocks) for g in plan.groups] == [("127.0.0.1", [first]),
                                                            ("127.0.0.2", [second])]
    assert [g.shared for g in plan.groups] == [False, False]
    routes = [build_factory(g, reactor=object()).router.route(b"web.cluster.local")
              for g in plan.groups]
    assert routes == [first.pipeline(), second.pipeline()]
    assert [str(g) for g in plan.groups] == ["dns://127.0.0.1:1053", "dns://127.0.0.2:1053"]


def test_a_block_on_two_addresses_is_one_pipeline() -> None:
    """A block binding two addresses is in both groups with one pipeline."""
    (plan,) = compiled("a.local:1053 {\n    bind 127.0.0.1 ::1\n    whoami\n}\n"
                       "b.local:1053 {\n    bind ::1\n    whoami\n}\n")
    a, b = plan.blocks
    assert [(str(g), g.blocks) for g in plan.groups] == [("dns://127.0.0.1:1053", [a]),
                                                         ("dns://[::1]:1053", [a, b])]


def test_unbound_and_bound_blocks_of_different_zones_share_the_port() -> None:
    """A block without bind and one with bind on one port (different zones) are two servers
    whose sockets share the port (SO_REUSEPORT); ports without the mix share nothing."""
    a_plan, other = compiled("a.local:1053 {\n    whoami\n}\n"
                             "b.local:1053 {\n    bind 127.0.0.1\n    whoami\n}\n"
                             "c.local:2053 {\n    bind 127.0.0.1 127.0.0.2\n    whoami\n}\n")
    assert [(str(g), g.shared) for g in a_plan.groups] == [("dns://:1053", True),
                                                           ("dns://127.0.0.1:1053", True)]
    assert [g.shared for g in other.groups] == [False, False]


def test_port_override_still_collapses_a_blocks_keys() -> None:
    """Keys of one block that differ only by port become one zone under an override, bind
    or not; across blocks they are the same zone twice."""
    (plan,) = compiled("a.local:1053 a.local:2053 {\n    bind 127.0.0.1\n}\n",
                       port_override=53)
    assert [b.zones for b in plan.blocks] == [("a.local.",)]
    with pytest.raises(CorefileError) as info:
        compiled("a.local:1053 {\n    bind 127.0.0.1\n}\na.local:2053 {\n    bind 127.0.0.1\n}\n",
                 port_override=53)
    assert info.value.message == ("key 'a.local:2053': cannot serve dns://a.local.:53 on "
                                  "127.0.0.1 - it is already defined at Corefile:1")


# -- CoreDNS's errors ---------------------------------------------------------------------


def test_same_zone_port_and_address_twice() -> None:
    """CoreDNS's duplicate error, at the second block's key, naming the first."""
    error = refused("example.org:1053 {\n    whoami\n    bind 127.0.0.1\n}\n\n"
                    "example.org:1053 {\n    bind 127.0.0.2 127.0.0.1\n    whoami\n}\n")
    assert (error.filename, error.line, error.token) == ("Corefile", 6, "example.org:1053")
    assert str(error) == ("Corefile:6: key 'example.org:1053': cannot serve "
                          "dns://example.org.:1053 on 127.0.0.1 - it is already defined at "
                          "Corefile:1")


def test_same_key_twice_in_a_bound_block() -> None:
    """A block with bind naming a key twice is the duplicate too (the parser leaves blocks
    with bind to this check)."""
    error = refused(". .:53 {\n    bind 127.0.0.1\n}\n")
    assert str(error) == ("Corefile:1: key '.:53': cannot serve dns://.:53 on 127.0.0.1 - it "
                          "is already defined")


def test_interface_and_its_address_are_the_same_address() -> None:
    """`bind lo` in one block and `bind 127.0.0.1` in another collide on 127.0.0.1."""
    names = [n for n in sorted(interfaces.interface_names())
             if "127.0.0.1" in interfaces.addresses_of(n)]
    if not names:
        pytest.skip("no interface holds 127.0.0.1 (not Linux?)")
    error = refused(f".:1053 {{\n    bind {names[0]}\n}}\n.:1053 {{\n    bind 127.0.0.1\n}}\n")
    assert error.message == ("key '.:1053': cannot serve dns://.:1053 on 127.0.0.1 - it is "
                             "already defined at Corefile:1")


@pytest.mark.parametrize("text, line, message", [
    pytest.param(".:1053 {\n    bind 127.0.0.1\n}\n.:1053 {\n    whoami\n}\n", 4,
                 "key '.:1053': cannot serve dns://.:1053 - zone overlap listener capacity "
                 "with dns://.:1053 on 127.0.0.1 at Corefile:1", id="bound-first"),
    pytest.param(".:1053 {\n    whoami\n}\n.:1053 {\n    bind 127.0.0.1\n}\n", 4,
                 "key '.:1053': cannot serve dns://.:1053 on 127.0.0.1 - zone overlap "
                 "listener capacity with dns://.:1053 at Corefile:1", id="unbound-first"),
])
def test_bound_and_unbound_of_one_zone_overlap(text: str, line: int, message: str) -> None:
    """One zone and port bound in a block and unbound in another: CoreDNS's overlap error."""
    error = refused(text)
    assert (error.line, error.message) == (line, message)


def test_bind_leaving_no_address() -> None:
    """A block whose bind lines leave nothing to listen on is refused at its bind line."""
    error = refused(".:1053 {\n    whoami\n    bind 127.0.0.1 {\n        except 127.0.0.1\n"
                    "    }\n}\n")
    assert (error.line, error.token) == (3, "bind")
    assert error.message.startswith("bind: no address to listen on")


def test_what_a_reload_must_reopen_later() -> None:
    """A new socket conflicts with an old one of its port where the addresses overlap and
    not both were opened to share the port."""
    (old,) = compiled("a.local:1053 {\n    whoami\n}\n")[0].groups
    (specific,) = compiled("a.local:1053 {\n    bind 127.0.0.1\n}\n")[0].groups
    mixed = compiled("a.local:1053 {\n    whoami\n}\nb.local:1053 {\n    bind 127.0.0.1\n}\n")
    every, bound = mixed[0].groups
    (elsewhere,) = compiled("a.local:2053 {\n    bind 127.0.0.1\n}\n")[0].groups
    (other,) = compiled("a.local:1053 {\n    bind 127.0.0.2\n}\n")[0].groups
    assert _conflict(specific, old) and _conflict(old, specific)
    assert _conflict(every, old) and _conflict(bound, old)
    assert not _conflict(every, bound)  # both share the port
    assert not _conflict(elsewhere, specific) and not _conflict(other, specific)


# -- end to end, in this process ----------------------------------------------------------


def ask(address: str, port: int, name: str, *, tcp: bool = False,
        rdtype: str = "A") -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, address, port=port, timeout=5)


def answers(response: dns.message.Message) -> list[str]:
    return sorted(rr.to_text() for rrset in response.answer for rr in rrset)


def is_whoami(response: dns.message.Message) -> bool:
    """A whoami reply: NOERROR, nothing in the answer, the client's A and SRV additional."""
    types = sorted(dns.rdatatype.to_text(rrset.rdtype) for rrset in response.additional)
    return (response.rcode() == dns.rcode.NOERROR and not response.answer
            and types == ["A", "SRV"])


def start(path: Path) -> KubernetaiService:
    """The server of the Corefile at ``path``, started and listening."""
    svc = in_reactor(lambda: KubernetaiService(plans_of(corefile.parse_file(str(path)))))
    in_reactor(svc.startService)
    in_reactor(lambda: svc.listening)
    return svc


@pytest.fixture
def served(sandbox: Sandbox, tmp_path: Path) -> Iterator[tuple[KubernetaiService, int, str]]:
    """cluster.local on one port: whoami on 127.0.0.1, the sandbox's cluster on 127.0.0.2."""
    sandbox.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
                   {"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "web", "namespace": "shop"},
                    "spec": {"ports": [{"name": "http", "port": 80}]}}])
    port = free_port()
    path = tmp_path / "Corefile"
    path.write_text(f"cluster.local:{port} {{\n    bind 127.0.0.1\n    whoami\n}}\n"
                    f"cluster.local:{port} {{\n    bind 127.0.0.2\n"
                    f"    kubernetai {{\n        endpoint {sandbox.url}\n    }}\n}}\n")
    svc = start(path)
    try:
        yield svc, port, sandbox.get("Service", "shop", "web")["spec"]["clusterIP"]
    finally:
        in_reactor(svc.stopService)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_each_address_answers_from_its_block(served: Any, tcp: bool) -> None:
    """One name, one port: whoami answers on 127.0.0.1, the cluster on 127.0.0.2."""
    svc, port, cluster_ip = served
    assert sorted(p.getHost().host for p in svc.ports) == ["127.0.0.1"] * 2 + ["127.0.0.2"] * 2
    assert {p.getHost().port for p in svc.ports} == {port}
    name = "web.shop.svc.cluster.local"
    assert is_whoami(ask("127.0.0.1", port, name, tcp=tcp))
    response = ask("127.0.0.2", port, name, tcp=tcp)
    assert (response.rcode(), answers(response)) == (dns.rcode.NOERROR, [cluster_ip])
    assert ask("127.0.0.2", port, "nope.shop.svc.cluster.local", tcp=tcp).rcode() == \
        dns.rcode.NXDOMAIN


def connect_refused(address: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(5)
        try:
            probe.connect((address, port))
        except ConnectionRefusedError:
            return True
        return False


def test_reload_moves_one_block_and_keeps_the_others_sockets(tmp_path: Path,
                                                              reactor_running: None) -> None:
    """A reload that changes one block's bind opens its new address, closes the old one and
    keeps the other block's sockets (the same ports, now routing with the new blocks)."""
    port = free_port()
    path = tmp_path / "Corefile"

    def write(a_address: str) -> None:
        path.write_text(f"a.local:{port} {{\n    bind {a_address}\n    whoami\n}}\n"
                        f"b.local:{port} {{\n    bind 127.0.0.2\n    whoami\n}}\n")
    write("127.0.0.1")
    svc = start(path)
    try:
        assert is_whoami(ask("127.0.0.1", port, "a.local"))
        assert ask("127.0.0.2", port, "a.local").rcode() == dns.rcode.REFUSED
        assert ask("127.0.0.1", port, "b.local", tcp=True).rcode() == dns.rcode.REFUSED
        kept = [p for p in svc.ports if p.getHost().host == "127.0.0.2"]
        b_server = svc.servers()[1][1]
        write("127.0.0.3")
        plans = plans_of(corefile.parse_file(str(path)))
        assert in_reactor(svc.retarget, plans) is True
        assert [p for p in svc.ports if p.getHost().host == "127.0.0.2"] == kept
        assert [(str(group), server is b_server) for group, server in svc.servers()] == [
            (f"dns://127.0.0.3:{port}", False), (f"dns://127.0.0.2:{port}", True)]
        for tcp in (False, True):
            assert is_whoami(ask("127.0.0.3", port, "a.local", tcp=tcp))
            assert is_whoami(ask("127.0.0.2", port, "b.local", tcp=tcp))
            assert ask("127.0.0.2", port, "a.local", tcp=tcp).rcode() == dns.rcode.REFUSED
        assert connect_refused("127.0.0.1", port)
        assert sorted({p.getHost().host for p in svc.ports}) == ["127.0.0.2", "127.0.0.3"]
    finally:
        in_reactor(svc.stopService)


def test_reload_to_a_duplicate_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    """A reload that reads a duplicate fails while reading: the CorefileError with its line."""
    path = tmp_path / "Corefile"
    path.write_text(".:1053 {\n    bind 127.0.0.1\n    whoami\n}\n"
                    ".:1053 {\n    bind 127.0.0.1\n    whoami\n}\n")
    with pytest.raises(CorefileError) as info:
        plans_of(corefile.parse_file(str(path)))
    assert str(info.value) == (f"{path}:5: key '.:1053': cannot serve dns://.:1053 on "
                               f"127.0.0.1 - it is already defined at {path}:1")


# -- end to end, as an operator runs it ---------------------------------------------------


def test_check_reports_the_duplicate(tmp_path: Path) -> None:
    """`kubernetai check` prints CoreDNS's duplicate error with file and line, exit 1."""
    path = tmp_path / "Corefile"
    path.write_text(".:1053 {\n    bind 127.0.0.1\n    whoami\n}\n"
                    ".:1053 {\n    whoami\n}\n")
    result = subprocess.run([sys.executable, "-m", "kubernetai", "check", str(path)],
                            capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.strip() == (f"{path}:5: key '.:1053': cannot serve dns://.:1053 - zone "
                                     "overlap listener capacity with dns://.:1053 on 127.0.0.1 "
                                     f"at {path}:1")


def wait_until(check: Callable[[], bool], what: str, process: subprocess.Popen,
               log: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return
        except (dns.exception.Timeout, OSError):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{what}; twistd said:\n{log.read_text()}")
        time.sleep(0.1)


def test_twistd_reload_changes_one_blocks_bind(sandbox: Sandbox, tmp_path: Path) -> None:
    """Under twistd: SIGUSR1 after moving the whoami block from 127.0.0.1 to 127.0.0.3;
    the cluster's block on 127.0.0.2 keeps answering, its stanza kept warm."""
    sandbox.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
                   {"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "web", "namespace": "shop"},
                    "spec": {"ports": [{"name": "http", "port": 80}]}}])
    cluster_ip = sandbox.get("Service", "shop", "web")["spec"]["clusterIP"]
    port = free_port()
    path = tmp_path / "Corefile"

    def write(whoami_address: str) -> None:
        path.write_text(f"cluster.local:{port} {{\n    bind {whoami_address}\n    whoami\n}}\n"
                        f"cluster.local:{port} {{\n    bind 127.0.0.2\n"
                        f"    kubernetai {{\n        endpoint {sandbox.url}\n    }}\n}}\n")
    write("127.0.0.1")
    log = tmp_path / "twistd.log"
    name = "web.shop.svc.cluster.local"
    with log.open("w") as output:
        process = subprocess.Popen([TWISTD, "--nodaemon", "--pidfile=", "kubernetai",
                                    "--corefile", str(path)], stdout=output,
                                   stderr=subprocess.STDOUT, env=SOURCE_ENV, cwd=tmp_path)
    try:
        wait_until(lambda: answers(ask("127.0.0.2", port, name)) == [cluster_ip],
                   "the cluster's block did not answer", process, log)
        assert is_whoami(ask("127.0.0.1", port, name, tcp=True))
        write("127.0.0.3")
        process.send_signal(signal.SIGUSR1)
        wait_until(lambda: is_whoami(ask("127.0.0.3", port, name, tcp=True)),
                   "the moved block did not answer on 127.0.0.3", process, log)
        assert answers(ask("127.0.0.2", port, name, tcp=True)) == [cluster_ip]
        assert is_whoami(ask("127.0.0.3", port, name))
        assert connect_refused("127.0.0.1", port)
        assert "1 stanza(s) kept warm, 0 started" in log.read_text()
    finally:
        process.terminate()
        process.wait(30)
    assert process.returncode == 0


# -- every address and a bound one, in a network namespace of its own ---------------------

# Run as root in a new network namespace, whose only interface is its own loopback: there
# "every address" (a block without bind) is 127.0.0.0/8 and ::1, and nothing outside the
# namespace can reach the server. Prints what each address answered, as JSON.
NETNS_SCRIPT = textwrap.dedent("""\
    import ctypes, fcntl, json, socket, struct, sys
    if ctypes.CDLL(None, use_errno=True).unshare(0x40000000) != 0:  # CLONE_NEWNET
        sys.exit(77)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # ip link set lo up
        flags = struct.unpack("16sH22x", fcntl.ioctl(s.fileno(), 0x8913,
                                                  struct.pack("16sH22x", b"lo", 0)))[1]
        fcntl.ioctl(s.fileno(), 0x8914, struct.pack("16sH22x", b"lo", flags | 1))

    import dns.message, dns.query, dns.rcode
    import kubernetai.corefile as corefile
    from kubernetai.app.load import plans_of
    from kubernetai.app.server import KubernetaiService
    from kubernetai.pkg.reactor_thread import ensure_running, in_reactor

    PORT = 5300
    UNBOUND = "a.local:5300 {\\n    whoami\\n}\\n"
    BOUND = "b.local:5300 {\\n    bind 127.0.0.1\\n    whoami\\n}\\n"

    def plans(text):
        return plans_of(corefile.parse(text, "Corefile"))

    def seen():
        out = {}
        for where in ("127.0.0.1", "127.0.0.2", "::1"):
            for name in ("a.local", "b.local"):
                for tcp in (False, True):
                    if where == "127.0.0.2" and not tcp:
                        continue  # "elsewhere" below
                    send = dns.query.tcp if tcp else dns.query.udp
                    try:
                        reply = send(dns.message.make_query(name, "A"), where, port=PORT,
                                     timeout=3)
                        rcode = dns.rcode.to_text(reply.rcode())
                    except Exception as error:
                        rcode = type(error).__name__
                    out[f"{name}@{where}/{'tcp' if tcp else 'udp'}"] = rcode
        try:  # over UDP to 127.0.0.2, which the socket of every address receives
            reply = dns.query.udp(dns.message.make_query("a.local", "A"), "127.0.0.2",
                                  port=PORT, timeout=3)
            out["elsewhere"] = dns.rcode.to_text(reply.rcode())
        except Exception as error:
            out["elsewhere"] = type(error).__name__
        return out

    ensure_running()
    result = {}
    svc = in_reactor(lambda: KubernetaiService(plans(UNBOUND + BOUND)))
    in_reactor(svc.startService)
    in_reactor(lambda: svc.listening)
    result["mixed"] = seen()
    in_reactor(svc.stopService)

    svc = in_reactor(lambda: KubernetaiService(plans(UNBOUND)))
    in_reactor(svc.startService)
    in_reactor(lambda: svc.listening)
    result["before"] = seen()
    result["to-mixed"] = in_reactor(svc.retarget, plans(UNBOUND + BOUND))
    result["after"] = seen()
    result["to-unbound"] = in_reactor(svc.retarget, plans(UNBOUND))
    result["back"] = seen()
    in_reactor(svc.stopService)
    print(json.dumps(result))
""")


@pytest.fixture(scope="module")
def netns_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("needs root on Linux to open a network namespace")
    script = tmp_path_factory.mktemp("netns") / "netns.py"
    script.write_text(NETNS_SCRIPT)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=120, env=SOURCE_ENV, cwd=ROOT, check=False)
    if result.returncode == 77:
        pytest.skip("cannot open a network namespace here")
    assert result.returncode == 0, result.stderr
    found: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


def expected(mixed: bool) -> dict[str, str]:
    """What a bound b.local on 127.0.0.1 beside an unbound a.local answer: 127.0.0.1 is the
    bound block's alone (a.local REFUSED there), every other address the unbound one's."""
    out = {"elsewhere": "NOERROR"}
    for where in ("127.0.0.1", "127.0.0.2", "::1"):
        for name in ("a.local", "b.local"):
            bound_here = mixed and where == "127.0.0.1"
            ok = (name == "b.local") if bound_here else (name == "a.local")
            for transport in ("udp", "tcp"):
                if (where, transport) != ("127.0.0.2", "udp"):
                    out[f"{name}@{where}/{transport}"] = "NOERROR" if ok else "REFUSED"
    return out


def without(results: dict[str, str], key: str) -> dict[str, str]:
    return {k: v for k, v in results.items() if k != key}


def test_the_most_specific_socket_answers(netns_results: dict[str, Any]) -> None:
    """Every address (no bind) beside 127.0.0.1 (bind), on one port, different zones: a
    query to 127.0.0.1 reaches only the bound block, any other address only the unbound
    one, over UDP and TCP, IPv4 and IPv6 (127.0.0.2 over TCP: over UDP see below)."""
    assert without(netns_results["mixed"], "elsewhere") == without(expected(True), "elsewhere")


@pytest.mark.xfail(strict=True, reason="a UDP socket of every address answers from the source "
                   "address the routing picks, not the one asked (CoreDNS answers from the "
                   "address asked, through IP_PKTINFO); kubernetai/core/dnsserver.py")
def test_unbound_udp_answers_from_the_address_asked(netns_results: dict[str, Any]) -> None:
    """A UDP query to 127.0.0.2 (received by the socket of every address) is answered
    from 127.0.0.2, not from 127.0.0.1 (which dnspython rejects as UnexpectedSource). Not
    particular to `bind`: any block without it answers so on a host of several addresses."""
    assert netns_results["mixed"]["elsewhere"] == "NOERROR"


def test_reload_adds_and_removes_a_bound_block_beside_an_unbound_one(
        netns_results: dict[str, Any]) -> None:
    """Adding the bound block reopens the port's sockets to share it; removing it gives
    127.0.0.1 back to the unbound block."""
    assert without(netns_results["before"], "elsewhere") == without(expected(False), "elsewhere")
    assert netns_results["to-mixed"] is True
    assert without(netns_results["after"], "elsewhere") == without(expected(True), "elsewhere")
    assert netns_results["to-unbound"] is True
    assert without(netns_results["back"], "elsewhere") == without(expected(False), "elsewhere")
