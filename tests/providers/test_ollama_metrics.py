"""Ollama's extras in the pool's snapshots: tokens/s per instance and for the whole pool."""

from __future__ import annotations

import math

from gleitzeit_jupyter.providers.ollama import OllamaProvider
from gleitzeit_jupyter.testing.ollama import OllamaStandIn


async def test_tokens_per_s_per_instance_and_for_the_pool() -> None:
    with OllamaStandIn(tokens_per_s=200) as a, OllamaStandIn(tokens_per_s=50) as b:
        p = OllamaProvider(hosts=[a.url, b.url], auto_discover=False)
        await p.initialize()
        try:
            for inst in p.instances:  # pinned: routing would keep to the warm instance
                for _ in range(3):
                    await p.execute(
                        "llm/generate", {"model": "llama3.2", "prompt": "hi"}, instance=inst.id
                    )
            frame = p.metrics().set_index("instance")
            fast, slow = (frame.loc[i.id, "tokens_per_s"] for i in p.instances)
            pool = frame.loc["ALL", "tokens_per_s"]
            assert not math.isnan(pool)
            assert min(fast, slow) < pool < max(fast, slow)  # token-weighted, not a sum
            assert p.status()["totals"]["tokens_per_s"] == pool
        finally:
            await p.shutdown()
