"""The sandbox provider: a warm, hardened Docker container pool that runs Python.

See docs/sandbox.md for the defaults, limits and security settings.
"""

from .provider import DockerConfig, PythonProvider, PythonProviderStreamlined

__all__ = ["DockerConfig", "PythonProvider", "PythonProviderStreamlined"]
