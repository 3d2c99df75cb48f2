"""unpact.registry.Registry: names, aliases, order, replacement and the unknown-name error."""

import pytest

from unpact.errors import ConfigError
from unpact.registry import Registry


def test_register_get_aliases_and_order():
    reg: Registry[int] = Registry("thing")
    reg.add("b-two", 2, aliases=("deux",))
    reg.add("a_one", 1)
    assert reg.names() == ("b_two", "a_one")
    assert reg.get("B-TWO") == 2 and reg.get("deux") == 2 and reg["a_one"] == 1
    assert "deux" in reg and "three" not in reg and 3 not in reg
    assert reg.resolve("Deux") == "b_two"
    assert list(reg) == ["b_two", "a_one"] and len(reg) == 2


def test_replacing_keeps_the_place():
    reg: Registry[int] = Registry("thing")
    reg.add("x", 1)
    reg.add("y", 2)
    reg.add("x", 3)
    assert reg.items() == [("x", 3), ("y", 2)]


def test_decorator_takes_the_class_name_and_aliases():
    reg: Registry[type] = Registry("widget")

    @reg.register()
    class Spinner:
        name = "spinner"
        aliases = ("top",)

    assert reg.get("top") is Spinner


def test_unknown_name_lists_the_known_ones():
    reg: Registry[int] = Registry("attack")
    reg.add("relearning", 1)
    reg.add("jailbreak", 2)
    with pytest.raises(ConfigError, match=r"unknown attack 'probe'; known: relearning, jailbreak"):
        reg.get("probe")


def test_a_nameless_component_is_refused():
    reg: Registry[type] = Registry("widget")
    with pytest.raises(ValueError, match="needs a name"):
        reg.register()(type("Anon", (), {}))


def test_the_error_type_and_exact_keys():
    from unpact.errors import InputError
    from unpact.registry import exact

    reg: Registry[int] = Registry("model", error=InputError, key=exact)
    reg.add("Tiny-1", 1)
    assert "Tiny-1" in reg and "tiny_1" not in reg and reg.names() == ("Tiny-1",)
    with pytest.raises(InputError, match="unknown model 'tiny-1'; known: Tiny-1"):
        reg.get("tiny-1")


def test_it_reads_and_edits_like_a_dict():
    reg: Registry[int] = Registry("thing")
    reg["a"] = 1
    reg.add("b", 2, aliases=("bee",))
    assert dict(reg) == {"a": 1, "b": 2} and reg.values() == [1, 2] and reg.keys() == ["a", "b"]
    assert reg.get("c", None) is None and reg.pop("c", 0) == 0 and reg.aliases("b") == ("bee",)
    del reg["bee"]
    assert reg.names() == ("a",) and "bee" not in reg
    assert reg.pop("a") == 1 and len(reg) == 0


def test_scoped_restores_and_update_keeps_aliases():
    reg: Registry[int] = Registry("thing")
    reg.add("a", 1)
    with reg.scoped():
        reg.add("b", 2)
        reg.remove("a")
        assert reg.names() == ("b",)
    assert reg.names() == ("a",)
    other: Registry[int] = Registry("thing")
    other.update(reg)
    other.update({"c": 3})
    reg.add("d", 4, aliases=("dee",))
    other.update(reg)
    assert other.names() == ("a", "c", "d") and other.get("dee") == 4


def test_monkeypatch_setitem_works_on_a_registry(monkeypatch):
    reg: Registry[int] = Registry("thing")
    reg.add("a", 1)
    with monkeypatch.context() as m:
        m.setitem(reg, "z", 26)
        assert reg.get("z") == 26
    assert "z" not in reg


def test_every_registry_of_the_package_is_a_registry():
    from unpact.attacks import ATTACKS
    from unpact.attribution import ATTRIBUTION_METHODS
    from unpact.data import FORMATS
    from unpact.emphasis import KINDS, TEMPLATES
    from unpact.metrics import METRICS
    from unpact.packaged_models import PACKAGED_MODELS
    from unpact.probes import PROBES
    from unpact.scoring import QUANTITIES
    from unpact.unlearning import METHODS

    for reg in (
        ATTACKS,
        ATTRIBUTION_METHODS,
        FORMATS,
        KINDS,
        TEMPLATES,
        METRICS,
        PACKAGED_MODELS,
        PROBES,
        QUANTITIES,
        METHODS,
    ):
        assert isinstance(reg, Registry) and len(reg) > 0


def test_one_config_attribute_name():
    from unpact.attacks import ATTACKS
    from unpact.attribution import ATTRIBUTION_METHODS
    from unpact.unlearning import METHODS

    for reg in (ATTACKS, ATTRIBUTION_METHODS, METHODS):
        for name, cls in reg.items():
            assert isinstance(cls.config_class, type) and not hasattr(cls, "Config"), name
