import subprocess
import sys
from pathlib import Path

import pytest

from pago.common.logging import redact

SERVERS = {
    "DATABASE_URL": "postgresql://u@127.0.0.1/db",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
}


def _run_load(env: dict[str, str], cls: str = "CommonSettings") -> subprocess.CompletedProcess[str]:
    code = (
        "from pago.common.settings import CommonSettings, SecretSettings, load_settings\n"
        f"s = load_settings({cls}, 'pago-test')\nprint('ok', s.registry.network('TRON').family)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=False,
    )


class TestLoadSettings:
    def test_loads_from_the_environment(self) -> None:
        result = _run_load(SERVERS)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "ok tron"

    @pytest.mark.parametrize("missing", sorted(SERVERS))
    def test_missing_required_setting_is_one_clear_line(self, missing: str) -> None:
        env = {k: v for k, v in SERVERS.items() if k != missing}
        result = _run_load(env)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            f"pago-test: missing required setting {missing}"
        ]

    def test_unknown_network_in_the_chains_file_is_one_clear_line(self, tmp_path: Path) -> None:
        chains = tmp_path / "chains.toml"
        chains.write_text('[networks.FANTOM]\nfamily = "evm"\n')
        result = _run_load({**SERVERS, "PAGO_CHAINS_FILE": str(chains)})
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1
        assert "unknown network 'FANTOM'" in lines[0]

    def test_production_requires_the_api_key_pepper(self) -> None:
        result = _run_load({**SERVERS, "PAGO_ENV": "production"}, cls="SecretSettings")
        assert result.returncode == 2
        assert result.stderr.strip() == "pago-test: PAGO_API_KEY_PEPPER is required in production"

    def test_invalid_value_names_the_variable(self) -> None:
        result = _run_load({**SERVERS, "PAGO_ENV": "staging"})
        assert result.returncode == 2
        assert result.stderr.startswith("pago-test: invalid setting PAGO_ENV")


def test_logs_never_carry_secrets() -> None:
    line = "created key sk_live_" + "ab" * 24 + " and whsec_Zm9vYmFy for merchant"
    assert redact(line) == "created key sk_live_… and whsec_… for merchant"


def test_logs_never_carry_client_secrets_or_tokens() -> None:
    secret = "cs_" + "Ab-_9" * 8 + "xyz"  # 43 characters, as pago-admin makes them
    token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJjbGlfMSJ9.c2lnbmF0dXJlLXBhcnQ"
    line = f"client cli_0123 secret {secret} token {token} for session cs_1187e145458e37a413773692"
    assert redact(line) == (
        "client cli_0123 secret cs_… token eyJ… for session cs_1187e145458e37a413773692"
    )
