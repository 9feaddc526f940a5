"""Settings: one validated object built from ORDERPIPE_* variables, `./.env` and old aliases.

Loaded once by the CLI and passed down; services never read the environment themselves.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from orderpipe.core.errors import ConfigError
from orderpipe.core.layout import default_database

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

SUPPORTED_DIALECTS = ("sqlite", "mysql", "mariadb", "postgresql")


def _env(name: str, *aliases: str) -> AliasChoices:
    return AliasChoices(f"ORDERPIPE_{name}", *aliases)


class Settings(BaseSettings):
    """Every setting of orderpipe; see the README's configuration table."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        validate_default=True,
    )

    # Secret end to end: it may hold a password. Services get a SQLAlchemy URL (`db_url`),
    # whose str() and repr() mask the password too.
    database_url: SecretStr | None = Field(None, validation_alias=_env("DATABASE_URL"))
    kafka_bootstrap_servers: str = Field(
        "embedded", validation_alias=_env("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS")
    )
    kafka_topic: str = Field("orders-events", validation_alias=_env("KAFKA_TOPIC", "KAFKA_TOPIC"))
    kafka_group_id: str = Field("orderpipe-consumer", validation_alias=_env("KAFKA_GROUP_ID"))
    # Managed clusters (Confluent Cloud, MSK, Aiven...): SASL and/or TLS for every Kafka client.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", validation_alias=_env("KAFKA_SECURITY_PROTOCOL")
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, validation_alias=_env("KAFKA_SASL_MECHANISM")
    )
    kafka_sasl_username: str | None = Field(None, validation_alias=_env("KAFKA_SASL_USERNAME"))
    kafka_sasl_password: SecretStr | None = Field(
        None, validation_alias=_env("KAFKA_SASL_PASSWORD")
    )
    kafka_ssl_cafile: Path | None = Field(None, validation_alias=_env("KAFKA_SSL_CAFILE"))
    kafka_ssl_certfile: Path | None = Field(None, validation_alias=_env("KAFKA_SSL_CERTFILE"))
    kafka_ssl_keyfile: Path | None = Field(None, validation_alias=_env("KAFKA_SSL_KEYFILE"))
    data_dir: Path = Field(Path("data"), validation_alias=_env("DATA_DIR"))
    artifacts_dir: Path = Field(Path("artifacts"), validation_alias=_env("ARTIFACTS_DIR"))
    reports_dir: Path = Field(Path("reports"), validation_alias=_env("REPORTS_DIR"))
    eco_enabled: bool = Field(True, validation_alias=_env("ECO_ENABLED"))
    eco_country_iso_code: str = Field(
        "FRA", validation_alias=_env("ECO_COUNTRY_ISO_CODE", "CC_COUNTRY_ISO_CODE")
    )
    eco_output_dir: Path = Field(
        Path("reports/emissions"), validation_alias=_env("ECO_OUTPUT_DIR", "CC_OUTPUT_DIR")
    )
    log_format: Literal["text", "json"] = Field("text", validation_alias=_env("LOG_FORMAT"))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias=_env("LOG_LEVEL")
    )
    # Rows per transaction; unset = the best size for the database (see db.upsert.DEFAULT_CHUNK).
    ingest_chunk_size: int | None = Field(None, gt=0, validation_alias=_env("INGEST_CHUNK_SIZE"))
    mysql_local_infile: bool = Field(True, validation_alias=_env("MYSQL_LOCAL_INFILE"))

    # Compatibility with a `.env` written for the original scripts.
    mysql_user: str | None = Field(None, validation_alias=AliasChoices("MYSQL_USER"))
    mysql_password: SecretStr | None = Field(None, validation_alias=AliasChoices("MYSQL_PASSWORD"))
    mysql_database: str | None = Field(None, validation_alias=AliasChoices("MYSQL_DATABASE"))
    mysql_host: str = Field("127.0.0.1", validation_alias=AliasChoices("MYSQL_HOST"))
    mysql_port: int = Field(3306, gt=0, lt=65536, validation_alias=AliasChoices("MYSQL_PORT"))

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("eco_country_iso_code")
    @classmethod
    def _iso3(cls, value: str) -> str:
        value = value.strip().upper()
        if len(value) != 3 or not value.isalpha():
            raise ValueError("expected a 3-letter ISO country code such as FRA")
        return value

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper_kafka(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip().upper() or None
        return value

    @field_validator("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _kafka_security(self) -> Settings:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and not (self.kafka_sasl_mechanism and self.kafka_sasl_username):
            raise ValueError(
                f"kafka_security_protocol {self.kafka_security_protocol} needs "
                "ORDERPIPE_KAFKA_SASL_MECHANISM, ORDERPIPE_KAFKA_SASL_USERNAME and "
                "ORDERPIPE_KAFKA_SASL_PASSWORD"
            )
        if sasl and self.kafka_sasl_password is None:
            raise ValueError("ORDERPIPE_KAFKA_SASL_PASSWORD is unset")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError(
                "ORDERPIPE_KAFKA_SSL_CERTFILE and ORDERPIPE_KAFKA_SSL_KEYFILE go together"
            )
        return self

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _servers(cls, value: str) -> str:
        value = value.strip()
        if value == "embedded":
            return value
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected 'embedded' or host:port[,host:port], got {server!r}")
        return value

    @model_validator(mode="after")
    def _resolve_database_url(self) -> Settings:
        if self.database_url is None:
            if self.mysql_user and self.mysql_database:
                from sqlalchemy.engine import URL

                # URL.create escapes what a URL string would not carry (space, +, @, :, /, %).
                url = URL.create(
                    "mysql+pymysql",
                    username=self.mysql_user,
                    password=self.mysql_password.get_secret_value()
                    if self.mysql_password
                    else None,
                    host=self.mysql_host,
                    port=self.mysql_port,
                    database=self.mysql_database,
                )
                self.database_url = SecretStr(url.render_as_string(hide_password=False))
            else:
                self.database_url = SecretStr(f"sqlite:///{default_database(self.data_dir)}")
        _check_database_url(self.database_url.get_secret_value())
        return self

    @property
    def db_url(self) -> URL:
        """The database URL as a SQLAlchemy URL (its str() hides the password)."""
        from sqlalchemy.engine import make_url

        assert self.database_url is not None  # set by the validator
        return make_url(self.database_url.get_secret_value())

    def masked_database_url(self) -> str:
        """The database URL with its password replaced by ***, for display."""
        return self.db_url.render_as_string(hide_password=True)

    def public_view(self) -> dict[str, str]:
        """Every setting as text, secrets masked: what `doctor` shows."""
        view: dict[str, str] = {}
        for name in type(self).model_fields:
            if name.startswith("mysql_") and name != "mysql_local_infile":
                continue
            value = getattr(self, name)
            view[name] = self.masked_database_url() if name == "database_url" else str(value)
        return view


# SQLAlchemy's own URL pattern (sqlalchemy.engine.url._parse_url), so that a command that never
# opens the database (train reads a Parquet table) does not import SQLAlchemy to check one.
_DATABASE_URL = re.compile(
    r"""
    (?P<name>[\w\+]+)://
    (?:(?P<username>[^:/]*)(?::(?P<password>[^@]*))?@)?
    (?:(?:\[(?P<ipv6host>[^/\?]+)\]|(?P<ipv4host>[^/:\?]+))?(?::(?P<port>[^/\?]*))?)?
    (?:/(?P<database>[^\?]*))?
    (?:\?(?P<query>.*))?
    """,
    re.VERBOSE,
)


def _check_database_url(url: str) -> None:
    parsed = _DATABASE_URL.match(url)
    port = None if parsed is None else parsed["port"]
    if parsed is None or (port is not None and not (port.isascii() and port.isdigit())):
        raise ValueError(
            "database_url is not a database URL (expected e.g. sqlite:///data/orderpipe.db "
            "or mysql+pymysql://user:password@host:3306/db)"
        )
    backend, _, driver = parsed["name"].partition("+")
    if backend not in SUPPORTED_DIALECTS:
        raise ValueError(
            f"database_url uses {backend!r}; supported: {', '.join(SUPPORTED_DIALECTS)}"
        )
    if backend == "postgresql" and driver not in ("", "psycopg"):
        raise ValueError(
            f"database_url uses the PostgreSQL driver {driver!r}; orderpipe reaches PostgreSQL "
            "through psycopg 3: postgresql+psycopg://user:password@host:5432/db"
        )


def _env_name(loc: tuple[Any, ...]) -> str:
    if not loc:
        return "settings"
    name = str(loc[0])
    field = Settings.model_fields.get(name)
    alias = getattr(field, "validation_alias", None) if field else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return name if name.isupper() else f"ORDERPIPE_{name.upper()}"


def load_settings(**overrides: Any) -> Settings:
    """Build the settings once; a bad value becomes one ConfigError line naming the setting."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        name: str | None = _env_name(tuple(first.get("loc", ())))
        if name == "settings":  # a rule across settings
            name = "ORDERPIPE_DATABASE_URL" if "database_url" in message else None
        if name is None:
            raise ConfigError(f"invalid settings: {message}") from None
        raise ConfigError(f"invalid setting {name}: {message}") from None
