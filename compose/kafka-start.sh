#!/usr/bin/env bash
# The Compose broker: SASL/SCRAM listeners and Kafka's StandardAuthorizer, as `ledger up` runs
# the local one. Credentials come from /secrets (compose/make-secrets.py); SCRAM users are added
# when the log directory is formatted (KIP-900), the controller listener uses SASL PLAIN with the
# broker's own credential (KRaft cannot use SCRAM there).
set -euo pipefail
pw() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sasl_plain_password"])' "$1" 2>/dev/null \
       || sed -n 's/.*"sasl_plain_password": "\([^"]*\)".*/\1/p' "$1"; }
BROKER_PW=$(pw /secrets/credentials/broker.json)
CONFIG=/tmp/server.properties
umask 077
cat > "$CONFIG" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=kafka:9093
controller.listener.names=CONTROLLER
listeners=INTERNAL://:19092,EXTERNAL://:9092,CONTROLLER://:9093
advertised.listeners=INTERNAL://kafka:19092,EXTERNAL://127.0.0.1:9092
listener.security.protocol.map=INTERNAL:SASL_PLAINTEXT,EXTERNAL:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
inter.broker.listener.name=INTERNAL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.internal.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="${BROKER_PW}";
listener.name.external.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="broker" password="${BROKER_PW}" user_broker="${BROKER_PW}";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:broker;User:admin
log.dirs=/var/lib/kafka/data
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
if [ ! -f /var/lib/kafka/data/meta.properties ]; then
  ARGS=/tmp/format.args
  {
    echo "format"; echo "--standalone"; echo "--cluster-id=$(/opt/kafka/bin/kafka-storage.sh random-uuid)"
    echo "-c"; echo "$CONFIG"
    for f in /secrets/credentials/*.json; do
      user=$(basename "$f" .json)
      echo "--add-scram"; echo "SCRAM-SHA-512=[name=${user},password=$(pw "$f")]"
    done
  } > "$ARGS"
  mapfile -t FORMAT < "$ARGS"; rm -f "$ARGS"
  /opt/kafka/bin/kafka-storage.sh "${FORMAT[@]}"
fi
exec /opt/kafka/bin/kafka-server-start.sh "$CONFIG"
