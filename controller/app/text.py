"""Human output of data that came from the cluster or a file: control characters escaped.

VM names are validated, but finding messages, crm_mon's failure reasons, libvirt's state
reasons and audit records carry text kvm-warden did not write; an ESC in one must not drive
the operator's terminal. JSON output needs none of this (JSON escapes them itself).
"""

from __future__ import annotations

import re

# C0 and C1 controls and DEL, but newline and tab, which our own layout uses.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def for_terminal(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def one_line(text: str) -> str:
    """A table cell or a single line: every non-printable character (newline included) made
    visible, so data cannot break the layout either."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
