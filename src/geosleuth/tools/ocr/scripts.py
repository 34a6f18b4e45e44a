"""Which writing system each Tesseract language pack reads, and the script of a line of text.

Reading with every installed pack at once is slow (Tesseract runs each pack's recogniser on every
uncertain word: 20 packs take ~4x as long as one), so the hybrid engine reads with one script's
packs at a time. This module says which packs read which script and what to install for a script
that no installed pack reads.
"""

from __future__ import annotations

from collections.abc import Iterable

# Tesseract pack -> ISO 15924 code of the script it reads (tessdata's language list).
_PACKS: dict[str, tuple[str, ...] | list[str]] = {
    "Latn": [
        "eng",
        "afr",
        "aze",
        "bos",
        "bre",
        "cat",
        "ceb",
        "ces",
        "cos",
        "cym",
        "dan",
        "deu",
        "enm",
        "epo",
        "est",
        "eus",
        "fao",
        "fil",
        "fin",
        "fra",
        "frk",
        "frm",
        "fry",
        "gla",
        "gle",
        "glg",
        "hat",
        "hrv",
        "hun",
        "ind",
        "isl",
        "ita",
        "ita_old",
        "jav",
        "lat",
        "lav",
        "lit",
        "ltz",
        "mlt",
        "mri",
        "msa",
        "nld",
        "nor",
        "oci",
        "pol",
        "por",
        "que",
        "ron",
        "slk",
        "slv",
        "spa",
        "spa_old",
        "sqi",
        "srp_latn",
        "sun",
        "swa",
        "swe",
        "tgl",
        "ton",
        "tur",
        "uzb",
        "vie",
        "yor",
    ],
    "Cyrl": ["rus", "ukr", "bel", "bul", "kaz", "kir", "mkd", "mon", "srp", "tat", "tgk", "uzb_cyrl"],
    "Grek": ("ell", "grc"),
    "Arab": ("ara", "fas", "pus", "snd", "uig", "urd"),
    "Hebr": ("heb", "yid"),
    "Deva": ("hin", "mar", "nep", "san"),
    "Beng": ("ben", "asm"),
    "Taml": ("tam",),
    "Telu": ("tel",),
    "Knda": ("kan",),
    "Mlym": ("mal",),
    "Gujr": ("guj",),
    "Guru": ("pan",),
    "Orya": ("ori",),
    "Sinh": ("sin",),
    "Thai": ("tha",),
    "Laoo": ("lao",),
    "Khmr": ("khm",),
    "Mymr": ("mya",),
    "Geor": ("kat", "kat_old"),
    "Armn": ("hye",),
    "Ethi": ("amh", "tir"),
    "Tibt": ("bod", "dzo"),
    "Hang": ("kor", "kor_vert"),
    "Hani": ("chi_sim", "chi_tra", "chi_sim_vert", "chi_tra_vert"),
    "Jpan": ("jpn", "jpn_vert"),
}
PACK_SCRIPT: dict[str, str] = {pack: script for script, packs in _PACKS.items() for pack in packs}

SCRIPT_NAMES: dict[str, str] = {
    "Latn": "Latin",
    "Cyrl": "Cyrillic",
    "Grek": "Greek",
    "Arab": "Arabic",
    "Hebr": "Hebrew",
    "Deva": "Devanagari",
    "Beng": "Bengali",
    "Taml": "Tamil",
    "Telu": "Telugu",
    "Knda": "Kannada",
    "Mlym": "Malayalam",
    "Gujr": "Gujarati",
    "Guru": "Gurmukhi",
    "Orya": "Odia",
    "Sinh": "Sinhala",
    "Thai": "Thai",
    "Laoo": "Lao",
    "Khmr": "Khmer",
    "Mymr": "Myanmar",
    "Geor": "Georgian",
    "Armn": "Armenian",
    "Ethi": "Ethiopic",
    "Tibt": "Tibetan",
    "Hang": "Hangul",
    "Hani": "Han",
    "Jpan": "Japanese",
    "Hira": "Hiragana",
    "Kana": "Katakana",
}

# The scripts of the "world's scripts", and the pack that reads each (what to install).
MAJOR_SCRIPTS: dict[str, str] = {
    "Latn": "eng",
    "Cyrl": "rus",
    "Grek": "ell",
    "Arab": "ara",
    "Hebr": "heb",
    "Deva": "hin",
    "Thai": "tha",
    "Hang": "kor",
    "Hani": "chi_sim",
    "Jpan": "jpn",
}


def debian_package(pack: str) -> str:
    """``chi_sim`` -> ``tesseract-ocr-chi-sim``."""
    return "tesseract-ocr-" + pack.replace("_", "-").lower()


def script_groups(languages: Iterable[str]) -> dict[str, list[str]]:
    """Installed packs by the script they read; unknown packs join Latin (most of Tesseract's packs
    are Latin-script languages). Within a script, the packs keep the given order except that the
    script's main pack (``eng`` for Latin) comes first: Tesseract reads with its first pack and tries
    the others only on words it is unsure of."""
    groups: dict[str, list[str]] = {}
    ordered = list(languages)
    mains = set(MAJOR_SCRIPTS.values())
    ordered.sort(key=lambda lang: lang not in mains)
    for lang in ordered:
        groups.setdefault(PACK_SCRIPT.get(lang, "Latn"), []).append(lang)
    return groups


def readable_scripts(languages: Iterable[str]) -> list[str]:
    """Names of the scripts the given packs read (``["Latin", "Japanese"]``)."""
    return [SCRIPT_NAMES.get(s, s) for s in script_groups(languages)]


def missing_major_scripts(languages: Iterable[str]) -> list[tuple[str, str]]:
    """(script name, Debian package) of each major script no given pack reads."""
    have = set(script_groups(languages))
    return [(SCRIPT_NAMES[s], debian_package(p)) for s, p in MAJOR_SCRIPTS.items() if s not in have]


def text_script(text: str) -> str | None:
    """ISO 15924 code of the script most of the letters of ``text`` are in; None without letters.

    Kana, or Han mixed with kana, is ``Jpan``; Hangul (alone or with Han) is ``Hang``."""
    from geosleuth.tools.langid import detect_scripts

    shares = detect_scripts(text)
    if not shares:
        return None
    codes = {s.code for s in shares}
    top = shares[0].code
    if top in ("Hira", "Kana") or (top == "Hani" and codes & {"Hira", "Kana"}):
        return "Jpan"
    if top == "Hani" and "Hang" in codes:
        return "Hang"
    return top
