"""sha256 of every deterministic output of the two reference replays: a refactoring changes none.

    python scripts/output_digests.py            # print the digests of this checkout
    python scripts/output_digests.py --check    # compare with scripts/output_digests.json
    python scripts/output_digests.py --record   # write them there (an intended change)

The runs: ``liqmon replay --scenario oct10 --seed 1 --inline`` (the synthetic day, the
generated capture included) and the real data of 10 October through Kafka (``make
replay-real``: imported from ../shared/data/oct10, replayed through the embedded broker and
a worker). Files that carry wall-clock times (``summary.json``, ``report.html``, logs) are
left out; everything else a replay writes is digested.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "scripts" / "output_digests.json"
SHARED = ROOT.parent / "shared" / "data" / "oct10"
#: Outputs whose bytes depend on the wall clock or the machine.
TIMED = {"summary.json", "report.html", "worker.log"}


def _liqmon(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "streams.cli", *args], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def _digest_dir(out: Path) -> dict[str, str]:
    return {
        path.relative_to(out).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(out.rglob("*"))
        if path.is_file() and path.name not in TIMED
    }


def synthetic_day(work: Path) -> dict[str, str]:
    out = work / "synthetic"
    _liqmon("replay", "--scenario", "oct10", "--seed", "1", "--inline", "--quiet", "--out", str(out))
    return _digest_dir(out)


def real_data_kafka(work: Path) -> dict[str, str]:
    capture = work / "oct10-real.jsonl.gz"
    _liqmon("import", str(SHARED / "usde_usdt_binance_1m.csv"), str(SHARED / "usde_usdt_uniswap_v3_blocks.csv"),
            str(SHARED / "btcusdt_binance_bookdepth.csv"), "--out", str(capture))
    out = work / "real"
    _liqmon("replay", "--capture", str(capture), "--config", "replay/configs/oct10-real.toml", "--quiet",
            "--out", str(out))
    # the capture's content: its gzip bytes depend on the compressor, not on what liqmon wrote
    content = hashlib.sha256(gzip.decompress(capture.read_bytes())).hexdigest()
    return {"capture.jsonl (gunzipped)": content, **_digest_dir(out)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help=f"compare with {RECORD.name}; exit 1 on a difference")
    mode.add_argument("--record", action="store_true", help=f"write the digests to {RECORD.name}")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="liqmon-digests-") as tmp:
        work = Path(tmp)
        digests = {"synthetic-inline": synthetic_day(work), "real-kafka": real_data_kafka(work)}
    text = json.dumps(digests, indent=2, sort_keys=True) + "\n"
    if args.record:
        RECORD.write_text(text)
    if not args.check:
        print(text, end="")
        return 0
    recorded = json.loads(RECORD.read_text())
    differ = [f"{run}/{name}" for run in sorted(set(recorded) | set(digests))
              for name in sorted(set(recorded.get(run, {})) | set(digests.get(run, {})))
              if recorded.get(run, {}).get(name) != digests.get(run, {}).get(name)]
    print("outputs identical to the record" if not differ else "outputs differ: " + ", ".join(differ))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
