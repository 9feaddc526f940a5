"""docker/compose.yml and the Dockerfile cannot drift from the settings and services.sh."""

from __future__ import annotations

import re
from pathlib import Path

from orderpipe.core.settings import Settings

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def _compose() -> str:
    return (DOCKER / "compose.yml").read_text()


def _service_block(text: str, name: str) -> str:
    match = re.search(rf"^  {name}:\n((?:    .*\n|\n)+)", text, re.M)
    assert match, f"service {name} missing from compose.yml"
    return match.group(1)


def test_compose_has_the_services_and_ports_of_services_sh() -> None:
    text = _compose()
    assert '"3306:3306"' in _service_block(text, "mysql")
    assert '"9092:9092"' in _service_block(text, "kafka")
    assert "image: mysql:8.4" in text
    services_sh = (DOCKER / "services.sh").read_text()
    assert "mysql_port=${ORDERPIPE_SERVICES_MYSQL_PORT:-3306}" in services_sh
    assert "kafka_port=${ORDERPIPE_SERVICES_KAFKA_PORT:-9092}" in services_sh
    postgres = _service_block(text, "postgres")
    assert '"5432:5432"' in postgres and 'profiles: ["postgres"]' in postgres
    assert "postgres_port=${ORDERPIPE_SERVICES_POSTGRES_PORT:-5432}" in services_sh


def test_compose_kafka_image_matches_the_pinned_release() -> None:
    pinned = re.search(
        r"<kafka.version>(.+?)</kafka.version>", (DOCKER / "kafka" / "pom.xml").read_text()
    )
    assert pinned
    assert f"image: apache/kafka:{pinned.group(1)}" in _compose()


def test_app_service_sets_only_real_settings_and_old_env_names() -> None:
    block = _service_block(_compose(), "orderpipe")
    assert 'profiles: ["app"]' in block
    names = set(re.findall(r"^\s+(ORDERPIPE_[A-Z_]+):", block, re.M))
    known = {f"ORDERPIPE_{name.upper()}" for name in Settings.model_fields}
    assert names and names <= known
    for old in set(re.findall(r"\$\{([A-Z_]+):-", _compose())) - {"MYSQL_ROOT_PASSWORD"}:
        assert old.lower() in Settings.model_fields or old in {
            "KAFKA_TOPIC",
            "CC_COUNTRY_ISO_CODE",
        }, old


def test_dockerfile_installs_the_package_with_the_console_script() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["orderpipe"]' in text
    assert "pip install" in text and ".[embedded]" in text
