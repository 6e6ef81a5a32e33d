"""Run the service with uvicorn."""

from __future__ import annotations

from dataclasses import replace

from mlsleuth.server._config import ServerConfig

__all__ = ["serve"]


def serve(config: ServerConfig, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve :func:`~mlsleuth.server.create_app` on ``host:port`` until interrupted.

    Alert links use ``config.public_url``, or ``http://host:port`` when it is empty.
    """
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - the server extra installs it
        raise ImportError("mlsleuth serve needs uvicorn: pip install 'mlsleuth[server]'") from exc
    from mlsleuth.server._app import create_app

    if not config.public_url:
        config = replace(config, public_url=f"http://{host}:{port}")
    uvicorn.run(create_app(config), host=host, port=port, log_level=log_level, access_log=False)
