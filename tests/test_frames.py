"""Event frames: who did what to whom, and when (alerts/frames.py), and the indicators that
read them. Sentences here are invented; the scored sets are read from ../shared at run time."""
import json
import shutil

import pytest

from alerts.frames import arabic_noun_forms, arabic_verb_forms
from alerts.matching import Classifier
from alerts.rules import DEFAULT_INDICATORS
from conftest import CORPORA, TESTS
from marsad.evaluation import evaluate_file
from sources.configfile import ConfigError
from sources.normalize import fold


@pytest.fixture(scope="module")
def clf():
    return Classifier.load(DEFAULT_INDICATORS)


def frames(clf, title, summary=""):
    return [f for f in clf.read_frames(title, summary) if f.source == "title"]


def indicators(clf, title, summary=""):
    return {v.indicator for v in clf.classify(title, summary)}


def one(fs, action):
    (f,) = [f for f in fs if f.action == action]
    return f


# --------------------------------------------------------------------------- Arabic morphology


def test_arabic_verbs_are_generated_from_lemmas():
    perfect, imperfect, future = arabic_verb_forms("استهدف يستهدف")
    for form in ("استهدف", "استهدفت", "استهدفوا", "استهدفتا"):
        assert fold(form) in perfect
    for form in ("يستهدف", "تستهدف", "يستهدفون", "تستهدفان", "نستهدف"):
        assert fold(form) in imperfect
    assert fold("ستستهدف") in future and fold("سنستهدف") in future
    perfect, imperfect, _ = arabic_verb_forms("نفى ينفي")  # defective: نفت، تنفي
    assert fold("نفت") in perfect and fold("تنفي") in imperfect
    with pytest.raises(ValueError):
        arabic_verb_forms("قصف")


def test_arabic_duals_are_generated():
    assert set(map(fold, ("مسيرتان", "مسيرتين"))) <= set(arabic_noun_forms("مسيرة"))
    assert fold("صاروخين") in arabic_noun_forms("صاروخ")


def test_dual_verbs_and_possessive_pronouns_match_without_being_listed(clf):
    # a dual subject and verb; a noun with a possessive pronoun behind
    assert "militia_attack_us_forces" in indicators(clf, "طائرتان مسيرتان تستهدفان قاعدة حرير شمال أربيل")
    assert "red_sea_shipping_attack" in indicators(clf, "سفينة تجارية تبلغ عن إصابتها بمقذوف قرب باب المندب")


# --------------------------------------------------------------------------- who did it to whom


@pytest.mark.parametrize("title", [
    "US drone strike kills Kataib Hezbollah commander in Baghdad",
    "غارة أمريكية بطائرة مسيرة تقتل قياديا في كتائب حزب الله ببغداد",
])
def test_role_reversal_the_us_striking_a_militia(clf, title):
    f = one(frames(clf, title), "attack")
    assert (f.actor, f.target) == ("us", "militia")
    assert indicators(clf, title) == {"us_strike_militia"}


@pytest.mark.parametrize("title", [
    "Iraqi factions vow revenge for US strikes on their positions",
    "الفصائل العراقية تتوعد بالرد على الغارات الأمريكية",
])
def test_a_vow_is_a_threat_not_an_attack(clf, title):
    found = indicators(clf, title)
    assert "militia_attack_us_forces" not in found and "us_strike_militia" not in found
    assert "militia_threat_statement" in found


def test_nationality_on_the_attack_names_the_attacker_and_the_victim_is_not_the_attacker(clf):
    f = one(frames(clf, "مقتل ضابطين في الحرس الثوري بغارة إسرائيلية قرب دمشق"), "kill")
    assert (f.actor, f.target) == ("israel", "iran_state")
    f = one(frames(clf, "إصابة جنود أمريكيين في هجوم على قاعدة شمال شرقي سوريا"), "kill")
    assert f.actor is None and f.target == "us"


def test_launch_place_is_never_the_target(clf):
    f = one(frames(clf, "Rockets fired from Nineveh Plains at Erbil airport"), "attack")
    assert f.target == "us" and ("erbil_air_base", "target") in f.places


def test_shooting_down_drones_is_an_intercepted_attack_by_their_owner(clf):
    f = one(frames(clf, "US destroyer downs Houthi drones over Red Sea"), "intercept")
    assert f.actor == "houthi" and f.modality == "intercepted"
    # a surveillance aircraft is the victim: its owner was attacked
    (f,) = {(g.actor, g.target) for g in frames(clf, "الحرس الثوري يسقط طائرة تجسس أمريكية مسيّرة فوق مضيق هرمز")}
    assert f == ("iran_state", "us")


def test_a_speaker_who_says_it_acted_is_the_actor(clf):
    f = one(frames(clf, "Pentagon says it killed Quds Force commander in Baghdad"), "kill")
    assert (f.actor, f.target) == ("us", "iran_state")
    assert "us_strike_irgc" in indicators(clf, "Pentagon says it killed Quds Force commander in Baghdad")


# --------------------------------------------------------------------------- acts that are not new attacks


@pytest.mark.parametrize("title,summary", [
    ("Coalition advisers train Iraqi units in counter-drone defence at Ain al-Asad", "The course covered drone detection."),
    ("مستشارون من التحالف يدربون وحدات عراقية على التصدي للطائرات المسيرة في قاعدة عين الأسد", ""),
    ("وزير الدفاع الأمريكي يزور القوات الأمريكية في قاعدة عين الأسد", ""),
    ("Iraqi police find and defuse rockets aimed at Baghdad airport", "The launchers were found before they were fired."),
    ("القوات الأمنية تعثر على منصة صواريخ معدة للإطلاق قرب مطار بغداد وتفككها", ""),
    ("Families of soldiers killed in last month's drone attack on Tower 22 meet officials", ""),
    ("كتائب حزب الله تنفي علاقتها بقصف مطار أربيل الشهر الماضي", ""),
    ("US launches strikes in retaliation for the drone attack that killed troops in Jordan", ""),
])
def test_activity_time_and_causes_are_not_new_attacks_on_us_forces(clf, title, summary):
    assert "militia_attack_us_forces" not in indicators(clf, title, summary)


def test_a_denial_of_authorship_leaves_the_attack_new(clf):
    title = "Kataib Hezbollah denies carrying out drone attack on Erbil airport"
    f = one(frames(clf, title), "attack")
    assert f.modality == "new" and f.denied_by == "militia" and f.actor is None
    assert "militia_attack_us_forces" in indicators(clf, title)  # an unclaimed attack counts
    # ... but the only possible author denying it is no US strike
    assert "us_strike_militia" not in indicators(clf, "التحالف الدولي ينفي تنفيذ غارات على مواقع الحشد قرب القائم")


def test_an_alert_raised_after_an_attack_reports_the_attack(clf):
    found = indicators(clf, "السفارة الأمريكية ترفع حالة التأهب بعد سقوط صواريخ قرب مجمعها في بغداد")
    assert "militia_attack_us_forces" in found


# --------------------------------------------------------------------------- scored sets


def _score(clf, path, lang):
    rep = evaluate_file(clf, path)
    t = rep.per_language[lang]
    return t.f1, rep.flagged_negatives[lang]


@pytest.mark.parametrize("lang", ["ar", "en"])
def test_dev_headlines_written_independently_of_the_pack(clf, lang):
    """../shared/corpora/dev-headlines: 120 items, hard negatives included (issue 13: >= 0.95 in
    each language, at most 2 of the 65 negatives flagged in all)."""
    path = CORPORA / "dev-headlines" / "headlines.jsonl"
    f1, _ = _score(clf, path, lang)
    assert f1 >= 0.95, f1
    rep = evaluate_file(clf, path)
    assert sum(rep.flagged_negatives.values()) <= 2


@pytest.mark.parametrize("lang", ["ar", "en"])
def test_frame_probes_hold_no_false_alarm(clf, lang):
    """Our own probe sentences for the frame classes (role reversal, statements, activity at
    bases, time), written with the frames, so only a floor is asserted."""
    rep = evaluate_file(clf, TESTS / "fixtures" / f"frames_{lang}.jsonl")
    t = rep.per_language[lang]
    assert t.fp == 0 and t.recall >= 0.85, (t.tp, t.fp, t.fn)


# --------------------------------------------------------------------------- configuration and explain


def test_a_predicate_naming_an_unknown_class_is_an_error_with_its_line(tmp_path):
    root = tmp_path / "alerts"
    shutil.copytree(DEFAULT_INDICATORS.parent / "indicators", root / "indicators")
    shutil.copytree(DEFAULT_INDICATORS.parent / "gazetteers", root / "gazetteers")
    shutil.copy(DEFAULT_INDICATORS.parent / "frames.yaml", root / "frames.yaml")
    path = root / "indicators" / "us_strike_irgc.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("  target: [iran_state]", "  target: [iran_sate]"), encoding="utf-8")
    line = 1 + text.splitlines().index("  target: [iran_state]")
    with pytest.raises(ConfigError) as exc:
        Classifier.load(root / "indicators")
    assert f"{path}:{line}: frame.target.0: unknown 'iran_sate'" in str(exc.value)


def test_explain_shows_frames_and_the_predicate(tmp_path):
    import os
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "marsad.cli", "explain", "Militia vows to attack US forces at Ain al-Asad"],
        capture_output=True, text=True, cwd=TESTS.parent, env={**os.environ, "MARSAD_WAREHOUSE": str(tmp_path / "w.duckdb")},
    )
    assert res.returncode == 0, res.stderr
    assert "militia —threat→" in res.stdout
    assert "(future)" in res.stdout  # "to attack": the attack is what is vowed, not done
    assert "frame predicate:" in res.stdout


def test_frames_are_kept_with_the_match(clf):
    (v,) = [v for v in clf.classify("Drone attack targets US troops at Ain al-Asad air base") if v.indicator == "militia_attack_us_forces"]
    d = v.frame.to_dict()
    assert d["action"] == "attack" and d["target"] == "us" and d["modality"] == "new"
    json.dumps(d)


def test_a_bad_lemma_in_the_frame_vocabulary_is_an_error_with_its_line(tmp_path):
    root = tmp_path / "alerts"
    shutil.copytree(DEFAULT_INDICATORS.parent / "indicators", root / "indicators")
    shutil.copytree(DEFAULT_INDICATORS.parent / "gazetteers", root / "gazetteers")
    text = (DEFAULT_INDICATORS.parent / "frames.yaml").read_text(encoding="utf-8")
    old = 'ar_verbs: ["قتل يقتل",'
    assert old in text
    (root / "frames.yaml").write_text(text.replace(old, 'ar_verbs: ["قتل",'), encoding="utf-8")
    line = 1 + text[: text.index(old)].count("\n")
    with pytest.raises(ConfigError) as exc:
        Classifier.load(root / "indicators")
    assert f"frames.yaml:{line}: actions.kill.ar_verbs.0: an Arabic verb is 'past present'" in str(exc.value)
