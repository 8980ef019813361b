"""The AU vocabulary and the ``--au`` parser: examples plus property tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fgfem.aus import (
    ACTION_UNITS,
    AU_CODES,
    MAX_ABS_EDIT,
    NUM_AUS,
    au_index,
    format_edits,
    needs_source_aus,
    parse_au_spec,
    parse_au_specs,
    relative_vector,
)
from fgfem.errors import FgfemError

OPENFACE_ORDER = "AU01 AU02 AU04 AU05 AU06 AU07 AU09 AU10 AU12 AU14 AU15 AU17 AU20 AU23 AU25 AU26 AU45".split()


def test_vocabulary_is_openface_order() -> None:
    assert list(AU_CODES) == OPENFACE_ORDER
    assert NUM_AUS == 17
    assert len({au.name for au in ACTION_UNITS}) == 17


@pytest.mark.parametrize("key", ["12", "AU12", "au12", "Au12", "lip_corner_puller", "lip-corner-puller", " 12 "])
def test_all_spellings_name_the_same_au(key: str) -> None:
    assert au_index(key) == AU_CODES.index("AU12")


def test_relative_absolute_and_names() -> None:
    edits = parse_au_specs(["12=+1.0", "AU4=3", "lips_part=-0.5"])
    assert [(e.code, e.value, e.relative) for e in edits] == [
        ("AU12", 1.0, True),
        ("AU04", 3.0, False),
        ("AU25", -0.5, True),
    ]
    assert needs_source_aus(edits)
    assert format_edits(edits) == "AU12 +1.00, AU04 =3.00, AU25 -0.50"


def test_comma_separated_items() -> None:
    edits = parse_au_specs(["12=+1,4=-0.5"])
    assert [e.code for e in edits] == ["AU12", "AU04"]


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("13=+1", "unknown action unit"),
        ("AU99=1", "unknown action unit"),
        ("smile=1", "unknown action unit"),
        ("12", "expected AU=VALUE"),
        ("12=", "expected AU=VALUE"),
        ("=1", "expected AU=VALUE"),
        ("12=abc", "not a number"),
        ("12=nan", "finite"),
        ("12=+inf", "finite"),
        ("12=1e9", "absolute AU12 must be within"),
        ("12=+1e9", "outside"),
        ("12=7", "absolute AU12 must be within"),
    ],
)
def test_bad_specs_are_one_clear_error(spec: str, fragment: str) -> None:
    with pytest.raises(FgfemError, match=fragment) as caught:
        parse_au_specs([spec])
    assert "\n" not in str(caught.value)


def test_unknown_au_lists_the_valid_ones() -> None:
    with pytest.raises(FgfemError) as caught:
        parse_au_specs(["AU13=+1"])
    message = str(caught.value)
    assert all(code in message for code in AU_CODES)


def test_the_same_au_twice_is_a_conflict() -> None:
    with pytest.raises(FgfemError, match="given twice"):
        parse_au_specs(["12=+1", "lip_corner_puller=-1"])


def test_relative_vector_mixes_relative_and_absolute() -> None:
    source = np.linspace(0, 4, NUM_AUS).astype(np.float32)
    edits = parse_au_specs(["12=+1", "4=3"])
    delta = relative_vector(edits, source)
    assert delta[AU_CODES.index("AU12")] == pytest.approx(1.0)
    assert delta[AU_CODES.index("AU04")] == pytest.approx(3.0 - source[AU_CODES.index("AU04")])
    assert np.count_nonzero(delta) == 2
    with pytest.raises(FgfemError, match="needs the source"):
        relative_vector(edits, None)


au_keys = st.sampled_from(
    [str(au.number) for au in ACTION_UNITS] + list(AU_CODES) + [au.name for au in ACTION_UNITS]
)
finite_edits = st.floats(min_value=-MAX_ABS_EDIT, max_value=MAX_ABS_EDIT, allow_nan=False, allow_infinity=False)


@given(key=au_keys, value=finite_edits)
def test_signed_values_round_trip_as_relative(key: str, value: float) -> None:
    edit = parse_au_spec(f"{key}={value:+.6f}")
    assert edit.relative
    assert edit.index == au_index(key)
    assert math.isclose(edit.value, float(f"{value:+.6f}"))


@given(key=au_keys, value=st.floats(min_value=0, max_value=5, allow_nan=False))
def test_unsigned_values_are_absolute(key: str, value: float) -> None:
    edit = parse_au_spec(f"{key}={value:.4f}")
    assert not edit.relative
    assert 0.0 <= edit.value <= 5.0


@given(st.text(max_size=30))
def test_parser_never_raises_anything_but_fgfem_error(text: str) -> None:
    try:
        edits = parse_au_specs([text])
    except FgfemError as problem:
        assert str(problem)
    else:
        assert all(0 <= e.index < NUM_AUS and math.isfinite(e.value) for e in edits)


@given(st.lists(au_keys, min_size=1, max_size=6))
def test_duplicates_are_always_rejected(keys: list[str]) -> None:
    specs = [f"{k}=+0.5" for k in keys]
    indices = [au_index(k) for k in keys]
    if len(set(indices)) < len(indices):
        with pytest.raises(FgfemError, match="given twice"):
            parse_au_specs(specs)
    else:
        assert [e.index for e in parse_au_specs(specs)] == indices
