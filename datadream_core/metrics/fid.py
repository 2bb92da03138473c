"""Frechet distance (FID) between synthetic and real images, per class and pooled over a dataset.

Features come from pytorch-fid's InceptionV3 (2048-d pool, the usual FID) or from the classifier's
base CLIP image encoder. Statistics are accumulated in float64 batch by batch, so no image set is held
in memory, and the matrix square root uses symmetric eigendecompositions (GPU when present).
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence
from unittest import mock

import numpy as np
import torch

from datadream_core.data.images import load_rgb
from datadream_core.data.table import read_classes, read_splits
from datadream_core.io import LOG, atomic_path, read_csv, write_csv, write_json
from datadream_core.models import ModelNotAvailable


PER_CLASS_HEADER = ("class_index", "name", "fid", "n_synth", "n_real")
INCEPTION_SIZE = 299  # pytorch-fid resizes every image to 299 x 299 bilinearly before the network


class FeatureStats:
    """Streaming mean and covariance in float64 (Chan et al.'s pairwise update, stable for large sets)."""

    def __init__(self, dim: int):
        self.count = 0
        self.mean = torch.zeros(dim, dtype=torch.float64)
        self._scatter = torch.zeros(dim, dim, dtype=torch.float64)  # sum of outer products of deviations

    @property
    def dim(self) -> int:
        return self.mean.numel()

    def update(self, features: torch.Tensor) -> None:
        batch = features.detach().to("cpu", torch.float64).reshape(-1, self.dim)
        n = batch.shape[0]
        if n == 0:
            return
        batch_mean = batch.mean(dim=0)
        centred = batch - batch_mean
        delta = batch_mean - self.mean
        total = self.count + n
        self._scatter += centred.T @ centred + torch.outer(delta, delta) * (self.count * n / total)
        self.mean += delta * (n / total)
        self.count = total

    @property
    def covariance(self) -> torch.Tensor:
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 feature vectors, got {self.count}")
        return self._scatter / (self.count - 1)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix; round-off negative eigenvalues count as 0."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(mean1: torch.Tensor, cov1: torch.Tensor, mean2: torch.Tensor, cov2: torch.Tensor,
                     device: str | torch.device | None = None) -> float:
    """||mu1 - mu2||^2 + tr(C1) + tr(C2) - 2 tr((C1 C2)^1/2).

    tr((C1 C2)^1/2) = tr((S C2 S)^1/2) with S = C1^1/2, and S C2 S is symmetric, so two symmetric
    eigendecompositions replace scipy's general (slow, sometimes complex-valued) sqrtm.
    """
    device = torch.device(device) if device is not None else default_device()
    mean1, cov1, mean2, cov2 = (t.to(device, torch.float64) for t in (mean1, cov1, mean2, cov2))
    root1 = sqrtm_psd(cov1)
    middle = root1 @ cov2 @ root1
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    distance = (mean1 - mean2).square().sum() + cov1.trace() + cov2.trace() - 2 * trace_root
    return float(distance)


def stats_distance(a: FeatureStats, b: FeatureStats, device: str | torch.device | None = None) -> float | None:
    """FID between two accumulated sets, or None when either has fewer than 2 images."""
    if a.count < 2 or b.count < 2:
        return None
    return frechet_distance(a.mean, a.covariance, b.mean, b.covariance, device)


# --- feature extractors -------------------------------------------------------------------------

@dataclass
class FeatureExtractor:
    """Turns PIL images into one feature row each."""

    name: str
    dim: int
    preprocess: Callable  # PIL image -> CHW float tensor
    network: Callable[[torch.Tensor], torch.Tensor]  # NCHW batch on `device` -> N x dim
    device: torch.device

    @torch.no_grad()
    def embed(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """Features of preprocessed images."""
        batch = torch.stack(list(tensors)).to(self.device)
        return self.network(batch).reshape(len(tensors), -1).float().cpu()

    def __call__(self, images: Sequence) -> torch.Tensor:
        return self.embed([self.preprocess(image) for image in images])


def inception_weights_file(configured: str = "") -> Path:
    """The pytorch-fid weight file: `configured` if given, else the torch hub cache; never downloaded."""
    from pytorch_fid.inception import FID_WEIGHTS_URL

    url_name = FID_WEIGHTS_URL.rsplit("/", 1)[-1]
    path = Path(configured) if configured else Path(torch.hub.get_dir()) / "checkpoints" / url_name
    if not path.is_file():
        where = "fid.inception_weights names" if configured else "the torch hub cache has no"
        raise ModelNotAvailable(
            f"FID Inception weights not found: {where} {path}. The workflow never downloads them: fetch"
            f" {FID_WEIGHTS_URL} once and save it as {path}"
            + ("" if configured else " (or anywhere, and set fid.inception_weights to that file)")
            + ", or set fid.features: clip to use the CLIP image encoder instead.")
    return path


def inception_extractor(weights: str = "", device: str | torch.device | None = None) -> FeatureExtractor:
    import pytorch_fid.inception as fid_inception
    import torch.nn.functional as F
    from torchvision.transforms.functional import to_tensor

    path = inception_weights_file(weights)
    device = torch.device(device) if device is not None else default_device()

    def load_local(*args, **kwargs):
        return torch.load(path, map_location="cpu", weights_only=True)

    # pytorch-fid builds its network by downloading from a URL; its only hook is that module function.
    with mock.patch.object(fid_inception, "load_state_dict_from_url", load_local):
        model = fid_inception.InceptionV3([fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    model.eval().to(device)

    def preprocess(image):
        # The same bilinear resize pytorch-fid applies inside the network, done per image so that
        # images of different sizes can share a batch.
        tensor = to_tensor(image).unsqueeze(0)
        return F.interpolate(tensor, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)[0]

    return FeatureExtractor("inception", 2048, preprocess, lambda batch: model(batch)[0], device)


def clip_extractor(name: str, pretrained: str = "", device: str | torch.device | None = None) -> FeatureExtractor:
    import open_clip

    from datadream_core.models.clip import load_clip

    device = torch.device(device) if device is not None else default_device()
    clip = load_clip(name, pretrained, device=device)
    clip.model.eval()
    preprocess = open_clip.image_transform(clip.image_size, is_train=False, mean=clip.mean, std=clip.std)
    dim = int(clip.model.visual.output_dim)
    return FeatureExtractor("clip", dim, preprocess, clip.model.encode_image, device)


def make_extractor(features: str, inception_weights: str = "", clip_name: str = "", clip_pretrained: str = "",
                   device: str | torch.device | None = None) -> FeatureExtractor:
    if features == "inception":
        return inception_extractor(inception_weights, device)
    if features == "clip":
        return clip_extractor(clip_name, clip_pretrained, device)
    raise ValueError(f"unknown FID features '{features}' (known: inception, clip)")


def iter_features(paths: Sequence[str], extractor: FeatureExtractor, batch_size: int,
                  workers: int = 1) -> Iterator[torch.Tensor]:
    """Features batch by batch; decoding and resizing run in `workers` threads (PIL releases the GIL)."""
    def load(path):
        return extractor.preprocess(load_rgb(path))

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for start in range(0, len(paths), batch_size):
            yield extractor.embed(list(pool.map(load, paths[start:start + batch_size])))


# --- real-image feature cache -------------------------------------------------------------------

def compute_real_features(splits_csv: str | Path, split: str, extractor: FeatureExtractor, batch_size: int,
                          output: str | Path, workers: int = 1) -> None:
    """Cache one float32 feature row per real image of `split`.

    Rows rather than per-class statistics: a covariance per class would take d^2 floats per class
    (13 GB for SUN397 with Inception), while the rows of a test split take a few hundred MB.
    """
    rows = read_splits(splits_csv, split)
    if not rows:
        raise ValueError(f"{splits_csv} lists no images in split '{split}' (set fid.real_split to another split)")
    paths = [row.path for row in rows]
    features = torch.cat(list(iter_features(paths, extractor, batch_size, workers))).numpy()
    with atomic_path(output) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, features=features, class_index=np.array([row.class_index for row in rows]),
                     features_name=extractor.name, split=split)
    LOG.info("cached %s features of %d %s images (%d-d) in %s", extractor.name, len(paths), split,
             features.shape[1], output)


def load_real_features(path: str | Path, features: str) -> tuple[np.ndarray, np.ndarray]:
    """(features, class_index) from a cache written by `compute_real_features` with `features`."""
    with np.load(path) as cache:
        if str(cache["features_name"]) != features:
            raise ValueError(f"{path} holds {cache['features_name']} features, not {features}; delete it to recompute")
        return cache["features"], cache["class_index"]


# --- per-class FID ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassFid:
    class_index: int
    name: str
    fid: float | None
    n_synth: int
    n_real: int


def _warn_small_sets(sizes: Mapping[str, int], dim: int) -> None:
    small = {label: n for label, n in sizes.items() if n < dim}
    if small:
        listed = ", ".join(f"{label} ({n})" for label, n in list(small.items())[:8])
        more = f" and {len(small) - 8} more" if len(small) > 8 else ""
        LOG.warning("%d image sets have fewer images than the %d feature dimensions, so their covariance is"
                    " singular and their FID is biased upward; compare such FIDs only at equal set sizes: %s%s",
                    len(small), dim, listed, more)


def synthetic_paths(manifest_csv: str | Path, per_class: int | None = None) -> dict[int, list[str]]:
    """Class index -> its first `per_class` synthetic images by image index (all when None).

    The manifest may hold more images than a run uses (scaling runs generate the largest count);
    the first n by image index are the same images whatever the sharding.
    """
    indexed: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for row in read_csv(manifest_csv):
        indexed[int(row["class_index"])].append((int(row["image_index"]), row["path"]))
    return {c: [path for _, path in sorted(rows)[:per_class]] for c, rows in indexed.items()}


def per_class_fid(manifest_csv: str | Path, classes_csv: str | Path, real_features: np.ndarray,
                  real_classes: np.ndarray, extractor: FeatureExtractor, batch_size: int, workers: int = 1,
                  per_class: int | None = None) -> tuple[list[ClassFid], dict]:
    """FID of each class's synthetic images against that class's real images, and of the pooled sets."""
    classes = read_classes(classes_csv)
    synth_paths = synthetic_paths(manifest_csv, per_class)
    unknown = sorted(set(synth_paths) - {info.index for info in classes})
    if unknown:
        raise ValueError(f"{manifest_csv} lists class indices {unknown} that {classes_csv} does not have")
    dim = extractor.dim
    if real_features.shape[1] != dim:
        raise ValueError(f"real features are {real_features.shape[1]}-d but the {extractor.name} extractor gives {dim}-d")
    pooled_synth, pooled_real = FeatureStats(dim), FeatureStats(dim)
    results, sizes = [], {}
    for info in classes:
        synth, real = FeatureStats(dim), FeatureStats(dim)
        for batch in iter_features(synth_paths.get(info.index, []), extractor, batch_size, workers):
            synth.update(batch)
            pooled_synth.update(batch)
        class_real = torch.from_numpy(real_features[real_classes == info.index])
        real.update(class_real)
        pooled_real.update(class_real)
        fid = stats_distance(synth, real)
        results.append(ClassFid(info.index, info.name, fid, synth.count, real.count))
        sizes[f"class {info.index} synthetic"] = synth.count
        sizes[f"class {info.index} real"] = real.count
        LOG.info("class %d (%s): FID %s from %d synthetic / %d real images", info.index, info.name,
                 "n/a" if fid is None else f"{fid:.2f}", synth.count, real.count)
    sizes.update({"all synthetic": pooled_synth.count, "all real": pooled_real.count})
    _warn_small_sets(sizes, dim)
    defined = [result.fid for result in results if result.fid is not None]
    summary = {
        "dataset_fid": stats_distance(pooled_synth, pooled_real),
        "mean_per_class_fid": float(np.mean(defined)) if defined else None,
        "classes_with_fid": len(defined),
        "n_synth": pooled_synth.count,
        "n_real": pooled_real.count,
        "feature_dim": dim,
        "features": extractor.name,
    }
    return results, summary


def write_per_class_fid(results: Sequence[ClassFid], summary: Mapping, per_class_csv: str | Path,
                        summary_json: str | Path) -> None:
    """per_class.csv (an empty fid where a class has fewer than 2 images on a side) and its summary JSON."""
    write_csv(per_class_csv, PER_CLASS_HEADER, (
        (r.class_index, r.name, "" if r.fid is None else f"{r.fid:.6g}", r.n_synth, r.n_real) for r in results))
    write_json(summary_json, dict(summary))


def settings_extractor(settings: Mapping) -> FeatureExtractor:
    """The feature extractor of a job's fid settings (with the CLIP's location)."""
    return make_extractor(settings["features"], settings["inception_weights"], settings["name"], settings["pretrained"])


def real_features_job(splits: str | Path, features_file: str | Path, settings: Mapping, threads: int = 1) -> None:
    """The FID features of the dataset's real images of the `settings`' real split, once for every generator."""
    compute_real_features(splits, settings["real_split"], settings_extractor(settings), settings["batch_size"],
                          features_file, workers=threads)


def fid_per_class_job(manifest: str | Path, classes: str | Path, real: str | Path, per_class: str | Path,
                      summary: str | Path, settings: Mapping, n_synth: int, dataset: str, generator: str, shots: int,
                      seed: int, threads: int = 1) -> None:
    """Per-class and dataset-level FID of the first `n_synth` images per class of one generator's run."""
    real_features, real_classes = load_real_features(real, settings["features"])
    results, totals = per_class_fid(manifest, classes, real_features, real_classes, settings_extractor(settings),
                                    settings["batch_size"], workers=threads, per_class=n_synth)
    run = {"dataset": dataset, "generator": generator, "shots": shots, "seed": seed,
           "real_split": settings["real_split"], "feature_model": settings["model_identity"]}
    write_per_class_fid(results, {**totals, **run}, per_class, summary)
    LOG.info("dataset FID %s, mean per-class FID %s", totals["dataset_fid"], totals["mean_per_class_fid"])
