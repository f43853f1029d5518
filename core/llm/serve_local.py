"""llama.cpp's OpenAI-compatible server (`llama_cpp.server`) with the embedded backend's CPU workarounds
applied first (see core.llm.local.extra_buffers_off): `python -m core.llm.serve_local --model GGUF ...`
takes llama_cpp.server's own arguments."""
import runpy

from core.llm.local import apply_cpu_workarounds

if __name__ == "__main__":
    apply_cpu_workarounds()
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
