"""Reading Kubernetes objects from the files people have: manifests and `kubectl get` dumps.

Accepts YAML (multi-document) and JSON, single objects and `List` kinds (which is what
`kubectl get -A -o yaml` writes), files or directories of them. Objects of kinds the
sandbox does not serve (a Deployment in a dump) are reported, not fatal: the DNS-relevant
part of a cluster dump should load as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

from . import resources
from .resources import ResourceType

SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(ValueError):
    """A manifest that cannot be read; the message names the file."""


@dataclass(slots=True)
class Loaded:
    objects: list[tuple[ResourceType, dict[str, Any]]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


def load_paths(paths: Iterable[str | Path]) -> Loaded:
    loaded = Loaded()
    for path in paths:
        for file in _files(Path(path)):
            for obj in _documents(file):
                _take(obj, loaded, file)
    return loaded


def classify(objects: Iterable[dict[str, Any]]) -> Loaded:
    """Sort already-parsed objects (and List objects) into the resources they belong to."""
    loaded = Loaded()
    for obj in objects:
        _take(obj, loaded, None)
    return loaded


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
    if not path.exists():
        raise ManifestError(f"{path}: no such file or directory")
    return [path]


def _documents(file: Path) -> Iterator[Any]:
    text = file.read_text()
    try:
        if file.suffix == ".json":
            yield json.loads(text)
        else:
            yield from (doc for doc in yaml.safe_load_all(text) if doc is not None)
    except (ValueError, yaml.YAMLError) as error:
        raise ManifestError(f"{file}: {error}") from None


def _take(obj: Any, loaded: Loaded, file: Path | None) -> None:
    where = f"{file}: " if file else ""
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}expected a Kubernetes object, got {type(obj).__name__}")
    kind = obj.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(obj.get("items"), list):
        item_kind = kind[:-4]
        for item in obj["items"]:
            if isinstance(item, dict) and item_kind and "kind" not in item:
                item = {"kind": item_kind, "apiVersion": obj.get("apiVersion"), **item}
            _take(item, loaded, file)
        return
    resource = resources.by_kind(str(obj.get("apiVersion")), str(kind))
    if resource is None:
        label = f"{obj.get('apiVersion')}/{kind}"
        loaded.skipped[label] = loaded.skipped.get(label, 0) + 1
        return
    if not isinstance(obj.get("metadata"), dict) or not obj["metadata"].get("name"):
        raise ManifestError(f"{where}a {kind} without metadata.name")
    loaded.objects.append((resource, obj))
