"""The codec error vocabulary: every codec raises the shared classes through its public parsers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pipeline.providers.codec_errors import MalformedAnswer, ProviderRefused
from pipeline.providers.newapi import answers as newapi
from pipeline.providers.relaydance import codec as relaydance
from pipeline.providers.seedance2 import answers as seedance2
from pipeline.providers.venice import codec as venice

PARSERS: dict[str, Callable[[Any], object]] = {
    "venice.parse_queue": venice.parse_queue,
    "venice.parse_quote": venice.parse_quote,
    "venice.parse_status": venice.parse_status,
    "seedance2.parse_submit": seedance2.parse_submit,
    "seedance2.parse_status": seedance2.parse_status,
    "seedance2.check_envelope": seedance2.check_envelope,
    "newapi.parse_submit": newapi.parse_submit,
    "newapi.parse_status": newapi.parse_status,
    "relaydance.parse_submit": relaydance.parse_submit,
    "relaydance.parse_status": relaydance.parse_status,
}


@pytest.mark.parametrize("parse", PARSERS.values(), ids=PARSERS.keys())
@pytest.mark.parametrize("payload", [None, "ok", [1, 2], {}], ids=["null", "str", "list", "empty"])
def test_every_codec_raises_malformed_answer(parse: Callable[[Any], object], payload: Any) -> None:
    with pytest.raises(MalformedAnswer):
        parse(payload)


def test_provider_refused_carries_code_and_message_and_redacts_its_text() -> None:
    refused = ProviderRefused("unauthorized", "rejected Bearer sk-live-0123456789abcdef")
    assert (refused.code, refused.message) == (
        "unauthorized",
        "rejected Bearer sk-live-0123456789abcdef",
    )
    assert str(refused).startswith("unauthorized: ")
    assert "sk-live-0123456789abcdef" not in str(refused)
    assert str(ProviderRefused("rate_limited")) == "rate_limited"
    assert not isinstance(refused, ValueError)


def test_seedance2_success_false_is_provider_refused() -> None:
    body = {"success": False, "error": {"code": "insufficient_credits", "message": "top up"}}
    with pytest.raises(ProviderRefused) as info:
        seedance2.parse_status(body)
    assert (info.value.code, info.value.message) == ("insufficient_credits", "top up")
    with pytest.raises(ProviderRefused) as bare:
        seedance2.check_envelope({"success": False})
    assert (bare.value.code, bare.value.message) == ("unknown", "")
