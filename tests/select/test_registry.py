"""The method registry: validation at registration, lookups that list the valid names."""
from __future__ import annotations

import pyarrow as pa
import pytest

from raysel.select import SelectionMethod, UnknownMethodError, create_method, get_method, list_methods, register_method
from raysel.select import registry
from raysel.select.methods.coreset import CoresetMethod
from raysel.select.methods.geal import GealMethod
from raysel.select.methods.random_sampling import RandomMethod

pytestmark = pytest.mark.pure


@pytest.fixture
def scratch_registry(monkeypatch):
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))


def test_builtin_methods_are_registered():
    assert {"geal", "coreset", "random"} <= set(list_methods())
    assert list_methods() == sorted(list_methods())
    assert get_method("geal") is GealMethod and GealMethod.default_distance == "cosine"
    assert get_method("coreset") is CoresetMethod and CoresetMethod.default_distance == "euclidean"
    assert isinstance(create_method("random"), RandomMethod)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(UnknownMethodError, match="unknown selection method 'kcenter'.*coreset, geal") as error:
        get_method("kcenter")
    assert isinstance(error.value, ValueError)


def test_registration_checks_the_class(scratch_registry):
    class Concrete(SelectionMethod):
        def select(self, config, store, context) -> pa.Table:
            return pa.table({})

    assert register_method("my_method")(Concrete) is Concrete
    assert get_method("my_method") is Concrete and Concrete.name == "my_method"
    assert register_method("my_method")(Concrete) is Concrete  # re-registering the same class is harmless

    class Other(Concrete):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register_method("my_method")(Other)
    with pytest.raises(ValueError, match="lowercase"):
        register_method("Prob Cover")
    with pytest.raises(TypeError, match="subclass of SelectionMethod"):
        register_method("plain")(object)

    class Abstract(SelectionMethod):
        pass

    with pytest.raises(TypeError, match="does not implement select"):
        register_method("abstract")(Abstract)

    class BadDistance(Concrete):
        default_distance = "manhattan"

    with pytest.raises(TypeError, match="default_distance"):
        register_method("bad_distance")(BadDistance)
    assert "abstract" not in list_methods() and "bad_distance" not in list_methods()
