"""Admin-edited files validate, and bad ones are reported by file, line and field."""
import subprocess
import sys

import pytest

from alerts.matching import Classifier
from alerts.rules import DEFAULT_INDICATORS, DEFAULT_RULES, load_rules
from sources.configfile import ConfigError
from sources.registry import DEFAULT_FEEDS, load_registry

INDICATORS = {
    "militia_attack_us_forces", "iran_direct_attack_us", "us_strike_militia", "us_strike_irgc",
    "iran_proxy_strike_israel", "israel_strike_iran_assets", "hormuz_threat", "red_sea_shipping_attack",
    "nuclear_talks", "us_force_posture", "militia_threat_statement",
}


def test_shipped_registry_covers_the_region_in_both_languages():
    reg = load_registry(DEFAULT_FEEDS)
    assert len(reg.feeds) >= 25
    assert sum(f.lang == "ar" for f in reg.feeds) >= 10
    assert sum(f.lang == "en" for f in reg.feeds) >= 10
    covered = {c for f in reg.feeds for c in f.covers}
    assert {"iraq", "syria", "iran", "israel-lebanon", "yemen", "gulf"} <= covered
    for f in reg.feeds:
        assert f.url.startswith(("http://", "https://")) and f.interval >= 60


def test_registry_errors_name_file_line_and_field(tmp_path):
    bad = tmp_path / "feeds.yaml"
    bad.write_text(
        "feeds:\n"
        "  - id: ok-feed\n    name: OK\n    lang: en\n    url: https://example.com/rss\n"
        "  - id: bad-feed\n    name: Bad\n    lang: fr\n    url: ftp://example.com/rss\n    interval: soon\n"
        "  - id: ok-feed\n    name: Dup\n    lang: ar\n    url: https://example.com/ar\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as exc:
        load_registry(bad)
    text = str(exc.value)
    assert f"{bad}:8: feeds.1.lang:" in text
    assert f"{bad}:9: feeds.1.url:" in text
    assert f"{bad}:10: feeds.1.interval:" in text


def test_registry_duplicate_ids_and_unknown_fields(tmp_path):
    bad = tmp_path / "feeds.yaml"
    bad.write_text(
        "feeds:\n  - id: a1\n    name: A\n    lang: en\n    url: https://e.com/1\n    intervall: 5m\n"
        "  - id: a1\n    name: B\n    lang: en\n    url: https://e.com/2\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as exc:
        load_registry(bad)
    assert f"{bad}:6: feeds.0.intervall: unknown field" in str(exc.value)
    bad.write_text(bad.read_text().replace("    intervall: 5m\n", ""), encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_registry(bad)
    assert f"{bad}:6: feeds.1.id: duplicate id 'a1'" in str(exc.value)


def test_yaml_syntax_error_has_a_line(tmp_path):
    bad = tmp_path / "feeds.yaml"
    bad.write_text("feeds:\n  - id: a\n    name: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{bad}:\d+: \(syntax\)"):
        load_registry(bad)


def test_rule_pack_covers_every_indicator_with_the_required_rules():
    clf = Classifier.load(DEFAULT_INDICATORS)
    assert set(clf.ids) == INDICATORS
    pack = load_rules(DEFAULT_RULES, indicator_ids=clf.ids)
    by = {(r.indicator, r.kind): r for r in pack.rules}
    res = by[("militia_attack_us_forces", "resumption")]
    assert res.quiet == 14 * 86400
    thr = by[("militia_attack_us_forces", "threshold")]
    assert (thr.count, thr.window) == (3, 72 * 3600)
    assert ("us_strike_irgc", "tripwire") in by and ("iran_direct_attack_us", "tripwire") in by
    assert ("nuclear_talks", "flatline") in by
    assert all(len(r.rationale) > 20 for r in pack.rules)


def test_rule_errors_name_file_line_and_field(tmp_path):
    bad = tmp_path / "rules.yaml"
    bad.write_text(
        "rules:\n"
        "  - id: r1\n    indicator: militia_attack_us_forces\n    kind: threshold\n    rationale: a long enough reason\n"
        "  - id: r2\n    indicator: no_such_thing\n    kind: tripwire\n    rationale: a long enough reason\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as exc:
        load_rules(bad, indicator_ids=sorted(INDICATORS))
    text = str(exc.value)
    assert f"{bad}:2: rules.0: a threshold rule needs count, window" in text
    assert f"{bad}:7: rules.1.indicator: unknown indicator 'no_such_thing'" in text


def test_indicator_file_errors_point_at_the_group(tmp_path):
    ind = tmp_path / "indicators"
    ind.mkdir()
    (tmp_path / "gazetteers").mkdir()
    (ind / "x_test.yaml").write_text(
        "id: x_test\nname: X\ndefinition: d\nmatch:\n  - all:\n      - name: g\n        gazetteer: [places:nowhere]\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"x_test.yaml:6: match.0.all.0: .*no gazetteer 'places'"):
        Classifier.load(ind)


def test_config_check_command(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "marsad.cli", "config", "check"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "feeds.yaml"
    bad.write_text("feeds:\n  - id: x1\n    name: X\n    lang: de\n    url: https://e.com/\n", encoding="utf-8")
    import os

    res = subprocess.run(
        [sys.executable, "-m", "marsad.cli", "config", "check"], capture_output=True, text=True, env={**os.environ, "MARSAD_FEEDS": str(bad)}
    )
    assert res.returncode == 1
    assert f"{bad}:4: feeds.0.lang:" in res.stderr


@pytest.mark.parametrize("damage", ["truncated", "cp1256_byte"])
def test_arabic_indicator_file_not_utf8_names_the_line(tmp_path, damage):
    """An Arabic indicator file cut inside a letter (or with a byte saved in another code page)
    is reported at the line of the bad byte, not at line 0 (issue 14, item 6)."""
    import shutil

    ind = tmp_path / "indicators"
    ind.mkdir()
    shutil.copytree(DEFAULT_INDICATORS.parent / "gazetteers", tmp_path / "gazetteers")
    src = (DEFAULT_INDICATORS / "militia_attack_us_forces.yaml").read_bytes()
    first_arabic = next(i for i, b in enumerate(src) if b >= 0xD8)  # the lead byte of the first Arabic letter
    line = src.count(b"\n", 0, first_arabic) + 1
    assert line > 1
    if damage == "truncated":
        data = src[: first_arabic + 1]  # ends halfway through a two-byte letter
    else:
        data = src[:first_arabic] + b"\xc7" + src[first_arabic + 2 :]  # a cp1256 alef where a UTF-8 letter was
    (ind / "militia_attack_us_forces.yaml").write_bytes(data)
    with pytest.raises(ConfigError) as exc:
        Classifier.load(ind)
    text = str(exc.value)
    assert f"militia_attack_us_forces.yaml:{line}: (file): not UTF-8" in text, text
    assert ":0:" not in text


def test_config_check_reports_place_nesting_errors(tmp_path):
    """`within` must name an entry of places.yaml, and the nesting must have no cycle."""
    import os
    import shutil

    from alerts.places import PlaceHierarchy

    repo_alerts = DEFAULT_INDICATORS.parent
    shutil.copytree(repo_alerts / "indicators", tmp_path / "indicators")
    shutil.copytree(repo_alerts / "gazetteers", tmp_path / "gazetteers")
    places = tmp_path / "gazetteers" / "places.yaml"
    text = places.read_text(encoding="utf-8")
    text = text.replace("    within: al_baghdadi\n", "    within: al_bagdadi\n", 1)  # a typo
    text = text.replace("    within: iraq\n    en: [\"western Iraq\"", "    within: al_baghdadi\n    en: [\"western Iraq\"", 1)
    places.write_text(text, encoding="utf-8")
    lines = text.splitlines()
    typo = next(n for n, line in enumerate(lines, 1) if line == "    within: al_bagdadi")
    loop = next(n for n, line in enumerate(lines, 1) if line == "  - id: western_iraq") + 3
    res = subprocess.run(
        [sys.executable, "-m", "marsad.cli", "config", "check"], capture_output=True, text=True,
        env={**os.environ, "MARSAD_INDICATORS": str(tmp_path / "indicators")},
    )
    assert res.returncode == 1
    assert f"{places}:{typo}: entries.0.within: no place with id 'al_bagdadi' in places.yaml" in res.stderr
    assert f"{places}:{loop}: " in res.stderr and "cycle western_iraq -> al_baghdadi -> anbar -> western_iraq" in res.stderr
    # At run time a broken link is ignored, so nothing loops.
    h = PlaceHierarchy.load(tmp_path / "gazetteers")
    assert h.ancestors("ain_al_asad") == () and "western_iraq" not in h.ancestors("anbar")


def test_shipped_places_nest_every_us_site_in_a_country():
    from alerts.matching import Gazetteers
    from alerts.places import PlaceHierarchy

    gaz = Gazetteers.load(DEFAULT_INDICATORS.parent / "gazetteers")
    h = PlaceHierarchy.from_gazetteers(gaz)
    for e in gaz.entries["places"]:
        if "us_site" in e.tags:
            assert h.ancestors(e.id)[-1:] in (("iraq",), ("syria",), ("jordan",)), e.id
    assert h.ancestors("ain_al_asad") == ("al_baghdadi", "anbar", "western_iraq", "iraq")
    assert h.related("rumalyan", "northeast_syria") and h.related("hasakah", "rumalyan")
    assert not h.related("rumalyan", "shaddadi")  # siblings are not containment
    assert h.most_specific({"rumalyan", "hasakah", "northeast_syria", "syria"}) == {"rumalyan"}
