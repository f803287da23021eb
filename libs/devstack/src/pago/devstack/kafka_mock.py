"""A Kafka-protocol broker for dev and tests: librdkafka's mock cluster, loaded through ctypes.

The ``confluent-kafka`` wheel bundles librdkafka, whose mock cluster speaks the Kafka protocol
on real TCP ports, so aiokafka and FastStream connect to it like to any broker. It runs on
librdkafka threads inside this process: no child process, started in well under 0.1 s.

Limits to design tests around (see TESTBED.md): one consumer per group (group sync between two
aiokafka members fails), transactions are not isolated, no compaction, each partition keeps at
most ~5 MiB. Production and CI with ``KAFKA_BOOTSTRAP_SERVERS`` set use real Kafka instead.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from pago.common.topics import TOPICS, TopicSpec
from pago.devstack._support import DevStackError, environ

log = logging.getLogger(__name__)

_RD_KAFKA_PRODUCER = 0
_ERRSTR_SIZE = 512
# A consumer group normally waits 3 s for more members before the first rebalance; tests run
# one member per group, so that wait is pure latency.
DEFAULT_REBALANCE_DELAY_MS = 10


def find_librdkafka() -> Path:
    """The librdkafka shared object bundled in the installed ``confluent-kafka`` wheel."""
    spec = importlib.util.find_spec("confluent_kafka")
    if spec is None or not spec.submodule_search_locations:
        raise DevStackError("confluent-kafka is not installed")
    site_packages = Path(next(iter(spec.submodule_search_locations))).parent
    candidates = sorted((site_packages / "confluent_kafka.libs").glob("librdkafka*.so*"))
    if not candidates:
        raise DevStackError(f"no librdkafka*.so* under {site_packages / 'confluent_kafka.libs'}")
    return candidates[0]


class _Lib:
    """The librdkafka functions we call, each with its C signature declared.

    Undeclared ctypes calls pass and return C ``int``: a pointer returned as int is truncated
    to 32 bits on x86-64 and crashes later, far from the cause.
    """

    def __init__(self, path: Path) -> None:
        lib = ctypes.CDLL(str(path))
        vp, cp, i32 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32

        self.conf_new = lib.rd_kafka_conf_new
        self.conf_new.argtypes = []
        self.conf_new.restype = vp

        self.conf_set = lib.rd_kafka_conf_set
        self.conf_set.argtypes = [vp, cp, cp, cp, ctypes.c_size_t]
        self.conf_set.restype = ctypes.c_int

        self.conf_destroy = lib.rd_kafka_conf_destroy
        self.conf_destroy.argtypes = [vp]
        self.conf_destroy.restype = None

        self.new = lib.rd_kafka_new
        self.new.argtypes = [ctypes.c_int, vp, cp, ctypes.c_size_t]
        self.new.restype = vp

        self.destroy = lib.rd_kafka_destroy
        self.destroy.argtypes = [vp]
        self.destroy.restype = None

        self.err2str = lib.rd_kafka_err2str
        self.err2str.argtypes = [ctypes.c_int]
        self.err2str.restype = cp

        self.cluster_new = lib.rd_kafka_mock_cluster_new
        self.cluster_new.argtypes = [vp, ctypes.c_int]
        self.cluster_new.restype = vp

        self.cluster_destroy = lib.rd_kafka_mock_cluster_destroy
        self.cluster_destroy.argtypes = [vp]
        self.cluster_destroy.restype = None

        self.cluster_bootstraps = lib.rd_kafka_mock_cluster_bootstraps
        self.cluster_bootstraps.argtypes = [vp]
        self.cluster_bootstraps.restype = cp

        self.topic_create = lib.rd_kafka_mock_topic_create
        self.topic_create.argtypes = [vp, cp, ctypes.c_int, ctypes.c_int]
        self.topic_create.restype = ctypes.c_int

        self.broker_set_down = lib.rd_kafka_mock_broker_set_down
        self.broker_set_down.argtypes = [vp, i32]
        self.broker_set_down.restype = ctypes.c_int

        self.broker_set_up = lib.rd_kafka_mock_broker_set_up
        self.broker_set_up.argtypes = [vp, i32]
        self.broker_set_up.restype = ctypes.c_int

        self.partition_set_leader = lib.rd_kafka_mock_partition_set_leader
        self.partition_set_leader.argtypes = [vp, cp, i32, i32]
        self.partition_set_leader.restype = ctypes.c_int

        # The variadic rd_kafka_mock_push_request_errors cannot be declared portably through
        # ctypes; the _array form takes the same arguments as a plain C array.
        self.push_request_errors_array = lib.rd_kafka_mock_push_request_errors_array
        self.push_request_errors_array.argtypes = [
            vp,
            ctypes.c_int16,
            ctypes.c_size_t,
            ctypes.POINTER(ctypes.c_int),
        ]
        self.push_request_errors_array.restype = None

        self.clear_request_errors = getattr(lib, "rd_kafka_mock_clear_request_errors", None)
        if self.clear_request_errors is not None:
            self.clear_request_errors.argtypes = [vp, ctypes.c_int16]
            self.clear_request_errors.restype = None

        # Present since librdkafka 2.0; older builds keep the 3 s delay.
        self.group_initial_rebalance_delay_ms = getattr(
            lib, "rd_kafka_mock_group_initial_rebalance_delay_ms", None
        )
        if self.group_initial_rebalance_delay_ms is not None:
            self.group_initial_rebalance_delay_ms.argtypes = [vp, i32]
            self.group_initial_rebalance_delay_ms.restype = None


_lib_lock = threading.Lock()
_lib_cache: dict[Path, _Lib] = {}


def _load(path: Path | None) -> _Lib:
    resolved = (path or find_librdkafka()).resolve()
    with _lib_lock:
        if resolved not in _lib_cache:
            _lib_cache[resolved] = _Lib(resolved)
        return _lib_cache[resolved]


class MockKafkaCluster:
    """librdkafka's mock cluster: ``start()``, give clients ``bootstrap_servers``, ``close()``.

    The cluster lives on threads of a librdkafka client handle owned by this object; closing
    the handle (or letting the interpreter exit) stops the brokers and frees their ports.
    Broker ids are 1..``brokers``.
    """

    def __init__(
        self,
        library: Path | None = None,
        rebalance_delay_ms: int | None = DEFAULT_REBALANCE_DELAY_MS,
    ) -> None:
        self._library = library
        self._rebalance_delay_ms = rebalance_delay_ms
        self._lib: _Lib | None = None
        self._rk: int | None = None
        self._mc: int | None = None
        self._bootstrap: str | None = None
        self.brokers = 0

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, brokers: int = 1) -> Self:
        if self._mc is not None:
            raise DevStackError("mock Kafka cluster already started")
        if brokers < 1:
            raise ValueError("brokers must be >= 1")
        lib = _load(self._library)
        errstr = ctypes.create_string_buffer(_ERRSTR_SIZE)
        conf = lib.conf_new()
        if not conf:
            raise DevStackError("rd_kafka_conf_new failed")
        # The handle only hosts the cluster; quiet its own logging of the empty bootstrap.
        lib.conf_set(conf, b"log_level", b"3", errstr, _ERRSTR_SIZE)
        rk = lib.new(_RD_KAFKA_PRODUCER, conf, errstr, _ERRSTR_SIZE)
        if not rk:
            lib.conf_destroy(conf)  # rd_kafka_new takes ownership of conf only on success
            raise DevStackError(f"rd_kafka_new failed: {errstr.value.decode(errors='replace')}")
        mc = lib.cluster_new(rk, brokers)
        if not mc:
            lib.destroy(rk)
            raise DevStackError("rd_kafka_mock_cluster_new failed")
        self._lib, self._rk, self._mc, self.brokers = lib, rk, mc, brokers
        if self._rebalance_delay_ms is not None:
            if lib.group_initial_rebalance_delay_ms is not None:
                lib.group_initial_rebalance_delay_ms(mc, self._rebalance_delay_ms)
            else:
                log.warning("librdkafka lacks group_initial_rebalance_delay_ms; joins wait 3 s")
        raw = lib.cluster_bootstraps(mc)
        self._bootstrap = raw.decode() if raw else None
        if not self._bootstrap:
            self.close()
            raise DevStackError("mock cluster reported no bootstrap servers")
        log.info("mock Kafka cluster up at %s", self._bootstrap)
        return self

    def close(self) -> None:
        """Stop the brokers. Idempotent. Clients still connected see their connections drop."""
        lib, rk, mc = self._lib, self._rk, self._mc
        self._rk = self._mc = None
        self._bootstrap = None
        if lib is None:
            return
        if mc is not None:
            lib.cluster_destroy(mc)
        if rk is not None:
            lib.destroy(rk)

    def __enter__(self) -> Self:
        return self if self._mc is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- queries and controls ------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._mc is not None

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:p1,127.0.0.1:p2,...`` — one address per broker."""
        if self._bootstrap is None:
            raise DevStackError("mock Kafka cluster is not running")
        return self._bootstrap

    def _handles(self) -> tuple[_Lib, int]:
        if self._lib is None or self._mc is None:
            raise DevStackError("mock Kafka cluster is not running")
        return self._lib, self._mc

    def _check(self, err: int, what: str) -> None:
        if err != 0:
            lib, _ = self._handles()
            message = lib.err2str(err)
            detail = message.decode(errors="replace") if message else f"error {err}"
            raise DevStackError(f"{what}: {detail}")

    def create_topic(self, name: str, partitions: int, replication: int = 1) -> None:
        """Create a topic (client-side creation through the admin API fails against the mock)."""
        lib, mc = self._handles()
        if replication > self.brokers:
            raise ValueError(f"replication {replication} > {self.brokers} brokers")
        self._check(
            lib.topic_create(mc, name.encode(), partitions, replication),
            f"create topic {name}",
        )

    def create_topics(self, topics: Iterable[TopicSpec] = TOPICS) -> None:
        """Create Pago's topics (``pago.common.topics.TOPICS``), replicated up to 3 times.

        The mock ignores ``compacted`` and retention: it never compacts nor expires.
        """
        for spec in topics:
            self.create_topic(spec.name, spec.partitions, min(3, self.brokers))

    def broker_down(self, broker_id: int) -> None:
        """Disconnect the broker and refuse new connections; leadership does not move."""
        lib, mc = self._handles()
        self._check(lib.broker_set_down(mc, broker_id), f"broker {broker_id} down")

    def broker_up(self, broker_id: int) -> None:
        lib, mc = self._handles()
        self._check(lib.broker_set_up(mc, broker_id), f"broker {broker_id} up")

    def set_partition_leader(self, topic: str, partition: int, broker_id: int) -> None:
        lib, mc = self._handles()
        self._check(
            lib.partition_set_leader(mc, topic.encode(), partition, broker_id),
            f"leader of {topic}/{partition}",
        )

    def push_request_errors(self, api_key: int, errors: Sequence[int]) -> None:
        """Fail the next ``len(errors)`` requests with Kafka ``api_key`` with these error codes."""
        lib, mc = self._handles()
        array = (ctypes.c_int * len(errors))(*errors)
        lib.push_request_errors_array(mc, api_key, len(errors), array)

    def clear_request_errors(self, api_key: int) -> None:
        lib, mc = self._handles()
        if lib.clear_request_errors is None:
            raise DevStackError("this librdkafka has no rd_kafka_mock_clear_request_errors")
        lib.clear_request_errors(mc, api_key)


@dataclass
class KafkaServer:
    """The Kafka the stack uses: ``KAFKA_BOOTSTRAP_SERVERS`` when set, else a mock cluster."""

    bootstrap_servers: str
    cluster: MockKafkaCluster | None = field(default=None, repr=False)

    @property
    def external(self) -> bool:
        return self.cluster is None

    @classmethod
    def start(
        cls,
        brokers: int = 1,
        *,
        create_topics: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> KafkaServer:
        """Use the external Kafka if configured, else start a mock with Pago's topics.

        Topics on an external Kafka are its operator's business (Strimzi ``KafkaTopic``
        manifests in ``deploy/``); they are not created from here.
        """
        external = environ(env).get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
        if external:
            return cls(bootstrap_servers=external)
        cluster = MockKafkaCluster().start(brokers)
        try:
            if create_topics:
                cluster.create_topics()
        except BaseException:
            cluster.close()
            raise
        return cls(bootstrap_servers=cluster.bootstrap_servers, cluster=cluster)

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
