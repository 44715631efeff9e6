import uuid

import pytest
import torch
from torch import nn

from lightning_cifar import registry
from lightning_cifar.cli import main
from lightning_cifar.errors import (
    BackboneConfigError,
    BackboneLoadError,
    DuplicateBackboneError,
    UnknownBackboneError,
)
from lightning_cifar.models import _registry
from lightning_cifar.models.measure import count_parameters
from tests.helpers.cifar_files import make_distribution

GOOD_NET = """
    from torch import nn

    def build(num_classes=10, hidden=16):
        '''A plugin net for tests.'''
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
"""


def unique(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    """Install fake distributions by putting their metadata on sys.path (and rescan entry points,
    which the registry reads once per process)."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))

    def install(dist_name, entry_points, modules):
        make_distribution(site, dist_name, entry_points, modules)
        registry.refresh()

    yield install
    monkeypatch.undo()
    registry.refresh()


@pytest.fixture
def in_code():
    """Names registered in code by a test, removed again afterwards."""
    names = []
    yield names
    for name in names:
        if name in registry.list_backbones():
            registry.unregister_backbone(name)


def test_available_lists_sorted_names_and_filters_with_wildcards():
    names = registry.list_backbones()
    assert names == sorted(names)
    assert {"cnn_base", "cnn_wide", "cnn_deep", "cnn_seed", "mlp", "mlp_seed"} <= set(names)
    assert registry.list_backbones("cnn_*") == ["cnn_base", "cnn_deep", "cnn_fast", "cnn_seed", "cnn_wide"]
    assert registry.list_backbones("mlp?seed") == ["mlp_seed"]
    assert registry.list_backbones("nothing*") == []


def test_describe_gives_one_line():
    text = registry.describe_backbone("cnn_seed")
    assert "seed" in text and "\n" not in text


def test_unknown_name_lists_available_and_close_matches():
    with pytest.raises(UnknownBackboneError) as err:
        registry.create_backbone("cnn_bsae")
    message = str(err.value)
    assert "'cnn_bsae'" in message
    assert "Did you mean 'cnn_base'" in message
    assert "mlp_seed" in message  # the full list of names follows


def test_kwargs_the_backbone_does_not_take_are_named_with_the_ones_it_takes():
    with pytest.raises(BackboneConfigError) as err:
        registry.create_backbone("cnn_base", widht_mult=2)
    assert "'widht_mult'" in str(err.value) and "width_mult" in str(err.value)


def test_a_plugin_on_sys_path_is_registered_and_built(plugin_site):
    module, name = unique("goodmod"), unique("good_net")
    plugin_site("good-plugin", {name: f"{module}:build"}, {module: GOOD_NET})
    assert name in registry.list_backbones()
    assert registry.get_backbone_entry(name).distribution == "good-plugin 0.1"
    assert registry.describe_backbone(name) == "A plugin net for tests."
    net = registry.create_backbone(name, num_classes=4, hidden=8)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 4)


def test_a_broken_plugin_is_named_and_does_not_break_the_others(plugin_site, capsys):
    module, name = unique("brokenmod"), unique("broken_net")
    plugin_site("broken-plugin", {name: f"{module}:build"}, {module: "raise ImportError('needs libfoo')\n"})
    assert name in registry.list_backbones()  # listing does not import plugins
    with pytest.raises(BackboneLoadError) as err:
        registry.create_backbone(name)
    message = str(err.value)
    assert name in message and "broken-plugin 0.1" in message and "needs libfoo" in message
    assert registry.create_backbone("cnn_base") is not None
    with pytest.raises(SystemExit) as code:
        main(["backbones"])
    assert code.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    broken = [line for line in lines if line.startswith(name)]
    assert len(broken) == 1 and "BROKEN" in broken[0] and "needs libfoo" in broken[0]
    assert any(line.startswith("cnn_base ") and "131,370" in line for line in lines)


@pytest.mark.parametrize(
    "source, message",
    [
        ("def build(num_classes=10):\n    return 42\n", "returned int, not a torch.nn.Module"),
        (
            "from torch import nn\ndef build(num_classes=10):\n    return nn.Sequential(nn.Flatten(), nn.Linear(3072, 3))\n",
            r"to \(2, 3\), expected a tensor \(2, 10\)",
        ),
        ("def build(num_classes=10):\n    raise RuntimeError('out of cheese')\n", "failed to build: RuntimeError: out of cheese"),
        ("build = 'not callable'\n", "is not callable"),
    ],
)
def test_a_misbehaving_plugin_is_reported_by_name(plugin_site, source, message):
    module, name = unique("badmod"), unique("bad_net")
    plugin_site("bad-plugin", {name: f"{module}:build"}, {module: source})
    with pytest.raises(BackboneLoadError, match=message) as err:
        registry.create_backbone(name)
    assert name in str(err.value) and "bad-plugin 0.1" in str(err.value)


def test_two_distributions_claiming_one_name_is_an_error_naming_both(plugin_site):
    name = unique("dup_net")
    first, second = unique("dupa"), unique("dupb")
    plugin_site("first-plugin", {name: f"{first}:build"}, {first: GOOD_NET})
    plugin_site("second-plugin", {name: f"{second}:build"}, {second: GOOD_NET})
    with pytest.raises(DuplicateBackboneError) as err:
        registry.create_backbone(name)
    assert "first-plugin 0.1" in str(err.value) and "second-plugin 0.1" in str(err.value)
    assert isinstance(registry.create_backbone("cnn_base"), nn.Module)


def test_a_module_class_is_a_valid_entry_point(plugin_site):
    module, name = unique("classmod"), unique("class_net")
    source = """
        from torch import nn

        class Net(nn.Module):
            '''A class registered directly.'''
            def __init__(self, num_classes=10, width=4):
                super().__init__()
                self.conv = nn.Conv2d(3, width, 3, padding=1)
                self.fc = nn.Linear(width, num_classes)

            def forward(self, x):
                return self.fc(self.conv(x).mean((2, 3)))
    """
    plugin_site("class-plugin", {name: f"{module}:Net"}, {module: source})
    assert registry.create_backbone(name, width=6).conv.out_channels == 6
    with pytest.raises(BackboneConfigError, match="it takes: width"):
        registry.create_backbone(name, depth=3)


# -- registering in code -----------------------------------------------------------------------


def test_the_decorator_registers_a_factory_in_the_same_namespace(in_code):
    name = unique("coded_net")
    in_code.append(name)

    @registry.register_backbone(name)
    def build(num_classes=10, hidden=16):
        """A net registered in code."""
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, hidden), nn.Linear(hidden, num_classes))

    assert name in registry.list_backbones() and registry.describe_backbone(name) == "A net registered in code."
    assert registry.get_backbone_entry(name).distribution == f"code (module {__name__})"
    assert registry.create_backbone(name, num_classes=3, hidden=4)(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    with pytest.raises(BackboneConfigError, match="it takes: hidden"):
        registry.create_backbone(name, depth=2)


def test_registering_the_same_definition_again_replaces_it_and_another_one_is_refused(in_code):
    name = unique("notebook_net")
    in_code.append(name)
    namespace = {}
    source = "from torch import nn\ndef build(num_classes=10):\n    return nn.Sequential(nn.Flatten(), nn.Linear(3072, num_classes))\n"
    for _ in range(2):  # a notebook cell run twice: same module and name
        exec(source, namespace)
        namespace["build"].__module__ = "__main__"
        registry.register_backbone(name, namespace["build"])
    assert registry.get_backbone_entry(name).load() is namespace["build"]

    def other(num_classes=10):
        return nn.Linear(3072, num_classes)

    with pytest.raises(DuplicateBackboneError, match=rf"{name}.*already registered by code \(module __main__\)"):
        registry.register_backbone(name, other)
    registry.register_backbone(name, other, replace=True)
    assert registry.get_backbone_entry(name).load() is other


def test_a_plugin_claiming_a_builtin_name_is_an_error_naming_both(plugin_site):
    module = unique("squatter")
    plugin_site("squatter-plugin", {"cnn_base": f"{module}:build"}, {module: GOOD_NET})
    with pytest.raises(DuplicateBackboneError) as err:
        registry.create_backbone("cnn_base")
    message = str(err.value)
    assert "lightning-cifar" in message and "built in" in message and "squatter-plugin 0.1" in message
    assert isinstance(registry.create_backbone("cnn_wide"), nn.Module)  # the other built-ins are unaffected


def test_stale_metadata_naming_a_builtin_is_not_a_conflict(plugin_site):
    # An older install of this package declared the built-ins as entry points too.
    plugin_site("lightning-cifar-old", {"cnn_base": "lightning_cifar.models.builtins:cnn_base"}, {})
    assert count_parameters(registry.create_backbone("cnn_base")) == 131_370


def test_entry_points_are_read_once_per_process_until_refresh(tmp_path, monkeypatch):
    calls = []
    real = _registry.entry_points
    monkeypatch.setattr(_registry, "entry_points", lambda **kw: calls.append(kw) or real(**kw))
    registry.refresh()
    for _ in range(3):
        registry.list_backbones()
        registry.create_backbone("mlp_seed")
    assert len(calls) == 1
    registry.refresh()
    registry.list_backbones()
    assert len(calls) == 2


def test_unregister_refuses_names_not_registered_in_code():
    with pytest.raises(UnknownBackboneError):
        registry.unregister_backbone(unique("never_registered"))


@pytest.mark.parametrize("old, new, args", [
    ("available", "list_backbones", ("cnn_*",)), ("get", "get_backbone_entry", ("cnn_base",)),
    ("describe", "describe_backbone", ("cnn_base",)), ("count_parameters", "count_parameters", (nn.Linear(2, 3),)),
])
def test_the_names_of_0_2_still_work_and_name_their_successor(old, new, args):
    with pytest.warns(DeprecationWarning, match=rf"registry\.{old} is deprecated; use lightning_cifar\..*\.{new} "):
        value = getattr(registry, old)(*args)
    assert value == (count_parameters if old == "count_parameters" else getattr(registry, new))(*args)


def test_register_create_and_unregister_of_0_2_still_work():
    name = unique("old_names")
    with pytest.warns(DeprecationWarning, match="use lightning_cifar.registry.register_backbone"):
        registry.register(name, lambda num_classes=10: nn.Sequential(nn.Flatten(), nn.Linear(3072, num_classes)))
    with pytest.warns(DeprecationWarning, match="use lightning_cifar.registry.create_backbone"):
        assert isinstance(registry.create(name, num_classes=4), nn.Module)
    with pytest.warns(DeprecationWarning, match="use lightning_cifar.registry.unregister_backbone"):
        registry.unregister(name)
    assert name not in registry.list_backbones()


def test_input_shape_moved_with_a_warning():
    with pytest.warns(DeprecationWarning, match="models.measure.IMAGE_SHAPE"):
        assert registry.INPUT_SHAPE == (3, 32, 32)


def test_list_backbones_takes_several_patterns_and_exclusions():
    assert registry.list_backbones("cnn_*", exclude=["cnn_seed", "cnn_f*"]) == ["cnn_base", "cnn_deep", "cnn_wide"]
    assert registry.list_backbones(["mlp*", "convpool"]) == ["convpool", "mlp", "mlp_net", "mlp_seed"]
    assert registry.list_backbones() == sorted(registry.list_backbones())
    assert "cnn_base" in registry.list_backbones(exclude="mlp*") and "mlp" not in registry.list_backbones(exclude="mlp*")


def test_built_in_backbones_are_built_without_the_output_probe_and_plugins_with_it(monkeypatch):
    probed = []
    real = _registry._check_output
    monkeypatch.setattr(_registry, "_check_output", lambda entry, *a: probed.append(entry.name) or real(entry, *a))
    registry.create_backbone("cnn_base")
    assert probed == []
    registry.create_backbone("cnn_base", check=True)
    assert probed == ["cnn_base"]
    name = unique("code_net")
    registry.register_backbone(name, lambda num_classes=10: nn.Sequential(nn.Flatten(), nn.Linear(3072, num_classes)))
    try:
        registry.create_backbone(name)
        assert probed == ["cnn_base", name]
    finally:
        registry.unregister_backbone(name)
