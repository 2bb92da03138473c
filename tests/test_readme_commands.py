"""Every command that the bash blocks of README.md and docs/*.md and the config comments show runs as written.

`snakemake` commands run as dry runs (`-n`), `make` commands as `make -n`, from a scratch copy of the
repository whose configs point their dataset roots at fabricated datasets. A YAML example whose first line
names a file the repository does not have (`# my_dataset.yaml`) is written into that copy, so the commands
that read it are checked against it. Any other program fails until this file learns to check it.
"""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from coop_layout import coop_root
from coop_layout import write_image
from shown_commands import Shown, bash_block_commands, comment_commands, example_files

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", *sorted(f"docs/{p.name}" for p in (REPO / "docs").glob("*.md"))]
CONFIG_FILES = ["config.yaml", *sorted(f"configs/{p.name}" for p in (REPO / "configs").glob("*.yaml"))]
COMMENTED_FILES = [*CONFIG_FILES, *sorted(f"profiles/{p.parent.name}/config.yaml"
                                          for p in (REPO / "profiles").glob("*/config.yaml"))]
# Left out of the scratch copy: outputs and state; the configs are written with their roots rewritten.
NOT_COPIED = {".git", ".snakemake", ".pytest_cache", ".venv", "results", "logs", "report.html", "report.zip",
              "benchmarks/runs", "configs", "config.yaml"}


def shown_commands() -> dict[tuple[str, ...], list[str]]:
    """Each distinct command and every place that shows it."""
    shown = []
    for name in DOCUMENTS:
        shown += bash_block_commands((REPO / name).read_text(encoding="utf-8"), name)
    for name in COMMENTED_FILES:
        shown += comment_commands((REPO / name).read_text(encoding="utf-8"), name)
    places: dict[tuple[str, ...], list[str]] = {}
    for command in shown:
        places.setdefault(command.argv, []).append(command.where)
    return places


SHOWN = shown_commands()
# The config examples that the documents show as new files: file name -> (YAML text, where it is shown).
EXAMPLES = {name: example for document in DOCUMENTS
            for name, example in example_files((REPO / document).read_text(encoding="utf-8"), document).items()
            if not (REPO / name).exists()}


def imagefolder_root(root: Path) -> Path:
    """Three classes of four images each, in the plain <class>/<image> layout."""
    for label in range(3):
        for i in range(4):
            write_image(root / f"class_{label}" / f"{i}.png", label * 40)
    return root


def with_fabricated_roots(config: dict, name: str, benchmarks: Path, images: Path) -> dict:
    for dataset_name, dataset in config.get("datasets", {}).items():
        if "root" in dataset:
            assert dataset["source"] in ("coop", "imagefolder"), \
                f"{name}: no fabricated data for source of {dataset_name}"
            dataset["root"] = str(benchmarks if dataset["source"] == "coop" else images)
    return config


def _left_out(folder: str, names: list[str]) -> set[str]:
    relative = Path(folder).relative_to(REPO)
    return {name for name in names if name == "__pycache__" or (relative / name).as_posix() in NOT_COPIED}


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """The repository as a user has it, with every configured dataset root at fabricated data, and the config
    examples that the documents show written where they say."""
    scratch = tmp_path_factory.mktemp("checkout") / "repo"
    benchmarks = coop_root(tmp_path_factory.mktemp("coop"))
    images = imagefolder_root(tmp_path_factory.mktemp("imagefolder"))
    shutil.copytree(REPO, scratch, symlinks=True, ignore=_left_out)
    (scratch / "configs").mkdir()
    configs = {name: ((REPO / name).read_text(encoding="utf-8"), name) for name in CONFIG_FILES}
    for name, (text, where) in {**configs, **EXAMPLES}.items():
        config = with_fabricated_roots(yaml.safe_load(text), where, benchmarks, images)
        (scratch / name).parent.mkdir(parents=True, exist_ok=True)
        (scratch / name).write_text(yaml.safe_dump(config), encoding="utf-8")
    return scratch


WARM_START = ("-m", "datadream_core.warm_start", "--run")


def dry_run(argv: tuple[str, ...]) -> list[str]:
    program, *arguments = argv
    if Path(program).name == "python" and tuple(arguments[:3]) == WARM_START:
        # `make run`'s form: the command it wraps, warm; checked as that command, which plans the same jobs
        inner = arguments[3:]
        return dry_run((Path(inner[0]).name, *inner[1:]))
    if program == "make":
        return ["make", "-n", *arguments]
    if program == "snakemake":
        if "--report" in arguments:
            # --report ignores -n and needs the finished results; the dry run of the same command without it
            # plans everything the report is built from.
            at = arguments.index("--report")
            arguments = arguments[:at] + arguments[at + 2:]
        return [sys.executable, "-m", "snakemake", "-n", *arguments]
    pytest.fail(f"`{shlex.join(argv)}` runs {program}, which this test cannot check yet: teach dry_run() to check "
                f"it, or say here why it is skipped")


def check_runs(argv: tuple[str, ...], places: list[str], cwd: Path) -> None:
    command = dry_run(argv)
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        pytest.fail(f"{', '.join(places)}: `{shlex.join(argv)}` does not run (`{shlex.join(command)}` exited "
                    f"{done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")


@pytest.mark.e2e
@pytest.mark.parametrize("argv", list(SHOWN), ids=[", ".join(places) for places in SHOWN.values()])
def test_shown_command_runs(argv, checkout):
    check_runs(argv, SHOWN[argv], checkout)


def test_every_place_that_shows_commands_is_read():
    programs_by_file = {}
    for argv, places in SHOWN.items():
        for place in places:
            programs_by_file.setdefault(place.split(":")[0], set()).add(argv[0])
    assert {"snakemake", "make"} <= programs_by_file["README.md"]
    assert "snakemake" in programs_by_file["profiles/slurm/config.yaml"]
    assert ("snakemake", "dataset_eurosat", "--profile", "slurm", "--configfile", "configs/paper.yaml") in SHOWN
    # every docs page that has a bash block is read, and README's own-dataset example is written and used
    pages_with_blocks = {f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")
                         if "```bash" in p.read_text(encoding="utf-8")}
    assert pages_with_blocks and pages_with_blocks <= set(programs_by_file)
    assert "my_dataset.yaml" in EXAMPLES
    assert any("my_dataset.yaml" in argv for argv in SHOWN)


def test_example_files_are_yaml_blocks_that_name_a_file():
    markdown = ("```yaml\n# mine.yaml\nseeds: [0]\n```\n```yaml\nseeds: [1]\n```\n"
                "```yaml\n# a comment, not a file\nshots: [2]\n```\n")
    assert example_files(markdown, "X.md") == {"mine.yaml": ("# mine.yaml\nseeds: [0]\n", "X.md:2")}


def test_extraction_follows_fences_continuations_and_comments():
    markdown = ("Run `snakemake inline` here.\n```yaml\nkey: 1  # `snakemake in-yaml`\n```\n```bash\n"
                "# a comment line\nsnakemake all \\\n  --cores 2   # trailing comment\n\nmake run\n```\n")
    assert bash_block_commands(markdown, "X.md") == [Shown(("snakemake", "all", "--cores", "2"), "X.md:7"),
                                                     Shown(("make", "run"), "X.md:10")]
    config = "seeds: [0]  # see `snakemake loras --cores 2` and `seeds`\n# or `make test`\n"
    assert comment_commands(config, "c.yaml") == [Shown(("snakemake", "loras", "--cores", "2"), "c.yaml:1"),
                                                 Shown(("make", "test"), "c.yaml:2")]


@pytest.mark.e2e
def test_a_target_after_configfile_fails_naming_the_line(checkout):
    # the mistake of issue 21: --configfile takes several files, so the target is read as a config file
    with pytest.raises(pytest.fail.Exception, match=r"README.md:99: `snakemake --configfile configs/smoke.yaml "
                                                    r"loras` does not run"):
        check_runs(("snakemake", "--configfile", "configs/smoke.yaml", "loras"), ["README.md:99"], checkout)
