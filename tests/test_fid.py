"""FID: streaming statistics, the eigendecomposition square root, extractors and per-class FID."""

import logging

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from datadream_core.io import read_csv, read_json, write_csv
from datadream_core.metrics.fid import (FeatureStats, compute_real_features, frechet_distance, inception_extractor,
                                        inception_weights_file, load_real_features, make_extractor, per_class_fid,
                                        sqrtm_psd, synthetic_paths, write_per_class_fid)
from datadream_core.models import ModelNotAvailable


def _stats(features: np.ndarray, batch: int = 7) -> FeatureStats:
    stats = FeatureStats(features.shape[1])
    for start in range(0, len(features), batch):
        stats.update(torch.from_numpy(features[start:start + batch]))
    return stats


def test_streaming_statistics_match_numpy_whatever_the_batching():
    features = np.random.default_rng(0).normal(3.0, 2.0, size=(101, 5))
    for batch in (1, 7, 101):
        stats = _stats(features, batch)
        assert stats.count == 101
        np.testing.assert_allclose(stats.mean.numpy(), features.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(stats.covariance.numpy(), np.cov(features, rowvar=False), rtol=1e-10)


@pytest.mark.parametrize("dim, seed", [(3, 0), (16, 1), (64, 2)])
def test_eigendecomposition_sqrt_matches_scipy(dim, seed):
    a = np.random.default_rng(seed).normal(size=(dim, dim))
    spd = a @ a.T + 1e-3 * np.eye(dim)
    ours = sqrtm_psd(torch.from_numpy(spd)).numpy()
    np.testing.assert_allclose(ours, np.real(scipy.linalg.sqrtm(spd)), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours @ ours, spd, rtol=1e-8, atol=1e-9)


def test_fid_of_a_set_with_itself_is_zero_and_a_mean_shift_adds_its_squared_norm():
    features = np.random.default_rng(1).normal(size=(400, 8))
    base = _stats(features)
    assert abs(frechet_distance(base.mean, base.covariance, base.mean, base.covariance, "cpu")) < 1e-8
    previous = 0.0
    for size in (0.5, 1.0, 3.0):
        shift = np.full(8, size / np.sqrt(8))  # ||shift|| = size
        moved = _stats(features + shift)  # same covariance exactly, so FID = ||shift||^2
        fid = frechet_distance(base.mean, base.covariance, moved.mean, moved.covariance, "cpu")
        assert fid == pytest.approx(size ** 2, rel=1e-9)
        assert fid > previous
        previous = fid


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pytorch-fid passes scipy's deprecated `disp`
def test_fid_matches_pytorch_fid_on_different_covariances():
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(300, 6)), rng.normal(size=(250, 6)) @ rng.normal(size=(6, 6)) + 0.7
    sa, sb = _stats(a), _stats(b)
    reference = calculate_frechet_distance(sa.mean.numpy(), sa.covariance.numpy(), sb.mean.numpy(), sb.covariance.numpy())
    assert frechet_distance(sa.mean, sa.covariance, sb.mean, sb.covariance, "cpu") == pytest.approx(reference, rel=1e-6)


def test_missing_inception_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"
    with pytest.raises(ModelNotAvailable) as error:
        make_extractor("inception")
    assert str(expected) in str(error.value) and "never downloads" in str(error.value)
    assert not expected.exists()
    with pytest.raises(ModelNotAvailable, match="fid.inception_weights names .*elsewhere.pth"):
        inception_weights_file(str(tmp_path / "elsewhere.pth"))


def test_inception_features_come_from_a_local_weight_file(tmp_path):
    import pytorch_fid.inception as fi

    torch.manual_seed(0)  # a randomly initialised FID Inception, saved the way pytorch-fid's file is
    net = fi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    for name, block in [("Mixed_5b", fi.FIDInceptionA(192, 32)), ("Mixed_5c", fi.FIDInceptionA(256, 64)),
                        ("Mixed_5d", fi.FIDInceptionA(288, 64)), ("Mixed_6b", fi.FIDInceptionC(768, 128)),
                        ("Mixed_6c", fi.FIDInceptionC(768, 160)), ("Mixed_6d", fi.FIDInceptionC(768, 160)),
                        ("Mixed_6e", fi.FIDInceptionC(768, 192)), ("Mixed_7b", fi.FIDInceptionE_1(1280)),
                        ("Mixed_7c", fi.FIDInceptionE_2(2048))]:
        setattr(net, name, block)
    weights = tmp_path / "inception.pth"
    torch.save(net.state_dict(), weights)
    extractor = inception_extractor(str(weights), "cpu")
    features = extractor([Image.new("RGB", (32, 32), (200, 10, 10)), Image.new("RGB", (48, 40), (0, 0, 255))])
    assert extractor.dim == 2048 and features.shape == (2, 2048)
    assert torch.isfinite(features).all() and not torch.allclose(features[0], features[1])


def _image(path, colour, noise_seed):
    pixels = np.clip(np.array(colour) + np.random.default_rng(noise_seed).normal(0, 25, (32, 32, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return str(path)


def test_per_class_fid_end_to_end_with_the_tiny_clip(tmp_path, tiny_clip, caplog):
    write_csv(tmp_path / "classes.csv", ("index", "name", "folder", "prompt"),
              [(0, "red", "red", "a photo of a red"), (1, "blue", "blue", "a photo of a blue"),
               (2, "green", "green", "a photo of a green")])
    colours = {0: (200, 40, 40), 1: (40, 40, 200), 2: (40, 200, 40)}
    real = [(_image(tmp_path / f"real/{c}/{i}.png", colours[c], 100 * c + i), c, "test") for c in colours for i in range(6)]
    real += [(_image(tmp_path / "real/val.png", (0, 0, 0), 999), 0, "val")]
    write_csv(tmp_path / "splits.csv", ("path", "class_index", "split"), real)
    manifest = []
    for i in range(6):  # class 0: the real images themselves; class 1: wrong colour; class 2: one image only
        manifest.append((real[i][0], 0, i, 0, "a photo of a red"))
        manifest.append((_image(tmp_path / f"synth/1/{i}.png", (200, 200, 40), 500 + i), 1, i, 0, "a photo of a blue"))
    manifest.append((_image(tmp_path / "synth/2/0.png", (40, 200, 40), 900), 2, 0, 0, "a photo of a green"))
    write_csv(tmp_path / "manifest.csv", ("path", "class_index", "image_index", "seed", "prompt"), manifest)

    extractor = make_extractor("clip", clip_name=tiny_clip, device="cpu")
    compute_real_features(tmp_path / "splits.csv", "test", extractor, 4, tmp_path / "real.npz", workers=2)
    features, classes = load_real_features(tmp_path / "real.npz", "clip")
    assert features.shape == (18, extractor.dim) and sorted(classes.tolist()) == [0] * 6 + [1] * 6 + [2] * 6
    with pytest.raises(ValueError, match="holds clip features, not inception"):
        load_real_features(tmp_path / "real.npz", "inception")

    with caplog.at_level(logging.WARNING, logger="datadream"):
        results, summary = per_class_fid(tmp_path / "manifest.csv", tmp_path / "classes.csv", features, classes, extractor, 4)
    assert "fewer images than the 64 feature dimensions" in caplog.text
    assert [(r.class_index, r.n_synth, r.n_real) for r in results] == [(0, 6, 6), (1, 6, 6), (2, 1, 6)]
    assert abs(results[0].fid) < 1e-3 * results[1].fid and results[1].fid > 0
    assert results[2].fid is None and summary["classes_with_fid"] == 2
    assert summary["mean_per_class_fid"] == pytest.approx((results[0].fid + results[1].fid) / 2)
    assert summary["dataset_fid"] > 0 and (summary["n_synth"], summary["n_real"]) == (13, 18)

    write_per_class_fid(results, {**summary, "dataset": "toy"}, tmp_path / "out/per_class.csv", tmp_path / "out/summary.json")
    rows = read_csv(tmp_path / "out/per_class.csv")
    assert list(rows[0]) == ["class_index", "name", "fid", "n_synth", "n_real"]
    assert [(row["name"], row["fid"] == "") for row in rows] == [("red", False), ("blue", False), ("green", True)]
    assert read_json(tmp_path / "out/summary.json")["dataset"] == "toy"


def test_a_manifest_class_unknown_to_classes_csv_is_an_error(tmp_path, tiny_clip):
    write_csv(tmp_path / "classes.csv", ("index", "name", "folder", "prompt"), [(0, "red", "red", "p")])
    write_csv(tmp_path / "manifest.csv", ("path", "class_index", "image_index", "seed", "prompt"), [("x.png", 5, 0, 0, "p")])
    extractor = make_extractor("clip", clip_name=tiny_clip, device="cpu")
    with pytest.raises(ValueError, match=r"manifest.csv lists class indices \[5\]"):
        per_class_fid(tmp_path / "manifest.csv", tmp_path / "classes.csv", np.zeros((2, extractor.dim)),
                      np.zeros(2, dtype=int), extractor, 4)


def test_only_the_first_synthetic_images_by_index_are_used(tmp_path):
    rows = [(f"c{c}_{i}.png", c, i, 0, "p") for c in (0, 1) for i in (3, 0, 2, 1)]
    write_csv(tmp_path / "manifest.csv", ("path", "class_index", "image_index", "seed", "prompt"), rows)
    assert synthetic_paths(tmp_path / "manifest.csv", 2) == {0: ["c0_0.png", "c0_1.png"], 1: ["c1_0.png", "c1_1.png"]}
    assert len(synthetic_paths(tmp_path / "manifest.csv")[1]) == 4
