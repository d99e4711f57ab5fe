"""Idempotent vs plain produce throughput (confluent-kafka, acks=all), interleaved rounds.

    python bench/idempotence.py --records 200000 --size 1024 --rounds 3

Each round produces N records with `enable.idempotence` false and true (alternating which goes first, since
the disk slows as dirty pages pile up) to fresh topics on one broker subprocess; the best round of each is
reported with the ratio (goal: within 5 %).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from oncelog.testing import BrokerProcess
from produce_consume import produce, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    best: dict[bool, float] = {}
    with tempfile.TemporaryDirectory(prefix="oncelog-bench-") as directory:
        broker = BrokerProcess(Path(directory) / "data")
        bootstrap = broker.start()
        try:
            for _round in range(args.rounds):
                for idempotent in (False, True) if _round % 2 == 0 else (True, False):
                    topic = f"bench-{uuid.uuid4().hex[:8]}"
                    elapsed = produce(bootstrap, topic, args.records, args.size, "all",
                                      **{"enable.idempotence": idempotent})
                    report(f"produce idempotence={str(idempotent).lower()}", args.records, args.size, elapsed)
                    best[idempotent] = min(best.get(idempotent, elapsed), elapsed)
        finally:
            broker.terminate()
    ratio = best[False] / best[True]
    print(f"best rounds: idempotent throughput = {ratio:.3f} x plain")


if __name__ == "__main__":
    main()
