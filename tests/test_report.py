"""Report: tables from hand-made metrics.json files, figures and grids as PNGs."""

import json

import numpy as np
import pytest
from PIL import Image

from datadream_core.data.table import ClassRow
from datadream_core.io import read_csv, write_csv, write_json
from datadream_core.report.figures import (mean_per_class_fid, nsynth_series, plot_accuracy_vs_nsynth,
                                           plot_accuracy_vs_shots, plot_fid_histograms)
from datadream_core.report.grids import manifest_samples, pick_classes, real_shots, sample_grid
from datadream_core.report.search import write_search_grid
from datadream_core.report.tables import Run, comparison_table, fid_table, provenance, read_runs, table1, write_table

DATASETS, GENERATORS, SEEDS = ["alpha", "beta"], ["sd", "datadream_dset"], [0, 1, 2]
ALL_KINDS = ["zeroshot", "real", "synth", "real+synth"]
# (dataset, trainset) -> accuracy per seed; None is a run that does not exist
ACCURACY = {
    ("alpha", "zeroshot"): [50, 50, 50], ("beta", "zeroshot"): [40, 40, 40],
    ("alpha", "synth_sd"): [55, 56, 57], ("beta", "synth_sd"): [45, 48, None],
    ("alpha", "synth_datadream_dset"): [60, 62, 64], ("beta", "synth_datadream_dset"): [50, 50, 53],
    ("alpha", "real"): [70, 71, 72], ("beta", "real"): [60, 60, 60],
    ("alpha", "real+synth_sd"): [None, None, None], ("beta", "real+synth_sd"): [61, 62, 63],
    ("alpha", "real+synth_datadream_dset"): [75, 76, 77], ("beta", "real+synth_datadream_dset"): [66, 65, 64],
}


def _metrics(root, dataset, trainset, shots, seed, n_synth, accuracy):
    path = root / f"results/{dataset}/clf/{trainset}/k{shots}_seed{seed}/n{n_synth}/metrics.json"
    write_json(path, {"accuracy": accuracy, "per_class_accuracy": [accuracy], "selected_epoch": 3, "dataset": dataset,
                      "trainset": trainset, "shots": shots, "seed": seed, "n_synth": n_synth})
    return path


@pytest.fixture
def runs(tmp_path):
    paths = []
    for (dataset, trainset), values in ACCURACY.items():
        n_synth = 0 if trainset in ("zeroshot", "real") else 500
        paths += [_metrics(tmp_path, dataset, trainset, 16, seed, n_synth, value)
                  for seed, value in zip(SEEDS, values) if value is not None]
    # runs outside the table's seeds and shots must not leak in
    paths.append(_metrics(tmp_path, "alpha", "zeroshot", 16, 7, 0, 0.0))
    paths.append(_metrics(tmp_path, "alpha", "real", 4, 0, 0, 0.0))
    return read_runs(paths)


def _cells(table):
    return {(row.section, row.label): [cell.text() for cell in row.cells] for row in table.rows}


def test_table1_cells_are_mean_and_std_over_seeds_with_empty_cells_for_missing_runs(runs):
    table = table1(runs, DATASETS, GENERATORS, ALL_KINDS, SEEDS, 16, 500)
    assert table.columns == ["alpha", "beta", "Avg"]
    assert _cells(table) == {
        ("Zero-shot", "CLIP zero-shot"): ["50.0 ± 0.0", "40.0 ± 0.0", "45.0 ± 0.0"],
        ("Synthetic only (S)", "Stable Diffusion"): ["56.0 ± 1.0", "46.5 ± 2.1 (2/3 seeds)", "51.0 ± 1.4 (2/3 seeds)"],
        ("Synthetic only (S)", "DataDream_dset"): ["62.0 ± 2.0", "51.0 ± 1.7", "56.5 ± 1.8"],
        ("Real + synthetic (R+S)", "Real-finetune (R only)"): ["71.0 ± 1.0", "60.0 ± 0.0", "65.5 ± 0.5"],
        ("Real + synthetic (R+S)", "Stable Diffusion"): ["", "62.0 ± 1.0", ""],
        ("Real + synthetic (R+S)", "DataDream_dset"): ["76.0 ± 1.0", "65.0 ± 1.0", "70.5 ± 0.0"],
    }
    only_synth = table1(runs, DATASETS, GENERATORS, ["synth"], SEEDS, 16, 500)
    assert [row.section for row in only_synth.rows] == ["Synthetic only (S)"] * 2
    one_dataset = table1(runs, ["alpha"], GENERATORS, ALL_KINDS, SEEDS, 16, 500)
    assert one_dataset.columns == ["alpha"] and all(len(row.cells) == 1 for row in one_dataset.rows)


def test_tables_are_written_as_csv_markdown_and_html(runs, tmp_path):
    table = table1(runs, DATASETS, GENERATORS, ALL_KINDS, SEEDS, 16, 500)
    out = tmp_path / "summary"
    write_table(table, out / "t.csv", out / "t.md", out / "t.html")
    rows = read_csv(out / "t.csv")
    assert list(rows[0]) == ["setting", "method", "alpha", "beta", "Avg"]
    missing = next(row for row in rows if row["setting"].startswith("Real +") and row["method"] == "Stable Diffusion")
    assert (missing["alpha"], missing["Avg"]) == ("", "")
    markdown = (out / "t.md").read_text()
    assert "| Synthetic only (S) | Stable Diffusion | 56.0 ± 1.0 |" in markdown
    assert "|  | DataDream_dset | **62.0 ± 2.0** | **51.0 ± 1.7** | **56.5 ± 1.8** |" in markdown  # section named once
    page = (out / "t.html").read_text()
    assert page.count("<tr>") == 1 + 6 and '<td class="num best">76.0 ± 1.0</td>' in page
    assert sorted(p.name for p in out.iterdir()) == ["t.csv", "t.html", "t.md"]  # no temporary files left


def test_comparison_table_pairs_gains_by_seed_and_shows_the_paper_for_coop_datasets(runs):
    table = comparison_table(runs, DATASETS, GENERATORS, SEEDS, 16, 500, {"alpha": "eurosat", "beta": None})
    cells = _cells(table)
    gain = "Gain over Real-finetune (paired by seed)"
    # beta's paired gains are 6, 5, 4: mean 5, standard error 1/sqrt(3), t(0.975, 2 df) = 4.303.
    assert cells[(gain, "DataDream_dset")] == ["+5.0 [+5.0, +5.0]*", "+5.0 [+2.5, +7.5]*", "+5.0 [+3.8, +6.2]*"]
    assert cells[(gain, "Stable Diffusion")] == ["", "+2.0 [-0.5, +4.5]", ""]
    against_sd = "Difference from unadapted SD (paired by seed)"
    assert cells[(against_sd, "DataDream_dset")] == ["", "+3.0 [-2.0, +8.0]", ""]  # beta: 5, 3, 1
    assert "Against Real-finetune, the seeds tell apart: DataDream_dset (alpha, +5.0), DataDream_dset (beta, +5.0);" \
           " within noise: Stable Diffusion (beta)." in table.note
    assert "Against unadapted SD, the seeds tell apart: none; within noise: DataDream_dset (beta)." in table.note
    paper = [key for key in cells if key[0].startswith("Paper")]
    assert cells[next(k for k in paper if k[1] == "DataDream_dset (R+S)")] == ["93.4", "", ""]
    without_coop = comparison_table(runs, DATASETS, GENERATORS, SEEDS, 16, 500, {"alpha": None, "beta": None})
    assert not any(row.section.startswith("Paper") for row in without_coop.rows)


def test_comparison_table_shows_our_coop_and_vpt_beside_the_papers(tmp_path, runs):
    extra = [_metrics(tmp_path, dataset, f"real/{method}", 16, seed, 0, base + seed)
             for dataset in DATASETS for method, base in (("coop", 65.0), ("vpt", 60.0)) for seed in SEEDS]
    runs = runs + read_runs(extra)
    table = comparison_table(runs, DATASETS, GENERATORS, SEEDS, 16, 500, {"alpha": "eurosat", "beta": None},
                             ["lora", "coop", "vpt"])
    ours = [row.label for row in table.rows if row.section.startswith("This run")]
    assert ours[:3] == ["VPT (R only)", "CoOp (R only)", "Real-finetune (R only)"]
    cells = _cells(table)
    section = next(row.section for row in table.rows if row.section.startswith("This run"))
    assert cells[(section, "CoOp (R only)")] == ["66.0 ± 1.0", "66.0 ± 1.0", "66.0 ± 1.0"]
    assert cells[(section, "VPT (R only)")] == ["61.0 ± 1.0", "61.0 ± 1.0", "61.0 ± 1.0"]
    paper = next(row.section for row in table.rows if row.section.startswith("Paper"))
    assert (cells[(paper, "CoOp (R)")], cells[(paper, "VPT (R)")]) == (["87.1", "", ""], ["92.3", "", ""])
    lora_only = comparison_table(runs, DATASETS, GENERATORS, SEEDS, 16, 500, {"alpha": None, "beta": None})
    assert "CoOp (R only)" not in [row.label for row in lora_only.rows]


def test_provenance_compares_each_method_with_itself():
    """CoOp and VPT resolve their own settings: their digests differ from LoRA's without any cell being stale."""
    def run(trainset, settings):
        return Run("alpha", trainset, 16, 0, 0, 50.0, {"settings_digest": settings, "model_identity": "m",
                                                        "data_identity": "d"})

    runs = [run("real", "lora1"), run("synth_sd", "lora1"), run("real/coop", "coop1"), run("real/vpt", "vpt1"),
            run("zeroshot", "zs")]
    lines, warnings = provenance(runs, ["alpha"])
    assert warnings == [] and lines[0].startswith("alpha: trained classifier settings lora1; trained CLIP m;")
    assert "trained coop classifier settings coop1" in lines[0] and lines[0].endswith("zero-shot data d")
    _, warnings = provenance(runs + [run("real/coop", "coop2")], ["alpha"])
    assert warnings == ["alpha: trained coop cells come from 2 different classifier settings (coop1, coop2); rerun "
                        "the workflow to remake the stale ones"]


def test_fid_table_prefers_the_lowest(tmp_path):
    summaries = [{"dataset": d, "generator": g, "shots": 16, "seed": s, "features": "clip",
                  "mean_per_class_fid": base + s, "dataset_fid": None if (d, s) == ("beta", 0) else base / 2}
                 for d in DATASETS for g, base in (("sd", 20.0), ("datadream_dset", 10.0)) for s in SEEDS]
    table = fid_table(summaries, DATASETS, GENERATORS, SEEDS, 16)
    cells = _cells(table)
    assert cells[("Mean per-class FID", "DataDream_dset")] == ["11.00 ± 1.00", "11.00 ± 1.00"]
    assert cells[("Dataset FID (all classes pooled)", "Stable Diffusion")] == ["10.00 ± 0.00", "10.00 ± 0.00 (2/3 seeds)"]
    write_table(table, tmp_path / "f.csv", tmp_path / "f.md", tmp_path / "f.html")
    markdown = (tmp_path / "f.md").read_text()
    assert "| Mean per-class FID | Stable Diffusion | 21.00 ± 1.00 |" in markdown
    assert "|  | DataDream_dset | **11.00 ± 1.00** |" in markdown


def test_a_metrics_file_without_a_key_is_named(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"accuracy": 1.0}))
    with pytest.raises(ValueError, match=r"metrics.json has no key 'dataset'"):
        read_runs([path])


def _searched_run(root, trainset, seed, val, test):
    """A run filed by select_search_point from hand-made points: {point: accuracy} for val and test."""
    from datadream_core.classify.search import select_search_point

    run = root / f"results/alpha/clf/{trainset}/k16_seed{seed}/n0"
    metrics, per_class = {}, {}
    for name in val:
        learning_rate, weight_decay = (float(part[2:]) for part in name.split("_"))
        write_json(run / f"search/{name}/metrics.json", {
            "dataset": "alpha", "trainset": trainset, "shots": 16, "seed": seed, "n_synth": 0, "accuracy": test[name],
            "selected_val_accuracy": val[name], "selection": "val",
            "classify": {"learning_rate": learning_rate, "epochs": 20, "weight_decay": weight_decay}})
        write_csv(run / f"search/{name}/per_class.csv", ("class_index", "accuracy"), [(0, test[name])])
        metrics[name], per_class[name] = run / f"search/{name}/metrics.json", run / f"search/{name}/per_class.csv"
    select_search_point(metrics, per_class, run / "metrics.json", run / "per_class.csv")
    return run / "metrics.json"


def test_search_grid_lists_every_point_and_marks_the_best_validation_one(tmp_path):
    points = ["lr0.001_wd0.0", "lr0.001_wd0.0001", "lr0.01_wd0.0", "lr0.01_wd0.0001"]
    coop = _searched_run(tmp_path, "real/coop", 0, dict(zip(points, [40.0, 75.0, 60.0, 50.0])),
                         dict(zip(points, [90.0, 61.0, 70.0, 99.0])))
    # a stale run that lacks a point shows an empty cell, never a number
    lora = _searched_run(tmp_path, "real", 1, dict(zip(points[:3], [10.0, 20.0, 30.0])),
                         dict(zip(points[:3], [11.0, 21.0, 31.0])))
    out = tmp_path / "summary"
    runs = write_search_grid([coop, lora], points, out / "search_grid.csv", out / "search_grid.html")
    assert [(run.method, run.trainset, run.seed, run.choice) for run in runs] == [
        ("coop", "real", 0, "lr0.001_wd0.0001"), ("lora", "real", 1, "lr0.01_wd0.0")]
    rows = read_csv(out / "search_grid.csv")
    assert [(row["method"], row["point"], row["learning_rate"], row["weight_decay"], row["val_accuracy"],
             row["test_accuracy"], row["chosen"]) for row in rows[:4]] == [
        ("coop", "lr0.001_wd0.0", "0.001", "0.0", "40.0", "90.0", "False"),
        ("coop", "lr0.001_wd0.0001", "0.001", "0.0001", "75.0", "61.0", "True"),  # best val, not best test
        ("coop", "lr0.01_wd0.0", "0.01", "0.0", "60.0", "70.0", "False"),
        ("coop", "lr0.01_wd0.0001", "0.01", "0.0001", "50.0", "99.0", "False")]
    assert len(rows) == 7 and [row["chosen"] for row in rows[4:]] == ["False", "False", "True"]
    page = (out / "search_grid.html").read_text()
    assert "".join(f"<th>{name}</th>" for name in points) in page
    assert page.count(" ✓</td>") == 2 and '<td class="num best">75.0 / 61.0 ✓</td>' in page
    assert '<td class="num best">30.0 / 31.0 ✓</td><td class="num"></td></tr>' in page
    with pytest.raises(ValueError, match=r"real/k16_seed1/n0/search/lr0.01_wd0.0/metrics.json lacks \['search', "
                                         r"'search_choice'\]: not a run filed by select_search_point"):
        write_search_grid([tmp_path / "results/alpha/clf/real/k16_seed1/n0/search/lr0.01_wd0.0/metrics.json"], points,
                          out / "x.csv", out / "x.html")


def _assert_png(path, min_size=(200, 150)):
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= min_size[0] and image.height >= min_size[1]
        return image.size


def test_fid_histogram_png_from_per_class_csvs(tmp_path):
    rng = np.random.default_rng(0)
    per_class = {}
    for generator, centre in (("sd", 60.0), ("datadream_dset", 30.0)):
        paths = []
        for seed in SEEDS:
            path = tmp_path / f"{generator}_{seed}.csv"
            rows = [(c, f"class {c}", "" if c == 0 else f"{centre + rng.normal(0, 5):.3f}", 20, 20) for c in range(12)]
            write_csv(path, ("class_index", "name", "fid", "n_synth", "n_real"), rows)
            paths.append(path)
        per_class[generator] = mean_per_class_fid(paths)
    assert sorted(per_class["sd"]) == list(range(1, 12))  # class 0 never had an FID
    assert np.mean(list(per_class["datadream_dset"].values())) == pytest.approx(30.0, abs=3)
    plot_fid_histograms(per_class, "alpha", tmp_path / "fig/hist.png", subtitle="16 shots")
    _assert_png(tmp_path / "fig/hist.png")
    plot_fid_histograms({"sd": {}}, "empty", tmp_path / "fig/empty.png")
    _assert_png(tmp_path / "fig/empty.png")


def test_scaling_figures_from_hand_made_runs(tmp_path):
    paths = []
    for seed in SEEDS:
        for dataset in DATASETS:
            paths.append(_metrics(tmp_path, dataset, "real", 16, seed, 0, 70.0 + seed))
            paths.append(_metrics(tmp_path, dataset, "zeroshot", 16, seed, 0, 50.0))
            for n in (100, 500):
                paths.append(_metrics(tmp_path, dataset, "synth_sd", 16, seed, n, n / 10 + seed))
                paths.append(_metrics(tmp_path, dataset, "real+synth_sd", 16, seed, n, 70 + n / 100))
            for shots in (1, 4):
                paths.append(_metrics(tmp_path, dataset, "real", shots, seed, 0, 40.0 + shots))
                paths.append(_metrics(tmp_path, dataset, "real+synth_sd", shots, seed, 500, 45.0 + shots))
    runs = read_runs(paths)
    series = {s.label: s for s in nsynth_series(runs, "alpha", ["sd"], ALL_KINDS, SEEDS, 16, [100, 200, 500])}
    assert series["Stable Diffusion (S)"].points == {100: [10.0, 11.0, 12.0], 500: [50.0, 51.0, 52.0]}  # no n=200 runs
    assert series["Real-finetune (R)"].horizontal and series["Real-finetune (R)"].points == {0: [70.0, 71.0, 72.0]}
    plot_accuracy_vs_nsynth(runs, DATASETS, ["sd"], ALL_KINDS, SEEDS, 16, [100, 500], tmp_path / "n.png")
    plot_accuracy_vs_shots(runs, DATASETS, ["sd"], SEEDS, [1, 4, 16], 500, tmp_path / "k.png")
    assert _assert_png(tmp_path / "n.png")[0] > _assert_png(tmp_path / "k.png", (100, 100))[0] / 2


def _grid_inputs(tmp_path, generators):
    classes = [ClassRow(i, name, name, f"a photo of a {name}") for i, name in enumerate(["cat", "dog", "a very long class name indeed, with words"])]
    fewshot = []
    for c in range(3):
        for rank in range(4):
            path = tmp_path / f"real/{c}_{rank}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40, 30), (60 * c, 50 * rank, 100)).save(path)
            fewshot.append((str(path), c, rank))
    write_csv(tmp_path / "fewshot.csv", ("path", "class_index", "rank"), fewshot)
    generated = {}
    for g in generators:
        manifest = []
        for c in range(3):
            for i in reversed(range(5)):
                path = tmp_path / f"{g}/{c}_{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (32, 32), (20 * i, 60 * c, 200)).save(path)
                manifest.append((str(path), c, i, 0, "p"))
        write_csv(tmp_path / f"{g}.csv", ("path", "class_index", "image_index", "seed", "prompt"), manifest)
        generated[g] = manifest_samples(tmp_path / f"{g}.csv")
    return classes, generated


def test_sample_grid_puts_real_shots_beside_every_generator(tmp_path):
    classes, generated = _grid_inputs(tmp_path, GENERATORS)
    real = real_shots(tmp_path / "fewshot.csv", 2)
    assert [len(real[c]) for c in range(3)] == [2, 2, 2] and real[1][0].endswith("1_0.png")
    assert generated["sd"][2][:2] == [str(tmp_path / "sd/2_0.png"), str(tmp_path / "sd/2_1.png")]  # by image index
    sample_grid(classes, real, generated, tmp_path / "grids/two.png", "two generators", images_per_block=3)
    sample_grid(classes, real, {"sd": generated["sd"]}, tmp_path / "grids/one.png", "one generator", images_per_block=3)
    two, one = _assert_png(tmp_path / "grids/two.png"), _assert_png(tmp_path / "grids/one.png")
    assert two[0] > one[0] + 300 and two[1] == pytest.approx(one[1], rel=0.05)  # one more block, same rows


def test_pick_classes_spreads_over_the_class_list():
    classes = [ClassRow(i, f"c{i}", f"c{i}", "") for i in range(100)]
    picked = [c.index for c in pick_classes(classes, 5)]
    assert picked == [0, 25, 50, 74, 99]
    assert len(pick_classes(classes[:3], 5)) == 3
