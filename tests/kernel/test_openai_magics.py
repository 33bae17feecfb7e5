"""%%llm over an Ollama pool and an OpenAI-compatible pool at once, through a real shell
against one stand-in of each."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell
from kernel_helpers import closed_port, run

from gleitzeit_jupyter.kernel.comm import CommBridge
from gleitzeit_jupyter.kernel.llm_pools import split_pool
from gleitzeit_jupyter.kernel.runtime import current_runtime
from gleitzeit_jupyter.testing.ollama import OllamaStandIn
from gleitzeit_jupyter.testing.openai import OpenAIStandIn

QWEN = "Qwen/Qwen2.5-7B-Instruct"


@pytest.fixture(scope="module")
def vllm() -> Iterator[OpenAIStandIn]:
    # llama3.2 is served by both pools (the Ollama stand-in lists llama3.2:latest)
    with OpenAIStandIn(models=[QWEN, "llama3.2"], tokens_per_s=200) as srv:
        yield srv


@pytest.fixture
def both(shell: InteractiveShell, vllm: OpenAIStandIn) -> Iterator[InteractiveShell]:
    vllm.faults.update(error_rate=0.0, rate_limit_rate=0.0, hang=False)
    res = shell.run_cell(f"%config Gleitzeit.openai_hosts = ['{vllm.url}']")
    assert res.success, res.error_in_exec
    yield shell
    shell.run_cell("%config Gleitzeit.openai_hosts = []")  # the shell outlives this test


def _instance_ids() -> dict[str, list[str]]:
    rt = current_runtime()
    assert rt is not None
    return {name: [i.id for i in p.instances] for name, p in rt.providers.items()}


def test_split_pool_takes_only_known_pool_names() -> None:
    assert split_pool("openai:Qwen/Qwen2.5-7B-Instruct") == ("openai", QWEN)
    assert split_pool("ollama:llama3.2:1b") == ("ollama", "llama3.2:1b")
    assert split_pool("llama3.2:1b") == (None, "llama3.2:1b")
    assert split_pool("openai") == (None, "openai")


@pytest.mark.parametrize("model", ["openai:", "ollama:", "openai: "])
def test_a_pool_prefix_without_a_model_is_a_one_line_error(
    shell: InteractiveShell, model: str
) -> None:
    cell = run(shell, f"%%llm -m '{model}'\nhi")
    assert cell.error is not None
    assert f"-m {model.strip()} names no model" in cell.text and "\n" not in cell.text.strip()


def test_a_model_only_the_openai_pool_serves_goes_there(
    both: InteractiveShell, vllm: OpenAIStandIn
) -> None:
    cell = run(both, f"%%llm -m {QWEN} -o answer\nWhy is the sky blue?")
    assert cell.error is None, cell.text
    assert vllm.requests_to("/v1/chat/completions")[-1].body["model"] == QWEN
    assert isinstance(both.user_ns["answer"], str) and both.user_ns["answer"]
    footer = cell.data("text/plain")[-1]
    assert footer.startswith(f"{QWEN} · {_instance_ids()['openai'][0]} · ")
    assert "→ 12 tokens" in footer and "first token" in footer and "tok/s" in footer


def test_pool_prefix_picks_the_pool(
    both: InteractiveShell, vllm: OpenAIStandIn, standin: OllamaStandIn
) -> None:
    before_o, before_v = (
        len(standin.requests_to("/api/generate")),
        len(vllm.requests_to("/v1/chat/completions")),
    )
    for _ in range(3):
        cell = run(both, "x = %llm -m openai:llama3.2 --max-tokens 4 hello")
        assert cell.error is None, cell.text
    cell = run(both, "y = %llm -m ollama:llama3.2 --max-tokens 4 hello")
    assert cell.error is None, cell.text
    cell = run(both, "z = %llm -m qwen2.5:0.5b --max-tokens 4 hello")  # a tag, not a pool
    assert cell.error is None, cell.text
    assert len(vllm.requests_to("/v1/chat/completions")) - before_v == 3
    assert len(standin.requests_to("/api/generate")) - before_o == 2
    assert len(both.user_ns["x"].split()) == 4


def test_models_lists_every_pool_with_its_pool(both: InteractiveShell) -> None:
    cell = run(both, "frame = %llm models")
    assert cell.error is None, cell.text
    frame: pd.DataFrame = both.user_ns["frame"]
    pools = frame.reset_index().groupby("name")["pool"].apply(sorted).to_dict()
    assert pools[QWEN] == ["openai"]
    assert pools["qwen2.5:0.5b"] == ["ollama"]
    assert pools["llama3.2:latest"] == ["ollama"] and pools["llama3.2"] == ["openai"]


def test_mixed_pool_map_uses_both_pools_and_loses_no_row(both: InteractiveShell) -> None:
    both.user_ns["df"] = pd.DataFrame({"n": range(60)})
    cell = run(both, "%%llm --map df -m llama3.2 --concurrency 12 --max-tokens 3 -o out\nSay {n}")
    assert cell.error is None, cell.text
    assert "--map: 60 rows, 60 ok, 0 failed" in cell.stdout
    out = both.user_ns["out"]
    assert out.notna().all() and all(len(v.split()) == 3 for v in out)
    rt = current_runtime()
    served = {
        name: sum(i.metrics.requests for i in p.instances) for name, p in rt.providers.items()
    }
    assert served["ollama"] > 0 and served["openai"] > 0  # fleet routing spread the rows


def test_add_openai_server_at_run_time(shell: InteractiveShell, vllm: OpenAIStandIn) -> None:
    cell = run(shell, f"%gleitzeit add openai {vllm.url}")
    assert cell.error is None, cell.text
    assert "to openai: healthy" in cell.stdout
    cell = run(shell, f"x = %llm -m openai:{QWEN} --max-tokens 2 hi")
    assert cell.error is None, cell.text
    run(shell, "%gleitzeit reset")


def test_openai_prefix_without_servers_says_how_to_add_one(shell: InteractiveShell) -> None:
    run(shell, "%gleitzeit reset")
    cell = run(shell, f"%llm -m openai:{QWEN} hi")
    assert cell.error is not None
    assert "no openai pool is configured" in cell.text and "openai_hosts" in cell.text


def test_bad_openai_host_is_rejected_at_config_and_the_old_value_kept(
    shell: InteractiveShell, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = next(c for c in shell.configurables if type(c).__name__ == "Gleitzeit")
    cell = run(shell, "%config Gleitzeit.openai_hosts = ['gpu-2:8000']")
    assert cell.error is None
    assert cfg.openai_hosts == ["http://gpu-2:8000/v1"]
    with caplog.at_level(logging.ERROR):
        run(shell, "%config Gleitzeit.openai_hosts = ['ftp://gpu-2']")
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert messages == [
        "Gleitzeit.openai_hosts: cannot read server URL 'ftp://gpu-2'."
        " write it as http(s)://host:port/v1"
    ]
    assert cfg.openai_hosts == ["http://gpu-2:8000/v1"]
    run(shell, "%config Gleitzeit.openai_hosts = []")


def test_metrics_status_comm_and_save_load_show_the_openai_pool(
    both: InteractiveShell, vllm: OpenAIStandIn, tmp_path: Path
) -> None:
    cell = run(both, f"x = %llm -m {QWEN} --max-tokens 2 hi")
    assert cell.error is None, cell.text
    cell = run(both, "m = %gleitzeit metrics")
    assert cell.error is None, cell.text
    frame: pd.DataFrame = both.user_ns["m"]
    assert list(frame.columns[:2]) == ["provider", "instance"]
    assert "openai" in set(frame["provider"])
    rt = current_runtime()

    async def snap() -> dict:
        return CommBridge(rt).snapshot()

    message = rt.run(snap())
    openai_pool = message["providers"]["openai"]
    assert openai_pool["kind"] == "OpenAIProvider"
    assert openai_pool["instances"][0]["endpoint"].endswith("/v1")
    assert openai_pool["instances"][0]["requests"] >= 1

    path = tmp_path / "pools.sqlite"
    cell = run(both, f"%gleitzeit save {path}")
    assert cell.error is None and "openai (1 instance)" in cell.stdout, cell.text
    requests = Counter(
        {name: sum(i.metrics.requests for i in p.instances) for name, p in rt.providers.items()}
    )
    run(both, "%gleitzeit reset")
    cell = run(both, f"%gleitzeit load {path}")
    assert cell.error is None, cell.text
    rt = current_runtime()
    restored = rt.providers["openai"]
    assert [i.endpoint for i in restored.instances] == [vllm.url]
    assert sum(i.metrics.requests for i in restored.instances) >= requests["openai"]


def test_an_unreachable_openai_server_is_not_given_the_ollama_hint(
    shell: InteractiveShell,
) -> None:
    shell.run_cell(f"%config Gleitzeit.openai_hosts = ['127.0.0.1:{closed_port()}']")
    try:
        cell = run(shell, f"%llm -m openai:{QWEN} hi")
        assert cell.error is not None
        assert "openai server" in cell.text and "start Ollama" not in cell.text
    finally:
        shell.run_cell("%config Gleitzeit.openai_hosts = []")


def test_openai_hosts_default_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from gleitzeit_jupyter.kernel.config import Gleitzeit

    monkeypatch.setenv("GLEITZEIT_OPENAI_HOSTS", "gpu-2:8000, ftp://bad ,https://h/openai/v1")
    assert Gleitzeit().openai_hosts == ["http://gpu-2:8000/v1", "https://h/openai/v1"]
    monkeypatch.delenv("GLEITZEIT_OPENAI_HOSTS")
    assert Gleitzeit().openai_hosts == []


def test_a_host_with_credentials_in_the_environment_is_skipped_unshown(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from gleitzeit_jupyter.kernel.config import Gleitzeit

    monkeypatch.setenv("GLEITZEIT_OPENAI_HOSTS", "http://me:hunter2@gpu-1:8000,gpu-2:8000")
    with caplog.at_level(logging.WARNING):
        assert Gleitzeit().openai_hosts == ["http://gpu-2:8000/v1"]
    assert "gpu-1" in caplog.text and "hunter2" not in caplog.text


def test_no_stream_footer_shows_speed_but_no_first_token(both: InteractiveShell) -> None:
    cell = run(both, "%%llm --no-stream -m openai:llama3.2 --max-tokens 5\nhello")
    assert cell.error is None, cell.text
    footer = cell.data("text/plain")[-1]
    assert "→ 5 tokens" in footer and "tok/s" in footer and "first token" not in footer


def test_the_api_key_reaches_the_server_but_is_never_shown(
    shell: InteractiveShell, tmp_path: Path
) -> None:
    key = "sk-kernel-secret-7"
    with OpenAIStandIn(models=[QWEN], api_key=key) as srv:
        run(shell, f"%config Gleitzeit.openai_api_key = '{key}'")
        run(shell, f"%config Gleitzeit.openai_hosts = ['{srv.url}']")
        try:
            # answered: the stand-in takes no call without the key
            shown = [run(shell, f"%%llm -m {QWEN} --max-tokens 2\nhi")]
            assert shown[0].error is None, shown[0].text
            for line in ("%config Gleitzeit", "%gleitzeit status", "m = %gleitzeit metrics"):
                shown.append(run(shell, line))
            shown.append(run(shell, "print(m.to_string())"))
            shown.append(run(shell, f"%gleitzeit save {tmp_path / 'pools.sqlite'}"))
            assert [cell.text for cell in shown if cell.error] == []
            assert "Gleitzeit.openai_api_key" in shown[1].text
            assert not [cell.text for cell in shown if key in cell.text]
            assert key.encode() not in (tmp_path / "pools.sqlite").read_bytes()
        finally:
            run(shell, "%config Gleitzeit.openai_hosts = []")
            run(shell, "%config Gleitzeit.openai_api_key = ''")


def test_config_strategy_switches_the_running_openai_pool_in_place(
    both: InteractiveShell, vllm: OpenAIStandIn
) -> None:
    cell = run(both, f"%%llm -m {QWEN} --max-tokens 2\nhi")
    assert cell.error is None, cell.text
    rt = current_runtime()
    pool = rt.providers["openai"]
    try:
        cell = run(both, "%config Gleitzeit.strategy = 'round_robin'")
        assert cell.error is None, cell.text
        # the same pool (servers added at run time kept), now with the new strategy
        assert rt.providers["openai"] is pool and pool.strategy == "round_robin"
    finally:
        run(both, "%config Gleitzeit.strategy = 'fleet'")


def test_gleitzeit_strategy_for_the_ollama_pool_leaves_the_openai_pool(
    both: InteractiveShell,
) -> None:
    cell = run(both, f"%%llm -m {QWEN} --max-tokens 2\nhi")
    assert cell.error is None, cell.text
    rt = current_runtime()
    try:
        cell = run(both, "%gleitzeit strategy round_robin --provider ollama")
        assert cell.error is None, cell.text
        assert rt.providers["ollama"].strategy == "round_robin"
        assert rt.providers["openai"].strategy == "fleet"
    finally:
        run(both, "%gleitzeit strategy fleet")
