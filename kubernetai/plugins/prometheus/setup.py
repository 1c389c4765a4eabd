"""`prometheus [ADDRESS] { runtime_metrics }`: the directive, as CoreDNS's."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

from kubernetai.core.metrics import DNS_REQUESTS, PROCESS
from kubernetai.core.registry import BlockBuilder
from kubernetai.corefile import CorefileError, Directive, arg_error
from kubernetai.plugins.prometheus.handler import MetricsHandler
from kubernetai.plugins.prometheus.service import PrometheusService

DEFAULT_ADDRESS = "localhost:9153"

BUILD_INFO = PROCESS.gauge(
    "coredns_build_info", "1, labelled with the version and revision of kubernetai and the "
    "Python version it runs on (in goversion).", ("version", "revision", "goversion"))
RELOAD_FAILED = ("coredns_reload_failed_total",
                 "Reloads of the Corefile that failed (the running configuration kept "
                 "serving).")


def _arg_error(directive: Directive, index: int) -> CorefileError:
    after = directive.args[index - 1] if index else directive.name
    return arg_error(directive.filename, directive.arg_lines[index] if index < len(
        directive.arg_lines) else directive.line, after,
        directive.args[index] if index < len(directive.args) else directive.name)


def _version() -> str:
    try:
        return version("kubernetai")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


class PrometheusDirective:
    name = "prometheus"
    once = True

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        if len(directive.args) > 1:
            raise _arg_error(directive, 1)
        address = directive.args[0] if directive.args else DEFAULT_ADDRESS
        for option in directive.block:
            if option.name == "runtime_metrics":
                if option.args:
                    raise arg_error(option.filename, option.line, "runtime_metrics",
                                    option.args[0])
                builder.warnings.append(
                    f"{option.filename}:{option.line}: prometheus: runtime_metrics exports "
                    "Go's runtime metrics; there is no Go runtime here, so it does nothing "
                    "(the Python process and GC metrics are always exported)")
            elif option.name == "tls":
                raise CorefileError(option.filename, option.line,
                                    "prometheus: tls is not supported: serve /metrics on "
                                    "a loopback or private address", option.name)
            else:
                raise CorefileError(option.filename, option.line,
                                    f"prometheus: unknown option: {option.name}", option.name)
        try:
            listener = PrometheusService(address, builder)
        except ValueError as error:
            raise CorefileError(directive.filename, directive.arg_lines[0],
                                f"prometheus: {error}", address) from None
        BUILD_INFO.set((_version(), "", f"python{platform.python_version()}"), 1)
        PROCESS.counter(*RELOAD_FAILED)  # there, at 0, from the start
        builder.add_handler(MetricsHandler(DNS_REQUESTS, lambda: builder.stages))
        builder.add_process_service(listener)
