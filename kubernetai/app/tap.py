"""`twistd kubernetai`: its command-line options and the service they make."""

from __future__ import annotations

import os
import sys

from twisted.application import service
from twisted.python import usage

from kubernetai import __version__
from kubernetai.app import logs
from kubernetai.corefile import CorefileError


class Options(usage.Options):
    synopsis = "--corefile FILE [--dns-port N]"
    longdesc = ("Serve Kubernetes DNS as CoreDNS's kubernetai plugin does, from a Corefile "
                "with one `kubernetai` stanza per cluster. Errors in the Corefile are reported "
                "as FILE:LINE: message.")
    optParameters = [
        ["corefile", "c", "Corefile", "the Corefile to serve"],
        ["dns-port", "p", None,
         "listen on this port instead of the ports the Corefile names (like coredns -dns.port)"],
        ["workers", "w", "1",
         "answer DNS in this many processes sharing the ports (SO_REUSEPORT); one set of "
         "informers feeds them all"],
        ["worker-of", None, None, "(internal) run as a worker of the main process PID"],
    ]

    #: This run's log (kubernetai.app.logs), when parsed as twistd's subcommand.
    logging: logs.TwistdLogging | None = None

    def opt_version(self) -> None:
        """Display kubernetai's version and exit."""
        print(f"kubernetai {__version__}")
        sys.exit(0)

    def postOptions(self) -> None:
        if not os.path.exists(self["corefile"]):
            raise usage.UsageError(f"{self['corefile']}: no such Corefile")
        if self["dns-port"] is not None:
            try:
                self["dns-port"] = int(self["dns-port"])
            except ValueError:
                raise usage.UsageError(f"--dns-port: not a number: {self['dns-port']}") from None
        for name in ("workers", "worker-of"):
            if self[name] is not None:
                try:
                    self[name] = int(self[name])
                except ValueError:
                    raise usage.UsageError(f"--{name}: not a number: {self[name]}") from None
        if self["workers"] < 1:
            raise usage.UsageError("--workers: at least 1")
        # Under twistd (a parent holding twistd's own options), log as CoreDNS does. This
        # runs before twistd builds its logger, which is what lets us choose the observer.
        if self.parent is not None and "logger" in self.parent:
            self.logging = logs.take_over(self.parent)


def makeService(config: Options) -> service.IService:
    from kubernetai.app.supervisor import Supervisor
    from kubernetai.core import gcpolicy
    gcpolicy.configure()  # this process is a server: its collector thresholds
    if config["worker-of"] is not None:
        return _worker(config)
    try:
        supervisor = Supervisor(config["corefile"], port_override=config["dns-port"])
    except CorefileError as error:
        # twistd would print a traceback for any exception here; a Corefile mistake is
        # the user's to fix, so it gets one line (FILE:LINE: message) and exit status 1.
        sys.stderr.write(f"{error}\n")
        raise SystemExit(1) from None
    if config.logging is not None:
        config.logging.servers = logs.server_lines(supervisor.server.plans)
    if config["workers"] > 1:
        from kubernetai.app.workers import WorkerPool, worker_command
        supervisor.server.reuse_port = True
        WorkerPool(supervisor, config["workers"],
                   worker_command(config["corefile"], config["dns-port"])
                   ).setServiceParent(supervisor)
    return supervisor


def _worker(config: Options) -> service.IService:
    """A `--workers` worker (kubernetai.app.workers): DNS only, fed by its main process."""
    from kubernetai.app.supervisor import read_configuration
    from kubernetai.app.workers import WorkerServer
    try:
        plans = read_configuration(config["corefile"], config["dns-port"]).plans
    except CorefileError as error:
        sys.stderr.write(f"{error}\n")
        raise SystemExit(1) from None
    return WorkerServer(plans, config["worker-of"])
