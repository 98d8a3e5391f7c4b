"""``python -m tracegrad cache --info``: where the cache of compiled code is and how big; ``--clear``: empty it.

    $ python -m tracegrad cache --info
    cache directory: /home/me/.cache/tracegrad
    412 files, 38.6 MB (137 generated modules and Numba's compiled code for them)
    $ python -m tracegrad cache --clear
    removed 412 files (38.6 MB) from /home/me/.cache/tracegrad
"""
from __future__ import annotations

import argparse
import sys

from .backend import cache_dir, cache_files, unsafe_reason


def _size(n: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracegrad", description="tracegrad's command line.")
    commands = parser.add_subparsers(dest="command", required=True)
    cache = commands.add_parser("cache", help="the cache of generated modules and Numba's compiled code")
    what = cache.add_mutually_exclusive_group(required=True)
    what.add_argument("--info", action="store_true", help="where the cache is, how many files, how many bytes")
    what.add_argument("--clear", action="store_true", help="delete what tracegrad and Numba wrote there")
    args = parser.parse_args(argv)

    directory = cache_dir()
    files = cache_files(directory)
    total = sum(size for _, size in files)
    if args.info:
        modules = sum(1 for path, _ in files if path.suffix == ".py")
        state = "" if directory.is_dir() else " (not a directory)" if directory.exists() else " (not created yet)"
        print(f"cache directory: {directory}{state}")
        problem = unsafe_reason(directory) if directory.is_dir() else None
        if problem:
            print(f"not used by tracegrad: {problem} (it compiles into a private temporary directory instead)")
        print(f"{len(files)} files, {_size(total)} ({modules} generated modules and Numba's compiled code for them)")
        return 0
    removed, freed, failed = 0, 0, []
    for path, size in files:
        try:
            path.unlink()
            removed, freed = removed + 1, freed + size
        except FileNotFoundError:
            pass
        except OSError as exc:
            failed.append(f"could not remove {path}: {exc.strerror}")
    print(f"removed {removed} files ({_size(freed)}) from {directory}")
    for line in failed:
        print(line, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
