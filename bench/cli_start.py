"""How long a `kiln` client command takes from the shell, against the Python start-up any SDK program pays.

Each round times, as fresh processes (the way a user or a script runs them):

* baseline: `python -c "import azure.batch"`, the interpreter and the official SDK, which every client command
  needs and which Kiln cannot make faster;
* `kiln --help` (`python -m kiln.cli.main --help`): the command's own imports and nothing else;
* `kiln pool list --json` against a running `kiln serve` (one server for the whole run): a real round trip.

`--src DIR` (repeatable) runs the commands with their code from each source tree in turn (PYTHONPATH),
alternating run by run, so before and after share the machine's drifting speed:

    python bench/cli_start.py [--runs 7] [--src /tmp/before/src --src src]

Prints medians (and the slowest run) per command and source; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kiln.cli.embedded import EmbeddedServer


def timed(argv: list[str], env: dict[str, str]) -> float:
    """Seconds from the process's start to its exit; it must succeed."""
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="rounds; medians are reported")
    parser.add_argument("--src", action="append", default=[], help="a source tree to take the kiln code from")
    args = parser.parse_args()
    sources = args.src or [""]
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="kiln-bench-cli-") as tmp:
        os.chmod(tmp, 0o755)  # task accounts reach the data dir under root
        server = EmbeddedServer(Path(tmp) / "data").start()
        try:
            client_env = {
                **os.environ,
                "KILN_ENDPOINT": server.endpoint,
                "KILN_ACCOUNT_NAME": server.account_name,
                "KILN_ACCOUNT_KEY": server.account_key,
            }
            commands = {
                "python -c 'import azure.batch' (baseline)": [sys.executable, "-c", "import azure.batch"],
                "kiln --help": [sys.executable, "-m", "kiln.cli.main", "--help"],
                "kiln pool list --json": [sys.executable, "-m", "kiln.cli.main", "pool", "list", "--json"],
            }
            for _ in range(args.runs):
                for src in sources:
                    env = {**client_env, "PYTHONPATH": src} if src else client_env
                    for name, argv in commands.items():
                        times.setdefault((name, src or "this code"), []).append(timed(argv, env))
        finally:
            server.stop()
    print(f"\n`kiln` client commands as fresh processes, {args.runs} rounds, load average {os.getloadavg()[0]:.2f}")
    for (name, src), seconds in times.items():
        print(f"[{src}] {name:<45} median {statistics.median(seconds):6.2f} s   slowest {max(seconds):6.2f} s")


if __name__ == "__main__":
    main()
