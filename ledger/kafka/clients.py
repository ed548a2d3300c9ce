"""Kafka clients: the one place every kafka-python client of the ledger is configured and made.

Client settings are tuned for the synchronous decision path (DESIGN §11): producers send at
once (``linger_ms=0``) with ``acks=all`` and idempotence; consumers answer a fetch as soon as one
byte is there (``fetch_min_bytes=1``) and never park idle for long (small ``fetch_max_wait_ms``).

The latency-critical request/reply path (the evaluator's requests and answers, the SDK's Kafka
transport) uses librdkafka through ``confluent-kafka`` instead: measured on the same broker in the
same run, its request/reply echo is several times faster than kafka-python's (see the README's
status table and ``benchmarks.roundtrip``). Every librdkafka client's configuration is built by
:func:`rdkafka_config`, the one place where settings common to all of them (and the security
settings, when the ledger has them) are added.

Every client is made by a factory here that first checks the bootstrap string and that some
server on it accepts a TCP connection, so a typo or a stopped broker is one
:class:`~ledger.errors.UsageError` / :class:`~ledger.errors.KafkaUnavailable` line within
seconds, not a ``ValueError`` or kafka-python's 30 s bootstrap timeout.

**Security.** Every client takes a :class:`~ledger.settings.KafkaSecurity` (``security=``;
``None`` is a plain, unauthenticated connection). It is mapped here, in one place, to each
library's settings: :func:`kafka_python_config` (kafka-python, the clients made here),
:func:`aiokafka_config` (aiokafka), :func:`librdkafka_config` (confluent-kafka)
and, in :mod:`processors.common`, Faust's ``broker_credentials``. A broker that refuses the
credentials is :class:`~ledger.errors.KafkaAccessDenied`, one line naming the user.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
from typing import Any, Final

from ledger.errors import KafkaAccessDenied, KafkaUnavailable
from ledger.kafka.logs import RDKAFKA_LOGGER, RepeatFilter
from ledger.settings import KafkaSecurity, parse_bootstrap

__all__ = [
    "kafka_python_config",
    "close_failed_connections",
    "close_abandoned",
    "aiokafka_config",
    "librdkafka_config",
    "access_denied",
    "kafka_failure",
    "PRODUCER_CONFIG",
    "CONSUMER_CONFIG",
    "ADMIN_CONFIG",
    "CONNECT_TIMEOUT",
    "METADATA_TIMEOUT",
    "check_reachable",
    "make_producer",
    "make_consumer",
    "make_admin",
    "RDKAFKA_PRODUCER_CONFIG",
    "RDKAFKA_CONSUMER_CONFIG",
    "RDKAFKA_LOGGER",
    "rdkafka_config",
    "make_rdkafka_producer",
    "make_rdkafka_consumer",
    "login_refused",
    "refusals_logged",
]

CONNECT_TIMEOUT = 2.0
"""Seconds a bootstrap server has to accept a TCP connection before it counts as unreachable."""
METADATA_TIMEOUT = 5.0
"""Seconds a client may take to get metadata from a server that did accept the connection,
whichever the library (kafka-python's default, 30 s, is how long an unreachable ledger took to
report; a server that answers, but not in Kafka, is reported after this)."""
_BOOTSTRAP_TIMEOUT_MS = int(METADATA_TIMEOUT * 1000)

PRODUCER_CONFIG: dict[str, Any] = {
    "bootstrap_timeout_ms": _BOOTSTRAP_TIMEOUT_MS,
    "acks": "all",
    "enable_idempotence": True,
    "linger_ms": 0,
    "retries": 5,
    "max_in_flight_requests_per_connection": 5,
}
CONSUMER_CONFIG: dict[str, Any] = {
    "bootstrap_timeout_ms": _BOOTSTRAP_TIMEOUT_MS,
    "enable_auto_commit": False,
    "fetch_min_bytes": 1,
    "fetch_max_wait_ms": 20,
    "auto_offset_reset": "earliest",
}
ADMIN_CONFIG: dict[str, Any] = {
    "bootstrap_timeout_ms": _BOOTSTRAP_TIMEOUT_MS,
    "request_timeout_ms": 15000,
}


class _ScramIsNotCleartext(logging.Filter):
    """kafka-python warns "Exchanging credentials in the clear" on every SCRAM connection over
    SASL_PLAINTEXT. SCRAM never sends the password (only salted proofs), and the line would
    break every command's one-line error contract on stderr; the README says what
    SASL_PLAINTEXT does not protect (the traffic itself)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "credentials in the clear" not in str(record.msg)


_SCRAM_FILTER = _ScramIsNotCleartext()


def _quiet_scram(security: KafkaSecurity) -> None:
    if security.sasl and str(security.sasl_mechanism).startswith("SCRAM"):
        logger = logging.getLogger("kafka.net.sasl.scram")
        if _SCRAM_FILTER not in logger.filters:
            logger.addFilter(_SCRAM_FILTER)


@functools.cache
def close_failed_connections() -> None:
    """Make kafka-python close the socket of a connection attempt that fails.

    kafka-python 3.0.12 (the latest) leaves that socket open (a refused port: a broker starting,
    restarting or stopped), for a later garbage collection to find; its ``ResourceWarning``
    then fell on whatever ran at that moment (an unrelated test of a CI run failed on one). Its
    ``KafkaNetSocket.sock_connect`` is wrapped, once per process, to close the socket when the
    attempt fails; a kafka-python without that method is left as it is."""
    try:
        from kafka.net.inet import KafkaNetSocket
    except ImportError:
        return
    original = getattr(KafkaNetSocket, "sock_connect", None)
    if original is None:
        return

    async def sock_connect(
        self: Any, net: Any, sock: socket.socket, sockaddr: Any, timeout_at: Any = None
    ) -> Any:
        try:
            return await original(self, net, sock, sockaddr, timeout_at=timeout_at)
        except BaseException:
            sock.close()
            raise

    KafkaNetSocket.sock_connect = sock_connect


def kafka_python_config(security: KafkaSecurity | None) -> dict[str, Any]:
    """kafka-python keyword arguments for ``security`` (empty for a plain connection); every
    kafka-python client is configured here, so this also makes failed connections close their
    sockets (:func:`close_failed_connections`)."""
    close_failed_connections()
    if security is None or not security.enabled:
        return {}
    _quiet_scram(security)
    config: dict[str, Any] = {"security_protocol": security.protocol}
    if security.sasl:
        config.update(
            sasl_mechanism=security.sasl_mechanism,
            sasl_plain_username=security.username,
            sasl_plain_password=security.password,
        )
    if security.tls:
        for key, path in (
            ("ssl_cafile", security.ssl_cafile),
            ("ssl_certfile", security.ssl_certfile),
            ("ssl_keyfile", security.ssl_keyfile),
        ):
            if path is not None:
                config[key] = str(path)
    return config


def aiokafka_config(security: KafkaSecurity | None) -> dict[str, Any]:
    """aiokafka keyword arguments for ``security`` (TLS files become an ``ssl_context``)."""
    if security is None or not security.enabled:
        return {}
    config: dict[str, Any] = {"security_protocol": security.protocol}
    if security.sasl:
        config.update(
            sasl_mechanism=security.sasl_mechanism,
            sasl_plain_username=security.username,
            sasl_plain_password=security.password,
        )
    if security.tls:
        config["ssl_context"] = ssl_context(security)
    return config


def ssl_context(security: KafkaSecurity) -> Any:
    """An ``ssl.SSLContext`` trusting ``security``'s CA (else the system's) with its client
    certificate, if any: what aiokafka and Faust take instead of file names."""
    import ssl

    context = ssl.create_default_context(
        cafile=str(security.ssl_cafile) if security.ssl_cafile else None
    )
    if security.ssl_certfile is not None:
        context.load_cert_chain(
            str(security.ssl_certfile),
            str(security.ssl_keyfile) if security.ssl_keyfile else None,
        )
    return context


def librdkafka_config(security: KafkaSecurity | None) -> dict[str, str]:
    """librdkafka (confluent-kafka) configuration keys for ``security``."""
    if security is None or not security.enabled:
        return {}
    config = {"security.protocol": security.protocol.lower()}
    if security.sasl:
        config["sasl.mechanism"] = str(security.sasl_mechanism)
        config["sasl.username"] = str(security.username)
        config["sasl.password"] = str(security.password)
    if security.tls:
        for key, path in (
            ("ssl.ca.location", security.ssl_cafile),
            ("ssl.certificate.location", security.ssl_certfile),
            ("ssl.key.location", security.ssl_keyfile),
        ):
            if path is not None:
                config[key] = str(path)
    return config


def access_denied(
    exc: object, security: KafkaSecurity | None, bootstrap: str | None = None
) -> KafkaAccessDenied | None:
    """``exc`` as :class:`KafkaAccessDenied` if it is the broker (at ``bootstrap``, named when
    given) refusing who we are (bad credentials) or what we asked (an ACL), else ``None``.

    ``exc`` is kafka-python's exception, or librdkafka's error (a ``confluent_kafka.KafkaError``,
    a consumed message's or the one a ``KafkaException`` carries): one wording for both."""
    user = security.username if security is not None else None
    who = f"user {user!r}" if user else "an anonymous client"
    if type(exc).__module__.startswith("confluent_kafka"):
        return _rdkafka_denied(exc, user, who, bootstrap)
    from kafka.errors import AuthorizationError, SaslAuthenticationFailedError

    if isinstance(exc, SaslAuthenticationFailedError):
        return refused_login(user, exc, bootstrap)
    if isinstance(exc, AuthorizationError):
        return KafkaAccessDenied(f"Kafka's ACLs do not allow {who} this: {exc}")
    return None


def kafka_failure(
    exc: BaseException, security: KafkaSecurity | None, bootstrap: str, doing: str, hint: str = ""
) -> KafkaAccessDenied | KafkaUnavailable:
    """What to raise for a Kafka client's failure while ``doing`` something (``reading X at
    HOST``): the broker refusing who we are or what we asked, said so (:func:`access_denied`),
    else Kafka unavailable, with its reason and the caller's ``hint``. One place for the rule
    the readers, the ACL and credential setup each wrote again."""
    denied = access_denied(exc, security, bootstrap)
    if denied is not None:
        return denied
    reason = exc.args[0] if exc.args else exc
    return KafkaUnavailable(f"{doing} failed: {reason}{hint}")


def _rdkafka_denied(
    exc: object, user: str | None, who: str, bootstrap: str | None
) -> KafkaAccessDenied | None:
    from confluent_kafka import KafkaError, KafkaException

    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else exc
    if not isinstance(error, KafkaError):
        return None
    code = error.code()
    if code in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
        return refused_login(user, error.str(), bootstrap)
    if code in (
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    ):
        return KafkaAccessDenied(f"Kafka's ACLs do not allow {who} this: {error.str()}")
    return None


def error_words(error: object) -> object:
    """A librdkafka error's own words (its ``str()`` method), not its repr (an agent
    engineer's walkthrough: ``KafkaError{code=…,val=…,str="…"}`` made a 450-character line)."""
    said = getattr(error, "str", None)
    return said() if callable(said) else error


def refused_login(
    user: str | None, detail: object, bootstrap: str | None = None
) -> KafkaAccessDenied:
    """A refused SASL login, in one wording whichever client library met it (kafka-python or
    librdkafka: a README check found two): "Kafka at HOST:PORT refused to authenticate user
    'agent': DETAIL (check the credentials …)"; the address and user are named when known."""
    where = f" at {bootstrap}" if bootstrap else ""
    who = f"user {user!r}" if user else "this client"
    said = error_words(detail)
    role = user if user and user.replace("-", "_").isidentifier() else "ROLE"
    return KafkaAccessDenied(
        f"Kafka{where} refused to authenticate {who}: {said} (check the credentials: "
        f"`ledger credentials show {role}`, or $LEDGER_SASL_USERNAME/$LEDGER_SASL_PASSWORD)"
    )


_WHAT_TO_DO = "is it running (`ledger ps`, `ledger up`)? else check --bootstrap / $LEDGER_BOOTSTRAP"


def check_reachable(bootstrap: str, *, timeout: float = CONNECT_TIMEOUT) -> None:
    """Return once some server of ``bootstrap`` accepts a TCP connection, else raise.

    A malformed string is a :class:`~ledger.errors.UsageError`; no server answering within
    ``timeout`` seconds each (refused, unknown host, filtered) a
    :class:`~ledger.errors.KafkaUnavailable` naming why, for each server.
    """
    reasons = []
    for host, port in parse_bootstrap(bootstrap):
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except socket.gaierror:
            reasons.append(f"{host}: unknown host")
        except TimeoutError:
            reasons.append(f"{host}:{port}: no answer within {timeout:g} s")
        except OSError as exc:
            reasons.append(f"{host}:{port}: {(exc.strerror or str(exc)).lower()}")
    raise KafkaUnavailable(
        f"cannot reach Kafka at {bootstrap} ({'; '.join(reasons)}): {_WHAT_TO_DO}"
    )


def close_abandoned(exc: BaseException) -> None:
    """Close the network client a kafka-python constructor made before it failed (a refused
    authentication, an unreachable broker): kafka-python leaves it, and its wake-up socket pair,
    open for the garbage collector to find, at some later moment."""
    tb = exc.__traceback__
    while tb is not None:
        scope = tb.tb_frame.f_locals
        for candidate in (scope.get("client"), getattr(scope.get("self"), "_client", None)):
            close = getattr(candidate, "close", None)
            if type(candidate).__module__.startswith("kafka.") and callable(close):
                with contextlib.suppress(Exception):
                    close()
        tb = tb.tb_next


def _client(
    kind: Any, bootstrap: str, security: KafkaSecurity | None, config: dict[str, Any]
) -> Any:
    from kafka.errors import KafkaError

    check_reachable(bootstrap)
    refusals = _Refusals()
    manager = logging.getLogger(_KAFKA_CONNECTIONS)
    manager.addHandler(refusals)
    try:
        return kind(bootstrap_servers=bootstrap, **kafka_python_config(security), **config)
    except (KafkaError, OSError) as exc:
        close_abandoned(exc)
        # kafka-python retries a refused login until its bootstrap times out, then says only
        # "Unable to bootstrap" (an operator's walkthrough: a wrong password was told to check
        # that Kafka runs); the refusal is in its log.
        denied = access_denied(exc, security, bootstrap) or (
            access_denied(refusals.found, security, bootstrap)
            if refusals.found is not None
            else None
        )
        if denied is None and security is not None and security.sasl:
            denied = _refused_by_librdkafka(bootstrap, security)
        if denied is not None:
            raise denied from exc
        hint = (
            ""
            if security is not None and security.enabled
            else " (a broker that requires authentication drops unauthenticated clients: "
            "check $LEDGER_SECURITY_PROTOCOL / `ledger credentials show ROLE`)"
        )
        raise KafkaUnavailable(
            f"cannot reach Kafka at {bootstrap}: {exc}: {_WHAT_TO_DO}{hint}"
        ) from exc
    finally:
        manager.removeHandler(refusals)


def login_refused(
    bootstrap: str, security: KafkaSecurity | None, *, timeout: float = 5.0
) -> KafkaAccessDenied | None:
    """Whether the broker at ``bootstrap``, which accepted a connection, refuses ``security``'s
    SASL login (asked through librdkafka, which hears a refusal kafka-python may report only as
    "Unable to bootstrap"); ``None`` when it does not, or no login is given. Takes up to
    ``timeout`` seconds: ask it after a client failed, never on every attempt."""
    if security is None or not security.sasl:
        return None
    return _refused_by_librdkafka(bootstrap, security, timeout)


@contextlib.contextmanager
def refusals_logged() -> Any:
    """A handler, for the block, keeping the last refusal (a failed login, an ACL) kafka-python
    logs while it connects (``.found``; see :class:`_Refusals`)."""
    refusals = _Refusals()
    manager = logging.getLogger(_KAFKA_CONNECTIONS)
    manager.addHandler(refusals)
    try:
        yield refusals
    finally:
        manager.removeHandler(refusals)


def _refused_by_librdkafka(
    bootstrap: str, security: KafkaSecurity, timeout: float = 5.0
) -> KafkaAccessDenied | None:
    """Asked only when kafka-python could not connect, with a login, and logged no refusal:
    the broker may close a refused login's connection before kafka-python reads why (a CI run
    saw only "socket disconnected"), where librdkafka's error callback does hear it. The
    refusal as :class:`KafkaAccessDenied`, else ``None`` (Kafka away, or something else)."""
    from ledger.kafka.reading import rdkafka_partitions

    try:
        probe = make_rdkafka_consumer(bootstrap, security=security)
    except KafkaUnavailable:
        return None
    try:
        rdkafka_partitions(probe, "__consumer_offsets", bootstrap=bootstrap, timeout=timeout)
    except KafkaAccessDenied as refused:
        return refused
    except Exception:  # unavailable, a topic it may not see: not a refused login
        return None
    finally:
        with contextlib.suppress(Exception):
            probe.close()
    return None


_KAFKA_CONNECTIONS = "kafka.net.manager"
"""The kafka-python logger that reports each failed connection with its exception."""


class _Refusals(logging.Handler):
    """Keeps the last refusal (a failed login, an ACL) kafka-python logs while it connects.
    Its connections are made on its own thread, and its lines name no client: a refusal that
    another client of this process met at that moment is taken for this one's too (a review
    found it with two threads; only a client that failed to connect anyway is told so)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.found: BaseException | None = None

    def emit(self, record: logging.LogRecord) -> None:
        from kafka.errors import AuthorizationError, SaslAuthenticationFailedError

        for arg in record.args if isinstance(record.args, tuple) else ():
            if isinstance(arg, (SaslAuthenticationFailedError, AuthorizationError)):
                self.found = arg


def make_producer(
    bootstrap: str, *, security: KafkaSecurity | None = None, **overrides: Any
) -> Any:
    from kafka import KafkaProducer

    return _client(KafkaProducer, bootstrap, security, {**PRODUCER_CONFIG, **overrides})


def make_consumer(
    bootstrap: str, *, security: KafkaSecurity | None = None, **overrides: Any
) -> Any:
    from kafka import KafkaConsumer

    return _client(KafkaConsumer, bootstrap, security, {**CONSUMER_CONFIG, **overrides})


def make_admin(bootstrap: str, *, security: KafkaSecurity | None = None, **overrides: Any) -> Any:
    from kafka import KafkaAdminClient

    return _client(KafkaAdminClient, bootstrap, security, {**ADMIN_CONFIG, **overrides})


# --------------------------------------------------------------------------- librdkafka

RDKAFKA_PRODUCER_CONFIG: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    # Send at once; records queued while a produce request is in flight leave together in the
    # next one (up to batch.num.messages), so batching costs a lone request nothing.
    "linger.ms": 0,
    "batch.num.messages": 10_000,
    # The partition of a keyed record is the one Java clients and kafka-python pick.
    "partitioner": "murmur2_random",
}
"""librdkafka producer settings of the request/reply path (DESIGN §11)."""

RDKAFKA_CONSUMER_CONFIG: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    # The broker answers a fetch as soon as one byte is there; the wait only bounds how long an
    # idle fetch is parked (it costs no latency, and fewer idle fetches cost the broker less).
    "fetch.min.bytes": 1,
    "fetch.wait.max.ms": 500,
    "enable.partition.eof": False,
}
"""librdkafka consumer settings of the request/reply path."""


_RDKAFKA_LOG = logging.getLogger(RDKAFKA_LOGGER)


def rdkafka_config(
    bootstrap: str,
    base: dict[str, Any],
    security: KafkaSecurity | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """The configuration of one librdkafka client: ``base`` and ``overrides`` on what every
    client of the ledger shares (the bootstrap servers, the role's credentials from
    :func:`librdkafka_config`, Nagle off on loopback-fast paths, quiet logs). Overrides use
    librdkafka's dotted names, or underscores for dots; a callback keeps its name
    (``stats_cb``, ``error_cb``: confluent-kafka's own keys)."""
    if not _RDKAFKA_LOG.filters:  # its repeats thinned wherever it is shown (an agent's stderr)
        _RDKAFKA_LOG.addFilter(RepeatFilter(libraries=(RDKAFKA_LOGGER,)))
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        # librdkafka's own log lines (a broker going away …) go through Python logging, where
        # the application decides what to show, instead of straight to stderr.
        "logger": _RDKAFKA_LOG,
        "socket.nagle.disable": True,
        "log.connection.close": False,
        "topic.metadata.refresh.interval.ms": 30_000,
    }
    config.update(librdkafka_config(security))
    config.update(base)
    config.update(
        {
            key if key.endswith("_cb") else key.replace("_", "."): value
            for key, value in overrides.items()
        }
    )
    return config


def make_rdkafka_producer(
    bootstrap: str, *, security: KafkaSecurity | None = None, **overrides: Any
) -> Any:
    """A ``confluent_kafka.Producer`` for the request/reply path (reachability checked first)."""
    check_reachable(bootstrap)
    config = rdkafka_config(bootstrap, RDKAFKA_PRODUCER_CONFIG, security, **overrides)
    return _made("Producer", bootstrap, config)


UNUSED_GROUP: Final = "ledger-unused"
"""The group an assign-only librdkafka consumer names (librdkafka needs one) and never joins:
it still asks for the group's coordinator every second, which the ACLs let every role
describe (:func:`~ledger.kafka.acls.acl_table`; an operator's drill: without it, three
quarters of the broker's log were those requests' denials, ~47 KB a minute at idle)."""


def make_rdkafka_consumer(
    bootstrap: str, *, security: KafkaSecurity | None = None, **overrides: Any
) -> Any:
    """A ``confluent_kafka.Consumer`` for the request/reply path (reachability checked first).
    Without a ``group.id`` override it gets a group id it never uses (librdkafka requires one;
    an assigned, never-committing consumer does not join the group)."""
    check_reachable(bootstrap)
    config = rdkafka_config(bootstrap, RDKAFKA_CONSUMER_CONFIG, security, **overrides)
    config.setdefault("group.id", UNUSED_GROUP)
    return _made("Consumer", bootstrap, config)


def _made(kind: str, bootstrap: str, config: dict[str, Any]) -> Any:
    """A librdkafka ``kind`` (Producer, Consumer) that keeps the refused logins its error
    callback sees (``refused``, up to ten), for :func:`~ledger.kafka.reading.rdkafka_partitions`
    to tell bad credentials from an unreachable broker: librdkafka tells a refused login only
    to that callback (served by poll) and its log, and its metadata calls just time out as a
    transport failure (an auditor's walkthrough: 7 s, then a raw error, on export)."""
    from confluent_kafka import KafkaError, KafkaException

    refused: list[str] = []
    login = (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED)

    def on_error(error: Any) -> None:
        if error.code() in login and len(refused) < 10:
            refused.append(error.str())  # its words, not its repr (a review)

    config.setdefault("error_cb", on_error)
    try:
        client = _refusal_keeping(kind)(config)
    except KafkaException as exc:
        raise KafkaUnavailable(f"cannot use Kafka at {bootstrap}: {exc}: {_WHAT_TO_DO}") from exc
    client.refused = refused
    client.user = config.get("sasl.username")  # for the refusal's words
    return client


@functools.cache
def _refusal_keeping(kind: str) -> Any:
    """A subclass of ``confluent_kafka``'s ``kind`` whose instances may hold a ``refused``
    list and their ``user`` (its own classes take no new attributes)."""
    import confluent_kafka

    return type(f"Ledger{kind}", (getattr(confluent_kafka, kind),), {})
