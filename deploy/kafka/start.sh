#!/usr/bin/env bash
# The broker of docker-compose.yml, in the apache/kafka image (mounted read-only, run as its
# command).
#
# KRaft keeps SCRAM users in the cluster's metadata, and the broker logs in as one of them
# itself (its SASL_SSL listener is also the inter-broker one: transaction markers go through
# it), so the users must exist before the first start: the storage is formatted once with
# them here. Then the image's own start-up renders the KAFKA_* settings of docker-compose.yml
# into server.properties, finds the storage formatted and starts the broker.
set -euo pipefail

BROKER_USER=broker
private=/opt/kafka/config/secrets # in the container only, never in an image or a volume

# A Docker secret, without surrounding white space; an empty one stops the broker.
secret() {
  local value
  value=$(tr -d '[:space:]' <"/run/secrets/$1")
  if [[ -z $value ]]; then
    echo "/run/secrets/$1 is empty: run deploy/make-secrets.sh, then docker compose up" >&2
    exit 1
  fi
  printf '%s' "$value"
}

broker_password=$(secret kafka_broker_password)
client_password=$(secret kafka_password)

umask 077
mkdir -p "$private"

# The broker's own login on its SASL_SSL listener; KAFKA_OPTS points the JVM here.
cat >"$private/jaas.conf" <<EOF
KafkaServer {
  org.apache.kafka.common.security.scram.ScramLoginModule required
  username="$BROKER_USER" password="$broker_password";
};
EOF

# For the health check, and for an operator's kafka-*.sh --command-config inside the
# container (docker compose exec kafka ...).
cat >"$private/client.properties" <<EOF
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$BROKER_USER" password="$broker_password";
ssl.truststore.type=PEM
ssl.truststore.location=/etc/kafka/secrets/ca.crt
EOF

if [[ ! -f $KAFKA_LOG_DIRS/meta.properties ]]; then
  # Only what formatting reads; the broker starts with the full settings afterwards.
  cat >"$private/format.properties" <<EOF
process.roles=$KAFKA_PROCESS_ROLES
node.id=$KAFKA_NODE_ID
controller.quorum.voters=$KAFKA_CONTROLLER_QUORUM_VOTERS
controller.listener.names=$KAFKA_CONTROLLER_LISTENER_NAMES
listeners=PLAINTEXT://localhost:9092,$KAFKA_CONTROLLER_LISTENER_NAMES://${KAFKA_CONTROLLER_QUORUM_VOTERS#*@}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,$KAFKA_CONTROLLER_LISTENER_NAMES:PLAINTEXT
log.dirs=$KAFKA_LOG_DIRS
EOF
  /opt/kafka/bin/kafka-storage.sh format --cluster-id "$CLUSTER_ID" \
    --config "$private/format.properties" \
    --add-scram "SCRAM-SHA-512=[name=$BROKER_USER,password=$broker_password]" \
    --add-scram "SCRAM-SHA-512=[name=$SALESPULSE_KAFKA_SASL_USERNAME,password=$client_password]"
  rm -f "$private/format.properties"
fi

exec /etc/kafka/docker/run
