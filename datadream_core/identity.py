"""What a result is made from, as short digests: its settings, its model's content and its data's content.

`digest` is the one identity helper. Rules pass these values as Snakemake `params`, so a change replans
exactly the jobs it affects; checkpoints and partially made shards are resumed only while their digest
matches; and every adapter, manifest and metrics.json records them (provenance).

Models and data are identified by content, never by a path string: a local model folder by a digest of
its files (hashed once per folder state, then reused from a cache file), a hub model by its resolved
revision, a dataset by a listing of its files (path, size, modification time). Torch-free: the Snakefile
calls it while planning.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator, Mapping

# Hashing a model folder is done once per folder state; the result is kept here, in the working directory.
DIGEST_CACHE = Path(".snakemake") / "datadream-digests.json"
_HUB_COMMIT = re.compile(r"[0-9a-f]{40}")


def digest(*parts: Any) -> str:
    """A 16-hex-digit digest of JSON-able parts (dict key order does not matter)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def file_sha256(path: str | os.PathLike) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def walk_files(root: str | os.PathLike) -> Iterator[Path]:
    """Every regular file below `root`, symlinked folders included, each real folder visited once."""
    seen: set[str] = set()
    stack = [Path(root)]
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in seen:
            continue  # a link back into the tree (root/loop -> .) would otherwise never end
        seen.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=True):
                stack.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=True):
                yield Path(entry.path)


def file_listing(root: str | os.PathLike) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime in ns) of every file below `root`, sorted."""
    root = Path(root)
    rows = []
    for path in walk_files(root):
        stat = path.stat()
        rows.append((path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
    return sorted(rows)


def listing_digest(root: str | os.PathLike) -> str:
    """Changes when a file below `root` is added, removed, resized or rewritten."""
    return digest(file_listing(root))


class DigestCache:
    """File content hashes keyed by (path, size, mtime): a file is re-hashed only when it changed."""

    def __init__(self, path: str | os.PathLike = DIGEST_CACHE):
        self.path = Path(path)
        try:
            self.entries: dict[str, dict] = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.entries = {}
        self.changed = False

    def sha256(self, path: Path) -> str:
        stat = path.stat()
        key = str(path.resolve())
        entry = self.entries.get(key)
        if entry and entry["size"] == stat.st_size and entry["mtime_ns"] == stat.st_mtime_ns:
            return entry["sha256"]
        value = file_sha256(path)
        self.entries[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": value}
        self.changed = True
        return value

    def save(self) -> None:
        if not self.changed:
            return
        from datadream_core.io import write_json

        try:
            write_json(self.path, self.entries)
        except OSError:
            pass  # a read-only working directory only costs re-hashing next time
        self.changed = False


def content_digest(target: str | os.PathLike, cache: DigestCache | None = None) -> str:
    """Digest of a file's bytes, or of every file's relative path and bytes below a folder."""
    cache = cache or DigestCache()
    target = Path(target)
    if target.is_file():
        value = digest(cache.sha256(target))
    else:
        value = digest([(path.relative_to(target).as_posix(), cache.sha256(path)) for path in sorted(walk_files(target))
                        if not path.name.startswith(".")])
    cache.save()
    return value


def hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    return Path(home) / "hub"


def hub_revision(repo_id: str, revision: str | None = None) -> str:
    """The commit a hub id resolves to in the local Hugging Face cache, else the revision as configured.

    Planning must not reach for the network, so an id that was never fetched keeps its configured
    revision (default `main`) until `snakemake models` (or any download) has put it into the cache.
    """
    revision = revision or "main"
    if _HUB_COMMIT.fullmatch(revision):
        return revision
    ref = hub_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "refs" / revision
    try:
        commit = ref.read_text(encoding="utf-8").strip()
    except OSError:
        return revision
    return commit if _HUB_COMMIT.fullmatch(commit) else revision


def model_identity(path: str, revision: str | None = None, cache: DigestCache | None = None) -> str:
    """A local model folder or file by content; anything else is a hub id, by its resolved revision."""
    if Path(path).exists():
        return f"local:{content_digest(path, cache)}"
    return f"hub:{path}@{hub_revision(path, revision)}"


def clip_identity(name: str, pretrained: str, cache: DigestCache | None = None) -> str:
    """open_clip: a local folder or checkpoint file by content, a named pretrained tag by name and tag."""
    parts = [model_identity(name, cache=cache) if Path(name).exists() else f"open_clip:{name}"]
    if pretrained:
        parts.append(model_identity(pretrained, cache=cache) if Path(pretrained).exists() else f"tag:{pretrained}")
    return "+".join(parts)


def provenance(settings: Mapping[str, Any], model_identity: str) -> dict:
    """What a job's outputs are made from, as its rule passes it: the digest of the settings that can change them
    and the model's identity. The job adds its data's identity (`with_data_identity`)."""
    return {"settings_digest": digest(dict(settings)), "model_identity": model_identity}


def provenance_or_location(provenance: Mapping[str, str] | None, *model_location: str) -> dict:
    """`provenance`, or for a direct call without one, the model known by where it lives."""
    return dict(provenance or {"model_identity": "path:" + ":".join(map(str, model_location))})


def with_data_identity(provenance: Mapping[str, str], identity_json: str | os.PathLike) -> dict:
    """A job's provenance with the data identity its index_dataset recorded.

    Jobs read it from the index rather than listing the dataset again: on a cluster every job re-plans its
    own part of the workflow, and listing ImageNet's 1.3 million files per job would cost minutes each.
    """
    with open(identity_json, encoding="utf-8") as handle:
        return {**provenance, "data_identity": json.load(handle)["data_identity"]}
