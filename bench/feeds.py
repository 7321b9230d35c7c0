"""Generated Arabic and English feeds for the benchmarks (our own synthetic text), and a
fast loopback server (aiohttp, in its own process) that serves them with ETag/304."""
from __future__ import annotations

import hashlib
import multiprocessing as mp
import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from xml.sax.saxutils import escape

BASES_EN = ["Ain al-Asad air base", "Harir base", "al-Tanf garrison", "Conoco gas field base", "Erbil air base", "Victory base"]
BASES_AR = ["قاعدة عين الأسد", "قاعدة حرير", "قاعدة التنف", "حقل كونيكو", "مطار أربيل", "قاعدة فكتوريا"]
# The first ATTACKS templates of each language report an attack on US forces (an indicator
# match); the rest are everyday news. ``attack_share`` is the share of entries drawn from
# the attack templates: 5 % is typical (3.4 % of the 2,452 real captured headlines match an
# indicator); 30 % is a feed during an attack campaign.
ATTACKS = 2
TYPICAL_SHARE, CAMPAIGN_SHARE = 0.05, 0.30
EN = [
    "Drone attack targets US forces at {base} in {country}",
    "Rockets fired at {base} hosting US troops, officials say",
    "Markets rally as oil prices ease in {country}",
    "Parliament debates budget amid protests in {country}",
    "Football: league leaders win again in {country}",
    "Floods disrupt traffic in the capital of {country}",
    "Ministers meet to discuss electricity imports in {country}",
]
AR = [
    "هجوم بطائرة مسيّرة على {base} التي تضم قوات أمريكية",
    "سقوط صواريخ قرب {base} التي يتمركز فيها جنود أمريكيون",
    "ارتفاع أسعار النفط في الأسواق العالمية",
    "البرلمان يناقش الموازنة العامة وسط احتجاجات",
    "الفريق المتصدر يحقق فوزا جديدا في الدوري",
    "أمطار غزيرة تغلق طرقا رئيسية في العاصمة",
    "وزراء يبحثون استيراد الكهرباء",
]
SUMMARY_EN = "The report said the incident happened on {day} and more details would follow from local officials and witnesses."
SUMMARY_AR = "<p>أفادت مصادر محلية بأن الحادث وقع يوم {day} وأن مزيدا من التفاصيل سيصدر لاحقا عن المسؤولين.</p>"


def feed_xml(feed_no: int, entries: int = 50, seed: int = 0, now: datetime | None = None, attack_share: float = TYPICAL_SHARE) -> bytes:
    rng = random.Random(seed * 100003 + feed_no)
    lang = "ar" if feed_no % 2 else "en"
    now = now or datetime(2026, 3, 1, tzinfo=timezone.utc)
    parts = [f'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>Bench feed {feed_no}</title><language>{lang}</language>']
    for i in range(entries):
        t = now - timedelta(minutes=rng.randrange(0, 3 * 24 * 60))
        attack = rng.random() < attack_share
        if lang == "ar":
            title = rng.choice(AR[:ATTACKS] if attack else AR[ATTACKS:]).format(base=rng.choice(BASES_AR))
            summary = SUMMARY_AR.format(day=t.strftime("%d/%m"))
        else:
            title = rng.choice(EN[:ATTACKS] if attack else EN[ATTACKS:]).format(base=rng.choice(BASES_EN), country=rng.choice(["Iraq", "Syria", "Jordan"]))
            summary = SUMMARY_EN.format(day=t.strftime("%A"))
        uid = f"f{feed_no}-s{seed}-{i}"
        parts.append(
            f"<item><title>{escape(title)} ({uid})</title><link>https://bench{feed_no}.example/{uid}?utm_source=rss</link>"
            f"<guid>{uid}</guid><description>{escape(summary)}</description><pubDate>{format_datetime(t)}</pubDate></item>"
        )
    parts.append("</channel></rss>")
    return "".join(parts).encode("utf-8")


def _serve(port_q: mp.Queue, n_feeds: int, entries: int, seed: int) -> None:
    import asyncio

    from aiohttp import web

    bodies = {f"/feed/{i}.xml": feed_xml(i, entries, seed) for i in range(n_feeds)}
    etags = {p: '"' + hashlib.sha1(b).hexdigest()[:16] + '"' for p, b in bodies.items()}

    async def handle(request: web.Request) -> web.Response:
        path = request.path
        if path not in bodies:
            return web.Response(status=404)
        if request.headers.get("If-None-Match") == etags[path]:
            return web.Response(status=304, headers={"ETag": etags[path]})
        return web.Response(body=bodies[path], content_type="application/rss+xml", charset="utf-8", headers={"ETag": etags[path]})

    async def main():
        app = web.Application()
        app.router.add_get("/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=2048)
        await site.start()
        port_q.put(site._server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


class FeedFarm:
    """``n_feeds`` feeds of ``entries`` items each, served from a separate process."""

    def __init__(self, n_feeds: int, entries: int = 50, seed: int = 0):
        self.n_feeds, self.entries, self.seed = n_feeds, entries, seed
        ctx = mp.get_context("spawn")
        self._q = ctx.Queue()
        self._proc = ctx.Process(target=_serve, args=(self._q, n_feeds, entries, seed), daemon=True)

    def __enter__(self) -> "FeedFarm":
        self._proc.start()
        self.port = self._q.get(timeout=60)
        return self

    def __exit__(self, *exc) -> None:
        self._proc.terminate()
        self._proc.join(10)

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.port}/feed/{i}.xml"
