import filecmp

import pytest

from datadream_core.data.fewshot import read_fewshot, sample_fewshot, write_fewshot
from datadream_core.data.sources import DatasetError
from datadream_core.data.table import ClassRow, SplitRow

CLASSES = [ClassRow(i, f"class {i}", f"c{i}", f"a photo of a class {i}") for i in range(4)]
SPLITS = [SplitRow(f"/img/c{c}/{i:03d}.png", c, "train") for c in range(4) for i in range(30)] + [
    SplitRow(f"/img/c{c}/test{i}.png", c, "test") for c in range(4) for i in range(5)]


@pytest.mark.parametrize("seed", [0, 1, 2, 7])
def test_fewshot_sets_are_nested(tmp_path, seed):
    path = tmp_path / f"seed{seed}.csv"
    write_fewshot(path, sample_fewshot(SPLITS, CLASSES, 16, seed))
    previous = set()
    for k in (1, 2, 4, 8, 16):
        current = {(s.path, s.class_index) for s in read_fewshot(path, k)}
        assert len(current) == 4 * k
        assert previous <= current
        previous = current
    assert all("test" not in s.path for s in read_fewshot(path))


def test_fewshot_is_byte_identical_on_rerun_and_differs_across_seeds(tmp_path):
    write_fewshot(tmp_path / "a.csv", sample_fewshot(SPLITS, CLASSES, 8, 3))
    write_fewshot(tmp_path / "b.csv", sample_fewshot(list(reversed(SPLITS)), CLASSES, 8, 3))
    write_fewshot(tmp_path / "c.csv", sample_fewshot(SPLITS, CLASSES, 8, 4))
    assert filecmp.cmp(tmp_path / "a.csv", tmp_path / "b.csv", shallow=False)
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()


def test_class_with_too_few_train_images_is_named():
    short = {f"/img/c2/{i:03d}.png" for i in range(9, 30)}
    splits = [row for row in SPLITS if row.path not in short]
    with pytest.raises(DatasetError, match=r"class 'class 2' \(index 2\) has 9 usable train images, fewer than the largest K = 16"):
        sample_fewshot(splits, CLASSES, 16, 0)
