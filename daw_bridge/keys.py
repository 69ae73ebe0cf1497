"""The CURVE keys that decide who may talk to a daw-bridge server.

Every connection, loopback included, is encrypted and authenticated with
ZeroMQ's CURVE: the server proves it holds its secret key, and admits only the
owner's client key and the remote client keys the owner allowed. The keys live
in ``<config folder>/keys/`` (``$DAW_BRIDGE_CONFIG_DIR`` overrides the config
folder), a folder only the user can open, and are created on first use, so the
local client, the REAPER runner and the server agree without any set-up.

Files: ``server.key`` and ``client.key`` (JSON key pairs, z85 text),
``allowed.json`` (remote client keys and their labels) and ``servers.json``
(the public keys of servers on other machines, by address). This module stays
light: the client imports it, so ZeroMQ and the standard library only.
"""

from __future__ import annotations

import json
import os
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.utils import z85

from daw_bridge.errors import DawBridgeError

CONFIG_DIR_ENV = "DAW_BRIDGE_CONFIG_DIR"
_KEY_LENGTH = 40  # z85 text of a 32-byte key


@dataclass(frozen=True)
class KeyPair:
    public: str
    secret: str


def config_dir() -> Path:
    """``$DAW_BRIDGE_CONFIG_DIR``, else the user's daw-bridge config folder."""
    configured = os.environ.get(CONFIG_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir("daw-bridge"))


def keys_dir() -> Path:
    """The keys folder, created (and kept) private to the user."""
    folder = config_dir() / "keys"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.name == "posix" and folder.stat().st_mode & 0o077:
        os.chmod(folder, 0o700)  # made by hand, or copied with looser bits
    return folder


def server_pair() -> KeyPair:
    """This machine's server key pair; clients check the server against its public half."""
    return _pair("server.key")


def client_pair() -> KeyPair:
    """The owner's client key pair: the one key a server on this machine fully trusts."""
    return _pair("client.key")


def check_key(text: str) -> str:
    """``text`` as a public key (40 characters of z85), or a clear error."""
    key = text.strip()
    try:
        valid = len(key) == _KEY_LENGTH and len(z85.decode(key)) == 32
    except (ValueError, KeyError, struct.error):
        valid = False
    if not valid:
        raise DawBridgeError(
            f"{text!r} is not a daw-bridge key (40 characters).",
            "Copy the key that `daw-bridge keys show` prints on the other machine.",
        )
    return key


def allowed_keys() -> dict[str, str]:
    """Remote client public keys the owner allowed, with their labels."""
    return _read_json("allowed.json")


def allow(key: str, label: str = "") -> str:
    """Let a remote client key in (as a non-owner); return the key."""
    key = check_key(key)
    allowed = allowed_keys()
    allowed[key] = label
    _write_json("allowed.json", allowed)
    return key


def revoke(key: str) -> bool:
    """Forget an allowed client or a known server, by key, label or address; whether known."""
    key = key.strip()
    known = False
    if not key:
        return known
    for name in ("allowed.json", "servers.json"):
        entries = _read_json(name)
        kept = {k: v for k, v in entries.items() if key not in (k, v)}
        if kept != entries:
            _write_json(name, kept)
            known = True
    return known


def trusted_servers() -> dict[str, str]:
    """Public keys of servers on other machines, by address."""
    return _read_json("servers.json")


def trust(address: str, key: str) -> str:
    """Remember ``key`` as the public key of the server at ``address``."""
    key = check_key(key)
    servers = trusted_servers()
    servers[address] = key
    _write_json("servers.json", servers)
    return key


def server_key_for(address: str) -> str:
    """The public key the server at ``address`` must prove it holds."""
    return trusted_servers().get(address) or server_pair().public


def _pair(name: str) -> KeyPair:
    path = keys_dir() / name
    if not path.exists():
        public, secret = zmq.curve_keypair()
        document = {"public": public.decode("ascii"), "secret": secret.decode("ascii")}
        _create_private(path, json.dumps(document))
    document = json.loads(path.read_text(encoding="utf-8"))
    return KeyPair(document["public"], document["secret"])


def _create_private(path: Path, text: str) -> None:
    """Write ``path`` (mode 0600) unless it exists: a racing process's key is kept."""
    temporary = _write_private(path, text)
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink()


def _write_private(path: Path, text: str) -> Path:
    """A complete private temporary file beside ``path``, to link or rename into place."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    return temporary


def _read_json(name: str) -> dict[str, str]:
    path = keys_dir() / name
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def _write_json(name: str, entries: dict[str, str]) -> None:
    path = keys_dir() / name
    os.replace(_write_private(path, json.dumps(entries, indent=2) + "\n"), path)
