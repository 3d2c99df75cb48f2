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
