"""The data stage through the real Snakemake DAG."""

from pathlib import Path

import pytest
from PIL import Image

from conftest import run_snakemake
from datadream_core.io import read_csv

pytestmark = pytest.mark.e2e


def _folder_dataset(root: Path) -> Path:
    """Nine images a class: the hashed split gives each class a test image, which every run needs."""
    for c, name in enumerate(("cat", "dog", "große katze")):
        for i in range(9):
            path = root / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (i * 30, c * 80, 0)).save(path)
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def test_data_stage_end_to_end(tmp_path):
    root = _folder_dataset(tmp_path / "images")
    config = {"seeds": [0, 1], "shots": [1, 2],
              "datasets": {"pets": {"source": "imagefolder", "root": str(root), "domain_word": "pet ",
                                    "class_names": {"große katze": "große Katze"}},
                           "mini": {"source": "miniworld", "world": {"train_per_class": 3, "val_per_class": 1, "test_per_class": 2}}}}
    work = tmp_path / "run"
    run_snakemake(work, config, "fewshot")
    classes = read_csv(work / "results/pets/classes.csv")
    assert [row["prompt"] for row in classes] == ["a pet photo of a cat", "a pet photo of a dog", "a pet photo of a große Katze"]
    problems = read_csv(work / "results/pets/problems.csv")
    assert [(Path(row["path"]).name, row["reason"]) for row in problems] == [("notes.txt", "not an image file")]
    for seed in (0, 1):
        shots = read_csv(work / f"results/pets/fewshot/seed{seed}.csv")
        assert len(shots) == 3 * 2
    mini = read_csv(work / "results/mini/splits.csv")
    assert len(mini) == 8 * (3 + 1 + 2)
    before = (work / "results/pets/fewshot/seed0.csv").read_bytes()
    run_snakemake(work, config, "fewshot", "--forceall")
    assert (work / "results/pets/fewshot/seed0.csv").read_bytes() == before


def test_named_dataset_target_runs_only_that_dataset(tmp_path):
    root = _folder_dataset(tmp_path / "images")
    config = {"shots": [1], "datasets": {"pets": {"source": "imagefolder", "root": str(root)},
                                         "mini": {"source": "miniworld"}}}
    work = tmp_path / "run"
    run_snakemake(work, config, "dataset_pets", "--until", "sample_fewshot")
    assert (work / "results/pets/fewshot/seed0.csv").exists()
    assert not (work / "results/mini").exists()


def test_config_errors_stop_before_any_job(tmp_path):
    config = {"datasets": {"pets": {"source": "imagefolder", "root": "/nowhere"}}, "dream": {"rnak": 4}}
    result = run_snakemake(tmp_path / "run", config, check=False)
    assert result.returncode != 0
    assert "unknown config key 'dream.rnak'" in result.stdout + result.stderr
    assert not (tmp_path / "run" / "results").exists()
