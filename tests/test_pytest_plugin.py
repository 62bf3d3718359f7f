"""The pytest plugin's settings: marker, command-line options, ini, defaults."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def probe(pytester: pytest.Pytester, source: str, *args: str) -> str:
    pytester.makepyfile(test_probe=source)
    result = pytester.runpytest_inprocess("-s", "-q", "-p", "no:cacheprovider", *args)
    result.assert_outcomes(passed=1)
    line = next(x for x in result.outlines if x.startswith("NAMES"))
    return line


def test_defaults_are_three_tls_nodes_in_process(pytester: pytest.Pytester) -> None:
    line = probe(pytester, "def test_probe(ergo_cluster):\n" + _PRINT)
    assert line == "NAMES n1@127.0.0.1,n2@127.0.0.1,n3@127.0.0.1 TLS True PROC False"


_PRINT = (
    "    print('NAMES', ','.join(ergo_cluster.names), 'TLS', ergo_cluster.tls,"
    " 'PROC', ergo_cluster.processes)\n"
)


def test_the_marker_sets_size_and_tls(pytester: pytest.Pytester) -> None:
    src = "import pytest\n@pytest.mark.ergo_cluster(size=2, tls=False)\n"
    line = probe(pytester, src + "def test_probe(ergo_cluster):\n" + _PRINT)
    assert line == "NAMES n1@127.0.0.1,n2@127.0.0.1 TLS False PROC False"


def test_command_line_options_set_names_and_tls(pytester: pytest.Pytester) -> None:
    src = "def test_probe(ergo_cluster):\n" + _PRINT
    line = probe(pytester, src, "--ergo-names=x@127.0.0.1,y@127.0.0.1", "--ergo-no-tls")
    assert line == "NAMES x@127.0.0.1,y@127.0.0.1 TLS False PROC False"


def test_ini_settings_and_the_marker_wins(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nergo_size = 1\nergo_tls = false\n")
    line = probe(pytester, "def test_probe(ergo_cluster):\n" + _PRINT)
    assert line == "NAMES n1@127.0.0.1 TLS False PROC False"
    src = "import pytest\n@pytest.mark.ergo_cluster(size=2, tls=True)\n"
    line = probe(pytester, src + "def test_probe(ergo_cluster):\n" + _PRINT)
    assert line == "NAMES n1@127.0.0.1,n2@127.0.0.1 TLS True PROC False"


def test_an_unknown_marker_key_is_an_error(pytester: pytest.Pytester) -> None:
    src = "import pytest\n@pytest.mark.ergo_cluster(nodes=2)\n"
    src += "def test_probe(ergo_cluster):\n    pass\n"
    pytester.makepyfile(test_probe=src)
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ergo_cluster marker: unknown nodes*"])
