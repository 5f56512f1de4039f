"""Our batched on-device data path against the conventional per-image pipeline; the same as
`spatialssl bench` (see `spatialssl bench --help`):

    python benchmarks/bench.py --data /tmp/cifar10 --workers 2 --write BENCHMARKS.md
"""
import sys

from spatialssl.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
