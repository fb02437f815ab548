"""NSE script arguments kept out of command lines and logs: rendered into a ``--script-args-file``.

nmap's ``--script-args`` puts its values on the command line, where every user of the scanner sees them
(``ps``), and into every report (``<nmaprun args=...>``) and log line that shows the command. scanfleet takes
script arguments as a mapping (role variable ``nmap_scan_script_args``), renders it here into the syntax that
nmap's ``nse_main.lua`` parses for ``--script-args-file`` (a table body: ``key=value`` fields separated by
newlines; strings in double quotes with ``\\`` and ``"`` escaped by a backslash; nested tables in braces),
and the scanner host gets it as a file that only root and the scanner group can read, removed when nmap ends.

Error messages name the argument, never its value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from scanfleet import ScanfleetError

VARIABLE = "nmap_scan_script_args"
# nmap -d prints the parsed script arguments ("Arguments parsed: ...") to its output, which is fetched.
DEBUG_OPTION = re.compile(r"^(-d+[0-9]*|--debug(=.*)?)$")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _value(value: Any, where: str) -> str:
    if isinstance(value, bool):  # before int: bool is an int
        return _quote("true" if value else "false")
    if isinstance(value, (int, float)):
        return _quote(str(value))
    if isinstance(value, str):
        if "\x00" in value:
            raise ScanfleetError(f"{where}: the value holds a NUL character, which nmap cannot read; remove it")
        return _quote(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(_field(key, item, where) for key, item in value.items()) + "}"
    if isinstance(value, Sequence):
        return "{" + ",".join(_value(item, f"{where}[{i}]") for i, item in enumerate(value)) + "}"
    raise ScanfleetError(f"{where}: a value of type {type(value).__name__} cannot be a script argument; give a "
                         "string, a number, a boolean, a list or a mapping")


def _field(key: Any, value: Any, where: str) -> str:
    if not isinstance(key, str) or not key.strip() or "\x00" in key:
        raise ScanfleetError(f"{where}: argument names must be non-empty strings (got {key!r}); name each one as "
                             "its script documents it, e.g. http.useragent or smbusername")
    return f"{_quote(key)}={_value(value, f'{where}.{key}')}"


def render(args: Mapping[str, Any] | None) -> str:
    """The ``--script-args-file`` text of ARGS, '' when there are none: one ``"name"="value"`` field per line,
    with no newline after the last one (nmap would read an empty field there)."""
    if args is None:
        return ""
    if not isinstance(args, Mapping):
        raise ScanfleetError(f"{VARIABLE} must be a mapping of script argument names to values, e.g. "
                             f'{{"http.useragent": "Mozilla/5.0"}} (got a {type(args).__name__})')
    return "\n".join(_field(key, value, VARIABLE) for key, value in args.items())


def names(args: Mapping[str, Any] | None) -> list[str]:
    """The argument names (sorted): what a run records of them (the values stay out of the run's state)."""
    render(args)
    return sorted(args or {})


def check_options(args: Mapping[str, Any] | None, options: Sequence[str]) -> None:
    """Refuse nmap options that would put script arguments on the command line or into nmap's output."""
    if any(str(option).startswith("--script-args") for option in options):
        raise ScanfleetError("nmap_scan_options/nmap_scan_options_extra contain --script-args or "
                             "--script-args-file: their values would be on the command line and in the report; "
                             f"give the arguments as {VARIABLE} (a mapping, kept out of logs and command lines)")
    if args and any(DEBUG_OPTION.match(str(option)) for option in options):
        raise ScanfleetError(f"nmap_scan_options/nmap_scan_options_extra contain -d with {VARIABLE} set: nmap's "
                             "debug output prints the script arguments into nmap.log, which is fetched; drop -d")
