"""Shell commands as documentation shows them: Markdown bash blocks and backticked spans in YAML comments; and
the config files that Markdown YAML blocks show."""

import re
import shlex
from dataclasses import dataclass


@dataclass(frozen=True)
class Shown:
    argv: tuple[str, ...]
    where: str  # file:line


def bash_block_commands(text: str, name: str) -> list[Shown]:
    """Commands in the ```bash fences of a Markdown text; `\\` continues a line, `#` starts a comment."""
    commands, fence, pending, start = [], None, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = stripped[3:].strip() if fence is None else None
            continue
        if fence != "bash":
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        argv = shlex.split(pending + stripped, comments=True)
        pending = ""
        if argv:
            commands.append(Shown(tuple(argv), f"{name}:{start}"))
    return commands


def comment_commands(text: str, name: str) -> list[Shown]:
    """`snakemake ...` and `make ...` spans in backticks inside the `#` comments of a YAML file."""
    commands = []
    for number, line in enumerate(text.splitlines(), 1):
        if "#" not in line:
            continue
        for span in re.findall(r"`([^`]+)`", line.split("#", 1)[1]):
            argv = shlex.split(span)
            if argv[0] in ("snakemake", "make"):
                commands.append(Shown(tuple(argv), f"{name}:{number}"))
    return commands


def example_files(text: str, name: str) -> dict[str, tuple[str, str]]:
    """The ```yaml fences of a Markdown text whose first line is a comment naming a YAML file (`# path.yaml`):
    path -> (the block's text, where it starts)."""
    examples, fence, lines, start = {}, None, [], 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            if fence is None:
                fence, lines, start = stripped[3:].strip(), [], number + 1
                continue
            named = re.fullmatch(r"#\s*(\S+\.ya?ml)", lines[0].strip()) if fence == "yaml" and lines else None
            if named:
                examples[named.group(1)] = ("".join(f"{kept}\n" for kept in lines), f"{name}:{start}")
            fence = None
            continue
        if fence is not None:
            lines.append(line)
    return examples
