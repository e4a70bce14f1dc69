"""The README's generated sections match their sources; the yaml block matches the dataclass."""

import os

import yaml

from papo_verl.config import PapoConfig, yaml_block_markdown
from papo_verl.metrics import METRICS_GLOSSARY, glossary_markdown

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def test_readme_metrics_glossary_is_current():
    assert glossary_markdown() in README, "regenerate with `python -m papo_verl.metrics` and paste into README.md"
    for name in METRICS_GLOSSARY:
        assert f"`{name}`" in README


def test_readme_config_block_is_current():
    assert yaml_block_markdown() in README


def test_yaml_papo_block_has_every_knob_with_the_dataclass_default():
    cfg = yaml.safe_load(open(os.path.join(ROOT, "papo_verl", "config", "papo_trainer.yaml"), encoding="utf-8"))
    block = cfg["algorithm"]["papo"]
    assert set(block) == set(PapoConfig.field_names())
    assert PapoConfig.from_mapping(block) == PapoConfig()


def test_readme_names_the_two_setup_commands():
    assert "make demo" in README and "make test" in README
    assert "make test" in open(os.path.join(ROOT, ".ci", "run")).read()
