"""How a stanza reaches its API server: the official client's ``Configuration``.

CoreDNS's ``getClientConfig`` picks the connection from three options: ``kubeconfig`` first,
then ``endpoint`` (with ``tls``), else in-cluster.  :func:`server_url` reads an ``endpoint``
URL as client-go does, refusing one that could never be dialled, when the Corefile is
checked; :func:`kube_client_config` builds the client's ``Configuration`` when the server
is made, and :func:`plain_http_credentials` says when that connection would send
credentials in the clear.  RecordRequest throttling is :mod:`.limiter`'s.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import kubernetai.corefile as corefile
from kubernetai.corefile import CorefileError

if TYPE_CHECKING:
    from kubernetai.plugins.kubernetai.config import StanzaConfig

__all__ = ["SERVICEACCOUNT_DIR", "SERVICEACCOUNT_DIR_ENV", "kube_client_config",
           "plain_http_credentials", "server_url", "serviceaccount_dir"]

#: Where the kubelet mounts a pod's service account: ``token`` and ``ca.crt`` are read there.
SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: The environment variable that moves it (tests; a sidecar that mounts it elsewhere).
SERVICEACCOUNT_DIR_ENV = "KUBERNETAI_SERVICEACCOUNT_DIR"


def serviceaccount_dir(environ: Mapping[str, str] | None = None) -> str:
    """The directory the in-cluster ``token`` and ``ca.crt`` are read from."""
    env = os.environ if environ is None else environ
    return env.get(SERVICEACCOUNT_DIR_ENV) or SERVICEACCOUNT_DIR


_LDH_LABEL_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?", re.ASCII)


def _bad_host(host: str, *, bracketed: bool) -> str | None:
    """Why ``host`` cannot be dialled (Go's net: an IP literal, or a name
    its resolver accepts: ASCII letters, digits, ``-`` and ``_`` in labels
    of 1 to 63, not all digits), or None."""
    if not host:
        return "no host"
    if bracketed:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"{host!r} in brackets is not an IPv6 address"
        return None
    try:
        ipaddress.IPv4Address(host)
        return None
    except ValueError:
        pass
    for char in host:
        if not char.isascii() or not char.isprintable():
            return (f"the host holds {corefile.describe_char(char)}: "
                    "write the host name in ASCII (its IDNA form)")
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if len(name) > 253 or not all(
        len(label) <= 63 and _LDH_LABEL_RE.fullmatch(label) for label in labels
    ):
        return f"{host!r} is not a host name"
    if all(label.isdigit() for label in labels):
        return f"{host!r} is neither an IP address nor a host name"
    return None


def server_url(url: str, tls: bool) -> str:
    """The API server URL as client-go reads ``endpoint`` (``DefaultServerURL``), checked.

    A URL without scheme or host (``host:port``, ``host``) is a shorthand: client-go puts
    ``https://`` before it when TLS is configured (``tls``), else ``http://``, and then
    refuses one with a path.  CoreDNS checks nothing more; a URL it would fail on only when
    connecting (no host, a host that is no host name, port 0, an unknown scheme) is refused
    here, as is a user name or password in it (it would be logged), and the shorthand with
    neither ``tls`` nor port (``endpoint nan`` means ``http://nan:80``: plain HTTP on port
    80, not where an API server is).  Returns the full URL without a trailing ``/``; raises
    ValueError saying why the URL cannot be used.
    """
    # urlsplit and .port raise ValueError too (brackets around something that is no IPv6
    # address, a port out of range): their messages say why as well.
    parts = urlsplit(url)
    shorthand = not (parts.scheme and parts.netloc)
    if shorthand:
        url = ("https://" if tls else "http://") + url
        parts = urlsplit(url)
    if shorthand:
        if parts.path not in ("", "/"):
            raise ValueError("not a URL, nor a HOST:PORT pair (as client-go reads it)")
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("scheme must be http or https")
    if "@" in parts.netloc:
        raise ValueError("a user name or password in the URL is not supported (use kubeconfig)")
    if parts.query or parts.fragment:
        raise ValueError("a query or fragment is not allowed")
    port = parts.port
    if port == 0:
        raise ValueError("port 0")
    host = parts.hostname or ""
    why = _bad_host(host, bracketed="[" in parts.netloc)
    if why:
        raise ValueError(why)
    if shorthand and port is None and not tls:
        raise ValueError(f"without a scheme, tls or a port, client-go reads it as "
                         f"http://{host}:80 (plain HTTP on port 80), which is not where an API "
                         f"server listens: write the URL in full, e.g. https://{host}:6443")
    return url.rstrip("/")


def kube_client_config(
    config: StanzaConfig,
    *,
    environ: dict[str, str] | None = None,
    incluster_token_file: str | None = None,
    incluster_ca_file: str | None = None,
):
    """A ``kubernetes.client.Configuration`` for this stanza's cluster.

    As CoreDNS's ``getClientConfig`` chooses:

    * ``kubeconfig FILE [CONTEXT]``: ``kubernetes.config.load_kube_config``
      with that file and context (the file's current-context without one),
      ``persist_config=False`` so the file is never written back.
      ``endpoint`` and ``tls`` are then ignored.  Relative paths inside the
      kubeconfig are relative to the kubeconfig; ``FILE`` itself, like the
      ``tls`` files, is relative to the working directory (as in CoreDNS).
      Tokens from exec/auth-provider plugins are refreshed by the client's
      ``refresh_api_key_hook``.
    * ``endpoint URL`` (+ ``tls CERT KEY CACERT``): that host, the client
      certificate and key, and the CA to verify the server with (without
      ``tls``, the system trust store).  Only the first URL is used.
    * otherwise in-cluster: the service account ``token`` and ``ca.crt``
      under ``/var/run/secrets/kubernetes.io/serviceaccount`` (or the
      directory ``KUBERNETAI_SERVICEACCOUNT_DIR`` names) and
      ``KUBERNETES_SERVICE_HOST``/``_PORT`` (``environ``,
      ``incluster_token_file`` and ``incluster_ca_file`` replace those, for
      tests).  The service account token is a bound token that the kubelet
      rotates (about hourly); the 37.0.2 loader (``InClusterConfigLoader``
      with ``try_refresh_token=True``) installs ``refresh_api_key_hook``,
      which ``Configuration.auth_settings()`` calls before every request
      made through ``ApiClient`` (including ``_preload_content=False``
      list and watch calls), and re-reads the token file when the copy in
      memory is more than one minute old.  client-go does the same (its
      cached file token source re-reads every minute).  Requests made
      without ``ApiClient`` (raw urllib3) do not get the token at all;
      a watch already open keeps the token it was opened with, which is
      fine: the API server authenticates a watch once, when it starts, and
      the kubelet writes the new token well before the old one expires.
      (client-go also drops its cached token after a 401; the Python client
      does not, so a token revoked early is picked up within the minute.)

    Also sets ``keep_alive`` (TCP keepalive, as client-go dials), so a
    silently dead watch connection is eventually noticed.  Not set here
    (it is not a ``Configuration`` field): the User-Agent, which belongs on
    the ``ApiClient``; and request throttling, see
    ``StanzaConfig.request_limiter``.

    Raises :class:`~kubernetai.corefile.CorefileError` located at the
    option that cannot be used (a missing tls file, an unreadable or
    invalid kubeconfig, an unknown context) or at the stanza for
    in-cluster failures.
    """
    # Through k8sapi: the client's Configuration without its model classes.
    from kubernetai.plugins.kubernetai.k8sapi import Configuration

    cfg = Configuration()
    cfg.keep_alive = True

    def fail(option: str | None, message: str, token: str | None) -> CorefileError:
        line = config.option_line(option) if option else config.line
        return CorefileError(config.filename, line, f"kubernetai: {message}", token)

    if config.kubeconfig is not None:
        path, context = config.kubeconfig
        try:
            # Checked (regular file, size) before the client's loader reads it.
            corefile.read_regular_file(path)
        except FileNotFoundError:
            raise fail("kubeconfig", f"cannot read kubeconfig {path!r}: no such file",
                       path) from None
        except (OSError, ValueError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise fail("kubeconfig", f"cannot read kubeconfig {path!r}: {why}", path) from None
        # Only a kubeconfig needs the loader (and the yaml, oauthlib and requests it imports).
        from kubernetes.config.kube_config import load_kube_config
        try:
            load_kube_config(
                config_file=path,
                context=context,
                client_configuration=cfg,
                persist_config=False,
            )
        except Exception as e:  # ConfigException, yaml errors, OSError, malformed entries
            where = f"kubeconfig {path!r}" + (f" context {context!r}" if context else "")
            raise fail("kubeconfig", f"cannot use {where}: {e}", context or path) from e
        return cfg

    if config.endpoint is not None:
        cfg.host = config.endpoint
        if config.tls is not None:
            cert, key, ca = config.tls
            for what, path in (("client certificate", cert), ("client key", key),
                               ("certificate authority", ca)):
                # clientcmd refuses unreadable files when the config is built;
                # a FIFO or a device is refused too, as it would hang or
                # flood the TLS library that reads it later.
                try:
                    corefile.read_regular_file(path)
                except (OSError, ValueError) as e:
                    why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                    raise fail("tls", f"unable to read {what} {path!r}: {why}", path) from e
            cfg.cert_file = cert
            cfg.key_file = key
            cfg.ssl_ca_cert = ca
        return cfg

    # The module alone: `from kubernetes.config import ...` would run the package's
    # __init__, which k8sapi defers (it imports the kubeconfig loader).
    import kubernetes.config.incluster_config as incluster

    env = os.environ if environ is None else environ
    if (not env.get(incluster.SERVICE_HOST_ENV_NAME)
            or not env.get(incluster.SERVICE_PORT_ENV_NAME)):
        raise fail(
            None,
            "unable to load in-cluster configuration, KUBERNETES_SERVICE_HOST and "
            "KUBERNETES_SERVICE_PORT must be defined (no endpoint or kubeconfig is given, "
            "so the stanza connects in-cluster)",
            None,
        )
    directory = serviceaccount_dir(env)
    loader = incluster.InClusterConfigLoader(
        token_filename=incluster_token_file or os.path.join(directory, "token"),
        cert_filename=incluster_ca_file or os.path.join(directory, "ca.crt"),
        try_refresh_token=True,
        environ=env,
    )
    try:
        loader.load_and_set(cfg)
    except Exception as e:  # ConfigException, OSError
        where = "" if incluster_token_file else (
            f" (the service account's token and ca.crt are read from {directory}; "
            f"{SERVICEACCOUNT_DIR_ENV} names another directory)")
        raise fail(None, f"unable to load in-cluster configuration: {e}{where}", None) from e
    return cfg


def plain_http_credentials(config: StanzaConfig, client_config) -> str | None:
    """A warning if this connection sends credentials over plain HTTP, else None.

    Only a kubeconfig can pair an ``http://`` server with a bearer token
    (``token``, ``tokenFile``, an exec or auth-provider plugin) or a user
    name and password; the client sends them as they are, readable by
    anyone on the path.  (``endpoint`` carries no token, and in-cluster is
    always HTTPS.)
    """
    host = client_config.host or ""
    if not host.lower().startswith("http://"):
        return None
    header = next(iter(client_config.api_key.values()), "") if client_config.api_key else ""
    if header.startswith("Basic "):
        what = "a user name and password"
    elif header or client_config.refresh_api_key_hook is not None:
        what = "a bearer token"
    elif client_config.username or client_config.password:
        what = "a user name and password"
    else:
        return None
    option = "kubeconfig" if config.kubeconfig is not None else None
    line = config.option_line(option) if option else config.line
    return (f"{config.filename}:{line}: kubernetai: {what} would be sent to {host} "
            "over plain HTTP, unencrypted: use an https:// server")
