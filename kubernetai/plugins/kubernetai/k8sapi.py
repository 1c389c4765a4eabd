"""The API server requests the informers make, on the official client's connection layer.

The informers decode list and watch answers themselves (JSON into trimmed objects, see
:mod:`.objects`), so of the official ``kubernetes`` client they need only what carries a
request: ``Configuration`` (server, TLS, credentials and their refresh hooks, proxy), the
REST client (urllib3 pool, the client-go style retries) and ``ApiException``.  Importing the
package the usual way costs far more than that: ``kubernetes/__init__.py`` imports
``config`` (kubeconfig loading with requests, oauthlib and yaml), ``dynamic``, ``watch``,
``stream``, ``utils``, ``leaderelection`` and ``informer``; the generated API classes
(``CoreV1Api`` ...) import hundreds of pydantic model classes; ``ApiClient`` imports
pydantic.  Together about 40 MB: a one-service server was 95 MB resident with them, 55 MB
without.

So this module

* opens the packages ``kubernetes``, ``kubernetes.config`` and ``kubernetes.utils``
  without running their ``__init__`` (:func:`_defer_package`): their submodules import as
  usual, and the first attribute asked of such a package that it does not have yet runs
  the real ``__init__`` then, so code that wants the whole client (``kubernetes.watch``,
  ``from kubernetes import config``) still gets it, only later.  Nothing is deferred when
  ``kubernetes`` was imported before this module (tests, an embedding application);
* builds the GET requests of the generated ``list_*`` methods itself (:func:`lister`):
  same paths, query encoding, ``Accept`` header, user agent, cookie and ``BearerToken``
  auth (``Configuration.auth_settings()``, which calls ``refresh_api_key_hook``), sent
  through the client's own ``RESTClientObject``, non-2xx answers raised as the client's
  ``ApiException`` exactly as the generated methods do with ``_preload_content=False``.

``kubeconfig`` still loads ``kubernetes.config.kube_config`` (and with it ``ApiClient``)
when a stanza uses it: that code is needed there.  In the product, import a submodule by
its full name (``import kubernetes.config.incluster_config as incluster``, ``from
kubernetes.config.kube_config import load_kube_config``): ``from kubernetes.config import
incluster_config`` asks the package for an attribute and so runs its ``__init__``.
tests/test_memory.py checks that a serving process loads none of it.
"""

from __future__ import annotations

import importlib.machinery
import sys
import threading
import types
from typing import Any, Callable
from urllib.parse import quote

__all__ = ["ApiClient", "ApiException", "Configuration", "lister", "PATHS"]

_DEFERRED_LOCK = threading.RLock()
_PENDING = "_kubernetai_deferred_spec"


class _DeferredPackage(types.ModuleType):
    """A package whose ``__init__`` has not run yet; the first missing attribute runs it."""

    def __getattr__(self, name: str) -> Any:
        with _DEFERRED_LOCK:
            spec = self.__dict__.pop(_PENDING, None)
            if spec is not None:
                self.__class__ = types.ModuleType
                spec.loader.exec_module(self)
        try:
            return self.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}") from None


def _defer_package(name: str) -> None:
    """Put package ``name`` in ``sys.modules`` without running its ``__init__``."""
    if name in sys.modules:
        return
    parent_name, _, child = name.rpartition(".")
    parent = sys.modules[parent_name] if parent_name else None
    path = parent.__path__ if parent is not None else None
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return  # not installed as a plain package: import it the ordinary way
    module = _DeferredPackage(name)
    module.__spec__ = spec
    module.__loader__ = spec.loader
    module.__file__ = spec.origin
    module.__path__ = list(spec.submodule_search_locations)
    module.__package__ = name
    module.__dict__[_PENDING] = spec
    sys.modules[name] = module
    if parent is not None:
        setattr(parent, child, module)


def _open_client_packages() -> None:
    with _DEFERRED_LOCK:
        if "kubernetes" in sys.modules:
            return
        for name in ("kubernetes", "kubernetes.config", "kubernetes.utils"):
            _defer_package(name)


_open_client_packages()

# The client's own connection layer: none of these imports a model, an API class or pydantic.
from kubernetes.client import rest  # noqa: E402
from kubernetes.client.configuration import Configuration  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

# What the informers list and watch, and where (the generated methods' paths).
PATHS = {
    "services": "/api/v1/services",
    "endpointslices": "/apis/discovery.k8s.io/v1/endpointslices",
    "pods": "/api/v1/pods",
    "namespaces": "/api/v1/namespaces",
    "serviceimports": "/apis/multicluster.x-k8s.io/v1alpha1/serviceimports",
}

# The generated list methods' query parameters: Python name -> query name.
_QUERY_NAMES = {
    "allow_watch_bookmarks": "allowWatchBookmarks",
    "_continue": "continue",
    "field_selector": "fieldSelector",
    "label_selector": "labelSelector",
    "limit": "limit",
    "resource_version": "resourceVersion",
    "resource_version_match": "resourceVersionMatch",
    "send_initial_events": "sendInitialEvents",
    "timeout_seconds": "timeoutSeconds",
    "watch": "watch",
}

_USER_AGENT = "OpenAPI-Generator/37.0.2/python"


class ApiClient:
    """What an informer needs of ``kubernetes.client.ApiClient``: the configuration, the
    REST client (its urllib3 pool), default headers and cookie; no models, no pydantic.

    The attributes have the generated client's names, so :func:`lister` takes either.
    """

    def __init__(self, configuration: Configuration | None = None) -> None:
        if configuration is None:
            configuration = Configuration.get_default_copy()
        self.configuration = configuration
        self.rest_client = rest.RESTClientObject(configuration)
        self.default_headers: dict[str, str] = {"User-Agent": _USER_AGENT}
        self.cookie: str | None = None

    @property
    def user_agent(self) -> str:
        return self.default_headers["User-Agent"]

    @user_agent.setter
    def user_agent(self, value: str) -> None:
        self.default_headers["User-Agent"] = value

    def close(self) -> None:
        self.rest_client.close()


def _query_value(value: Any) -> str:
    """One query value as the generated client writes it (booleans in lower case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return quote(str(value))


def get(api_client: Any, path: str, params: dict[str, Any], *,
        _request_timeout: Any = None) -> Any:
    """GET ``path`` with the generated list methods' parameters; the urllib3 response.

    ``api_client`` is an :class:`ApiClient` or the official one.  A non-2xx answer is read
    and raised as ``ApiException`` (its subclass for the status), as the generated methods
    do with ``_preload_content=False``.
    """
    unknown = params.keys() - _QUERY_NAMES.keys()
    if unknown:
        raise TypeError(f"unexpected keyword argument {min(unknown)!r}")
    # In the generated methods' order, so the requests are the same byte for byte.
    query = [f"{key}={_query_value(params[name])}" for name, key in _QUERY_NAMES.items()
             if params.get(name) is not None]
    configuration = api_client.configuration
    headers = {"Accept": "application/json", **api_client.default_headers}
    if api_client.cookie:
        headers["Cookie"] = api_client.cookie
    bearer = configuration.auth_settings().get("BearerToken")
    if bearer:
        headers[bearer["key"]] = bearer["value"]
    url = configuration.host + path + ("?" + "&".join(query) if query else "")
    answer = api_client.rest_client.request("GET", url, headers=headers,
                                            _request_timeout=_request_timeout)
    if not 200 <= answer.status <= 299:
        answer.read()
        raise ApiException.from_response(http_resp=answer, body=None, data=None)
    return answer.response


def lister(api_client: Any, resource: str) -> Callable[..., Any]:
    """The list (and, with ``watch=True``, watch) request of ``resource`` across namespaces.

    Called like the generated ``list_*_for_all_namespaces`` method with
    ``_preload_content=False`` (the only mode served): keyword query parameters
    (``limit``, ``_continue``, ``resource_version``, ``watch`` ...) and
    ``_request_timeout``; returns the urllib3 response to read or stream.
    """
    try:
        path = PATHS[resource]
    except KeyError:
        raise ValueError(f"cannot watch {resource!r}: expected one of "
                         f"{', '.join(PATHS)}") from None

    def list_resource(*, _preload_content: bool = False, _request_timeout: Any = None,
                      **params: Any) -> Any:
        if _preload_content:
            raise ValueError("only _preload_content=False is served: the caller decodes")
        return get(api_client, path, params, _request_timeout=_request_timeout)

    list_resource.__name__ = f"list_{resource}"
    return list_resource
