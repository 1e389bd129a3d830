#!/usr/bin/env bash
# Makes the passwords, the CA and the TLS certificates docker-compose.yml needs; run it once
# before the first `docker compose up` (it needs only openssl):
#
#   deploy/make-secrets.sh            # writes deploy/secrets/ (git-ignored, kept out of images)
#   deploy/make-secrets.sh DIR        # writes DIR instead
#
# A file that is already there is kept, so running it again only fills in what is missing;
# Kafka keeps its SCRAM users from the first start on (they are written when its data volume
# is formatted), so a changed Kafka password needs `docker compose down -v` as well.
#
# What it writes, and who reads it (as Docker secrets, read-only):
#   ca.crt, ca.key              the CA that signs the two servers' certificates; every client
#                               trusts ca.crt; ca.key stays here and is mounted nowhere
#   kafka.p12                   the broker's key and certificate (PKCS#12, for DNS name kafka)
#   kafka-keystore-password     its password
#   kafka-broker-password       the broker's own SCRAM user (inter-broker traffic, health check)
#   kafka-password              the SCRAM user of the salespulse services
#   redis.crt, redis.key        Redis' certificate (for DNS name redis) and key
#   redis-password              the Redis ACL user of the salespulse services
#   redis-users.acl             Redis' users: the default user off, the salespulse user with
#                               the SHA-256 of redis-password
#   reader-token                the bearer token of the exporter and the worker's /metrics
#                               (Prometheus scrapes with it; a browser asks for it)
#   grafana-admin-password      Grafana's admin login
set -euo pipefail

out=${1:-"$(dirname "$0")/secrets"}
# Certificates last this long; to renew, delete redis.crt and kafka.p12 (or ca.crt too) and run
# the script again.
days=825

command -v openssl >/dev/null || {
  echo "make-secrets.sh needs openssl (apt-get install openssl)" >&2
  exit 1
}
umask 077
mkdir -p "$out"
chmod 700 "$out"
cd "$out"

made=()

# Hex only: no character that would need quoting in a JAAS file, a SCRAM argument or an ACL.
password() {
  [[ -s $1 ]] && return
  printf '%s' "$(openssl rand -hex 24)" >"$1"
  made+=("$1")
}

# A key and a certificate signed by the CA, for the given DNS names.
server_cert() {
  local name=$1 names=$2
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$name.key" \
    -subj "/CN=$name" -out "$name.csr" 2>/dev/null
  {
    echo "subjectAltName=$names"
    echo "keyUsage=critical,digitalSignature,keyAgreement"
    echo "extendedKeyUsage=serverAuth,clientAuth"
    echo "subjectKeyIdentifier=hash"
    echo "authorityKeyIdentifier=keyid:always"
  } >"$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -set_serial "0x$(openssl rand -hex 16)" \
    -days "$days" -sha256 -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

if [[ ! -s ca.crt || ! -s ca.key ]]; then
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
    -subj "/CN=salespulse docker-compose CA" -days "$days" -sha256 \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -out ca.crt 2>/dev/null
  rm -f kafka.p12 redis.crt redis.key # signed by a CA that is gone
  made+=(ca.crt ca.key)
fi

password kafka-keystore-password
password kafka-broker-password
password kafka-password
password redis-password
password reader-token
password grafana-admin-password

# `localhost` too: the health checks connect from inside the server's own container.
if [[ ! -s redis.crt || ! -s redis.key ]]; then
  server_cert redis DNS:redis,DNS:localhost
  made+=(redis.crt redis.key)
fi
if [[ ! -s kafka.p12 ]]; then
  server_cert kafka DNS:kafka,DNS:localhost
  openssl pkcs12 -export -name kafka -in kafka.crt -inkey kafka.key -certfile ca.crt \
    -passout file:kafka-keystore-password -out kafka.p12
  rm -f kafka.crt kafka.key
  made+=(kafka.p12)
fi

if [[ ! -s redis-users.acl || redis-password -nt redis-users.acl ]]; then
  hash=$(printf '%s' "$(cat redis-password)" | openssl dgst -sha256 -r | cut -d' ' -f1)
  # Nothing may connect without a password. The services' user may do what salespulse does
  # (keys, scripts, pub/sub), not @dangerous commands (FLUSHALL, CONFIG, DEBUG, KEYS...)
  # but INFO (read-only: the exporter's memory figures).
  printf 'user default off\nuser salespulse on #%s ~* &* +@all -@dangerous +info\n' "$hash" \
    >redis-users.acl
  made+=(redis-users.acl)
fi

# Readable by the containers' own users (kafka, redis, prometheus and salespulse run under
# different uids, and Compose mounts these files as they are); the folder itself stays 0700,
# so on this machine only its owner (and root) can open them. ca.key is for this owner only.
chmod 644 ./*
chmod 600 ca.key

if ((${#made[@]})); then
  echo "wrote ${made[*]} in $(pwd)"
else
  echo "every secret is already in $(pwd)"
fi
