"""Component names and parameters are checked when the configuration is validated, not at the first event."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from streamimb.cli import main
from streamimb.config import ModelConfig, ServiceConfig, load_config
from streamimb.errors import ConfigError
from streamimb.imbalance import STRATEGIES, THRESHOLDS
from streamimb.processor import Processor
from streamimb.registry import CLASSIFIERS, COMPONENTS, DETECTORS, DRIFT_DETECTORS, accepted_params


def config_error(tmp_path, data: dict[str, Any]) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def test_reported_misspelled_strategy(tmp_path):
    message = config_error(tmp_path, {"model": {"imbalance": {"strategy": "oobb"}}})
    assert message.startswith("model.imbalance.strategy: unknown imbalance strategy 'oobb'")
    assert "did you mean 'oob'" in message
    assert "allowed: " + ", ".join(sorted(STRATEGIES)) in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("kind", "typo", "meant", "allowed"),
    [
        (None, "marginn", "margin", "candidates, window, half_life, margin, "),  # the default: a portfolio
        ("hoeffding_tree", "gracee_period", "grace_period", "grace_period, delta, "),
    ],
)
def test_reported_unknown_classifier_parameter(tmp_path, kind, typo, meant, allowed):
    classifier: dict[str, Any] = {"params": {typo: 5}}
    if kind:
        classifier["kind"] = kind
    message = config_error(tmp_path, {"model": {"classifier": classifier}})
    assert message.startswith(f"model.classifier.params: unknown parameter '{typo}'")
    assert f"did you mean '{meant}'" in message
    assert f"for classifier '{kind or 'portfolio'}'" in message
    assert "allowed: " + allowed in message and "tracker" not in message


# (config under `model`, or the whole config for `series`; the field path; the names the error must list)
NAMES = [
    ({"classifier": {"kind": "hoefding_tree"}}, "model.classifier.kind", sorted(CLASSIFIERS)),
    ({"detectors": [{"kind": "loda"}, {"kind": "lodaa"}]}, "model.detectors.1.kind", sorted(DETECTORS)),
    ({"imbalance": {"strategy": "smot"}}, "model.imbalance.strategy", sorted(STRATEGIES)),
    ({"threshold": {"policy": "max-f1"}}, "model.threshold.policy", sorted(THRESHOLDS)),
    ({"drift": {"detector": "adwinn"}}, "model.drift.detector", sorted(DRIFT_DETECTORS)),
]


@pytest.mark.parametrize(("model", "where", "allowed"), NAMES)
def test_unknown_names_list_the_allowed_ones(tmp_path, model, where, allowed):
    message = config_error(tmp_path, {"model": model})
    assert message.startswith(f"{where}: unknown ")
    assert "allowed: " + ", ".join(allowed) in message
    assert "did you mean" in message
    assert "\n" not in message


PARAMS = [
    ({"classifier": {"kind": "arf", "params": {"n_model": 3}}}, "model.classifier.params", "n_models"),
    # logistic_regression forwards **params to river's LogisticRegression (less the optimizer it sets)
    ({"classifier": {"kind": "logistic_regression", "params": {"optimizer": 1}}}, "model.classifier", "l1"),
    ({"classifier": {"kind": "gaussian_nb", "params": {"x": 1}}}, "model.classifier.params", "(none)"),
    ({"detectors": [{"kind": "half_space_trees", "params": {"trees": 5}}]}, "model.detectors.0", "n_trees"),
    ({"imbalance": {"strategy": "uob", "params": {"n_model": 3}}}, "model.imbalance.params", "n_models"),
    ({"imbalance": {"params": {"ratioo": 1}}}, "model.imbalance.params", "max_rate"),  # default strategy
    ({"threshold": {"policy": "budget", "params": {"alerts": 5}}}, "model.threshold.params", "max_alerts"),
    ({"threshold": {"params": {"positive": "1"}}}, "model.threshold.params", "n_positives"),  # set by code
    ({"drift": {"detector": "page_hinkley", "params": {"delt": 1}}}, "model.drift.params", "threshold"),
    ({"drift": {"params": {"clocks": 1}}}, "model.drift.params", "max_buckets"),
]


@pytest.mark.parametrize(("model", "where", "allowed"), PARAMS)
def test_unknown_parameters_list_the_allowed_ones(tmp_path, model, where, allowed):
    message = config_error(tmp_path, {"model": model})
    assert message.startswith(where) and "params: unknown parameter '" in message
    assert allowed in message.split("allowed: ")[1]
    assert "\n" not in message


def test_series_parameters(tmp_path):
    message = config_error(tmp_path, {"series": {"params": {"warmupp": 10}}})
    assert message.startswith("series.params: unknown parameter 'warmupp' (did you mean 'warmup'?)")
    assert "allowed: value_key, novelty_margin," in message


def test_every_problem_is_reported_once_per_field(tmp_path):
    message = config_error(
        tmp_path,
        {
            "model": {
                "imbalance": {"strategy": "oobb", "params": {"x": 1}},
                "classifier": {"params": {"a": 1}},
            }
        },
    )
    lines = message.splitlines()
    assert len(lines) == 2  # an unknown name's parameters are not checked against anything
    assert lines[0].startswith("model.classifier.params: unknown parameter 'a'")
    assert lines[1].startswith("model.imbalance.strategy: unknown imbalance strategy 'oobb'")


def test_environment_overrides_are_checked_with_the_file(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text(
        "model:\n  classifier:\n    kind: numpy_hoeffding_tree\n    params: {tau: 0.1, n_splits: 5}\n"
    )
    assert load_config(path).model.classifier.params == {"tau": 0.1, "n_splits": 5}
    monkeypatch.setenv("STREAMIMB_MODEL__CLASSIFIER__KIND", "hoeffding_tree")
    with pytest.raises(ConfigError, match=r"unknown parameter 'n_splits'.* for classifier 'hoeffding_tree'"):
        load_config(path)


def test_parameters_streamimb_sets_itself_are_refused():
    with pytest.raises(
        ValueError, match=r"'positive' \(set by streamimb itself\) for threshold policy 'argmax'"
    ):
        ModelConfig.model_validate({"threshold": {"policy": "argmax", "params": {"positive": "1"}}})


def test_valid_components_and_parameters_pass():
    config = ServiceConfig.model_validate(
        {
            "model": {
                "detectors": [{"kind": "loda", "params": {"n_bins": 5}}, {"kind": "one_class_svm"}],
                "classifier": {
                    "kind": "hoeffding_tree",
                    "params": {"grace_period": 50, "leaf_prediction": "mc"},
                },
                "imbalance": {"strategy": "smote", "params": {"k_neighbors": 3, "seed": 1}},
                "threshold": {"policy": "target_precision", "params": {"precision": 0.8}},
                "drift": {"detector": "kswin", "params": {"alpha": 0.01}},
            },
            "series": {"params": {"warmup": 10}},
        }
    )
    Processor(config.model, positive="1", classes=["0", "1"])  # what validated also builds


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_every_registered_component_knows_its_parameters(component):
    """No factory hides its parameters behind **kwargs that go nowhere known (that would skip the check)."""
    for name, factory in COMPONENTS[component].table.items():
        assert accepted_params(factory) is not None, f"{component} {name!r}: mark it with registry._forwards"


def test_default_model_config_builds_without_the_registry_complaining():
    assert ModelConfig().classifier.kind in CLASSIFIERS


@pytest.mark.parametrize(
    ("yaml_text", "where"),
    [
        (
            "model:\n  imbalance:\n    strategy: oobb\n",
            "model.imbalance.strategy: unknown imbalance strategy",
        ),
        (
            "model:\n  classifier:\n    kind: hoeffding_tree\n    params: {gracee_period: 5}\n",
            "gracee_period",
        ),
    ],
)
def test_validate_config_cli_exits_2_with_one_error_line(tmp_path, capsys, yaml_text, where):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    assert main(["validate-config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model.")
    assert where in lines[0] and "allowed: " in lines[0]
