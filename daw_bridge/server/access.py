"""Who gets in, and what each client may ask for.

The door: the server's socket speaks CURVE only, and a ZAP handler admits the
owner's client key and the remote keys the owner allowed (``daw-bridge keys
allow``); anything else is turned away in the handshake, before a request is
read. Inside: each request carries the key that sent it (ZeroMQ's ``User-Id``,
set by the handler, never taken from the message), jobs belong to that key,
and only the owner may name files on this machine, since the server reads and
writes them with the owner's rights.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator

from daw_bridge import keys
from daw_bridge.errors import DawBridgeError
from daw_bridge.protocol import is_local

log = logging.getLogger(__name__)


class Gate:
    """The CURVE keys of a server socket and the ZAP handler that checks clients."""

    def __init__(self, context: zmq.Context) -> None:
        self.server = keys.server_pair()
        self.owner = keys.client_pair().public
        self._authenticator = ThreadAuthenticator(context, log=log)

    def secure(self, socket: zmq.Socket) -> None:
        """Make ``socket`` a CURVE server behind the handler: call before it binds."""
        self._authenticator.start()
        self._authenticator.configure_curve_callback("*", self)
        socket.curve_server = True
        socket.curve_publickey = self.server.public.encode("ascii")
        socket.curve_secretkey = self.server.secret.encode("ascii")

    def stop(self) -> None:
        self._authenticator.stop()

    def callback(self, _domain: str, key: bytes) -> bool:
        """The ZAP handler's question: may this client key connect?"""
        return self.admits(key.decode("ascii"))

    def admits(self, key: str | None) -> bool:
        """The owner's key, or one allowed now (a revoked key stops at its next request)."""
        return key is not None and (key == self.owner or key in keys.allowed_keys())


def check_bind(address: str) -> None:
    """Refuse an address other machines can reach unless a remote key is allowed."""
    if is_local(address):
        return
    allowed = keys.allowed_keys()
    if not allowed:
        raise DawBridgeError(
            f"Refusing to listen on {address}: other machines can reach it, and no remote "
            "client key is allowed, so only this machine could use it.",
            "Allow the other machine's client key first (`daw-bridge keys allow KEY`; "
            "`daw-bridge keys show` there prints it), or bind tcp://127.0.0.1:PORT.",
        )
    log.warning(
        "listening on %s, reachable from other machines: the owner's key and %d allowed "
        "remote key(s) get in (`daw-bridge keys show`)",
        address,
        len(allowed),
    )


def confine(message: dict[str, Any], owner: bool, private: list[Path]) -> None:
    """Refuse a request that names files it may not: any, unless it comes from the owner.

    The owner's output folder must be outside the ``private`` folders (the
    server's state, its caches and keys): stems among them would be pruned, or
    break the server's next start.
    """
    if not owner:
        named = _files_named(message)
        if named:
            raise DawBridgeError(
                f"Only the owner of this server may name files on its machine; this request "
                f"names {', '.join(named)}.",
                "Send the audio as bytes and leave out the output folder (the stems come "
                "back as bytes: `daw-bridge client --server ADDRESS split FILE --out DIR`); "
                "use the built-in presets and models by name.",
            )
        return
    if message["type"] != "submit" or "out_dir" not in message:
        return  # no out_dir: the job's files stay in the server's private area
    out_dir = Path(message["out_dir"])  # absolute: the protocol refuses a relative one
    resolved = out_dir.resolve()
    for folder in private:
        if resolved.is_relative_to(folder.resolve()):
            raise DawBridgeError(
                f"The output folder {out_dir} is inside the server's own folder {folder}.",
                "Choose a folder of your own for the stems.",
            )


def _files_named(message: dict[str, Any]) -> list[str]:
    """The fields of a request that name files or folders on the server's machine."""
    from daw_bridge.models.loader import model_names

    named = []
    if message["type"] == "submit":
        if "path" in message["source"]:
            named.append("the audio file (source path)")
        if "out_dir" in message:  # without one, the stems come back as bytes
            named.append("the output folder (out_dir)")
        options = message.get("options", {})
        preset = options.get("preset")
        if preset is not None and preset not in _builtin_presets():
            named.append(f"the preset {preset!r} (not a built-in preset)")
        for model in (options.get("model"), options.get("drum_kit")):
            if model is not None and not _shared_model(model, model_names()):
                named.append(f"the model {model!r} (not a model name)")
    if message["type"] == "apply" and message["preset"] not in _builtin_presets():
        named.append(f"the preset {message['preset']!r} (not a built-in preset)")
    return named


def _shared_model(model: str, catalogue: list[str]) -> bool:
    """A catalogue model, a built-in ensemble no file of the owner's hides, or an inline
    ensemble of catalogue models: names that mean the same on every machine."""
    from daw_bridge.separation.ensemble_library import builtin_names, inline_models

    if model in catalogue or model in builtin_names():
        return True
    members = inline_models(model) if "=" in model else None
    return bool(members) and all(member in catalogue for member in members)


def _builtin_presets() -> set[str]:
    """Built-in preset names that no preset of the owner's hides (those are the owner's)."""
    from daw_bridge.presets import library

    return {entry.name for entry in library.available() if entry.origin == "built-in"}
