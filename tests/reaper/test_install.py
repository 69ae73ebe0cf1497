"""``daw-bridge install-reaper`` into a resource folder, and the ReaPack index."""

from __future__ import annotations

import re
from pathlib import Path
from xml.etree import ElementTree

import pytest

from daw_bridge.cli import main
from daw_bridge.reaper import keyvalue
from daw_bridge.reaper.actions import ACTIONS, LIBRARY, Action, scripts_folder
from daw_bridge.reaper.install import install
from daw_bridge.reaper.reapack import render_index

REPO = Path(__file__).resolve().parents[2]


def test_install_into_an_empty_resource_folder(tmp_path: Path, capsys) -> None:
    assert main(["install-reaper", "--resource-path", str(tmp_path)]) == 0
    scripts = tmp_path / "Scripts" / "daw-bridge"
    for name in [LIBRARY, *(action.file for action in ACTIONS)]:
        assert (scripts / name).read_bytes() == (scripts_folder() / name).read_bytes()
    config = keyvalue.read(tmp_path / "Data" / "daw-bridge" / "daw-bridge.conf")
    assert Path(config["arg.1"]).is_absolute() and Path(config["arg.1"]).exists()
    assert [config["arg.2"], config["arg.3"]] == ["-m", "daw_bridge"]
    assert any(
        Path(p).is_dir() and list(Path(p).glob("*.toml")) for p in config["presets"].split(";")
    )
    lines = (tmp_path / "reaper-kb.ini").read_text().splitlines()
    assert len(lines) == len(ACTIONS)
    for action, line in zip(ACTIONS, lines, strict=True):
        match = re.fullmatch(
            r'SCR 4 0 (RS[0-9a-f]{40}) "Custom: daw-bridge: ([^"]+)" "([^"]+)"', line
        )
        assert match, line
        assert match.group(1) == action.command_id
        assert (tmp_path / "Scripts" / match.group(3)).is_file()
    assert "Restart REAPER" in capsys.readouterr().out


def test_reinstalling_keeps_one_registration_each_and_the_users_own_lines(tmp_path: Path) -> None:
    keymap = tmp_path / "reaper-kb.ini"
    mine = ["KEY 1 65 _RSabc 0 # Main : A", 'SCR 4 0 RSabc "Custom: mine.lua" "mine.lua"']
    keymap.write_text("\n".join(mine) + "\n", encoding="utf-8")
    install(tmp_path)
    first = keymap.read_text()
    install(tmp_path)
    assert keymap.read_text() == first
    lines = first.splitlines()
    assert lines[:2] == mine
    assert len(lines) == 2 + len(ACTIONS)
    assert (tmp_path / "reaper-kb.ini.before-daw-bridge").read_text().splitlines() == mine


def test_without_a_resource_path_a_missing_reaper_folder_is_explained(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("APPDATA", str(tmp_path / "appdata"))
    assert main(["install-reaper"]) == 2
    error = capsys.readouterr().err
    assert "No REAPER resource folder" in error and "--resource-path" in error


#: Ids that users' shortcuts and toolbar buttons already point at, by the action's
#: file name ("daw-bridge - <name>.lua"): they must never change.
SHIPPED_COMMAND_IDS = {
    "Split selected items into stems": "RS22300510f725f343bb71ebc3182f2898d0a39463",
    "Split selected items into vocals and instrumental": (
        "RS3387b46c025b769addaa90d03783ee07cb5e0f63"
    ),
    "Split selected items into 6 stems": "RS5a65429da247acb3b865f0bc6ee391915d9608ad",
    "Split selected items with preset": "RS04de0049d7cc97badd43ee45c4d5c9a321eb4f70",
    "Apply preset to stems": "RS35a5595c897434ce3a5af801a812597b0a848d6c",
    "Settings": "RS338148cb3ecbcd2a92df68aefb90b8b9ff9d1fd3",
}


def test_command_ids_are_stable_and_distinct() -> None:
    ids = [action.command_id for action in ACTIONS]
    assert len(set(ids)) == len(ids)
    current = {action.file: action.command_id for action in ACTIONS}
    shipped = {name: current.get(f"daw-bridge - {name}.lua") for name in SHIPPED_COMMAND_IDS}
    assert shipped == SHIPPED_COMMAND_IDS
    # Derived from the file name only: a reworded description keeps the shortcut.
    reworded = Action(ACTIONS[0].file, "another description")
    assert reworded.command_id == ACTIONS[0].command_id


def test_the_committed_reapack_index_is_current_and_lists_every_script() -> None:
    committed = (REPO / "reaper_scripts" / "index.xml").read_text(encoding="utf-8")
    assert committed == render_index(), (
        "Regenerate: python -m daw_bridge.reaper.reapack > reaper_scripts/index.xml"
    )
    index = ElementTree.fromstring(committed.encode())
    sources = index.findall("./category/reapack/version/source")
    files = {source.get("file"): source.get("main") for source in sources}
    assert files == {**{a.file: "main" for a in ACTIONS}, LIBRARY: None}
    for source in sources:
        assert (REPO / "reaper_scripts" / source.get("file")).is_file()


@pytest.mark.parametrize("action", ACTIONS, ids=lambda a: a.file)
def test_every_action_is_a_thin_script_over_the_library(action) -> None:
    text = (scripts_folder() / action.file).read_text(encoding="utf-8")
    assert LIBRARY in text
    code = [line for line in text.splitlines() if line.strip() and not line.startswith("--")]
    assert len(code) <= 6


def test_a_resource_path_that_is_a_file_is_one_clear_message(tmp_path, capsys) -> None:
    not_a_folder = tmp_path / "REAPER"
    not_a_folder.write_text("")
    assert main(["install-reaper", "--resource-path", str(not_a_folder)]) == 2
    error = capsys.readouterr().err
    assert "Could not install into" in error and "--resource-path" in error
    assert "Traceback" not in error


def test_reaper_run_without_a_request_file_is_one_clear_message(tmp_path, capsys) -> None:
    assert main(["reaper", "run", str(tmp_path / "missing" / "request.txt")]) == 2
    error = capsys.readouterr().err
    assert "No request file" in error and "REAPER" in error
