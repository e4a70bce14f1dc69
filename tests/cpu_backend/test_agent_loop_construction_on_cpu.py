"""The CPU backend's direct construction of verl's agent loops: what Hydra would build, without its merge."""

import dataclasses
import inspect
import re
import sys

import hydra
import pytest
from omegaconf import DictConfig

from papo_verl.cpu.compat import AGENT_LOOP_MODULE, direct_agent_loop_construction, instantiate_directly
from papo_verl.integration.verl_version import UnsupportedVerlVersion


class Recorder:
    """Keeps what it was built with."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs


TARGET = f"{__name__}.Recorder"


@dataclasses.dataclass
class Spec:
    """A structured config: Hydra hands it over as a DictConfig."""

    size: int = 3


def test_direct_construction_passes_the_same_objects_as_hydra():
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap

    objects = dict(trainer_config=DictConfigWrap(config=DictConfig({"a": 1})), server_manager=object(),
                   tokenizer=object(), processor=None, hf_model_type="qwen2", dataset_cls=Recorder,
                   tools=ToolListWrap([object()]))
    by_hydra = hydra.utils.instantiate(config={"_target_": TARGET}, **objects)
    direct = instantiate_directly(config={"_target_": TARGET}, **objects)
    assert type(direct) is type(by_hydra) is Recorder
    assert by_hydra.kwargs.keys() == direct.kwargs.keys() == objects.keys()
    for key, value in objects.items():  # Hydra hands these over untouched: so does the direct path
        assert by_hydra.kwargs[key] is value and direct.kwargs[key] is value, key


@pytest.mark.parametrize("extra", [{"options": {"x": 1}}, {"items": [1, 2]}, {"path": "${oc.env:HOME}"},
                                   {"settings": DictConfig({"x": 1})}, {"spec": Spec()}])
def test_arguments_hydra_would_convert_go_through_hydra(extra):
    by_hydra = hydra.utils.instantiate(config={"_target_": TARGET}, **extra)
    direct = instantiate_directly(config={"_target_": TARGET}, **extra)
    (key, _), = extra.items()
    # Hydra hands containers over as OmegaConf objects and resolves interpolations: the same here
    assert type(direct.kwargs[key]) is type(by_hydra.kwargs[key]) and direct.kwargs[key] == by_hydra.kwargs[key]


def test_configs_with_more_than_a_target_go_through_hydra():
    config = {"_target_": TARGET, "name": "${oc.env:HOME}"}
    assert instantiate_directly(config).kwargs == hydra.utils.instantiate(config).kwargs
    assert instantiate_directly(DictConfig({"_target_": TARGET}), value=1).kwargs == {"value": 1}


def test_the_agent_loop_module_uses_hydra_only_to_build_agent_loops():
    """The patch swaps the module's ``hydra`` name: it must have no other use there (else the guard is wrong)."""
    module = sys.modules.get(AGENT_LOOP_MODULE) or __import__(AGENT_LOOP_MODULE, fromlist=["_"])
    code = "\n".join(line for line in inspect.getsource(module).splitlines() if not line.lstrip().startswith("#"))
    uses = re.findall(r"\bhydra\.[\w.]+", re.sub(r'"""[\s\S]*?"""', "", code))
    assert uses == ["hydra.utils.instantiate"]


def test_patch_is_idempotent_and_builds_verl_agent_loops(monkeypatch):
    import verl.experimental.agent_loop.agent_loop as agent_loop

    monkeypatch.setattr(agent_loop, "hydra", hydra)  # restored after the test
    assert direct_agent_loop_construction() == direct_agent_loop_construction() == "patch:agent_loop.instantiate"
    assert agent_loop.hydra is not hydra and agent_loop.hydra.utils.instantiate is instantiate_directly
    # the registry entries verl's @register writes are what the direct path takes
    entry = agent_loop._agent_loop_registry["single_turn_agent"]
    assert set(entry) == {"_target_"} and hydra.utils.get_class(entry["_target_"]).__name__ == "SingleTurnAgentLoop"


def test_patch_refuses_other_verl_versions(monkeypatch):
    import verl.experimental.agent_loop.agent_loop as agent_loop

    monkeypatch.setattr(agent_loop, "hydra", hydra)
    with pytest.raises(UnsupportedVerlVersion, match="agent_loop"):
        direct_agent_loop_construction(version="0.10.0")
    assert agent_loop.hydra is hydra
