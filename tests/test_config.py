import pytest

from geosleuth.config import find_config_file, load_settings
from geosleuth.errors import ConfigError


def test_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GEOSLEUTH_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert find_config_file() is None
    s = load_settings()
    assert s.use_exif_gps is True and s.ocr.engine == "auto" and s.vlm.base_url is None


def test_precedence_flags_over_env_over_file_over_defaults(tmp_path, monkeypatch):
    cfg = tmp_path / "geosleuth.toml"
    cfg.write_text(
        'min_probability = 0.4\nmax_candidates = 7\n[ocr]\nengine = "tesseract"\nmax_side = 1000\n'
    )
    monkeypatch.setenv("GEOSLEUTH_MIN_PROBABILITY", "0.5")
    monkeypatch.setenv("GEOSLEUTH_OCR__ENGINE", "rapidocr")
    s = load_settings(cfg)
    assert s.max_candidates == 7  # file beats default
    assert s.min_probability == 0.5  # env beats file
    assert s.ocr.engine == "rapidocr" and s.ocr.max_side == 1000  # nested: env key wins, file key kept
    s = load_settings(cfg, min_probability=0.6, ocr={"engine": "none"})
    assert s.min_probability == 0.6 and s.ocr.engine == "none"  # flags beat env
    assert s.ocr.max_side == 1000  # a partial nested flag does not erase the file's other keys
    assert load_settings(cfg, min_probability=None).min_probability == 0.5  # None means "flag not given"


def test_config_file_found_by_env_and_cwd(tmp_path, monkeypatch):
    cfg = tmp_path / "custom.toml"
    cfg.write_text("max_candidates = 3\n")
    monkeypatch.setenv("GEOSLEUTH_CONFIG", str(cfg))
    assert load_settings().max_candidates == 3
    monkeypatch.delenv("GEOSLEUTH_CONFIG")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "geosleuth.toml").write_text("max_candidates = 4\n")
    assert load_settings().max_candidates == 4


def test_bad_settings_name_the_key_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOSLEUTH_OCR__ENGINE", "magic")
    with pytest.raises(ConfigError, match=r"ocr\.engine.*'magic'.*GEOSLEUTH_OCR__ENGINE"):
        load_settings()
    monkeypatch.delenv("GEOSLEUTH_OCR__ENGINE")
    bad = tmp_path / "bad.toml"
    bad.write_text("min_probabilty = 0.3\n")  # typo
    with pytest.raises(ConfigError, match="min_probabilty"):
        load_settings(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("this is = = not toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")


def test_overrides_and_fingerprint():
    base = load_settings()
    other = base.with_overrides(use_exif_gps=False)
    assert other.use_exif_gps is False and base.use_exif_gps is True
    assert other.fingerprint() != base.fingerprint()
    assert base.with_overrides(cache_dir="/elsewhere").fingerprint() == base.fingerprint()
    with pytest.raises(ConfigError, match="min_probability"):
        base.with_overrides(min_probability=3)


def test_secrets_are_not_in_the_fingerprint_or_repr(monkeypatch):
    monkeypatch.setenv("GEOSLEUTH_VLM__API_KEY", "sk-very-secret")
    s = load_settings()
    assert s.vlm.api_key is not None and s.vlm.api_key.get_secret_value() == "sk-very-secret"
    assert "sk-very-secret" not in repr(s)
    assert s.fingerprint() == load_settings(vlm={"api_key": "other"}).fingerprint()


# --- misspelt environment variables, and where each value came from -------------------------------


def test_an_unknown_geosleuth_variable_is_warned_about_with_a_did_you_mean(monkeypatch, caplog):
    import geosleuth.config as config

    monkeypatch.setattr(config, "_warned", set())
    monkeypatch.setenv("GEOSLEUTH_OFLINE", "1")
    monkeypatch.setenv("GEOSLEUTH_OCR_ENGINE", "none")  # one underscore where two were meant
    monkeypatch.setenv("GEOSLEUTH_QWERTY", "1")
    monkeypatch.setenv("GEOSLEUTH_OCR__ENGINE", "rapidocr")  # known: no warning
    monkeypatch.setenv("GEOSLEUTH_VLM", '{"samples": 3}')  # a section as JSON: known
    monkeypatch.setenv("GEOSLEUTH_VERIFIER__WEIGHTS__GPS", "2")  # a mapping's key: known
    with caplog.at_level("WARNING", logger="geosleuth.config"):
        s = load_settings()
        load_settings()  # once per process, not once per load
    assert s.ocr.engine == "rapidocr" and s.vlm.samples == 3
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "$GEOSLEUTH_OCR_ENGINE is not a geosleuth setting and is ignored; did you mean $GEOSLEUTH_OCR__ENGINE?",
        "$GEOSLEUTH_OFLINE is not a geosleuth setting and is ignored; did you mean $GEOSLEUTH_OFFLINE?",
        "$GEOSLEUTH_QWERTY is not a geosleuth setting and is ignored; `geosleuth config show` lists the settings",
    ]


def test_a_misspelt_key_inside_a_section_stays_an_error(monkeypatch):
    monkeypatch.setenv("GEOSLEUTH_OCR__ENGNE", "rapidocr")
    with pytest.raises(ConfigError, match="engne"):
        load_settings()


def test_setting_sources_name_the_layer_each_value_came_from(tmp_path, monkeypatch):
    from geosleuth.config import setting_sources

    cfg = tmp_path / "geosleuth.toml"
    cfg.write_text('min_probability = 0.4\n[ocr]\nengine = "tesseract"\nmax_side = 1000\n')
    monkeypatch.setenv("GEOSLEUTH_OCR__ENGINE", "rapidocr")
    monkeypatch.setenv("GEOSLEUTH_VLM", '{"samples": 3}')
    src = setting_sources(cfg, offline=True, ocr={"min_confidence": 0.7}, max_candidates=None)
    assert src["offline"] == "flag" and src["ocr.min_confidence"] == "flag"
    assert src["ocr.engine"] == "env" and src["vlm.samples"] == "env"
    assert src["min_probability"] == "file" and src["ocr.max_side"] == "file"
    assert src["max_candidates"] == "default" and src["vlm.base_url"] == "default"
    assert set(src) == set(config_names())


def config_names():  # type: ignore[no-untyped-def]
    from geosleuth.config import setting_names

    return setting_names()


def test_config_show_prints_each_values_source(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from geosleuth.cli import app

    cfg = tmp_path / "geosleuth.toml"
    cfg.write_text("min_probability = 0.4\n")
    monkeypatch.setenv("GEOSLEUTH_OCR__ENGINE", "rapidocr")
    args = ["config", "show", "--config", str(cfg), "--cache-dir", str(tmp_path / "c")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert f'cache_dir = "{tmp_path / "c"}"  # flag' in lines
    assert "min_probability = 0.4  # file" in lines
    assert 'engine = "rapidocr"  # env ($GEOSLEUTH_OCR__ENGINE)' in lines
    assert "max_candidates = 10  # default" in lines
    data = json.loads(CliRunner().invoke(app, [*args, "--json", "--sources"]).stdout)
    assert data["settings"]["ocr"]["engine"] == "rapidocr" and data["sources"]["ocr.engine"] == "env"
    assert json.loads(CliRunner().invoke(app, [*args, "--json"]).stdout)["min_probability"] == 0.4


def test_an_empty_cache_dir_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """GEOSLEUTH_CACHE_DIR= (empty) must not build the gazetteer in the current folder."""
    from geosleuth.config import load_settings
    from geosleuth.errors import ConfigError

    monkeypatch.setenv("GEOSLEUTH_CACHE_DIR", "")
    with pytest.raises(ConfigError, match="cache_dir"):
        load_settings()
    monkeypatch.setenv("GEOSLEUTH_CACHE_DIR", "  ")
    with pytest.raises(ConfigError, match="unset GEOSLEUTH_CACHE_DIR"):
        load_settings()
