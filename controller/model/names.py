"""Validation of every name that can reach a command line or a CIB id.

Pacemaker ids are XML IDs (NCName: a letter or '_' first, then letters, digits, '_', '-', '.').
Node names are host names. libvirt domain names may be freer, but we only accept a safe subset
so that no name can look like an option (a leading '-') or carry a path or a newline.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from controller.model.errors import WardenError

RESOURCE_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
NODE_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,62})$")
DOMAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$")


class InvalidName(WardenError, ValueError):
    """A name that must not reach a command line or a CIB id (a ValueError too, so that the
    desired-state validators report it with file:line like any other field error)."""


def check(kind: str, value: str, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidName(f"invalid {kind} name: {value!r}")
    return value


def resource_id(value: str) -> str:
    return check("resource", value, RESOURCE_ID)


def node_name(value: str) -> str:
    return check("node", value, NODE_NAME)


def domain_name(value: str) -> str:
    return check("domain", value, DOMAIN_NAME)


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """" (did you mean X?)" for the closest candidate by edit distance, or ""."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


VM_PREFIX = "vm-"  # the `vm-NAME` convention: a VM's resource id when the file gives none


def conventional_resource(name: str) -> str:
    """The resource id the `vm-NAME` convention gives a VM the file names without `resource:`."""
    return VM_PREFIX + name


def conventional_name(rid: str) -> str:
    """The VM name the `vm-NAME` convention gives a resource the file does not name: its id
    without the `vm-` prefix (or the id itself)."""
    return rid.removeprefix(VM_PREFIX)
