"""Host strings and the environment, by the official ``ollama`` client's rules."""

from __future__ import annotations

import pytest
from ollama._client import _parse_host

from gleitzeit_jupyter.hub import UserError
from gleitzeit_jupyter.providers.hosts import DEFAULT_HOST, env_hosts, parse_host

SAME_AS_OLLAMA = [
    "",
    "1.2.3.4",
    ":56789",
    "1.2.3.4:56789",
    "http://1.2.3.4",
    "https://1.2.3.4",
    "https://1.2.3.4:56789",
    "example.com",
    "example.com:56789",
    "http://example.com",
    "https://example.com",
    "https://example.com:56789",
    "example.com/",
    "example.com/path",
    "https://example.com:56789/path/",
    "[0001:002:003:0004::1]",
    "[0001:002:003:0004::1]:56789",
    "http://[0001:002:003:0004::1]",
    "https://[0001:002:003:0004::1]:56789/path",
    "[::1]",
]


@pytest.mark.parametrize("value", SAME_AS_OLLAMA)
def test_hosts_parse_as_the_official_client_parses_them(value: str) -> None:
    assert parse_host(value) == _parse_host(value)


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:11434"),  # a server's bind-all, dialled on loopback
        ("0.0.0.0:9000", "http://127.0.0.1:9000"),
        ("::", "http://127.0.0.1:11434"),
        ("::1", "http://[::1]:11434"),
        ("fe80::1", "http://[fe80::1]:11434"),
        ("https://ollama.example.com", "https://ollama.example.com:443"),
        (None, DEFAULT_HOST),
    ],
)
def test_bind_all_and_bare_ipv6_are_dialable(value: str | None, url: str) -> None:
    assert parse_host(value) == url


@pytest.mark.parametrize("value", ["ftp://box", "box:notaport", "[::1"])
def test_an_unreadable_host_is_a_user_error(value: str) -> None:
    with pytest.raises(UserError, match="host"):
        parse_host(value)


def test_gleitzeit_hosts_win_over_ollama_host() -> None:
    assert env_hosts({}) == []
    assert env_hosts({"OLLAMA_HOST": "https://ollama.example.com"}) == [
        "https://ollama.example.com:443"
    ]
    both = {"OLLAMA_HOST": "ignored", "GLEITZEIT_OLLAMA_HOSTS": "a, b:1 , a:11434,"}
    assert env_hosts(both) == ["http://a:11434", "http://b:1"]


async def test_one_unreadable_entry_in_the_environment_does_not_empty_the_pool(
    monkeypatch, caplog
) -> None:
    from gleitzeit_jupyter.providers.ollama import OllamaProvider
    from gleitzeit_jupyter.testing.ollama import OllamaStandIn

    with OllamaStandIn(models=["m"]) as srv:
        monkeypatch.setenv("GLEITZEIT_OLLAMA_HOSTS", f"{srv.url},box:notaport")
        async with OllamaProvider(scan_ports=[], health_check_interval=60) as p:
            assert [i.endpoint for i in p.instances] == [srv.url]
            r = await p.execute("llm/generate", {"model": "m", "prompt": "x"})
            assert r["instance"] == p.instances[0].id
    assert "box:notaport" in caplog.text


async def test_without_discovery_every_server_the_environment_lists_joins(monkeypatch) -> None:
    from gleitzeit_jupyter.providers.ollama import OllamaProvider
    from gleitzeit_jupyter.testing.ollama import OllamaStandIn

    with OllamaStandIn(models=["m"]) as a, OllamaStandIn(models=["m"]) as b:
        monkeypatch.setenv("GLEITZEIT_OLLAMA_HOSTS", f"{a.url},{b.url}")
        async with OllamaProvider(auto_discover=False, health_check_interval=60) as p:
            assert sorted(i.endpoint for i in p.instances) == sorted([a.url, b.url])
