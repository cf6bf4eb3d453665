"""The `vfiosim` command: demo, run, machines, check, aperture.

Thin by design (STYLE.md): each subcommand parses its arguments and calls one function.
Every user error is one line on stderr and exit status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"vfiosim: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vfiosim", description="An executable model of the Linux VFIO interface.")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)

    d = sub.add_parser("demo", help="run the seed's PAMU flow (or a Type1 session) step by step")
    d.add_argument("--machine", default="p4080", help="preset (default p4080; x86 for Type1)")
    d.add_argument("--msi-mode", choices=("auto", "explicit"), default=None,
                   help=argparse.SUPPRESS)
    d.add_argument("--dump", action="store_true", help="print the model's state as JSON after")
    d.add_argument("--trace", default=None, metavar="FILE",
                   help="write one JSON line per call the demo makes")

    r = sub.add_parser("run", help="serve /dev/vfio to an unmodified program",
                       usage="vfiosim run [--machine NAME|FILE] [--trace FILE] -- PROG [ARGS...]")
    r.add_argument("--machine", default=None, help="preset name or machine file (default x86)")
    r.add_argument("--trace", default=None, help="write one JSON line per emulated call")
    r.add_argument("prog", nargs=argparse.REMAINDER, help="the program and its arguments")

    sub.add_parser("machines", help="list the presets, their devices and IOMMU groups")

    c = sub.add_parser("check", help="validate a machine file")
    c.add_argument("file")

    a = sub.add_parser("aperture", help="draw a PAMU aperture after the seed's setup")
    a.add_argument("--machine", default="p4080")
    a.add_argument("--size", default="32M", help="aperture size (default 32M)")
    a.add_argument("--windows", type=int, default=16, help="window count (default 16)")
    a.add_argument("--map", action="append", default=None, metavar="SIZE",
                   help="a DMA mapping from the bottom up; repeat (default: one 4M)")
    a.add_argument("--msi-mode", choices=("auto", "explicit"), default="auto")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (ValueError, OSError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"vfiosim: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.cmd == "demo":
        from vfiosim.demo import run_demo

        opts = {"msi_mode": args.msi_mode} if args.msi_mode else {}
        if args.trace is None:
            return run_demo(args.machine, dump=args.dump, **opts)
        with open(args.trace, "w") as trace:
            return run_demo(args.machine, dump=args.dump, trace=trace, **opts)
    if args.cmd == "run":
        prog = list(args.prog)
        if prog and prog[0] == "--":
            prog = prog[1:]
        if not prog:
            raise ValueError("run needs a program: vfiosim run [--machine M] -- PROG [ARGS...]")
        from vfiosim.supervisor import run_main

        return run_main(prog, args.machine, args.trace)
    if args.cmd == "machines":
        from vfiosim.machine import load_preset, preset_names

        for name in preset_names():
            spec = load_preset(name)
            print(f"{name}: {spec.description}")
            for d in spec.devices:
                print(f"    group {d['group']:<3} {d['name']}  {d['model']:<8} {d['driver']}")
        return 0
    if args.cmd == "check":
        from vfiosim.api import Kernel

        k = Kernel.from_file(args.file, clock="manual")
        try:
            print(json.dumps({"machine": k.machine.name, "iommu": k.machine.kind,
                              "groups": k.groups(),
                              "devices": [d.name for d in k.devices()]}))
        finally:
            k.shutdown()
        return 0
    if args.cmd == "aperture":
        from vfiosim.aperture import parse_size, picture

        maps = [parse_size(s) for s in (args.map or ["4M"])]
        print(picture(args.machine, parse_size(args.size), args.windows, maps, args.msi_mode))
        return 0
    _parser().print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
