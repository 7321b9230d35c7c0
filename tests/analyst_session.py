"""An analyst's session, run as its own process by the concurrency tests.

    python analyst_session.py READ_COPY WORKDIR

Holds one read-only connection to the published read copy and queries it in a loop
(plain SQL, a view, full-text search) until WORKDIR/stop appears. Writes WORKDIR/ready
after its first round. Counts the rounds that started after WORKDIR/cycle appeared (the
pipeline is running then). At the end it reopens the copy and prints one JSON line.
"""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from warehouse.publish import open_read_copy  # noqa: E402
from warehouse.search import search  # noqa: E402


def one_round(con) -> dict:
    return {
        "articles": con.execute("SELECT count(*) FROM articles").fetchone()[0],
        "events": con.execute("SELECT count(*) FROM event_corroboration").fetchone()[0],
        "hits": [h.article_id for h in search(con, "عين الأسد")],
    }


def main(read_copy: str, workdir: str) -> None:
    work = Path(workdir)
    rounds = during_cycle = 0
    errors: list[str] = []
    seen: set[int] = set()
    con = open_read_copy(read_copy)
    while not (work / "stop").exists():
        in_cycle = (work / "cycle").exists()
        try:
            seen.add(one_round(con)["articles"])
            rounds += 1
            during_cycle += in_cycle
        except Exception as exc:  # the test asserts there are none
            errors.append(f"{type(exc).__name__}: {exc}")
        if rounds == 1:
            (work / "ready").touch()
        time.sleep(0.01)
    con.close()
    con = open_read_copy(read_copy)
    after = one_round(con)
    con.close()
    print(json.dumps({"rounds": rounds, "during_cycle": during_cycle, "errors": errors, "seen": sorted(seen), "after": after}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
