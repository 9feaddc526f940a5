from pathlib import Path

import pytest

from orderpipe.core.errors import ConfigError
from orderpipe.core.settings import Settings, load_settings


def test_defaults_match_the_contract(workdir: Path) -> None:
    settings = load_settings(_env_file=None)
    assert str(settings.db_url) == "sqlite:///data/orderpipe.db"
    assert settings.kafka_bootstrap_servers == "embedded"
    assert settings.kafka_topic == "orders-events"
    assert settings.kafka_group_id == "orderpipe-consumer"
    assert (settings.data_dir, settings.artifacts_dir, settings.reports_dir) == (
        Path("data"),
        Path("artifacts"),
        Path("reports"),
    )
    assert settings.eco_enabled is True
    assert settings.eco_country_iso_code == "FRA"
    assert settings.eco_output_dir == Path("reports/emissions")
    assert (settings.log_format, settings.log_level) == ("text", "INFO")


def test_environment_variables_with_prefix(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERPIPE_DATABASE_URL", "sqlite:///other.db")
    monkeypatch.setenv("ORDERPIPE_KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("ORDERPIPE_ECO_ENABLED", "false")
    monkeypatch.setenv("ORDERPIPE_LOG_LEVEL", "debug")
    settings = load_settings()
    assert str(settings.db_url) == "sqlite:///other.db"
    assert settings.kafka_bootstrap_servers == "k1:9092,k2:9092"
    assert settings.eco_enabled is False
    assert settings.log_level == "DEBUG"


def test_dotenv_file_is_read_and_environment_wins(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workdir / ".env").write_text("ORDERPIPE_KAFKA_TOPIC=from-file\nORDERPIPE_DATA_DIR=d1\n")
    monkeypatch.setenv("ORDERPIPE_DATA_DIR", "d2")
    settings = load_settings()
    assert settings.kafka_topic == "from-file"
    assert settings.data_dir == Path("d2")


def test_original_project_env_builds_a_mysql_url(workdir: Path) -> None:
    (workdir / ".env").write_text(
        "MYSQL_USER=exam\nMYSQL_PASSWORD=exam pwd@1\nMYSQL_DATABASE=examdb\n"
        "MYSQL_HOST=db.local\nMYSQL_PORT=3307\nKAFKA_BOOTSTRAP_SERVERS=127.0.0.1:29092\n"
        "KAFKA_TOPIC=events\nCC_OUTPUT_DIR=out/emissions\nCC_COUNTRY_ISO_CODE=deu\n"
    )
    settings = load_settings()
    url = settings.db_url
    assert (url.drivername, url.username, url.password) == ("mysql+pymysql", "exam", "exam pwd@1")
    assert (url.host, url.port, url.database) == ("db.local", 3307, "examdb")
    assert settings.kafka_bootstrap_servers == "127.0.0.1:29092"
    assert settings.kafka_topic == "events"
    assert settings.eco_output_dir == Path("out/emissions")
    assert settings.eco_country_iso_code == "DEU"


def test_explicit_database_url_wins_over_mysql_variables(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MYSQL_USER", "exam")
    monkeypatch.setenv("MYSQL_DATABASE", "examdb")
    monkeypatch.setenv("ORDERPIPE_DATABASE_URL", "sqlite:///x.db")
    assert str(load_settings().db_url) == "sqlite:///x.db"


def test_passwords_are_never_shown(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYSQL_USER", "exam")
    monkeypatch.setenv("MYSQL_PASSWORD", "s3cret-pw")
    monkeypatch.setenv("MYSQL_DATABASE", "examdb")
    settings = load_settings()
    assert "s3cret-pw" not in repr(settings.mysql_password)
    assert "s3cret-pw" not in str(settings.public_view())
    assert "s3cret-pw" not in settings.masked_database_url()


def test_mysql_password_with_url_special_characters_round_trips(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = "p w+@:/%x"  # space, +, @, :, / and %: each broke the quote_plus-built URL
    monkeypatch.setenv("MYSQL_USER", "exam")
    monkeypatch.setenv("MYSQL_PASSWORD", password)
    monkeypatch.setenv("MYSQL_DATABASE", "examdb")
    settings = load_settings()
    assert settings.db_url.password == password
    assert (settings.db_url.username, settings.db_url.database) == ("exam", "examdb")
    rendered = settings.db_url.render_as_string(hide_password=False)
    encoded = rendered.split("://", 1)[1].rsplit("@", 1)[0].split(":", 1)[1]
    for shown in (str(settings.db_url), repr(settings)):
        assert password not in shown
        assert encoded not in shown


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("ORDERPIPE_INGEST_CHUNK_SIZE", "-5", "ORDERPIPE_INGEST_CHUNK_SIZE"),
        ("ORDERPIPE_DATABASE_URL", "not a url", "ORDERPIPE_DATABASE_URL"),
        ("ORDERPIPE_DATABASE_URL", "oracle://u:p@h/db", "ORDERPIPE_DATABASE_URL"),
        ("ORDERPIPE_LOG_FORMAT", "xml", "ORDERPIPE_LOG_FORMAT"),
        ("ORDERPIPE_ECO_ENABLED", "maybe", "ORDERPIPE_ECO_ENABLED"),
        ("KAFKA_BOOTSTRAP_SERVERS", "no-port", "ORDERPIPE_KAFKA_BOOTSTRAP_SERVERS"),
        ("MYSQL_PORT", "99999", "MYSQL_PORT"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_setting(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"invalid setting {named}:")


def test_settings_can_be_built_directly_for_tests(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path}/t.db")
    assert settings.db_url.database == f"{tmp_path}/t.db"


@pytest.mark.parametrize(
    "url",
    ["postgresql+psycopg2://u:secret@db/x", "postgresql+asyncpg://u:secret@db/x"],
)
def test_another_postgresql_driver_than_psycopg_is_one_line(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("ORDERPIPE_DATABASE_URL", url)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message and "secret" not in message
    assert "postgresql+psycopg://" in message


def test_postgresql_with_psycopg_or_the_default_driver_is_accepted(workdir: Path) -> None:
    for url in ("postgresql+psycopg://u:p@db/x", "postgresql://u:p@db/x"):
        assert Settings(_env_file=None, database_url=url).db_url.get_backend_name() == "postgresql"
