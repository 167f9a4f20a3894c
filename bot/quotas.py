"""Credits: what a job costs, and the ledger that holds, captures and refunds them."""

from __future__ import annotations

from bot.estimates import work_units
from bot.prompt import GenerationRequest
from bot.workflows import Template


def credit_cost(request: GenerationRequest, template: Template) -> int:
    """Credits scale with GPU work: a 1024x1024, 25-step image is 1 credit; never less than 1."""
    return max(1, round(work_units(request) * template.cost_multiplier))
