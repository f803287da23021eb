"""AML screening against its real boundaries: list files, a local HTTP provider, Redis."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from pago.common.enums import ChainFamily, Network
from pago.common.errors import ConfigError
from pago.matcher.aml.ofac import parse_sdn, write_lists
from pago.matcher.aml.provider import GoPlusProvider, ProviderUnavailable, VerdictCache
from pago.matcher.aml.sanctions import SanctionsList
from pago.matcher.aml.screener import Screener
from pago.matcher.cli import main as admin_cli
from pago.matcher.domain import AmlOutcome, AmlVerdict
from pago.matcher.main import main as matcher_cli
from pago.matcher.settings import DEFAULT_CHAIN_IDS, AmlFailurePolicy
from tests.support.goplus import FakeGoPlus
from tests.support.matcher import SANCTIONED_EVM, SANCTIONED_TRON, aml_dir

CHAIN_IDS = {
    Network.ETHEREUM: "1",
    Network.BSC: "56",
    Network.POLYGON: "137",
    Network.ARBITRUM: "42161",
    Network.OPTIMISM: "10",
    Network.BASE: "8453",
    Network.TRON: "tron",
    Network.SOLANA: "solana",
}
"""GoPlus ``address_security`` chain ids (EVM: EIP-155 ids)."""
EVM_A = "0x" + "a1" * 20
EVM_B = "0x" + "b2" * 20


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestSanctionsList:
    def test_the_ofac_snapshot_loads_per_family(self) -> None:
        sanctions = SanctionsList(aml_dir())

        assert sanctions.size(ChainFamily.EVM) > 100
        assert sanctions.size(ChainFamily.TRON) >= 6
        assert sanctions.lookup(ChainFamily.EVM, SANCTIONED_EVM) == "ofac_sdn_ETH"
        assert sanctions.lookup(ChainFamily.EVM, SANCTIONED_EVM.lower()) == "ofac_sdn_ETH"
        assert sanctions.lookup(ChainFamily.EVM, SANCTIONED_EVM.upper().replace("0X", "0x"))
        assert sanctions.lookup(ChainFamily.TRON, SANCTIONED_TRON) == "ofac_sdn_TRX"
        assert sanctions.lookup(ChainFamily.TRON, SANCTIONED_TRON.lower()) is None
        assert sanctions.lookup(ChainFamily.EVM, EVM_A) is None

    def test_usdt_entries_on_tron_are_found_under_tron(self) -> None:
        usdt_tron = next(
            line
            for line in (aml_dir() / "ofac_sdn_USDT.txt").read_text().split()
            if line.startswith("T")
        )
        assert SanctionsList(aml_dir()).lookup(ChainFamily.TRON, usdt_tron) == "ofac_sdn_USDT"

    def test_without_a_path_it_warns_that_level_1_is_off(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.WARNING):
            sanctions = SanctionsList(None)

        assert not sanctions.enabled
        assert sanctions.lookup(ChainFamily.EVM, SANCTIONED_EVM) is None
        [warning] = [r for r in caplog.records if "PAGO_AML_LIST_PATH" in r.getMessage()]
        assert "level 1" in warning.getMessage()

    def test_a_path_that_is_not_a_directory_stops_the_start(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="PAGO_AML_LIST_PATH"):
            SanctionsList(tmp_path / "missing")

    def test_it_reloads_changed_files_without_a_restart(self, tmp_path: Path) -> None:
        (tmp_path / "list.txt").write_text(f"# comment\n{EVM_A}\n\n")
        clock = Clock()
        sanctions = SanctionsList(tmp_path, reload_interval=60, clock=clock)
        assert sanctions.lookup(ChainFamily.EVM, EVM_B) is None

        (tmp_path / "list.txt").write_text(f"{EVM_A}\n{EVM_B}\n")
        assert not sanctions.maybe_reload(), "checked before the interval"
        clock.now += 61
        assert sanctions.maybe_reload()
        assert sanctions.lookup(ChainFamily.EVM, EVM_B) == "list"

        (tmp_path / "more.txt").write_text(f"{SANCTIONED_TRON}\n")
        sanctions.request_reload()  # SIGHUP
        assert sanctions.maybe_reload()
        assert sanctions.lookup(ChainFamily.TRON, SANCTIONED_TRON) == "more"
        assert not sanctions.maybe_reload()


SDN_XML = b"""<?xml version="1.0" standalone="yes"?>
<sdnList xmlns="https://sanctionslistservice.ofac.treas.gov/api/PublicationPreview/exports/XML">
  <sdnEntry>
    <uid>1</uid><lastName>EXAMPLE</lastName><sdnType>Entity</sdnType>
    <idList>
      <id><uid>11</uid><idType>Digital Currency Address - ETH</idType>
          <idNumber>0xA1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1</idNumber></id>
      <id><uid>12</uid><idType>Digital Currency Address - USDT</idType>
          <idNumber>TBHTJqAy4DhHhmT3dNceJYNRz4SdLofLre</idNumber></id>
      <id><uid>13</uid><idType>Passport</idType><idNumber>X123</idNumber></id>
      <id><uid>14</uid><idType>Digital Currency Address - XBT</idType>
          <idNumber>16iWn2J1McqjToYLHSsAyS6En3QA8YQ91H</idNumber></id>
    </idList>
  </sdnEntry>
</sdnList>
"""

SDN_CSV = (
    b'36,"EXAMPLE, Ltd.","-0-","CYBER2","-0-","-0-","-0-","-0-","-0-","-0-","-0-",'
    b'"Website example.com; Digital Currency Address - ETH '
    b"0xb2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2; alt. Digital Currency Address - ETH "
    b"0xA1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1; Digital Currency Address - TRX "
    b'TBHTJqAy4DhHhmT3dNceJYNRz4SdLofLre."\n'
)


class TestOfacImport:
    def test_the_xml_list_becomes_one_file_per_asset(self, tmp_path: Path) -> None:
        by_asset = parse_sdn(SDN_XML)

        assert by_asset == {
            "ETH": {"0xA1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"},
            "USDT": {"TBHTJqAy4DhHhmT3dNceJYNRz4SdLofLre"},
            "XBT": {"16iWn2J1McqjToYLHSsAyS6En3QA8YQ91H"},
        }
        written = write_lists(by_asset, tmp_path)
        assert [p.name for p in written] == [
            "ofac_sdn_ETH.txt",
            "ofac_sdn_USDT.txt",
            "ofac_sdn_XBT.txt",
        ]
        sanctions = SanctionsList(tmp_path)
        assert sanctions.lookup(ChainFamily.EVM, EVM_A) == "ofac_sdn_ETH"
        assert sanctions.lookup(ChainFamily.TRON, SANCTIONED_TRON) == "ofac_sdn_USDT"

    def test_the_csv_remarks_are_read_too(self) -> None:
        assert parse_sdn(SDN_CSV) == {
            "ETH": {EVM_B, "0xA1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"},
            "TRX": {SANCTIONED_TRON},
        }

    @pytest.mark.parametrize(
        ("command", "prefix"),
        [(admin_cli, ["import-ofac"]), (matcher_cli, ["aml", "import-ofac"])],
        ids=["pago-matcher-admin", "pago-matcher aml"],
    )
    def test_the_command_writes_the_files(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        command: Callable[[list[str]], None],
        prefix: list[str],
    ) -> None:
        source = tmp_path / "sdn.xml"
        source.write_bytes(SDN_XML)

        command([*prefix, str(source), "--out", str(tmp_path / "aml")])

        assert (tmp_path / "aml" / "ofac_sdn_ETH.txt").read_text() == (
            "0xA1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1\n"
        )
        assert "wrote 3 files" in capsys.readouterr().out

    def test_a_file_without_addresses_is_refused(self, tmp_path: Path) -> None:
        source = tmp_path / "empty.csv"
        source.write_text("1,nobody\n")
        with pytest.raises(SystemExit):
            matcher_cli(["aml", "import-ofac", str(source), "--out", str(tmp_path)])


@pytest.fixture
async def goplus() -> AsyncIterator[FakeGoPlus]:
    server = FakeGoPlus()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=0.3) as client:
        yield client


class TestGoPlusProvider:
    async def test_clear_and_hit(self, goplus: FakeGoPlus, http: httpx.AsyncClient) -> None:
        provider = GoPlusProvider(http, goplus.url, DEFAULT_CHAIN_IDS)
        goplus.flag(EVM_B, "sanctioned", "number_of_malicious_contracts_created")

        assert await provider.check(Network.ETHEREUM, EVM_A) == AmlVerdict.clear()
        assert await provider.check(Network.ETHEREUM, EVM_B) == AmlVerdict.hit(
            "number_of_malicious_contracts_created", "sanctioned"
        )

    async def test_every_network_asks_with_its_chain_id(
        self, goplus: FakeGoPlus, http: httpx.AsyncClient
    ) -> None:
        provider = GoPlusProvider(http, goplus.url, DEFAULT_CHAIN_IDS)
        for network in CHAIN_IDS:
            await provider.check(network, EVM_A)

        assert [chain for _, chain in goplus.requests] == list(CHAIN_IDS.values())

    @pytest.mark.parametrize("mode", ["down", "error", "slow"])
    async def test_no_answer_is_unavailable_never_clear(
        self, goplus: FakeGoPlus, http: httpx.AsyncClient, mode: str
    ) -> None:
        goplus.mode = mode
        with pytest.raises(ProviderUnavailable):
            await GoPlusProvider(http, goplus.url, DEFAULT_CHAIN_IDS).check(Network.BSC, EVM_A)


class TestScreener:
    async def test_a_listed_sender_is_a_hit_without_asking_the_provider(
        self, goplus: FakeGoPlus, http: httpx.AsyncClient
    ) -> None:
        provider = GoPlusProvider(http, goplus.url, DEFAULT_CHAIN_IDS)
        screener = Screener(SanctionsList(aml_dir()), provider)

        verdict = await screener.screen(Network.POLYGON, SANCTIONED_EVM)

        assert verdict == AmlVerdict.hit("sanctions_list:ofac_sdn_ETH")
        assert goplus.requests == []

    async def test_answers_are_cached_in_redis_for_a_day(
        self, goplus: FakeGoPlus, http: httpx.AsyncClient, redis: Redis
    ) -> None:
        provider = GoPlusProvider(http, goplus.url, DEFAULT_CHAIN_IDS)
        screener = Screener(SanctionsList(None), provider, VerdictCache(redis, ttl=86_400))
        goplus.flag(EVM_B, "mixer")

        first = await screener.screen_many([(Network.ETHEREUM, EVM_B), (Network.ETHEREUM, EVM_A)])
        again = await screener.screen(Network.ETHEREUM, EVM_B.upper().replace("0X", "0x"))

        assert first[(Network.ETHEREUM, EVM_B)] == again == AmlVerdict.hit("mixer")
        assert len(goplus.requests) == 2
        [key] = [k async for k in redis.scan_iter(match=f"pago:aml:goplus:ETHEREUM:{EVM_B}")]
        assert 86_000 < await redis.ttl(key) <= 86_400

    async def test_closed_policy_retries_then_holds(
        self, goplus: FakeGoPlus, http: httpx.AsyncClient, redis: Redis
    ) -> None:
        goplus.mode = "down"
        sleeps: list[float] = []

        async def sleep(seconds: float) -> None:
            sleeps.append(seconds)

        screener = Screener(
            SanctionsList(None),
            GoPlusProvider(http, goplus.url, DEFAULT_CHAIN_IDS),
            VerdictCache(redis, ttl=60),
            attempts=3,
            backoff=0.2,
            sleep=sleep,
        )

        verdict = await screener.screen(Network.ETHEREUM, EVM_A)

        assert verdict.outcome is AmlOutcome.UNAVAILABLE
        assert len(goplus.requests) == 3
        assert sleeps == [0.2, 0.4]
        assert [k async for k in redis.scan_iter(match="pago:aml:*")] == [], "cached a non-answer"

    async def test_open_policy_lets_it_through_and_counts_it(
        self, goplus: FakeGoPlus, http: httpx.AsyncClient
    ) -> None:
        goplus.mode = "error"
        before = REGISTRY.get_sample_value("pago_matcher_aml_unscreened_total") or 0.0
        screener = Screener(
            SanctionsList(None),
            GoPlusProvider(http, goplus.url, DEFAULT_CHAIN_IDS),
            attempts=1,
            failure_policy=AmlFailurePolicy.OPEN,
        )

        assert await screener.screen(Network.ETHEREUM, EVM_A) == AmlVerdict.clear()
        assert REGISTRY.get_sample_value("pago_matcher_aml_unscreened_total") == before + 1
