"""`snakemake models`: fetch every model a config names, once, where there is network, and pin what was fetched.

Hub models (Stable Diffusion, the BLIP captioner) are snapshots of one resolved commit holding only the
files diffusers / transformers load (configs, tokenizer files, one weight format per component); CLIP
weights come through open_clip's own download; the FID Inception weights go where `fid.inception_weights`
or the torch hub cache expects them. Jobs then load all of it offline. Local models are checked, not copied.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from datadream_core.models import ModelNotAvailable
from datadream_core.models.hub import REMOVED_HUB_IDS, is_local_model

# Weight files diffusers and transformers load, whole or sharded; root checkpoints, fp16 and EMA variants are skipped.
LOADED_WEIGHTS = re.compile(r"^(model|diffusion_pytorch_model|pytorch_model)(-\d{5}-of-\d{5})?\.(safetensors|bin)$")
CONFIG_SUFFIXES = (".json", ".txt", ".model")


def models_in_config(config: Mapping[str, Any]) -> list[dict]:
    """Every model the config uses, as {key, kind, id, ...}; what `snakemake models` fetches and pins."""
    models, synth = config["models"], config["synth"]
    entries = [
        {"key": "sd", "kind": "hub", "id": models["sd"]["path"], "revision": models["sd"]["revision"],
         "built_by_workflow": models["sd"]["build_tiny"]},
        {"key": "clip", "kind": "open_clip", "id": models["clip"]["name"], "pretrained": models["clip"]["pretrained"],
         "built_by_workflow": models["clip"]["build_tiny"]},
    ]
    if "disef" in synth["generators"]:
        if synth["disef_filter"]:
            entries.append({"key": "disef_filter", "kind": "open_clip", "id": synth["disef_filter"]["name"],
                            "pretrained": synth["disef_filter"]["pretrained"], "built_by_workflow": False})
        entries.append({"key": "captioner", "kind": "hub", "id": synth["captioner"], "revision": None,
                        "built_by_workflow": synth["captioner_build_tiny"]})
    if config["fid"]["features"] == "inception":
        entries.append({"key": "fid_inception", "kind": "inception", "id": "pytorch-fid InceptionV3",
                        "path": config["fid"]["inception_weights"], "built_by_workflow": False})
    return entries


def describe(entry: Mapping[str, Any]) -> str:
    if entry["kind"] == "open_clip":
        return f"{entry['key']}: {entry['id']} / {entry['pretrained'] or 'random weights'}"
    if entry["kind"] == "hub":
        return f"{entry['key']}: {entry['id']}" + (f" @ {entry['revision']}" if entry.get("revision") else "")
    return f"{entry['key']}: {entry['id']}" + (f" ({entry['path']})" if entry.get("path") else "")


def files_to_fetch(repo_files: list[str]) -> list[str]:
    """Configs and tokenizer files, and per folder the loaded weights in one format (safetensors if there)."""
    chosen = [name for name in repo_files if name.endswith(CONFIG_SUFFIXES)]
    weights_by_folder: dict[str, list[str]] = {}
    for name in repo_files:
        if LOADED_WEIGHTS.match(Path(name).name):
            weights_by_folder.setdefault(str(Path(name).parent), []).append(name)
    for names in weights_by_folder.values():
        safetensors = [name for name in names if name.endswith(".safetensors")]
        chosen += safetensors or names
    return sorted(chosen)


def _local_pin(entry: Mapping[str, Any], path: str) -> dict:
    if not entry["built_by_workflow"] and not Path(path).expanduser().exists():
        raise ModelNotAvailable(f"{entry['key']} model '{path}' looks like a local path but does not exist")
    return {"source": "local", "revision": None, "path": str(Path(path).expanduser().resolve())}


def fetch_hub_snapshot(repo_id: str, revision: str | None) -> dict:
    from huggingface_hub import HfApi, snapshot_download

    try:
        info = HfApi().model_info(repo_id, revision=revision)
    except Exception as error:  # noqa: BLE001 - any hub failure gets the same advice
        raise ModelNotAvailable(f"cannot resolve hub model '{repo_id}' (revision {revision or 'main'}): "
                                f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}."
                                f"{REMOVED_HUB_IDS.get(repo_id, '')}") from None
    files = files_to_fetch([sibling.rfilename for sibling in info.siblings])
    folder = snapshot_download(repo_id, revision=info.sha, allow_patterns=files)
    return {"source": "hub", "revision": info.sha, "path": folder, "files": len(files)}


def fetch_open_clip(name: str, pretrained: str) -> dict:
    from datadream_core.models.clip import clip_weights_file

    path = clip_weights_file(name, pretrained)
    commit = Path(path).parent.name if path and Path(path).parent.parent.name == "snapshots" else None
    return {"source": "open_clip", "revision": commit, "path": path}


def fetch_inception(configured: str) -> dict:
    import torch
    from pytorch_fid.inception import FID_WEIGHTS_URL

    from datadream_core.metrics.fid import inception_weights_file

    try:
        path = inception_weights_file(configured)
    except ModelNotAvailable:
        name = FID_WEIGHTS_URL.rsplit("/", 1)[-1]
        path = Path(configured) if configured else Path(torch.hub.get_dir()) / "checkpoints" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        # torch hub names carry the first hex digits of the file's sha256; the download checks them
        hash_prefix = re.search(r"-([a-f0-9]+)\.", name).group(1)
        torch.hub.download_url_to_file(FID_WEIGHTS_URL, str(path), hash_prefix=hash_prefix)
    return {"source": FID_WEIGHTS_URL, "revision": None, "path": str(path)}


def fetch_model(entry: Mapping[str, Any]) -> dict:
    """Fetch one entry of `models_in_config` (or check it, when local) and return its pin."""
    if entry["kind"] == "hub":
        pin = _local_pin(entry, entry["id"]) if is_local_model(entry["id"]) or entry["built_by_workflow"] \
            else fetch_hub_snapshot(entry["id"], entry["revision"])
    elif entry["kind"] == "open_clip":
        if is_local_model(entry["id"]) or entry["built_by_workflow"]:
            pin = _local_pin(entry, entry["id"])
        else:
            pin = fetch_open_clip(entry["id"], entry["pretrained"])
    else:
        pin = fetch_inception(entry["path"])
    return {"key": entry["key"], "id": entry["id"], **{k: entry[k] for k in ("pretrained",) if k in entry},
            "requested_revision": entry.get("revision"), **pin}


def fetch_models(entries: list[Mapping[str, Any]], pins_file: str | Path, cache_dir: str | None = None) -> list[dict]:
    """Fetch every entry and write the pins (id, resolved revision, local path of each model) to `pins_file`."""
    from datadream_core.io import write_json
    from datadream_core.io import LOG
    from datadream_core.models.hub import hub_offline

    if hub_offline():
        LOG.warning("HF_HUB_OFFLINE is set: only models already in the cache can be pinned")
    pins = []
    for entry in entries:
        LOG.info("fetching %s", describe(entry))
        pins.append(fetch_model(entry))
        LOG.info("  %s: revision %s at %s", pins[-1]["source"], pins[-1]["revision"], pins[-1]["path"])
    write_json(pins_file, {"cache_dir": cache_dir, "models": pins})
    LOG.info("%d models pinned in %s", len(pins), pins_file)
    return pins
