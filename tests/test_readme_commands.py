"""Every command that README.md's bash blocks and the config comments show runs as written.

`snakemake` commands run as dry runs (`-n`), `make` commands as `make -n`, from a scratch copy of the
repository whose configs point their dataset roots at fabricated benchmarks. Any other program fails
until this file learns to check it.
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
from shown_commands import Shown, bash_block_commands, comment_commands

REPO = Path(__file__).resolve().parents[1]
CONFIG_FILES = ["config.yaml", *sorted(f"configs/{p.name}" for p in (REPO / "configs").glob("*.yaml"))]
COMMENTED_FILES = [*CONFIG_FILES, *sorted(f"profiles/{p.parent.name}/config.yaml"
                                          for p in (REPO / "profiles").glob("*/config.yaml"))]
# Left out of the scratch copy: outputs and state; the configs are written with their roots rewritten.
NOT_COPIED = {".git", ".snakemake", ".pytest_cache", ".venv", "results", "logs", "report.html", "report.zip",
              "benchmarks/runs", "configs", "config.yaml"}


def shown_commands() -> dict[tuple[str, ...], list[str]]:
    """Each distinct command and every place that shows it."""
    shown = bash_block_commands((REPO / "README.md").read_text(encoding="utf-8"), "README.md")
    for name in COMMENTED_FILES:
        shown += comment_commands((REPO / name).read_text(encoding="utf-8"), name)
    places: dict[tuple[str, ...], list[str]] = {}
    for command in shown:
        places.setdefault(command.argv, []).append(command.where)
    return places


SHOWN = shown_commands()


def _left_out(folder: str, names: list[str]) -> set[str]:
    relative = Path(folder).relative_to(REPO)
    return {name for name in names if name == "__pycache__" or (relative / name).as_posix() in NOT_COPIED}


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """The repository as a user has it, with every configured dataset root at fabricated benchmarks."""
    scratch = tmp_path_factory.mktemp("checkout") / "repo"
    benchmarks = coop_root(tmp_path_factory.mktemp("coop"))
    shutil.copytree(REPO, scratch, symlinks=True, ignore=_left_out)
    (scratch / "configs").mkdir()
    for name in CONFIG_FILES:
        config = yaml.safe_load((REPO / name).read_text(encoding="utf-8"))
        for dataset_name, dataset in config.get("datasets", {}).items():
            if "root" in dataset:
                assert dataset["source"] == "coop", f"{name}: no fabricated data for source of {dataset_name}"
                dataset["root"] = str(benchmarks)
        (scratch / name).write_text(yaml.safe_dump(config), encoding="utf-8")
    return scratch


def dry_run(argv: tuple[str, ...]) -> list[str]:
    program, *arguments = argv
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
