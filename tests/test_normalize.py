from sources.normalize import canonical_url, content_hash, fold, guess_language, html_to_text


def test_fold_arabic_variants_meet():
    # diacritics, tatweel, hamza/alef forms, taa marbuta, alef maqsura, Arabic-Indic digits
    assert fold("عَيْن الأَسَد") == fold("عين الاسد") == fold("عـيـن الأسد")
    assert fold("مسيّرة") == fold("مسيره")
    assert fold("إيران") == fold("ايران") == fold("آيران".replace("آ", "ا"))
    assert fold("مصطفى") == fold("مصطفي")
    assert fold("البرج ٢٢") == "البرج 22"
    assert fold("سؤال") == "سوال"


def test_fold_english_and_punctuation():
    assert fold("Ain al-Asad, Iraq!") == "ain al asad iraq"
    assert fold("  U.S.   forces ") == "u s forces"


def test_display_text_keeps_original():
    assert html_to_text("<p>هجوم  على <b>عين الأسد</b></p>") == "هجوم على عين الأسد"
    assert html_to_text("<script>alert(1)</script>Hello &amp; bye") == "Hello & bye"
    assert html_to_text(None) == ""


def test_canonical_url_strips_tracking_and_normalises():
    a = canonical_url("HTTPS://WWW.Example.com:443/news/1?utm_source=rss&id=5&fbclid=x#top")
    assert a == "https://www.example.com/news/1?id=5"
    assert canonical_url("https://www.aljazeera.com/news/x?traffic_source=rss") == "https://www.aljazeera.com/news/x"
    assert canonical_url("http://example.com") == "http://example.com/"
    assert canonical_url("") == ""


def test_content_hash_ignores_form_not_substance():
    assert content_hash("هجوم على عين الأسد", "") == content_hash("هجومٌ على عين الاسد", "")
    assert content_hash("Attack on base", "x") != content_hash("Attack on base", "y")


def test_guess_language():
    assert guess_language("هجوم بطائرة مسيرة on base") == "ar"
    assert guess_language("Drone attack on Ain al-Asad") == "en"
    assert guess_language("whatever", "ar-IQ") == "ar"
    assert guess_language("هجوم", "fr") == "ar"  # not one of ours: detect


def test_guess_language_on_mixed_and_sparse_text():
    # Arabic headlines full of Latin acronyms and digits stay Arabic; English with an Arabic name stays English.
    assert guess_language("قال مسؤولون في CENTCOM إن 3 صواريخ أطلقت على قاعدة Harir") == "ar"
    assert guess_language("IRGC commander killed in strike near دمشق, officials say") == "en"
    assert guess_language("٣ صواريخ") == "ar"
    assert guess_language("2026-01-05 12:00") == "en"  # no letters at all: the default
    assert guess_language("", "AR_iq") == "ar"
