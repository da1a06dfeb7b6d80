"""Signal names and numbers without importing the ``signal`` module (it loads enum)."""

from __future__ import annotations

from flatstack.errors import FlatstackError

SIGNALS: dict[str, int] = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7,
    "FPE": 8, "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14,
    "TERM": 15, "STKFLT": 16, "CHLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21,
    "TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28,
    "IO": 29, "POLL": 29, "PWR": 30, "SYS": 31,
}
SIGRTMIN = 34
SIGRTMAX = 64
SIGKILL = 9
SIGTERM = 15


def parse_signal(text: str) -> int:
    """Parse ``9``, ``KILL``, ``SIGKILL``, ``sigkill`` or ``RTMIN+3`` into a number."""
    value = text.strip()
    if value.isdigit():
        number = int(value)
        if 0 < number <= SIGRTMAX:
            return number
        raise FlatstackError(f"invalid signal {text!r}: out of range 1-{SIGRTMAX}")
    name = value.upper()
    if name.startswith("SIG"):
        name = name[3:]
    if name in SIGNALS:
        return SIGNALS[name]
    for base, number in (("RTMIN", SIGRTMIN), ("RTMAX", SIGRTMAX)):
        if name == base:
            return number
        if name.startswith(base) and name[len(base)] in "+-" and name[len(base) + 1:].isdigit():
            offset = int(name[len(base) + 1:])
            number = number + offset if name[len(base)] == "+" else number - offset
            if SIGRTMIN <= number <= SIGRTMAX:
                return number
    raise FlatstackError(f"invalid signal {text!r}")
