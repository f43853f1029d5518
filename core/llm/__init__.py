"""One LLM interface with backends behind it (see core.llm.base).

- "local" (the offline default): core.llm.local, the embedded Gemma 3 270M through llama.cpp.
- "openai": core.llm.openai, any OpenAI-compatible server through the `openai` SDK.
Token counting for OpenAI models: core.llm.tokens; prices and context windows: core.llm.pricing.
"""
from core.llm.base import LLM, LLMError, LLMRequest, LLMResponse, get_llm
from core.llm.local import LOCAL_MODEL_NAME, local_llama_kwargs, local_model_path
from core.llm.openai import DEFAULT_OPENAI_MODEL, resolve_api_key
from core.llm.pricing import estimate_cost
from core.llm.tokens import encoding_name_for, tiktoken_encoding

__all__ = [
    "LLMRequest", "LLMResponse", "LLMError", "LLM", "get_llm", "estimate_cost", "encoding_name_for",
    "tiktoken_encoding", "local_model_path", "local_llama_kwargs", "resolve_api_key", "DEFAULT_OPENAI_MODEL",
    "LOCAL_MODEL_NAME",
]
