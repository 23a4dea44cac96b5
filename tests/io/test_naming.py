import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusionmamba_med.io.naming import MAX_NAME_LENGTH, safe_name, unique_names

SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


def _check(name: str, max_length: int = MAX_NAME_LENGTH):
    assert name
    assert SAFE.match(name), name
    assert "/" not in name and "\\" not in name
    assert ".." not in name
    assert not name.startswith(".")
    assert len(name) <= max_length


@pytest.mark.parametrize(
    "text, expected",
    [
        ("../../etc/passwd", "etc_passwd"),
        ("A/B", "A_B"),
        ("", "study"),
        ("..", "study"),
        (".", "study"),
        ("/", "study"),
        ("Patient 01", "Patient_01"),
        ("Müller^Jürgen", "Muller_Jurgen"),
        ("患者", "study"),
        ("..\\..\\windows\\system32", "windows_system32"),
        (".hidden", "hidden"),
        ("-rf", "rf"),
        ("con", "_con"),
        ("a..b", "a.b"),
        (None, "study"),
    ],
)
def test_safe_name_examples(text, expected):
    assert safe_name(text) == expected
    _check(safe_name(text))


def test_safe_name_fallback_and_cap():
    assert safe_name("", fallback="p7") == "p7"
    assert safe_name("///", fallback="../x") == "x"
    assert safe_name("..", fallback="..") == "study"
    long = safe_name("x" * 1000)
    assert len(long) == MAX_NAME_LENGTH
    assert len(safe_name("y" * 1000, max_length=20)) == 20


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.sampled_from([8, 20, MAX_NAME_LENGTH]))
def test_safe_name_properties(text, max_length):
    name = safe_name(text, max_length=max_length)
    _check(name, max_length)
    assert safe_name(name, max_length=max_length) == name  # idempotent


def test_unique_names():
    assert unique_names(["a", "A", "a", "a b", "a_b", "../a"]) == ["a", "A-2", "a-3", "a_b", "a_b-2", "a-4"]
    names = unique_names(["z" * 200] * 3)
    assert len(set(n.lower() for n in names)) == 3
    for n in names:
        _check(n)
