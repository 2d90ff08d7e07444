import pytest
from pydantic import ValidationError

from worker.config import load_settings


def test_precedence_defaults_file_env_flags(tmp_path, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[kafka]\ngroup_id = "file"\nbootstrap_servers = "h:1"\n'
                   '[training]\nlr = 0.5\nbatch_size = 64\n')
    monkeypatch.setenv("FRESHREC_TRAINING__LR", "0.25")
    monkeypatch.setenv("FRESHREC_KAFKA__GROUP_ID", "env")
    s = load_settings(cfg, {"kafka": {"group_id": "flag"}})
    assert s.kafka.group_id == "flag"
    assert s.training.lr == 0.25
    assert s.training.batch_size == 64
    assert s.kafka.bootstrap_servers == "h:1"
    assert s.redis.prefix == "freshrec"


def test_typo_fails_fast(tmp_path, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[kafka]\nbootstrap_server = 'x'\n")
    with pytest.raises(ValidationError, match="bootstrap_server"):
        load_settings(cfg)
    with pytest.raises(ValidationError):
        load_settings(None, {"training": {"lr": -1}})


def test_secrets_pass_through_but_never_print(monkeypatch):
    monkeypatch.setenv("FRESHREC_KAFKA__SASL_PASSWORD", "hunter2")
    s = load_settings(None, {"kafka": {"security_protocol": "SASL_SSL",
                                       "sasl_mechanism": "PLAIN", "sasl_username": "bob"}})
    assert "hunter2" not in repr(s)
    opts = s.kafka.client_options()
    assert opts["sasl_plain_password"] == "hunter2"  # noqa: S105
    assert opts["security_protocol"] == "SASL_SSL"


def test_experiment_control_must_be_an_arm():
    with pytest.raises(ValidationError, match="control"):
        load_settings(None, {"experiment": {"control": "nope"}})
