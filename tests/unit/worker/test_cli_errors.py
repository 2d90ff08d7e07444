"""The CLI's boundary: one actionable line per error, secrets never echoed."""

import pytest

from worker.tools.cli import main
from worker.tools.overrides import set_overrides as _set_overrides


def run(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("secret", ["98765432", "[1, 2]", '{"a": 1}', "true"])
def test_secrets_stay_strings_and_are_never_printed(capsys, secret):
    assert _set_overrides([f"kafka.sasl_password={secret}"]) == {
        "kafka": {"sasl_password": secret}}
    code, err = run(capsys, "status", "--set", f"kafka.sasl_password={secret}",
                    "--set", "kafka.partitions=0")
    assert code == 2
    assert "kafka.partitions" in err and secret not in err
    assert "Traceback" not in err


def test_unknown_setting_is_one_line_with_its_path(capsys):
    code, err = run(capsys, "status", "--set", "kafka.nope=1")
    assert code == 2
    first = err.splitlines()[0]
    assert first == "freshrec: invalid settings: kafka.nope: Extra inputs are not permitted"


def test_unreachable_redis_is_one_actionable_line(capsys):
    code, err = run(capsys, "lookup", "--arm", "fresh", "x", "--redis-url",
                    "redis://127.0.0.1:1/0")
    assert code == 1
    assert "cannot reach Redis" in err and "--redis-url" in err and "Traceback" not in err


def test_missing_config_file(capsys):
    code, err = run(capsys, "status", "--config", "/nonexistent/freshrec.toml")
    assert code == 2 and "config file not found" in err


def test_verbose_adds_the_traceback(capsys):
    code, err = run(capsys, "--verbose", "status", "--set", "kafka.nope=1")
    assert code == 2 and "Traceback" in err
