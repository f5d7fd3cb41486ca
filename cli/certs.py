"""`shopfloor gateway trust` and `shopfloor gateway list-certs`: the gateway's OPC-UA certificate folder."""

from __future__ import annotations

import argparse
import sys

from cli.errors import EXIT_USAGE
from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.pki import PkiError


def _config(args: argparse.Namespace) -> GatewayConfig | None:
    try:
        return load_config(args.config)
    except ConfigError as error:
        print(f"shopfloor: gateway {args.gateway_command}: {error}", file=sys.stderr)
        return None


def cmd_trust(args: argparse.Namespace) -> int:
    """Copy a server certificate (a file, or the thumbprint of a rejected one) into trusted/."""
    config = _config(args)
    if config is None:
        return EXIT_USAGE
    pki = config.client_application(args.config).pki
    try:
        path, _ = pki.trust(args.certificate)
    except PkiError as error:
        print(f"shopfloor: gateway trust: {error}", file=sys.stderr)
        return EXIT_USAGE
    info = next(info for info in pki.certificates("trusted") if info.path == path)
    print(f"trusted {info.subject} (thumbprint {info.thumbprint}) as {path}")
    print("the gateway uses it at its next connection attempt; no restart needed")
    return 0


def cmd_list_certs(args: argparse.Namespace) -> int:
    """Print the gateway's own, trusted and rejected certificates: subject, thumbprint, validity.

    What trusted/ lists here is exactly what the gateway trusts (pinned certificates); unreadable files are named.
    """
    config = _config(args)
    if config is None:
        return EXIT_USAGE
    application = config.client_application(args.config)
    print(f"pki folder: {application.pki.root}")
    print(f"application uri: {application.application_uri}")
    for folder in ("own", "trusted", "rejected"):
        infos, skipped = application.pki.scan(folder)
        print(f"{folder}:{'' if infos else ' (none)'}")
        for info in infos:
            state = "  EXPIRED" if info.expired else ""
            print(f"  {info.thumbprint}  {info.subject}")
            print(f"      valid {info.not_before:%Y-%m-%d} .. {info.not_after:%Y-%m-%d}{state}  file {info.path.name}")
        for item in skipped:
            print(f"  skipped {item.path.name}: {item.reason} (not used)")
    return 0
