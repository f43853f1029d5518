"""Per-model prices and context windows, for cost estimates and token budgets.

Prices are USD per 1M tokens (input, output) from OpenAI's public price list (standard tier,
checked 2025); they are estimates shown before a batch and logged with every call, not billing.
Dated variants (e.g. `gpt-4o-mini-2024-07-18`) match by the longest known prefix.
"""
from __future__ import annotations

# model prefix -> (USD per 1M input tokens, USD per 1M output tokens)
PRICES_PER_1M: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "chatgpt-4o": (5.00, 15.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5": (1.25, 10.00),
    "o1-mini": (1.10, 4.40),
    "o1": (15.00, 60.00),
    "o3-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
    "o4-mini": (1.10, 4.40),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    # The embedded model runs on this machine: no per-token price.
    "gemma-3-270m": (0.0, 0.0),
}

# model prefix -> context window in tokens (input + output)
CONTEXT_WINDOWS: dict[str, int] = {
    "gpt-4o-mini": 128_000,
    "gpt-4o": 128_000,
    "chatgpt-4o": 128_000,
    "gpt-4.1": 1_047_576,
    "gpt-5": 400_000,
    "o1-mini": 128_000,
    "o1": 200_000,
    "o3": 200_000,
    "o4-mini": 200_000,
    "gpt-4-turbo": 128_000,
    "gpt-3.5-turbo": 16_385,
}


def _lookup(table: dict, model: str):
    name = (model or "").lower()
    if name.startswith("ft:"):  # fine-tuned: ft:<base>:<org>:...
        name = name[3:]
    best = None
    for prefix in table:
        if name.startswith(prefix) and (best is None or len(prefix) > len(best)):
            best = prefix
    return table[best] if best is not None else None


# The Batch API bills input and output at half the standard price (OpenAI's published batch tier).
BATCH_DISCOUNT = 0.5


def estimate_cost(model: str, prompt_tokens: int, completion_tokens: int, batch: bool = False) -> float | None:
    """USD for one call (at batch prices with `batch`), or None when the model's price is unknown
    (e.g. a self-hosted server)."""
    price = _lookup(PRICES_PER_1M, model)
    if price is None:
        return None
    cost = (prompt_tokens * price[0] + completion_tokens * price[1]) / 1_000_000
    return cost * BATCH_DISCOUNT if batch else cost


def context_window(model: str) -> int | None:
    """Known context window of an OpenAI model, or None."""
    return _lookup(CONTEXT_WINDOWS, model)
