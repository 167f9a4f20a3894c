"""Further RunPod endpoints by name (`flux=abc123,sdxl=def456`), checked before anything runs."""

from __future__ import annotations

import pytest

from bot.config import DEFAULT_ENDPOINT, parse_endpoints


def test_names_map_to_endpoint_ids_in_the_order_given() -> None:
    endpoints = parse_endpoints(" flux = abc123 , SDXL=def-456_x ,")
    assert dict(endpoints) == {"flux": "abc123", "sdxl": "def-456_x"}
    assert list(endpoints) == ["flux", "sdxl"]


def test_nothing_set_means_no_further_endpoints() -> None:
    assert dict(parse_endpoints("")) == {}
    assert dict(parse_endpoints(" , ")) == {}


def test_a_name_given_twice_is_refused_even_in_other_case() -> None:
    with pytest.raises(ValueError, match="names 'flux' twice"):
        parse_endpoints("flux=abc123,FLUX=def456")


def test_the_default_endpoints_name_is_kept_for_runpod_endpoint_id() -> None:
    with pytest.raises(ValueError, match="RUNPOD_ENDPOINT_ID's name"):
        parse_endpoints(f"{DEFAULT_ENDPOINT}=abc123")


def test_every_bad_entry_is_named_in_one_message() -> None:
    with pytest.raises(ValueError) as caught:
        parse_endpoints("flux,9lives=abc,sdxl=bad id!,ok=abc123,ok=def456")
    message = str(caught.value)
    assert message.startswith("must list endpoints as name=endpoint-id")
    assert "'flux' is not name=endpoint-id" in message
    assert "'9lives' is not a name" in message
    assert "sdxl='bad id!': the id must be the endpoint id" in message
    assert "names 'ok' twice" in message


def test_the_result_cannot_be_changed_by_whoever_reads_it() -> None:
    endpoints = parse_endpoints("flux=abc123")
    with pytest.raises(TypeError):
        endpoints["sdxl"] = "def456"  # type: ignore[index]
