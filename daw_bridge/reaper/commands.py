"""The REAPER subcommands: ``install-reaper`` and the shims' ``reaper run``."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(commands: argparse._SubParsersAction) -> None:
    install = commands.add_parser(
        "install-reaper", help="install the REAPER actions (Scripts folder, action list)"
    )
    install.add_argument(
        "--resource-path",
        type=Path,
        help="REAPER's resource folder (Options > Show REAPER resource path); "
        "default: REAPER's standard folder on this system",
    )
    reaper = commands.add_parser("reaper", help="used by the REAPER actions; not for typing")
    actions = reaper.add_subparsers(dest="reaper_action", required=True)
    actions.add_parser("run", help="follow a request written by a REAPER action").add_argument(
        "request", type=Path
    )
    actions.add_parser(
        "cancel", help="cancel the jobs of a request whose runner died, remove its stems"
    ).add_argument("request", type=Path)
    actions.add_parser(
        "choices", help="write the Settings pick lists (models, ensembles, drum-kit models)"
    ).add_argument("out", type=Path)


def run_install(args: argparse.Namespace) -> int:
    from daw_bridge.reaper.install import install

    done = install(args.resource_path)
    print(f"Installed {done.registered} daw-bridge actions into {done.scripts}")
    print(f"Registered them in {done.keymap}")
    print(f"Settings in {done.config}")
    print(
        "Restart REAPER (it reads its action list at start), then find them in "
        "Actions > Show action list by typing 'daw-bridge'."
    )
    return 0


def run_reaper(args: argparse.Namespace) -> int:
    import logging

    from daw_bridge.errors import DawBridgeError
    from daw_bridge.reaper.runner import cancel_leftovers, run

    if args.reaper_action == "choices":
        from daw_bridge.reaper.choices import write_choices

        write_choices(args.out)
        return 0
    if not Path(args.request).is_file():
        raise DawBridgeError(
            f"No request file at {args.request}.",
            "This command is started by the daw-bridge actions in REAPER; run one there.",
        )
    folder = Path(args.request).parent
    logging.basicConfig(
        filename=folder / "log.txt",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        force=True,
    )
    if args.reaper_action == "cancel":
        return cancel_leftovers(args.request)
    return run(args.request)
