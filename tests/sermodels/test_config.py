"""Typed configs: YAML 1.2 values, unknown keys named with the nearest known one, one override grammar, merges."""
import pytest

from sermodels.config import ConfigError, build, load_yaml, parse_override, to_dict
from sermodels.recipes import load_config


def test_yaml_12_numbers_and_booleans():
    data = load_yaml("lr: 1e-3\nbig: 5E+2\nneg: -2.5e-1\nflag: on\nword: yes\nt: true\nn: ~\ni: 0x10\nf: .inf")
    assert data == {"lr": 1e-3, "big": 500.0, "neg": -0.25, "flag": "on", "word": "yes", "t": True, "n": None,
                    "i": 16, "f": float("inf")}
    assert isinstance(data["lr"], float)
    assert parse_override("train.lr=1e-3") == (["train", "lr"], 1e-3)


def test_overrides_are_typed():
    cfg = load_config("annotators", None, ["train.lr=1e-3", "train.epochs=2", "seeds=[0,1]", "train.momentum=0",
                                           "data.rating_range=[1,7]", "data.partitions.test=test1"])
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)
    assert isinstance(cfg.train.momentum, float) and cfg.train.epochs == 2 and cfg.seeds == [0, 1]
    assert cfg.data.rating_range == (1.0, 7.0) and cfg.data.partitions == {"test": "test1"}
    with pytest.raises(ConfigError, match=r"train.epochs: expected an integer, got 2.5"):
        load_config("annotators", None, ["train.epochs=2.5"])
    with pytest.raises(ConfigError, match=r"train.scheduler.name: must be one of 'none', 'plateau', 'onecycle'"):
        load_config("annotators", None, ["train.scheduler.name=cosine"])
    with pytest.raises(ConfigError, match=r"lo < hi"):
        load_config("annotators", None, ["data.rating_range=[7,1]"])


@pytest.mark.parametrize("override, hint", [
    ("train.epoch=3", "did you mean 'train.epochs'"),
    ("epochs=3", "did you mean 'train.epochs'"),
    ("train.schedular.name=none", "did you mean 'train.scheduler'"),
    ("model.hiden=8", "did you mean 'model.hidden'"),
    ("eval.test_corpora=[{corpus: iemocap, rot: /x}]", "did you mean 'eval.test_corpora.0.root'"),
    ("runs.mt.model.hiden=8", "runs.mt: unknown config key 'model.hiden'"),
    ("labels.range=[1,5]", "did you mean 'data.rating_range'"),  # the rating scale belongs to the data section
])
def test_unknown_override_names_the_nearest_key(override, hint):
    with pytest.raises(ConfigError) as exc:
        load_config("annotators", None, [override])
    assert hint in str(exc.value)


def test_unknown_key_in_a_file_names_the_file_and_nearest_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("recipe: annotators\ntrain:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown config key 'train.epoch' .*did you mean 'train.epochs'"):
        load_config("annotators", str(path))
    path.write_text("recipe: continual\n")
    with pytest.raises(ConfigError, match="recipe 'continual' does not match 'annotators'"):
        load_config("annotators", str(path))


def test_file_then_overrides_and_runs_replaced_whole(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-2\n  early_stopping: {patience: 3}\nruns:\n  only: {model: {type: mt}}\n"
                    "baseline_run: null\nablation: null\n")
    cfg = load_config("annotators", str(path), ["train.epochs=4"])
    assert cfg.train.lr == 1e-2 and cfg.train.epochs == 4
    assert cfg.train.early_stopping.patience == 3 and cfg.train.early_stopping.min_epochs == 30  # merged
    assert list(cfg.runs) == ["only"]  # a file's runs replace the default rows


def test_shipped_configs_load_and_round_trip():
    from sermodels.config import dump_yaml
    from sermodels.recipes import RECIPES, shipped_configs

    seen = 0
    for name in RECIPES:
        for short, path in shipped_configs(name).items():
            cfg = load_config(name, str(path))
            assert load_config(name, short) == cfg, path  # --config paper names the shipped file
            again = build(type(cfg), base=load_yaml(dump_yaml(to_dict(cfg))))
            assert to_dict(again) == to_dict(cfg), path
            seen += 1
        assert "paper" in shipped_configs(name), name
    assert seen >= len(RECIPES) + 1


def test_run_entries_are_checked():
    with pytest.raises(ConfigError, match="model type 'baseline' goes with train.tasks \\[baseline\\]"):
        load_config("annotators", None, ["runs.bad={model: {type: baseline}}"])
    with pytest.raises(ConfigError, match="baseline_run 'nobody' is not one of runs"):
        load_config("annotators", None, ["baseline_run=nobody"])
