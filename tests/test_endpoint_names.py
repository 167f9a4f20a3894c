"""Further RunPod endpoints by name (`flux=abc123,sdxl=def456`), checked before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import DEFAULT_ENDPOINT, ConfigError, parse_endpoints
from tests.conftest import make_settings


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


def test_runpod_endpoints_is_a_setting_beside_the_default_endpoint(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        RUNPOD_ENDPOINT_ID="main1",
        RUNPOD_ENDPOINTS="flux=abc123,sdxl=def456",
        ENDPOINT_MAX_JOBS_IN_FLIGHT="flux=2",
        ENDPOINT_GPU_PRICES="flux=0.00044,default=0.0003",
    )
    assert dict(settings.endpoints) == {"default": "main1", "flux": "abc123", "sdxl": "def456"}
    assert settings.endpoint_names == ("default", "flux", "sdxl")
    assert dict(settings.endpoint_max_jobs_in_flight) == {"flux": 2}
    assert dict(settings.endpoint_gpu_prices) == {"flux": 0.00044, "default": 0.0003}


def test_a_cap_or_price_for_an_endpoint_not_configured_is_refused_with_the_names_to_use(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_settings(
            tmp_path,
            RUNPOD_ENDPOINTS="flux=abc123",
            ENDPOINT_MAX_JOBS_IN_FLIGHT="sdxl=2",
            ENDPOINT_GPU_PRICES="flux=cheap",
        )
    problems = caught.value.problems
    assert (
        "ENDPOINT_MAX_JOBS_IN_FLIGHT names sdxl, which RUNPOD_ENDPOINTS does not: "
        "use default, flux." in problems
    )
    assert any(
        p.startswith("ENDPOINT_GPU_PRICES='flux=cheap' must list endpoint-name=value")
        and "flux='cheap' is not a number" in p
        for p in problems
    ), problems
