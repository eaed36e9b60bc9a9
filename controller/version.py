"""kvm-warden's version, as its installed package says."""

from __future__ import annotations


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as of

    try:
        return of("kvm-warden")
    except PackageNotFoundError:  # run from a source tree that was not installed
        return "unknown (not installed)"
