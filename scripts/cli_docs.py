"""The package's man page and bash completion, generated from the CLI's own parser, so they
never disagree with `kvm-warden --help`.

    python scripts/cli_docs.py man > kvm-warden.1
    python scripts/cli_docs.py bash-completion > kvm-warden
    python scripts/cli_docs.py zsh-completion > _kvm-warden
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller.app.cli import build_parser  # noqa: E402 - after the path above
from controller.version import version  # noqa: E402


def _subcommands(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in p._actions:  # argparse keeps its sub-parsers here, and only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in p._actions if a.option_strings and a.dest != "help"]


def _help(a: argparse.Action) -> str:
    """The help text as --help prints it (argparse's %(default)s and friends expanded)."""
    text = a.help or ""
    try:
        return text % {**vars(a), "prog": "kvm-warden"}
    except (KeyError, TypeError, ValueError):
        return text


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace("-", "\\-").replace("\n.", "\n\\&.")


def man() -> str:
    p = build_parser()
    out = [f'.TH KVM-WARDEN 1 "" "kvm-warden {version()}" "User Commands"',
           ".SH NAME", "kvm\\-warden \\- " + _esc(p.description or "the kvm-warden controller"),
           ".SH SYNOPSIS", ".B kvm\\-warden", "COMMAND [OPTIONS]", ".SH COMMANDS"]
    for name, sub in _subcommands(p).items():
        out += [".SS " + _esc(name), _esc(sub.description or sub.format_usage().strip())]
        positionals = [a for a in sub._actions if not a.option_strings
                       and not isinstance(a, argparse._SubParsersAction)]
        for a in positionals:
            out += [".TP", f"\\fI{_esc(a.metavar or a.dest)}\\fR", _esc(_help(a))]
        for a in _options(sub):
            flags = ", ".join(a.option_strings)
            meta = "" if a.nargs == 0 else " " + (str(a.metavar) if a.metavar else a.dest.upper())
            default = "" if a.default in (None, False, argparse.SUPPRESS, []) \
                or "%(default)" in (a.help or "") else f" (default: {a.default})"
            out += [".TP", f"\\fB{_esc(flags)}\\fR{_esc(meta)}", _esc(_help(a) + default)]
    out += [".SH FILES", "/etc/default/kvm\\-warden, /etc/kvm\\-warden/, /var/lib/kvm\\-warden/",
            ".SH SEE ALSO", "crm_mon(8), crm_resource(8), pcs(8), virsh(1)"]
    return "\n".join(out) + "\n"


def bash_completion() -> str:
    subs = _subcommands(build_parser())
    cases = "\n".join(
        f"        {name}) opts=\"{' '.join(o for a in _options(sub) for o in a.option_strings)}\""
        " ;;" for name, sub in subs.items())
    return f"""# bash completion for kvm-warden (generated from its parser)
_kvm_warden() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} cmd=${{COMP_WORDS[1]}} opts
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "{' '.join(subs)} --version --help" -- "$cur"))
        return
    fi
    case "$cmd" in
{cases}
        *) opts="" ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$opts --help" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}}
complete -F _kvm_warden kvm-warden
"""


def _zsh(text: str) -> str:
    """Text inside a single-quoted _arguments spec: quotes, brackets and colons escaped."""
    return (" ".join(text.split()).replace("'", "'\\''").replace("[", "\\[")
            .replace("]", "\\]").replace(":", "\\:"))


def _zsh_spec(a: argparse.Action) -> str:
    repeat = "*" if isinstance(a, argparse._AppendAction) else ""
    flags = a.option_strings
    names = flags[0] if len(flags) == 1 else "{" + ",".join(flags) + "}"
    if len(flags) > 1:
        repeat = repeat or "(" + " ".join(flags) + ")"
    spec = f"{repeat}{names}[{_zsh(_help(a))}]"
    if a.nargs != 0:
        meta = _zsh(str(a.metavar or a.dest.upper()))
        what = "(" + " ".join(str(c) for c in a.choices) + ")" if a.choices else (
            "_files" if any(w in meta.upper() for w in ("FILE", "DIR", "PATH")) else " ")
        spec += f":{meta}:{what}"
    return f"'{spec}'"


def zsh_completion() -> str:
    p = build_parser()
    subs = _subcommands(p)
    helps = {c.dest: c.help or "" for a in p._actions if isinstance(a, argparse._SubParsersAction)
             for c in a._choices_actions}
    commands = "\n".join(f"    '{name}:{_zsh(helps.get(name, ''))}'" for name in subs)
    cases = "\n".join(
        f"    {name}) _arguments -s " + " ".join(_zsh_spec(a) for a in _options(sub))
        + " '*:file:_files' ;;" for name, sub in subs.items())
    return f"""#compdef kvm-warden
# zsh completion for kvm-warden (generated from its parser)
_kvm_warden() {{
  local -a commands
  commands=(
{commands}
  )
  if (( CURRENT == 2 )); then
    _describe -t commands 'kvm-warden command' commands
    return
  fi
  local cmd=$words[2]
  shift words
  (( CURRENT-- ))
  case $cmd in
{cases}
  esac
}}
_kvm_warden "$@"
"""


def main() -> int:
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "man":
        sys.stdout.write(man())
    elif what == "bash-completion":
        sys.stdout.write(bash_completion())
    elif what == "zsh-completion":
        sys.stdout.write(zsh_completion())
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
