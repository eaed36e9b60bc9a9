"""Data from the cluster printed for people: no control character reaches the terminal."""

from controller.app.text import for_terminal


def test_escape_sequences_are_shown_not_obeyed() -> None:
    assert for_terminal("vm-\x1b[2Jweb01\x07 \x9b31m") == "vm-\\x1b[2Jweb01\\x07 \\x9b31m"
    assert for_terminal("kvm1\tStarted\nkvm2") == "kvm1\tStarted\nkvm2"  # our own layout stays
    assert for_terminal("café → kvm2") == "café → kvm2"
