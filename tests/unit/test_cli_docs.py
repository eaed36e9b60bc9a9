"""The man page and the shell completions the package ships (scripts/cli_docs.py), generated
from the CLI's own parser: every command and option is in them, as --help prints it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import cli_docs  # noqa: E402 - from scripts/, above

from controller.app.cli import build_parser  # noqa: E402


def every_option() -> dict[str, list[str]]:
    subs = cli_docs._subcommands(build_parser())
    return {name: [o for a in cli_docs._options(sub) for o in a.option_strings]
            for name, sub in subs.items()}


def test_the_man_page_has_every_option_with_its_default_expanded() -> None:
    page = cli_docs.man()
    assert "%(" not in page  # argparse's %(default)s is expanded, as --help shows it
    assert "(default 9810;" in page.replace("\\-", "-")
    for name, options in every_option().items():
        assert f".SS {name}" in page.replace("\\-", "-")
        for option in options:
            assert option in page.replace("\\-", "-"), (name, option)


def test_bash_completion_offers_every_option_of_every_command() -> None:
    text = cli_docs.bash_completion()
    for name, options in every_option().items():
        line = next(line for line in text.splitlines() if line.strip().startswith(f"{name})"))
        assert set(options) <= set(line.split('"')[1].split()), name


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is installed by make deps")
def test_zsh_completion_is_valid_zsh_and_offers_every_option(tmp_path: Path) -> None:
    path = tmp_path / "_kvm-warden"
    path.write_text(cli_docs.zsh_completion())
    check = subprocess.run(["zsh", "-n", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    text = path.read_text()
    assert text.startswith("#compdef kvm-warden\n")
    for name, options in every_option().items():
        line = next(line for line in text.splitlines() if line.strip().startswith(f"{name})"))
        for option in options:
            assert option in line, (name, option)
        assert f"    '{name}:" in text  # offered as a command, with its help
