import pytest

from streamimb.cli import main
from streamimb.config import ServiceConfig, dump_config, load_config
from streamimb.errors import ConfigError

EXAMPLES = [
    "examples/bank_marketing/config.yaml",
    "examples/card_fraud/config.yaml",
    "examples/churn/config.yaml",
]


def test_defaults_are_valid():
    config = ServiceConfig()
    assert config.model.calibration.kind == "quantile"
    assert config.event_schema.label is None


def test_yaml_toml_and_env_overrides(tmp_path, monkeypatch):
    (tmp_path / "c.yaml").write_text("schema:\n  label: Class\nmodel:\n  seed: 7\n")
    (tmp_path / "c.toml").write_text('[schema]\nlabel = "Class"\n[model]\nseed = 7\n')
    for name in ("c.yaml", "c.toml"):
        config = load_config(tmp_path / name)
        assert (config.event_schema.label, config.model.seed) == ("Class", 7)
    monkeypatch.setenv("STREAMIMB_MODEL__SEED", "11")
    assert load_config(tmp_path / "c.yaml").model.seed == 11
    # command-line overrides win over the environment
    assert load_config(tmp_path / "c.yaml", overrides={"model": {"seed": 3}}).model.seed == 3


def test_errors_name_the_field_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  calibration:\n    quantile: 1.5\n  bogus: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    message = str(info.value)
    assert "model.calibration.quantile" in message
    assert "model.bogus" in message


def test_config_never_evaluates_code(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("model: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError):
        load_config(evil)


def test_non_mapping_and_missing_file(tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


@pytest.mark.parametrize("path", EXAMPLES)
def test_examples_validate(path, capsys):
    assert main(["validate-config", path]) == 0
    out = capsys.readouterr().out
    assert "schema:" in out and "model:" in out


def test_validate_config_cli_reports_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  threshold: 3\n")
    assert main(["validate-config", str(bad)]) != 0
    assert "model.threshold" in capsys.readouterr().err


def test_dump_is_yaml_roundtrip():
    import yaml

    config = ServiceConfig.model_validate({"schema": {"label": "y"}})
    again = ServiceConfig.model_validate(yaml.safe_load(dump_config(config)))
    assert again == config
