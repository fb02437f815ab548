"""NSE script arguments rendered into a --script-args-file (what nmap parses of it: tests/compile)."""

from __future__ import annotations

import pytest

from scanfleet import ScanfleetError, scriptargs


def test_render_quotes_every_name_and_value():
    text = scriptargs.render({"http.useragent": 'a "b", c=d {e}', "smbpassword": "back\\slash"})
    assert text.splitlines() == ['"http.useragent"="a \\"b\\", c=d {e}"', '"smbpassword"="back\\\\slash"']
    assert not text.endswith("\n")


def test_render_numbers_booleans_tables_and_lists():
    text = scriptargs.render({"n": 3, "x": 1.5, "yes": True, "no": False, "t": {"u": "v"}, "l": [1, "two"]})
    assert text.splitlines() == ['"n"="3"', '"x"="1.5"', '"yes"="true"', '"no"="false"', '"t"={"u"="v"}',
                                 '"l"={"1","two"}']


def test_render_keeps_newlines_inside_the_quotes():
    assert scriptargs.render({"motd": "line 1\nline 2"}) == '"motd"="line 1\nline 2"'


@pytest.mark.parametrize("empty", [None, {}])
def test_nothing_to_render(empty):
    assert scriptargs.render(empty) == ""
    assert scriptargs.names(empty) == []


def test_names_are_sorted_and_values_left_out():
    assert scriptargs.names({"smbpassword": "hunter2", "http.useragent": "x"}) == ["http.useragent", "smbpassword"]


@pytest.mark.parametrize(("args", "message"), [
    (["a=1"], "nmap_scan_script_args must be a mapping"),
    ("a=1", "nmap_scan_script_args must be a mapping"),
    ({"": "secret-value"}, "argument names must be non-empty strings"),
    ({7: "secret-value"}, "argument names must be non-empty strings"),
    ({"a": "secret\x00value"}, "nmap_scan_script_args.a: the value holds a NUL character"),
    ({"a": {"b": object()}}, "nmap_scan_script_args.a.b: a value of type object cannot be a script argument"),
    ({"a": ["ok", None]}, "nmap_scan_script_args.a[1]: a value of type NoneType"),
])
def test_bad_arguments_are_named_without_their_values(args, message):
    with pytest.raises(ScanfleetError) as err:
        scriptargs.render(args)
    assert message in str(err.value)
    assert "secret" not in str(err.value)


@pytest.mark.parametrize("options", [["--script-args", "user=x"], ["--script-args=user=x"],
                                     ["--script-args-file", "/tmp/a"]])
def test_script_args_on_the_command_line_are_refused(options):
    with pytest.raises(ScanfleetError, match="give the arguments as nmap_scan_script_args"):
        scriptargs.check_options({}, ["-sV", *options])


@pytest.mark.parametrize("debug", ["-d", "-dd", "-d3", "--debug", "--debug=2"])
def test_debug_is_refused_only_with_script_args(debug):
    scriptargs.check_options({}, ["-sV", debug])
    with pytest.raises(ScanfleetError, match="drop -d"):
        scriptargs.check_options({"smbpassword": "x"}, ["-sV", debug])


def test_other_options_pass():
    scriptargs.check_options({"a": "b"}, ["-sS", "-sV", "-D", "RND:3", "--datadir-x", "--script", "http-title"])
