"""The strict TOML table reader every service's configuration goes through."""

from __future__ import annotations

import tomllib

import pytest

from sgx_rpc.config_table import TomlTable


class DemoConfigError(ValueError):
    """Stands for a component's own ConfigError: the reader raises what it is given."""


def table(text: str) -> TomlTable:
    return TomlTable(tomllib.loads(text), error=DemoConfigError)


def test_unknown_keys_are_refused_all_at_once_by_dotted_name() -> None:
    top = table("kept = 1\nzeta = 2\nalpha = 3\n[sub]\nx = 1\nextra = true\n")
    assert top.take("kept", int, 0) == 1
    sub = top.table("sub")
    assert sub is not None
    assert sub.take("x", int, 0) == 1
    with pytest.raises(DemoConfigError, match=r"^unknown configuration key\(s\): sub\.extra$"):
        sub.finish()
    with pytest.raises(DemoConfigError, match=r"^unknown configuration key\(s\): alpha, zeta$"):
        top.finish()


def test_a_finished_table_with_every_key_taken_passes() -> None:
    top = table('a = "x"\n[t]\nb = 2.5\n')
    assert top.take("a", str, "") == "x"
    t = top.table("t")
    assert t is not None and t.take("b", (int, float), 0) == 2.5
    t.finish()
    top.finish()


def test_absent_keys_and_tables_give_the_default() -> None:
    top = table("")
    assert top.take("missing", int, 7) == 7
    assert top.take("gone", str, None) is None
    assert top.table("nothing") is None
    top.finish()


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        ('n = "5"', int, "n: expected an integer, got str"),
        ("n = 1.5", int, "n: expected an integer, got float"),
        ("n = [1]", str, "n: expected a string, got list"),
        ("n = 1", (int, float), None),
        ('n = "x"', (int, float), "n: expected an integer or a number, got str"),
        ("n = 1", list, "n: expected an array, got int"),
        ("n = 1", dict, "n: expected a table, got int"),
        ("n = 1", bool, "n: expected a boolean, got int"),
    ],
)
def test_wrong_types_are_refused_naming_key_and_type(
    text: str, kind: type | tuple[type, ...], message: str | None
) -> None:
    top = table(text)
    if message is None:
        assert top.take("n", kind, None) == 1
        return
    with pytest.raises(DemoConfigError) as raised:
        top.take("n", kind, None)
    assert str(raised.value) == message


@pytest.mark.parametrize("kind", [int, float, (int, float), str])
def test_a_boolean_is_not_an_integer_or_a_number(kind: type | tuple[type, ...]) -> None:
    with pytest.raises(DemoConfigError, match=r"^n: expected .*, got a boolean$"):
        table("n = true").take("n", kind, 0)
    assert table("n = true").take("n", (bool, int), 0) is True


def test_a_sub_table_that_is_not_a_table_is_refused_by_its_dotted_name() -> None:
    top = table("[outer]\ninner = 3\n")
    outer = top.table("outer")
    assert outer is not None
    assert outer.name("inner") == "outer.inner"
    with pytest.raises(DemoConfigError, match=r"^outer\.inner: expected a table, got int$"):
        outer.table("inner")


def test_nested_tables_carry_the_error_class_and_path() -> None:
    top = table("[a.b]\nc = true\n")
    a = top.table("a")
    assert a is not None
    b = a.table("b")
    assert b is not None
    with pytest.raises(DemoConfigError, match=r"^a\.b\.c: expected a string, got a boolean$"):
        b.take("c", str, "")


def test_a_key_is_taken_once() -> None:
    top = table("k = 1")
    assert top.take("k", int, 0) == 1
    assert top.take("k", int, 0) == 0, "taken: now absent, so the default"
    top.finish()


def test_the_error_factory_may_be_any_callable() -> None:
    def prefixed(message: str) -> DemoConfigError:
        return DemoConfigError(f"demo.toml: {message}")

    with pytest.raises(DemoConfigError, match=r"^demo\.toml: unknown configuration key\(s\): x$"):
        TomlTable({"x": 1}, error=prefixed).finish()
