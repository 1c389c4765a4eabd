"""kubernetai: Kubernetes DNS service discovery for several clusters, on Twisted Names.

The public API for embedding (see README, "Inside a Twisted application"):

* `KubernetaiResolver`: an `IResolver` that is also an `IService`, built with
  `KubernetaiResolver.from_corefile(text)`, `.from_path(path)` or
  `.from_stanzas(StanzaOptions(...), ...)`;
* `StanzaOptions`: one stanza's options as Python values;
* `CorefileError`: raised for a mistake in either, with file, line and token.

Names are loaded on first use, so `import kubernetai` stays cheap for the command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"
__all__ = ["CorefileError", "KubernetaiResolver", "StanzaOptions", "__version__"]

if TYPE_CHECKING:
    from kubernetai.corefile import CorefileError

    from .embed import KubernetaiResolver, StanzaOptions


def __getattr__(name: str) -> Any:
    if name in ("KubernetaiResolver", "StanzaOptions"):
        from . import embed
        return getattr(embed, name)
    if name == "CorefileError":
        from kubernetai.corefile import CorefileError
        return CorefileError
    raise AttributeError(f"module 'kubernetai' has no attribute {name!r}")
