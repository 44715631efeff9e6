"""The house's rules, read from the source: folders by role, no import cycles, imports at the top."""

from tests.helpers.import_graph import ROOT, cycles, modules, own_imports

# The package root holds the entry points and what every floor shares; everything else lives in a folder.
ROOT_MODULES = {"__init__", "__main__", "errors", "files", "hardware", "registry", "timing"}


def test_the_package_root_keeps_at_most_eight_modules():
    at_root = {p.stem for p in ROOT.glob("*.py")}
    assert at_root == ROOT_MODULES and len(at_root) <= 8, sorted(at_root)


def test_no_module_imports_itself_back_through_others():
    assert cycles(own_imports()) == []


def test_our_imports_inside_functions_say_why():
    local = [f"{i.importer}:{i.line} -> {i.imported}" for i in own_imports() if i.local and not i.commented]
    assert local == [], "import at the top of the file, or say in a comment on the line why not"


def test_the_registry_and_the_backbones_know_nothing_of_lightning():
    light = {"lightning_cifar.registry", "lightning_cifar.errors", "lightning_cifar.files"}
    light |= {m for m in modules() if m.startswith("lightning_cifar.models")}
    for name in sorted(light):
        source = modules()[name].read_text()
        assert "pytorch_lightning" not in source and "lightning_fabric" not in source, name
    heavy = {i.imported for i in own_imports() if i.importer in light} - light - {"lightning_cifar"}
    assert heavy == set(), heavy
