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
        # Under twistd (a parent holding twistd's own options), log as CoreDNS does. This
        # runs before twistd builds its logger, which is what lets us choose the observer.
        if self.parent is not None and "logger" in self.parent:
            self.logging = logs.take_over(self.parent)


def makeService(config: Options) -> service.IService:
    from kubernetai.app.supervisor import Supervisor
    from kubernetai.core import gcpolicy
    gcpolicy.configure()  # this process is a server: its collector thresholds
    try:
        supervisor = Supervisor(config["corefile"], port_override=config["dns-port"])
    except CorefileError as error:
        # twistd would print a traceback for any exception here; a Corefile mistake is
        # the user's to fix, so it gets one line (FILE:LINE: message) and exit status 1.
        sys.stderr.write(f"{error}\n")
        raise SystemExit(1) from None
    if config.logging is not None:
        config.logging.servers = logs.server_lines(supervisor.server.plans)
    return supervisor
