"""Start-up time of the command line: what `dcmp --help`, `--version` and a usage error cost.

    .venv/bin/python benchmarks/startup.py [--repeat 5]

Each case runs as a fresh process (the median of ``--repeat`` runs is printed) and is
checked not to import torch (the commands import the library only once they run).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import time

CASES = {
    "dcmp --help": ["--help"],
    "dcmp --version": ["--version"],
    "dcmp dehaze --help": ["dehaze", "--help"],
    "usage error (bad --method)": ["dehaze", "in", "out", "--method", "magic"],
}
PROBE = (
    "import sys\n"
    "from dcmp_cli.cli.app import main\n"
    "sys.argv = ['dcmp', *sys.argv[1:]]\n"
    "try:\n"
    "    main()\n"
    "except SystemExit:\n"
    "    pass\n"
    "print('TORCH_IMPORTED' if 'torch' in sys.modules else 'NO_TORCH', file=sys.stderr)\n"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print("command:", shlex.join([".venv/bin/python", "benchmarks/startup.py", *sys.argv[1:]]))
    print(f"{'case':<30} {'median s':>9} {'torch imported':>15}")
    for name, argv in CASES.items():
        seconds, imported = [], False
        for _ in range(args.repeat):
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True)
            seconds.append(time.perf_counter() - start)
            imported |= "TORCH_IMPORTED" in done.stderr
        print(f"{name:<30} {statistics.median(seconds):>9.3f} {'yes' if imported else 'no':>15}")


if __name__ == "__main__":
    main()
