"""`browserfleet backup | restore | import-mvp` (the SDK's `browserfleet` command hands these over here;
`browserfleet-ops` is the same without the SDK). docs/operations.md is the manual."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .archive import ArchiveError, load_key

COMMANDS = ("backup", "restore", "import-mvp")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="browserfleet",
        description="operator commands; they read DATABASE_URL, NATS_URL and NATS_USER/NATS_PASSWORD",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    key_help = "file holding the backup key (default: $BROWSERFLEET_BACKUP_KEY)"
    backup = sub.add_parser("backup", help="write an encrypted backup of the whole platform to PATH")
    backup.add_argument("path", type=Path)
    backup.add_argument("--key-file", type=Path, help=key_help)
    restore = sub.add_parser("restore", help="restore a backup into an empty platform (services stopped)")
    restore.add_argument("path", type=Path)
    restore.add_argument("--key-file", type=Path, help=key_help)
    restore.add_argument("--force", action="store_true", help="replace a platform that holds data")
    restore.add_argument(
        "--verify", action="store_true", help="only check the archive and the key; touch nothing"
    )
    mvp = sub.add_parser("import-mvp", help="import the MVP's JSON files from DIR")
    mvp.add_argument("dir", type=Path)
    mvp.add_argument("--dry-run", action="store_true", help="say what would be done; change nothing")
    mvp.add_argument("--org", help="import into this existing organization (slug) instead of creating one")
    mvp.add_argument(
        "--operator", help="the platform operator's email the import acts as (default: the first operator)"
    )
    mvp.add_argument("--invite-ttl-days", type=float, default=7.0, help="how long the workers' invites last")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .settings import OpsSettings

    settings = OpsSettings()
    try:
        if args.command == "backup":
            from . import backup

            report = backup.run(settings, args.path, load_key(args.key_file))
            print("\n".join(report.lines()))
        elif args.command == "restore":
            from . import restore

            key = load_key(args.key_file)
            if args.verify:
                checksum, manifest = restore.verify(args.path, key)
                print(f"{args.path}: intact, key correct, made {manifest['created_at']} (sha256 {checksum})")
                return 0
            print("\n".join(restore.run(settings, args.path, key, force=args.force).lines()))
        else:
            from .mvp.importer import main as import_mvp

            return import_mvp(settings, args)
    except ArchiveError as exc:
        print(f"browserfleet {args.command}: {exc}", file=sys.stderr)
        return 3
    except (OSError, RuntimeError) as exc:
        print(f"browserfleet {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
