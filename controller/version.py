"""kvm-warden's version, as its installed package says."""

from __future__ import annotations


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as of

    try:
        return of("kvm-warden")
    except PackageNotFoundError:  # run from a source tree that was not installed
        return "unknown (not installed)"


def debian_release() -> str:
    """The Debian release this runs on ("12", "13"; "" elsewhere): the package built for it
    says the same in its version (`X~debN`)."""
    try:
        with open("/etc/debian_version", encoding="ascii") as f:
            head = f.read().strip().split(".")[0]
    except OSError:
        return ""
    return head if head.isdigit() else ""


def describe() -> str:
    """`kvm-warden --version`: the version, the Debian release and the Python it runs on."""
    import platform

    release = debian_release()
    on = f"Debian {release}, " if release else ""
    return f"{version()} ({on}Python {platform.python_version()})"
