"""The local Apache Kafka broker: fetched from Maven Central with Maven, run in KRaft mode.

``start`` is idempotent: it fetches the jars on first use (into ``settings.cache``, outside any
repository), formats a single-node broker+controller log dir under ``settings.home``, starts the
JVM bound to 127.0.0.1 on a free port, waits until it answers Kafka requests, and records the
bootstrap address in ``settings.home/broker/broker.json`` so every other command finds it.
``stop`` terminates the JVM cleanly (SIGTERM, then SIGKILL after a grace period): no orphan JVM.

The address is stable: a restart listens on the recorded ports again, so running processors and
SDK clients reconnect to where they were. Only when another process holds a recorded port for
longer than :data:`PORT_WAIT` does the broker move (and says so); ``ledger up`` then restarts the
processors, which find the new address in the state file.

**Security** (unless started ``insecure``): the client listener speaks SASL_PLAINTEXT with
SCRAM-SHA-512 only, the controller listener (loopback, used by the node itself) SASL PLAIN with
the broker's own static credential (KRaft cannot use SCRAM there: SCRAM credentials live in the
metadata the controller serves). Kafka's ``StandardAuthorizer`` refuses whatever no ACL allows;
the super users are the broker itself and ``admin``. The users' SCRAM credentials
(:mod:`ledger.local.credentials`) are added when the log directory is formatted (the passwords
reach the formatting JVM through a 0600 argument file, never a command line); a home formatted
before authentication existed gets them once through the admin API, on a short start without
authentication on a fresh loopback port. Everything under ``$LEDGER_HOME`` is created 0700/0600.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from ledger.discovery import (
    accepts,
    broker_record_file,
    credentials_file,
    read_broker_record,
    read_credentials,
    recorded_int,
)
from ledger.errors import BrokerError, LedgerError, PrerequisiteMissing, UsageError
from ledger.files import own_dir, private_dir, private_log, private_umask, write_private
from ledger.local import credentials
from ledger.local.processes import alive, exit_status, find, spawn_detached, terminate
from ledger.pids import process_state, stopped_by_signal
from ledger.settings import KafkaSecurity, Settings

__all__ = [
    "KAFKA_VERSION",
    "PORT_WAIT",
    "BrokerStatus",
    "fetch",
    "start",
    "stop",
    "status",
    "data_dir",
]

KAFKA_VERSION = "4.4.0"
"""Pinned Apache Kafka release (Scala 2.13 build); needs Java 17+."""
LOG4J_VERSION = "2.25.3"
# Kafka 4.x still depends on slf4j-api 1.7, which cannot see the log4j2 slf4j2 provider:
# without a 2.x API on the classpath the broker logs nothing, even when it fails.
SLF4J_VERSION = "2.0.17"

Progress = Callable[[str], None]

PORT_WAIT = 5.0
"""Seconds ``start`` waits for a recorded port that some process holds before moving."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerStatus:
    running: bool
    bootstrap: str | None
    pid: int | None
    kafka_version: str
    log_dir: str
    log_file: str
    secured: bool = True

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _quiet(_: str) -> None:
    pass


# --------------------------------------------------------------------------- paths


def _broker_dir(settings: Settings) -> Path:
    return settings.home / "broker"


def data_dir(settings: Settings) -> Path:
    """Where the local broker keeps its data (its ``log.dirs``)."""
    return _broker_dir(settings) / "data"


HOME_FOLDERS: tuple[str, ...] = (
    "broker",
    "broker/data",
    "credentials",
    "keys",
    "run",
    "logs",
    "faust",
    "export",
)
"""The folders of ``$LEDGER_HOME`` the local stack writes in (made as needed)."""


def private_home(settings: Settings) -> None:
    """Make ``$LEDGER_HOME`` (0700) if missing and check it, each of its :data:`HOME_FOLDERS`
    there is and each processor's folder in ``faust/`` (:func:`ledger.files.own_dir`): one
    another user owns or could swap, or a symbolic link, is refused before anything is written
    or started with this home."""
    private_dir(settings.home)
    for name in HOME_FOLDERS:
        if os.path.lexists(settings.home / name):
            own_dir(settings.home / name)
    if os.path.isdir(settings.home / "faust"):  # each processor's folder: snapshots, markers
        for folder in sorted((settings.home / "faust").iterdir()):
            if folder.is_symlink() or folder.is_dir():  # a stray file (.DS_Store) is no folder
                own_dir(folder)


def _state_file(settings: Settings) -> Path:
    return broker_record_file(settings)


def _lib_dir(settings: Settings) -> Path:
    return settings.cache / f"kafka_2.13-{KAFKA_VERSION}" / "lib"


# --------------------------------------------------------------------------- prerequisites


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise PrerequisiteMissing(f"`{tool}` not found on PATH: {hint}")
    return path


def _java() -> str:
    java = _require(
        "java", "install Java 17 or newer (e.g. `apt-get install openjdk-17-jre-headless`)"
    )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match:
        major = int(match.group(1))
        if major == 1 and match.group(2):
            major = int(match.group(2))
        if major < 17:
            raise PrerequisiteMissing(
                f"Kafka {KAFKA_VERSION} needs Java 17 or newer, found Java {major}: "
                "install a newer JDK and put it first on PATH"
            )
    return java


_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.decision-ledger</groupId>
  <artifactId>local-kafka-broker</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <description>Generated by `ledger broker`: the jars of an Apache Kafka broker.</description>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId>
      <version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId>
      <version>{slf4j}</version></dependency>
  </dependencies>
</project>
"""


def fetch(settings: Settings, *, progress: Progress = _quiet) -> Path:
    """Fetch the broker's jars into the cache (once) and return the lib directory.

    The cache and its Kafka folder are checked as the home is (:func:`private_dir`: this
    user's own, 0700, in folders no one else may swap) at every start, not only the first: the
    JVM runs what its jars hold (a review: root's broker started with ``$XDG_CACHE_HOME`` in a
    user's ``~/.cache`` would have run that user's jars)."""
    lib = _lib_dir(settings)
    work = lib.parent
    private_dir(settings.cache)
    private_dir(work)
    marker = lib / ".complete"
    if marker.exists():
        return lib
    mvn = _require("mvn", "install Apache Maven (e.g. `apt-get install maven`)")
    _java()
    pom = work / "pom.xml"
    write_private(pom, _POM.format(kafka=KAFKA_VERSION, log4j=LOG4J_VERSION, slf4j=SLF4J_VERSION))
    staging = work / "lib.partial"
    shutil.rmtree(staging, ignore_errors=True)
    progress(f"fetching Apache Kafka {KAFKA_VERSION} from Maven Central (first time only)…")
    cmd = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = [ln for ln in (result.stdout + result.stderr).splitlines() if "ERROR" in ln]
        detail = lines[0].strip() if lines else (result.stderr or result.stdout).strip()[-300:]
        raise BrokerError(
            f"could not fetch Kafka {KAFKA_VERSION} with Maven: {detail} "
            "(check access to Maven Central, then retry `ledger broker start`)"
        )
    if not any(staging.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
        raise BrokerError(
            f"Maven finished but kafka_2.13-{KAFKA_VERSION}.jar is missing in {staging}"
        )
    shutil.rmtree(lib, ignore_errors=True)
    staging.rename(lib)
    write_private(marker, KAFKA_VERSION + "\n")
    return lib


# --------------------------------------------------------------------------- configuration

_LOG4J2 = """Configuration:
  status: warn
  Appenders:
    File:
      name: file
      fileName: "{log}"
      append: true
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: file
    Logger:
      - name: kafka
        level: INFO
      - name: org.apache.kafka
        level: WARN
      - name: state.change.logger
        level: WARN
"""


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64, as Kafka's own tool makes them.

    Passed as ``--cluster-id=ID``: an id starting with ``-`` would otherwise be read as an option.
    """
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    """Could the broker listen on 127.0.0.1:``port`` now? Probed the way Kafka binds: with
    ``SO_REUSEADDR`` (Java sets it on server sockets on Unix), so connections of the last run
    still in TIME_WAIT after a stop do not count as taken; only a socket bound by a process does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_holders(port: int) -> set[int]:
    """The user ids of the processes with a socket on local ``port`` (listening, or a client's
    connection given it as its own port: a review found this user's own client there refused),
    from ``/proc/net/tcp`` and ``tcp6``; TIME_WAIT, which belongs to no process, left out.
    Empty when there is none or that cannot be read (not Linux)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as file:
                lines = file.read().splitlines()[1:]
        except OSError:
            continue
        for fields in map(str.split, lines):
            # local address HEXADDR:HEXPORT, state (06: TIME_WAIT), uid
            if len(fields) > 7 and fields[3] != "06" and fields[1].endswith(f":{port:04X}"):
                found.add(int(fields[7]))
    return found


def _refuse_held_by_another(port: int) -> None:
    """Refuse to move the broker off ``port`` unless a process of this user is what holds it:
    every running agent and processor reconnects to the port it knows, so another user's
    process there would take their connections and could relay them to the moved broker,
    reading and altering what passes after the login (a red team turned a deny into the allow
    an agent acted on). Moved only when every socket found there is this user's: a socket bound
    but not listening is in no table (a review bound one, let the broker move, then listened),
    and another user's found is named."""
    holders = port_holders(port)
    if holders and holders <= {os.getuid()}:
        return
    others = sorted(holders - {os.getuid()})
    who = (
        f"held by another user's process (uid {', '.join(map(str, others))}"
        if others
        else "held by a process that cannot be seen listening (bound by another user, "
        "perhaps, to listen once the broker has moved"
    )
    raise BrokerError(
        f"port {port}, where this home's broker listened and where running agents and "
        f"processors will reconnect, is {who}; `ss -tanp 'sport = :{port}'` names it): it would "
        "receive their connections and could relay and alter what they exchange; stop it (as "
        "its owner or root) and run again; to move the broker anyway, stop every agent first, "
        "then `ledger broker start --move-port` and `ledger up`"
    )


def _claim_port(
    recorded: int, *, what: str, wait: float, progress: Progress, taken: int = 0
) -> int:
    """``recorded`` once it is free (waiting up to ``wait`` s for a process to release it), else,
    or with nothing recorded, a fresh free port other than ``taken``."""
    if recorded and recorded != taken:
        deadline = time.monotonic() + wait
        if not _port_free(recorded):
            progress(f"the {what} port {recorded} is in use; waiting up to {wait:g} s for it…")
            while not _port_free(recorded) and time.monotonic() < deadline:
                time.sleep(0.2)
        if _port_free(recorded):
            return recorded
    port = _free_port()
    while port == taken:
        port = _free_port()
    return port


def _jaas(module: str, user: str, password: str, **extra: str) -> str:
    options = " ".join(
        f'{k}="{v}"' for k, v in {"username": user, "password": password, **extra}.items()
    )
    return f"org.apache.kafka.common.security.{module} required {options};"


def _listeners(port: int, controller_port: int, broker: KafkaSecurity | None) -> dict[str, str]:
    """Listener settings: plain (``broker`` None, ``--insecure``) or SASL with the authorizer."""
    if broker is None:
        return {
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        }
    user, password = str(broker.username), str(broker.password)
    return {
        "listeners": (
            f"SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"
        ),
        "advertised.listeners": f"SASL_PLAINTEXT://127.0.0.1:{port}",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": credentials.MECHANISM,
        "sasl.mechanism.inter.broker.protocol": credentials.MECHANISM,
        "listener.name.sasl_plaintext.sasl.enabled.mechanisms": credentials.MECHANISM,
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": _jaas(
            "scram.ScramLoginModule", user, password
        ),
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": _jaas(
            "plain.PlainLoginModule", user, password, **{f"user_{user}": password}
        ),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{user};User:admin",
    }


def _server_properties(
    log_dir: Path, port: int, controller_port: int, broker: KafkaSecurity | None = None
) -> str:
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "controller.listener.names": "CONTROLLER",
        **_listeners(port, controller_port, broker),
        "log.dirs": str(log_dir),
        "num.partitions": "1",
        # Topics are created by `ledger topics create` with explicit partitions and configs.
        "auto.create.topics.enable": "false",
        # A single node: every internal topic must live with one replica.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        # Consumers in tests and processors join instantly instead of waiting 3 s.
        "group.initial.rebalance.delay.ms": "0",
        "log.retention.check.interval.ms": "300000",
        **_threads(os.cpu_count() or 1),
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


def _threads(cores: int) -> dict[str, str]:
    """Request threads sized to the machine instead of Kafka's defaults (3 network, 8 I/O).

    Every request passes from a network thread to an I/O thread and back; with more threads
    than cores, small requests (one per decision at a few hundred a second) pay for the hand-offs
    in wake-ups and context switches. On the 2-core reference machine 1 + 2 threads cut the
    broker's CPU per round trip at 1,000 req/s from ~720 to ~600 µs (benchmarks.roundtrip,
    warm broker); a machine with more cores gets more of each, up to the defaults."""
    return {
        "num.network.threads": str(max(1, min(3, cores // 2))),
        "num.io.threads": str(max(2, min(8, cores))),
    }


# --------------------------------------------------------------------------- process control


def _kafka_ready(bootstrap: str, security: KafkaSecurity | None = None) -> bool:
    """True once the broker answers a metadata request (not merely accepts TCP), as the admin.

    A broker that refuses the admin's credential is a :class:`BrokerError` at once: waiting
    would not change its mind."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError, SaslAuthenticationFailedError

    from ledger.kafka.clients import close_abandoned, kafka_python_config, refusals_logged

    auth = kafka_python_config(security)
    try:
        with refusals_logged() as refusals:
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap,
                request_timeout_ms=3000,
                bootstrap_timeout_ms=3000,
                **auth,
            )
    except SaslAuthenticationFailedError as exc:
        close_abandoned(exc)
        raise _refused(exc) from exc
    except (KafkaError, OSError, ValueError) as exc:
        close_abandoned(exc)  # (its sockets, left for a later collection to warn of)
        # A refused login is only "Unable to bootstrap" here; kafka-python's log says why (a
        # README check: a stale admin password made a healthy broker "hung", to be restarted).
        if isinstance(refusals.found, SaslAuthenticationFailedError):
            raise _refused(refusals.found) from refusals.found
        return False
    try:
        admin.describe_cluster()
        return True
    except SaslAuthenticationFailedError as exc:
        raise _refused(exc) from exc
    except (KafkaError, OSError, ValueError):
        return False
    finally:
        admin.close()


def _refused(exc: Exception) -> BrokerError:
    return BrokerError(
        f"the broker refused the admin credential ({exc}): its SCRAM users do not match "
        "$LEDGER_HOME/credentials; remove $LEDGER_HOME/broker/scram.json so the next start adds "
        "them again, or start from a fresh $LEDGER_HOME"
    )


def _log_tail(path: Path, lines: int = 3, *, since: int = 0) -> str:
    """The last error lines (else the last lines) ``path`` got after its first ``since`` bytes:
    this start's, never an earlier run's (both logs are appended to). At most its last MiB is
    read."""
    try:
        with path.open("rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(since, size - 1024 * 1024))
            text = log.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    errors = [ln for ln in text if " ERROR " in ln or "Exception" in ln or "Error:" in ln]
    picked = errors[-lines:] if errors else text[-lines:]
    return " | ".join(ln.strip() for ln in picked if ln.strip())


def _log_sizes(bdir: Path) -> dict[str, int]:
    """How much the broker's logs hold now, so a failed start quotes only what it wrote."""
    sizes = {}
    for name in ("broker.log", "broker.out"):
        try:
            sizes[name] = (bdir / name).stat().st_size
        except OSError:
            sizes[name] = 0
    return sizes


def status(settings: Settings) -> BrokerStatus:
    """The local broker's state, from its state file and a liveness check. A broker running on
    this home's data whose state file is missing, garbled or names another process is found
    and recorded again (:func:`_adopt`)."""
    state = read_broker_record(settings) or {}
    bdir = _broker_dir(settings)
    pid, port = recorded_int(state, "pid"), recorded_int(state, "port")
    running = bool(pid and port) and alive(pid, marker=_broker_marker(bdir / "server.properties"))
    if not running:
        adopted = _adopt(settings, bdir)
        if adopted is not None:
            pid, port, state = adopted
            running = True
    # A JVM stopped by a signal accepts no connection once its listen queue is full, yet runs
    # (an operator's drill: after 40 s of clients reconnecting, `ps` said "not running" and sent
    # the operator to `ledger up`, which refused): its process, not its port, says it runs.
    running = running and (accepts(port) or (pid is not None and stopped_by_signal(pid)))
    return BrokerStatus(
        running=running,
        bootstrap=f"127.0.0.1:{port}" if port else None,
        pid=pid if running else None,
        kafka_version=KAFKA_VERSION,
        log_dir=str(data_dir(settings)),
        log_file=str(bdir / "broker.log"),
        secured=state.get("security_protocol", "PLAINTEXT") != "PLAINTEXT",
    )


_CLEAN_END: Final = "shut down completely"
"""What the broker's log says last when it stopped cleanly (its request handlers' last line)."""


def not_running(status: BrokerStatus) -> str:
    """The local broker is not running: said with how its last run ended, when its log ends
    otherwise than a clean shutdown does (an operator's drill: a broker killed with SIGKILL
    read exactly as one stopped with `ledger broker stop`, as a processor's end no longer did)."""
    path = Path(status.log_file) if status.log_file else None
    if path is None:
        return "the broker is not running"
    try:
        with path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 8192))
            tail = log.read().decode(errors="replace")
    except OSError:
        return "the broker is not running"
    if not tail.strip() or any(_CLEAN_END in line for line in tail.strip().splitlines()[-20:]):
        return "the broker is not running"
    return (
        f"the broker is not running, and its log ({path}) does not end in a clean shutdown: it "
        "was killed (SIGKILL, the OOM killer) or it crashed; the end of its log says which"
    )


NOT_ANSWERING: Final = (
    "accepts connections but does not answer Kafka requests (still starting, hung, or stopped "
    "with SIGSTOP): wait a few seconds; if it persists, `ledger broker stop && ledger up` "
    "restarts it"
)
"""What to do about a broker whose port is open and whose Kafka does not answer."""


def not_answering(pid: int | None) -> str:
    """What is wrong with the running broker ``pid`` that does not answer, and what to do: a
    process stopped by a signal is said to be (waiting would do nothing: an operator's drill)."""
    if pid is not None and process_state(pid) == "t":  # a review: kill -CONT does not resume it
        return (
            f"the broker (pid {pid}) is stopped under a debugger (traced: gdb, strace) and "
            "answers nothing: detach the debugger, or `ledger broker stop && ledger up` restarts it"
        )
    if pid is not None and stopped_by_signal(pid):
        return (
            f"the broker (pid {pid}) is stopped by a signal (SIGSTOP, or Ctrl-Z in its "
            f"terminal) and answers nothing: `kill -CONT {pid}` resumes it, or `ledger broker "
            "stop && ledger up` restarts it"
        )
    return f"the broker (pid {pid}) {NOT_ANSWERING}"


def answering(settings: Settings, current: BrokerStatus) -> tuple[bool, str | None]:
    """Whether the running broker ``current`` answers a Kafka request (within a few seconds),
    not merely accepts connections, asked as the admin, whose credential ``ledger up`` wrote;
    and, when it answered by refusing that credential, the refusal: it answers all the same,
    and is not to be restarted (a README check: a stale admin password in $LEDGER_CREDENTIALS
    made a healthy broker "hung", and its restart gave it that folder's passwords)."""
    if not current.running or current.bootstrap is None:
        return False, None
    admin = read_credentials(settings, "admin") if current.secured else None
    if current.secured and admin is None:
        return True, None  # its credential being rotated (the file removed): the open port
    try:
        if _kafka_ready(current.bootstrap, admin):
            return True, None
    except BrokerError as refused:
        return True, str(refused.__cause__ or refused)
    # Silent to kafka-python, a refused login may still be heard by librdkafka (the broker can
    # close the connection before kafka-python reads why): it answered too.
    from ledger.kafka.clients import login_refused

    heard = login_refused(current.bootstrap, admin, timeout=2.0)
    return (True, str(heard)) if heard is not None else (False, None)


def admin_refused(settings: Settings, current: BrokerStatus, refusal: str) -> str:
    """What to do about a running broker that refuses the admin credential ``ledger up`` reads."""
    where = credentials_file(settings, "admin")
    if settings.credentials_dir is not None and settings.credentials != _own_credentials(settings):
        fix = (
            "if that file is a stale copy, point $LEDGER_CREDENTIALS at the credentials the "
            "broker was given (or unset it for $LEDGER_HOME/credentials)"
        )
    else:  # the review: "unset $LEDGER_CREDENTIALS" was said where it was not set
        fix = (
            "the broker was given other passwords (`ledger up` with another $LEDGER_CREDENTIALS?): "
            f"put those credential files in {settings.credentials}"
        )
    return (
        f"the broker (pid {current.pid}) answers, but refuses the admin credential in {where} "
        f"({refusal}): {fix}; do not restart the broker for it"
    )


def _own_credentials(settings: Settings) -> Path:
    return settings.home / "credentials"


def _refuse_partial_credentials(settings: Settings) -> None:
    """A running broker and a $LEDGER_CREDENTIALS other than the home's own that lacks some
    roles' files: :class:`BrokerError` before anything is written (the review: `up` wrote the
    missing files into it and gave the running broker's users their new passwords, so the
    home's own credentials, and every client holding them, were refused from then on).
    Rotating a password by removing its file is for the home's own folder."""
    if settings.credentials_dir is None or settings.credentials == _own_credentials(settings):
        return
    missing = [
        user
        for user in credentials.USERS
        if not os.path.lexists(settings.credentials / f"{user}.json")  # as credentials.ensure
    ]
    if missing:
        raise BrokerError(
            f"$LEDGER_CREDENTIALS ({settings.credentials}) lacks the credential of "
            f"{', '.join(missing)}: on the running broker `ledger up` would write new ones "
            "there and give those users new passwords; point it at the complete credentials the "
            "broker was given, or unset it to use $LEDGER_HOME/credentials"
        )


def _running_on(bdir: Path) -> int | None:
    """The pid of a broker JVM started with this home's ``server.properties``, whatever the
    state file says (``None`` where ``/proc`` cannot tell, or none runs)."""
    return find(argv=_broker_marker(bdir / "server.properties"))


def _broker_marker(config: Path) -> tuple[str, str]:
    """What only this home's broker carries: its main class and its config, both as whole
    arguments (a review: a stale pid naming a ``tail -f`` of the config was taken for the
    broker, and `broker stop` killed it)."""
    return ("kafka.Kafka", str(config))


def _adopt(settings: Settings, bdir: Path) -> tuple[int, int, dict[str, object]] | None:
    """Record again a broker that runs on this home's data while the state file does not say
    so (it was removed, garbled, or overwritten by a start that failed): its ports and security
    are in the ``server.properties`` it was started with. Its pid, port and new record, or
    ``None`` when none runs."""
    pid = _running_on(bdir)
    if pid is None:
        return None
    try:
        props = dict(
            line.split("=", 1)
            for line in (bdir / "server.properties").read_text().splitlines()
            if "=" in line
        )
        ports = dict(
            (name, int(address.rpartition(":")[2]))
            for name, _, address in (
                listener.partition("://") for listener in props["listeners"].split(",")
            )
        )
    except (OSError, KeyError, ValueError):
        return None
    protocol = "PLAINTEXT" if "PLAINTEXT" in ports else "SASL_PLAINTEXT"
    port = ports.get(protocol, 0)
    if not port:
        return None
    record: dict[str, object] = {
        "pid": pid,
        "port": port,
        "controller_port": ports.get("CONTROLLER", 0),
        "kafka_version": KAFKA_VERSION,
        "started_at": time.time(),
        "security_protocol": protocol,
    }
    write_private(_state_file(settings), json.dumps(record))
    return pid, port, record


def _data_in_use(data: Path) -> bool:
    """Does a process hold the lock Kafka takes on its log directory (``data/.lock``)? A second
    broker on the same directory must never start: its controller reads and truncates the
    metadata log before its broker side finds the lock taken, which has crashed the live one."""
    import fcntl

    try:
        fd = os.open(data / ".lock", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False  # no lock file: never started, or not a Kafka directory
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the JVM's FileChannel lock is this one
    except OSError:
        return True
    finally:
        os.close(fd)  # and releases the probe's lock, if it got it
    return False


def start(
    settings: Settings,
    *,
    progress: Progress = _quiet,
    timeout: float = 90.0,
    port_wait: float | None = None,
    insecure: bool = False,
    move_port: bool = False,
) -> BrokerStatus:
    """Start the local broker (fetching and formatting on first use). Idempotent.

    Listens on the ports of the last run (see the module docstring); ``port_wait`` is how long
    to wait for a process holding one to let it go before moving to a new port (default
    :data:`PORT_WAIT`), which it does only when that process is this user's, or with
    ``move_port`` (:func:`_refuse_held_by_another`). ``insecure`` starts it without
    authentication or ACLs (debugging only). A running broker of the other kind is a
    :class:`BrokerError`: stop it first.
    """
    private_umask()
    private_home(settings)
    current = status(settings)
    if current.running:
        if current.secured == (not insecure):
            answered, refusal = answering(settings, current)
            if not answered:
                raise BrokerError(not_answering(current.pid))
            if refusal is not None:  # before a credential is written, or given to the broker
                raise BrokerError(admin_refused(settings, current, refusal))
            _refuse_partial_credentials(settings)
            progress(f"broker already running on {current.bootstrap} (pid {current.pid})")
            if current.secured and current.bootstrap is not None:
                # A credential file removed meanwhile (to rotate a password, or lost) is
                # written again and its user given the new password, as at a start.
                _register_missing(
                    settings, current.bootstrap, credentials.ensure(settings), progress
                )
            return current
        now, wanted = ("with", "without") if current.secured else ("without", "with")
        raise BrokerError(
            f"the broker runs {now} authentication (pid {current.pid}); to run it {wanted}, "
            "stop it first (`ledger down`), then start it again"
            + (" with --insecure" if insecure else "")
        )
    java = _java()
    lib = fetch(settings, progress=progress)
    bdir = private_dir(_broker_dir(settings))
    data = data_dir(settings)
    starting = _running_on(bdir)
    if starting is not None and stopped_by_signal(starting):
        raise BrokerError(not_answering(starting))
    if starting is not None:  # alive, not (yet, or any more) answering: never a second one
        raise BrokerError(
            f"a broker of this home (pid {starting}) is starting or stopping and does not answer "
            "yet: wait a few seconds and run again (`ledger broker status`)"
        )
    if _data_in_use(data):
        raise BrokerError(
            f"another process holds the broker's data directory {data} (its .lock), but no "
            "broker started from this home runs: stop that process first (`fuser -v "
            f"{data / '.lock'}` names it); a second broker on the same data would damage it"
        )

    previous = read_broker_record(settings) or {}
    old_port = recorded_int(previous, "port")
    port_wait = PORT_WAIT if port_wait is None else port_wait
    port = _claim_port(old_port, what="broker", wait=port_wait, progress=progress)
    controller_port = _claim_port(
        recorded_int(previous, "controller_port"),
        what="controller",
        wait=port_wait,
        progress=progress,
        taken=port,
    )
    if old_port and port != old_port:
        if not move_port:
            _refuse_held_by_another(old_port)
        progress(
            f"port {old_port} is held by another process: the broker moves to 127.0.0.1:{port}; "
            "`ledger up` restarts the processors, restart SDK clients so they find it"
        )

    users = None if insecure else credentials.ensure(settings)
    broker = None if users is None else users[credentials.BROKER_USER]
    admin = None if users is None else users["admin"]
    jvm = _jvm(java, lib, bdir)
    if not (data / "meta.properties").exists():
        _format(settings, jvm, data, port, controller_port, users, progress)
    elif users is not None and "admin" not in credentials.registered(settings, users):
        _add_credentials_without_authentication(
            settings, jvm, data, controller_port, users, timeout=timeout, progress=progress
        )

    config = bdir / "server.properties"
    write_private(config, _server_properties(data, port, controller_port, broker))
    if insecure:
        progress(
            "WARNING: starting the broker WITHOUT authentication or ACLs (--insecure): anyone "
            "who reaches 127.0.0.1 may read, write and delete every topic. For debugging only."
        )
    progress(f"starting Apache Kafka {KAFKA_VERSION} on 127.0.0.1:{port}…")
    before = _log_sizes(bdir)
    pid = _launch(jvm, config, bdir)
    # Recorded at once, so that `down` finds a JVM whose start was interrupted (no broker can
    # be running on this data now: checked above).
    write_private(
        _state_file(settings),
        json.dumps(
            {
                "pid": pid,
                "port": port,
                "controller_port": controller_port,
                "kafka_version": KAFKA_VERSION,
                "started_at": time.time(),
                "security_protocol": "PLAINTEXT" if insecure else "SASL_PLAINTEXT",
            }
        ),
    )
    bootstrap = f"127.0.0.1:{port}"
    _wait_ready(pid, bootstrap, admin, bdir, timeout=timeout, before=before)
    if users is not None:
        _register_missing(settings, bootstrap, users, progress)
    return status(settings)


def _register_missing(
    settings: Settings, bootstrap: str, users: dict[str, KafkaSecurity], progress: Progress
) -> None:
    """Give the broker the SCRAM credentials of ``users`` it does not know with their current
    password (new users, or a credential file written anew)."""
    missing = {u: users[u] for u in set(users) - credentials.registered(settings, users)}
    if not missing:
        return
    renewed = sorted(credentials.changed(settings, missing))
    progress(f"adding SCRAM credentials for {', '.join(sorted(missing))}…")
    # The admin's own credential may be the one written anew: the broker's user, a super
    # user too, then gives it its password.
    by = users[credentials.BROKER_USER] if "admin" in missing else users["admin"]
    try:
        credentials.register(bootstrap, missing, security=by)
    except LedgerError as exc:
        raise BrokerError(f"adding credentials to the broker failed: {exc}") from exc
    credentials.remember_registered(settings, missing)
    for user in renewed:  # an operator's walkthrough: agents failed minutes later, unexplained
        # (a README check: "restart them now" was said of the processors, which `up` restarts)
        ours = " (`ledger up` restarts this home's processors that use it)"
        progress(
            f"the {user} credential has a new password: clients still connected with the old "
            "one keep working until they reconnect (at the next broker restart, say), then fail "
            f"to authenticate; restart them now with {settings.credentials / (user + '.json')}"
            + (ours if user in ("evaluator", "command-processor") else "")
        )


def _jvm(java: str, lib: Path, bdir: Path) -> list[str]:
    # The JVM opens its log as it finds it: made here, the user's own file, never a link.
    log_file = private_log(bdir / "broker.log")
    log_config = bdir / "log4j2.yaml"
    write_private(log_config, _LOG4J2.format(log=log_file))
    return [
        java,
        "-Xms256m",
        "-Xmx1g",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log_config}",
        "-cp",
        f"{lib}/*",
    ]


def _launch(jvm: list[str], config: Path, bdir: Path) -> int:
    return spawn_detached(
        [*jvm, "kafka.Kafka", str(config)], env=os.environ, log=bdir / "broker.out"
    )


def _wait_ready(
    pid: int,
    bootstrap: str,
    admin: KafkaSecurity | None,
    bdir: Path,
    *,
    timeout: float,
    before: dict[str, int] | None = None,
) -> None:
    log_file = bdir / "broker.log"
    deadline = time.monotonic() + timeout
    port = int(bootstrap.rpartition(":")[2])
    while time.monotonic() < deadline:
        exited, code = exit_status(pid)
        if exited and code in (143, -15):  # the JVM's exit on SIGTERM, or the signal itself
            raise BrokerError(
                "the broker was stopped during start-up (SIGTERM: `ledger down` or `ledger "
                f"broker stop` while it started, or someone else); run `ledger up` again (log: "
                f"{log_file})"
            )
        if exited:
            since = before or {}
            out = bdir / "broker.out"  # the JVM's own output: a bad option, a full disk
            said = _log_tail(log_file, since=since.get("broker.log", 0)) or _log_tail(
                out, since=since.get("broker.out", 0)
            )
            raise BrokerError(
                f"the broker exited with code {code} during start-up: "
                f"{said or 'it wrote nothing'} (logs: {log_file}, {out})"
            )
        if accepts(port) and _kafka_ready(bootstrap, admin):
            return
        time.sleep(0.2)
    with contextlib.suppress(LedgerError):  # stuck: the error that matters is this one
        terminate(pid, grace=5)
    raise BrokerError(
        f"the broker did not accept connections within {timeout:.0f} s (log: {log_file})"
    )


def _format(
    settings: Settings,
    jvm: list[str],
    data: Path,
    port: int,
    controller_port: int,
    users: dict[str, KafkaSecurity] | None,
    progress: Progress,
) -> None:
    """Format a fresh KRaft log directory, with the users' SCRAM credentials when secured.

    The arguments go through a 0600 argument file (``java @file``): passwords never appear on
    a command line, which every local user can read."""
    progress("formatting the KRaft log directory…")
    bdir = data.parent
    config = bdir / "server.properties"
    broker = None if users is None else users[credentials.BROKER_USER]
    write_private(config, _server_properties(data, port, controller_port, broker))
    args = ["kafka.tools.StorageTool", "format", "--standalone", f"--cluster-id={_cluster_id()}"]
    args += ["-c", str(config)]
    for user, sec in (users or {}).items():
        args += ["--add-scram", f"{credentials.MECHANISM}=[name={user},password={sec.password}]"]
    argfile = bdir / "format.args"
    write_private(argfile, "\n".join(f'"{a}"' for a in args) + "\n")
    try:
        fmt = subprocess.run([*jvm, f"@{argfile}"], capture_output=True, text=True, check=False)
    finally:
        argfile.unlink(missing_ok=True)
    if fmt.returncode != 0:
        detail = (fmt.stderr or fmt.stdout).strip().splitlines()
        raise BrokerError(
            f"formatting the broker log dir failed: {detail[-1] if detail else fmt.returncode} "
            f"(remove {data} and retry)"
        )
    if users is not None:
        credentials.remember_registered(settings, users)


def _add_credentials_without_authentication(
    settings: Settings,
    jvm: list[str],
    data: Path,
    controller_port: int,
    users: dict[str, KafkaSecurity],
    *,
    timeout: float,
    progress: Progress,
) -> None:
    """Give a home formatted without authentication (before it existed, or ``--insecure``) its
    SCRAM users: start it once as it was, on a fresh loopback port, add them, stop it."""
    progress(
        "this broker was formatted without authentication: adding its SCRAM credentials "
        "(once, on a private port)…"
    )
    bdir = data.parent
    port = _free_port()
    while port == controller_port:
        port = _free_port()
    config = bdir / "server.properties"
    write_private(config, _server_properties(data, port, controller_port, None))
    before = _log_sizes(bdir)
    pid = _launch(jvm, config, bdir)
    try:
        _wait_ready(pid, f"127.0.0.1:{port}", None, bdir, timeout=timeout, before=before)
        try:
            credentials.register(f"127.0.0.1:{port}", users, security=None)
        except LedgerError as exc:
            raise BrokerError(
                f"adding credentials to this home's broker failed: {exc}; start from a fresh "
                "$LEDGER_HOME, or run it with --insecure"
            ) from exc
    finally:
        # A broker stuck after SIGKILL must not hide why this failed, if it did.
        with contextlib.suppress(LedgerError):
            terminate(pid, grace=30, marker=_broker_marker(config))
    credentials.remember_registered(settings, users)


def stop(settings: Settings, *, grace: float = 30.0) -> bool:
    """Stop the local broker cleanly. Returns False when it was not running. A broker running
    on this home's data that the state file does not name (see :func:`status`) is stopped too."""
    state = read_broker_record(settings)
    config = _broker_dir(settings) / "server.properties"
    pid = recorded_int(state or {}, "pid")
    if not pid or not alive(pid, marker=_broker_marker(config)):
        adopted = _adopt(settings, _broker_dir(settings))
        if adopted is None:
            return False
        pid, _, state = adopted
    was_running = terminate(pid, grace=grace, marker=_broker_marker(config))
    # Keep the port in the state file so a restart reuses the same bootstrap address. In a home
    # now refused (unsafe_folder), a stop still stops: the record is left as it was (a review).
    with contextlib.suppress(UsageError):
        write_private(_state_file(settings), json.dumps({**(state or {}), "pid": 0}))
    return was_running
