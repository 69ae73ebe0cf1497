"""CURVE keys: created private on first use, shared by client and server, managed by the CLI."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
import zmq

from daw_bridge import keys
from daw_bridge.cli import main
from daw_bridge.errors import DawBridgeError


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.setenv(keys.CONFIG_DIR_ENV, str(tmp_path / "config"))
    return tmp_path / "config"


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def other_key() -> str:
    return zmq.curve_keypair()[0].decode()


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_keys_are_made_on_first_use_readable_by_the_user_only(config):
    server, client = keys.server_pair(), keys.client_pair()
    assert server.public != client.public
    assert mode(config / "keys") == 0o700
    assert {path.name: mode(path) for path in (config / "keys").iterdir()} == {
        "server.key": 0o600,
        "client.key": 0o600,
    }
    assert (keys.server_pair(), keys.client_pair()) == (server, client)  # made once, then read


def test_a_key_pair_made_by_two_processes_at_once_is_one_key_pair(config):
    code = "from daw_bridge import keys; print(keys.client_pair().public)"
    children = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    publics = {child.communicate()[0].strip() for child in children}
    assert publics == {keys.client_pair().public}


def test_a_keys_folder_made_with_loose_bits_is_made_private_again(config):
    (config / "keys").mkdir(parents=True, mode=0o755)
    os.chmod(config / "keys", 0o755)
    keys.client_pair()
    assert mode(config / "keys") == 0o700


def test_allowed_and_trusted_keys_are_remembered_until_revoked(config):
    laptop, box = other_key(), other_key()
    keys.allow(laptop, "laptop")
    keys.trust("tcp://box:5797", box)
    assert keys.allowed_keys() == {laptop: "laptop"}
    assert keys.server_key_for("tcp://box:5797") == box
    assert keys.server_key_for("tcp://127.0.0.1:5797") == keys.server_pair().public
    assert keys.revoke("laptop") and keys.revoke(box)  # by label, or by key
    assert keys.allowed_keys() == {} and keys.trusted_servers() == {}
    assert not keys.revoke(laptop) and not keys.revoke("")


@pytest.mark.parametrize("text", ["", "short", "~" * 40, "#" * 40, "é" * 40, other_key() + "0"])
def test_what_is_not_a_key_is_refused_with_the_fix(config, text):
    with pytest.raises(DawBridgeError, match="not a daw-bridge key") as refused:
        keys.allow(text)
    assert "daw-bridge keys show" in refused.value.fix
    assert keys.allowed_keys() == {}


def test_the_keys_command_shows_allows_trusts_and_revokes(config, capsys):
    laptop, box = other_key(), other_key()
    assert main(["keys", "allow", laptop, "--label", "laptop"]) == 0
    assert main(["keys", "trust", "tcp://box:5797", box]) == 0
    assert main(["keys", "show"]) == 0
    shown = capsys.readouterr().out
    assert f"server key '{keys.server_pair().public}'" in shown
    assert f"daw-bridge keys allow '{keys.client_pair().public}'" in shown
    assert f"'{laptop}' laptop" in shown and f"tcp://box:5797 '{box}'" in shown
    assert main(["keys", "revoke", laptop]) == 0
    assert laptop not in keys.allowed_keys()
    assert main(["keys", "revoke", laptop]) == 2  # no longer known: says so
    assert "neither an allowed client key" in capsys.readouterr().err
    assert "secret" not in shown.lower() and keys.client_pair().secret not in shown
