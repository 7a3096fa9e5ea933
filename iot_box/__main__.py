# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Command line of the station service

``python -m iot_box pair --server URL --database DB --login LOGIN
--key-file PATH [--force]``
    request a key for the box's technical user and write it (mode 0600);
    an operator administrator then validates it with the box's Pair
    button in the back office.
``python -m iot_box status --config box.toml``
    the outbox depth and last seq, and whether the server accepts the key
    (an empty batch of events: nothing is created on the server).
``python -m iot_box run --config box.toml [-v]``
    the station service (`iot_box.app.App`) until SIGTERM or SIGINT:
    exit status 0 on a clean stop.

Expected failures (server down, key refused, missing file, bad
configuration) are one line on stderr and exit status 1, never a
traceback.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from iot_box.app import App
from iot_box.config import DEFAULT_TIMEOUT, ConfigError, load_config
from iot_box.outbox import Outbox, OutboxError
from iot_box.uplink import (
    KeyFileExists,
    Uplink,
    UplinkAuthError,
    UplinkError,
    request_key,
    write_key,
)

OK = 0
FAILED = 1
PROG = 'python -m iot_box'


def _error(message: str) -> int:
    print(f"iot_box: {message}", file=sys.stderr)
    return FAILED


def pair(args: argparse.Namespace) -> int:
    "Request the box's key and write it; print what the operator does next"
    path = Path(args.key_file)
    if path.exists() and not args.force:
        # checked before asking the server: a second request for the same
        # user would be answered with a key that is never valid
        return _error(
            f"{path} exists; it may hold the box's validated key "
            "(use --force to replace it)")
    try:
        key = request_key(
            args.server, args.database, args.login, timeout=args.timeout)
        write_key(path, key, force=args.force)
    except (ConfigError, ValueError, KeyFileExists) as error:
        return _error(str(error))
    except UplinkError as error:
        return _error(f"cannot request a key from {args.server}: {error}")
    except OSError as error:
        return _error(f"cannot write {path}: {error.strerror}")
    print(
        f"Key requested for user {args.login!r} on {args.server} "
        f"(database {args.database}) and written to {path} (mode 0600).\n"
        "An operator administrator must now validate it: in the back "
        "office, open Fuel > Station Boxes > Boxes, select the box whose "
        "user is this login and click Pair; once the box has reported its "
        "devices, link them to their dispensers and click Activate.\n"
        "Until then the server answers this box 401.")
    return OK


def status(args: argparse.Namespace) -> int:
    "Print the outbox depth, last seq and whether the server accepts us"
    try:
        config = load_config(args.config)
    except ConfigError as error:
        return _error(str(error))
    if config.outbox_path.exists():
        try:
            with Outbox(config.outbox_path) as outbox:
                depth, last_seq = outbox.depth(), outbox.last_seq()
        except (OutboxError, OSError, sqlite3.Error) as error:
            return _error(f"outbox {config.outbox_path}: {error}")
        print(f"outbox: {config.outbox_path}")
        print(f"outbox depth: {depth} event(s) waiting")
        print(f"last seq: {last_seq}")
    else:
        print(f"outbox: {config.outbox_path} (not created yet)")
        print("outbox depth: 0 event(s) waiting")
        print("last seq: 0")
    try:
        uplink = Uplink.from_config(config.server)
        uplink.check()
    except ConfigError as error:
        return _error(str(error))
    except UplinkAuthError as error:
        return _error(f"server {config.server.url}: {error}")
    except UplinkError as error:
        return _error(f"server {config.server.url} does not answer: {error}")
    print(f"server: {config.server.url} accepts the key (box active)")
    return OK


async def _serve(app: App) -> None:
    "Run app; SIGTERM and SIGINT stop it cleanly"
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for number in signals:
        loop.add_signal_handler(number, app.stop)
    try:
        await app.run()
    finally:
        for number in signals:
            loop.remove_signal_handler(number)


def run(args: argparse.Namespace) -> int:
    "Run the station service until SIGTERM/SIGINT"
    try:
        config = load_config(args.config)
        app = App(config)
    except ConfigError as error:
        return _error(str(error))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    try:
        asyncio.run(_serve(app))
    except OSError as error:
        # the outbox directory or the status port cannot be used
        return _error(f"cannot run: {error}")
    return OK


def parser() -> argparse.ArgumentParser:
    main_parser = argparse.ArgumentParser(
        prog=PROG, description="fuelpay station service")
    commands = main_parser.add_subparsers(
        dest='command', required=True, metavar='COMMAND')

    pair_parser = commands.add_parser(
        'pair', help="request the box's key from the server")
    pair_parser.add_argument(
        '--server', required=True, metavar='URL',
        help="the server, e.g. https://fuelpay.example.com")
    pair_parser.add_argument(
        '--database', required=True, metavar='DB',
        help="the Tryton database on the server")
    pair_parser.add_argument(
        '--login', required=True,
        help="the login of the box's technical user")
    pair_parser.add_argument(
        '--key-file', required=True, metavar='PATH',
        help="where to write the key (mode 0600)")
    pair_parser.add_argument(
        '--force', action='store_true',
        help="replace an existing key file")
    pair_parser.add_argument(
        '--timeout', type=float, default=DEFAULT_TIMEOUT,
        help="seconds to wait for the server (default %(default)s)")
    pair_parser.set_defaults(func=pair)

    status_parser = commands.add_parser(
        'status', help="outbox depth and whether the server accepts the key")
    status_parser.add_argument('--config', required=True, metavar='PATH')
    status_parser.set_defaults(func=status)

    run_parser = commands.add_parser(
        'run', help="run the station service until SIGTERM/SIGINT")
    run_parser.add_argument('--config', required=True, metavar='PATH')
    run_parser.add_argument(
        '-v', '--verbose', action='store_true', help="debug logging")
    run_parser.set_defaults(func=run)
    return main_parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
