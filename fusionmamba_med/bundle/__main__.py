"""``python -m fusionmamba_med.bundle sync [--check] [--root DIR]`` and
``python -m fusionmamba_med.bundle pack BUNDLE_FOLDER [--out FILE.zip]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fusionmamba_med.bundle import CHECKOUT_MARKER


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusionmamba_med.bundle", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p_sync = commands.add_parser("sync", help="write the shared configs/ pieces into every bundle")
    p_sync.add_argument("--root", default=".", help="the project checkout (default: the working directory)")
    p_sync.add_argument("--check", action="store_true",
                        help="change nothing; list the bundle files that differ and exit 1 if any")
    p_pack = commands.add_parser("pack", help="zip one bundle (weights, configs, docs; no eval/ outputs)")
    p_pack.add_argument("bundle", help="the bundle folder, e.g. bundles/pet_mri")
    p_pack.add_argument("--out", default=None, help="the zip to write (default: ./<bundle_name>.zip)")
    args = parser.parse_args(argv)

    if args.command == "sync":
        from fusionmamba_med.bundle.sync import sync

        root = Path(args.root).resolve()
        if not (root / CHECKOUT_MARKER).is_file():
            parser.error(f"{root} is not the fusionmamba-med checkout (no {CHECKOUT_MARKER}); pass --root")
        changed = sync(root, check=args.check)
        for path in changed:
            state = ("a link" if path.is_symlink() else "differs") if args.check else "updated"
            print(f"{state}: {path.relative_to(root)}")
        if args.check and changed:
            print(f"{len(changed)} bundle files differ from configs/: run python -m fusionmamba_med.bundle sync",
                  file=sys.stderr)
            return 1
        print(f"bundles in sync with {root / 'configs'}")
        return 0

    from fusionmamba_med.bundle.pack import pack_bundle

    out = pack_bundle(args.bundle, args.out)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
