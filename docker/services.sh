#!/usr/bin/env bash
# The real services orderpipe's integration tests need, started without Docker on 127.0.0.1:
# MariaDB from Debian's mariadb-server package, PostgreSQL from Debian's postgresql package, and
# Apache Kafka (KRaft, one combined broker+controller) from its Maven Central artifacts (version
# pinned in docker/kafka/pom.xml).
#
#   docker/services.sh up [mariadb|postgres|kafka]    install what is missing, start, wait
#   docker/services.sh down [mariadb|postgres|kafka]  stop what `up` started
#   docker/services.sh env    print the export lines the tests read (only for services that answer)
#   docker/services.sh status one line per service
#   docker/services.sh ci-requires  exit 0 when $CI requires every service, 1 otherwise: any
#                                   non-empty CI but false/0 (any case) does, so CI=1 is CI too
#
# Secured too, as managed services are: MariaDB accepts TLS (a user that requires it), and Kafka
# has a second listener with SASL_SSL + SCRAM-SHA-512, both with a throw-away CA and server
# certificate made with openssl at first start (state dir, tls/).
#
# `up` twice is harmless. Exit code of `up`: 0 when both answer, 1 when one could not start
# (the reason is printed). State lives in $ORDERPIPE_SERVICES_DIR (default /tmp/orderpipe-services).
#
# A second, private instance runs beside the shared one with its own state folder and ports
# (ORDERPIPE_SERVICES_DIR, ORDERPIPE_SERVICES_*_PORT): everything an instance writes (data, PID
# file, socket, logs, TLS files) is in its state folder, and `down` stops only the process of
# that folder. The tests that stop a server start such an instance (tests/integration/conftest.py)
# and ask for less memory with ORDERPIPE_SERVICES_MYSQL_BUFFER_POOL_SIZE (default 6G),
# ORDERPIPE_SERVICES_MYSQL_LOG_FILE_SIZE (1G), ORDERPIPE_SERVICES_POSTGRES_SHARED_BUFFERS (2GB)
# and ORDERPIPE_SERVICES_KAFKA_HEAP (768m). As root, MariaDB and PostgreSQL run as the mysql and
# postgres users: every folder above the state folder must be searchable by them (o+x).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
state=${ORDERPIPE_SERVICES_DIR:-/tmp/orderpipe-services}
mysql_port=${ORDERPIPE_SERVICES_MYSQL_PORT:-3306}
postgres_port=${ORDERPIPE_SERVICES_POSTGRES_PORT:-5432}
kafka_port=${ORDERPIPE_SERVICES_KAFKA_PORT:-9092}
controller_port=${ORDERPIPE_SERVICES_KAFKA_CONTROLLER_PORT:-9093}
sasl_port=${ORDERPIPE_SERVICES_KAFKA_SASL_PORT:-9094}
mysql_buffer_pool=${ORDERPIPE_SERVICES_MYSQL_BUFFER_POOL_SIZE:-6G}
mysql_log_file=${ORDERPIPE_SERVICES_MYSQL_LOG_FILE_SIZE:-1G}
postgres_shared_buffers=${ORDERPIPE_SERVICES_POSTGRES_SHARED_BUFFERS:-2GB}
kafka_heap=${ORDERPIPE_SERVICES_KAFKA_HEAP:-768m}
db_user=orderpipe
db_password=orderpipe
db_tls_user=orderpipe_tls  # REQUIRE SSL
db_name=orderpipe_test
sasl_user=orderpipe
sasl_password=orderpipe-scram-secret
tls=$state/tls
tls_password=orderpipe-keystore

log() { printf 'services: %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pid_alive FILE PATTERN: the PID in FILE runs and its command line mentions PATTERN (a PID file
# left by a killed session may name a process that has nothing to do with us).
pid_alive() {
  [ -f "$1" ] || return 1
  local pid; pid=$(cat "$1")
  kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"
}

# reachable_by USER PATH: as root, USER (the server's own user) can read PATH. A state folder
# below a private one (pytest's temporary folders are 0700) cannot be reached: say so, rather
# than let the server fail later with a less telling error.
reachable_by() {
  [ "$(id -u)" = 0 ] || return 0
  runuser -u "$1" -- test -r "$2" && return 0
  log "user $1 cannot read $2: every folder above it must be searchable by others (chmod o+x)"
  return 1
}

# ---------------------------------------------------------------- TLS (throw-away CA)
tls_files() {
  [ -f "$tls/server.p12" ] && [ -f "$tls/ca.pem" ] && return 0
  command -v openssl >/dev/null || { log "openssl is needed for the TLS certificates"; return 1; }
  mkdir -p "$tls"
  (
    cd "$tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=orderpipe test CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout ca.key -out ca.pem
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile server.ext -out server.pem
    openssl pkcs12 -export -in server.pem -inkey server.key -certfile ca.pem -name kafka \
      -out server.p12.tmp -passout "pass:$tls_password"
    mv server.p12.tmp server.p12
  ) >"$state/tls.log" 2>&1 || { log "making the TLS certificates failed: see $state/tls.log"; return 1; }
  chmod 644 "$tls"/*.pem
  chmod 640 "$tls"/server.key; chgrp mysql "$tls"/server.key 2>/dev/null || chmod 644 "$tls"/server.key
  log "made a throw-away CA and server certificate in $tls"
}

# ---------------------------------------------------------------- MariaDB
mariadb_bin() {
  command -v mariadbd 2>/dev/null || { [ -x /usr/sbin/mariadbd ] && echo /usr/sbin/mariadbd; } || true
}

# apt_install PACKAGE...: install Debian packages as root, refreshing the lists only if needed.
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    log "$1 is not installed and installing it needs root (apt-get install $*)"
    return 1
  fi
  log "installing $* with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "$@" >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null || true
    apt-get install -y -qq "$@" >/dev/null
  }
}

mariadb_install() {
  [ -n "$(mariadb_bin)" ] && command -v mariadb >/dev/null && return 0
  apt_install mariadb-server mariadb-client
}

# The answers checks give up after a few seconds: a program of another kind holding the port
# (one that accepts and never speaks) must not hang `up`, `env` or `status`.
mysql_answers() {
  timeout 10 mariadb --connect-timeout=5 --protocol=tcp -h 127.0.0.1 -P "$mysql_port" -u "$db_user" -p"$db_password" \
    -e 'SELECT 1' "$db_name" >/dev/null 2>&1
}

# The TLS user gets in over TLS (it requires it), checking the server certificate against our CA.
mysql_tls_answers() {
  timeout 10 mariadb --connect-timeout=5 --protocol=tcp -h 127.0.0.1 -P "$mysql_port" -u "$db_tls_user" -p"$db_password" \
    --ssl --ssl-ca="$tls/ca.pem" --ssl-verify-server-cert -e 'SELECT 1' "$db_name" >/dev/null 2>&1
}

mariadb_up() {
  tls_files || return 1
  if mysql_answers && mysql_tls_answers; then
    log "MariaDB already answers on 127.0.0.1:$mysql_port (TLS too)"; return 0
  fi
  if mysql_answers && pid_alive "$state/mariadb/mariadb.pid" mariadbd; then
    log "MariaDB answers without TLS: restarting it with TLS"; mariadb_down
  fi
  mariadb_install || return 1
  reachable_by mysql "$tls/ca.pem" || return 1
  local dir=$state/mariadb
  mkdir -p "$dir"
  if pid_alive "$dir/mariadb.pid" mariadbd; then
    log "MariaDB is running (pid $(cat "$dir/mariadb.pid")) but does not answer yet"
  else
    if port_open "$mysql_port"; then
      log "port $mysql_port is taken by another program; set ORDERPIPE_SERVICES_MYSQL_PORT"
      return 1
    fi
    if [ ! -d "$dir/data/mysql" ]; then
      log "initialising a MariaDB data directory in $dir/data"
      mkdir -p "$dir/data"
      chown -R mysql:mysql "$dir" 2>/dev/null || true
      mariadb-install-db --user=mysql --datadir="$dir/data" --auth-root-authentication-method=socket \
        --skip-test-db >"$dir/install.log" 2>&1 || { log "mariadb-install-db failed: see $dir/install.log"; return 1; }
    fi
    chown -R mysql:mysql "$dir" 2>/dev/null || true
    "$(mariadb_bin)" --no-defaults --user=mysql --datadir="$dir/data" \
      --bind-address=127.0.0.1 --port="$mysql_port" --socket="$dir/mariadb.sock" \
      --pid-file="$dir/mariadbd.pid" --log-error="$dir/error.log" \
      --local-infile=1 --innodb-buffer-pool-size="$mysql_buffer_pool" --innodb-log-file-size="$mysql_log_file" \
      --innodb-flush-log-at-trx-commit=2 \
      --ssl-ca="$tls/ca.pem" --ssl-cert="$tls/server.pem" --ssl-key="$tls/server.key" \
      --max-connections=200 --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
      >/dev/null 2>&1 &
    echo $! >"$dir/mariadb.pid"
  fi
  local i
  for i in $(seq 1 120); do
    if mariadb --no-defaults -S "$dir/mariadb.sock" -u root -e 'SELECT 1' >/dev/null 2>&1; then break; fi
    pid_alive "$dir/mariadb.pid" mariadbd || { log "MariaDB exited at start: see $dir/error.log"; return 1; }
    sleep 0.5
  done
  mariadb --no-defaults -S "$dir/mariadb.sock" -u root <<SQL || { log "could not create the test user"; return 1; }
CREATE DATABASE IF NOT EXISTS $db_name CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS '$db_user'@'127.0.0.1' IDENTIFIED BY '$db_password';
CREATE USER IF NOT EXISTS '$db_user'@'localhost' IDENTIFIED BY '$db_password';
GRANT ALL PRIVILEGES ON \`orderpipe%\`.* TO '$db_user'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON \`orderpipe%\`.* TO '$db_user'@'localhost' WITH GRANT OPTION;
-- Tests create users of their own (least privileged, passwords with special characters).
GRANT CREATE USER ON *.* TO '$db_user'@'127.0.0.1';
GRANT CREATE USER ON *.* TO '$db_user'@'localhost';
CREATE USER IF NOT EXISTS '$db_tls_user'@'127.0.0.1' IDENTIFIED BY '$db_password' REQUIRE SSL;
GRANT ALL PRIVILEGES ON \`orderpipe%\`.* TO '$db_tls_user'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL
  mysql_answers || { log "MariaDB does not answer on 127.0.0.1:$mysql_port"; return 1; }
  log "MariaDB answers on 127.0.0.1:$mysql_port (database $db_name)"
}

mariadb_down() {
  local pidf=$state/mariadb/mariadb.pid
  if pid_alive "$pidf" mariadbd; then
    kill "$(cat "$pidf")" && log "stopping MariaDB (pid $(cat "$pidf"))"
    local i; for i in $(seq 1 60); do pid_alive "$pidf" mariadbd || break; sleep 0.5; done
  fi
  rm -f "$pidf"
}

# ---------------------------------------------------------------- PostgreSQL
postgres_bin() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do [ -x "$dir/pg_ctl" ] && { echo "$dir"; return 0; }; done
  return 0
}

postgres_install() {
  [ -n "$(postgres_bin)" ] && command -v psql >/dev/null && return 0
  apt_install postgresql
}

postgres_answers() {
  PGPASSWORD=$db_password PGCONNECT_TIMEOUT=5 timeout 10 psql -h 127.0.0.1 -p "$postgres_port" -U "$db_user" -d "$db_name" \
    -tAc 'SELECT 1' >/dev/null 2>&1
}

# As the postgres user (the server refuses to run as root).
as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

postgres_up() {
  local bin dir=$state/postgres
  if postgres_answers; then
    # ours (its data folder): the setup below runs again, for what a newer script adds
    if [ -z "$(postgres_bin)" ] || ! as_postgres "$(postgres_bin)/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
      log "PostgreSQL already answers on 127.0.0.1:$postgres_port"; return 0
    fi
  fi
  postgres_install || return 1
  tls_files || return 1
  bin=$(postgres_bin)
  mkdir -p "$dir/tls"
  # TLS with the throw-away CA's server certificate; the server wants its key private
  cp "$tls/server.pem" "$tls/server.key" "$dir/tls/"
  chmod 600 "$dir/tls/server.key"
  if [ "$(id -u)" = 0 ]; then chown -R postgres:postgres "$dir"; fi
  reachable_by postgres "$dir/tls/server.pem" || return 1
  if ! as_postgres "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    if port_open "$postgres_port"; then
      log "port $postgres_port is taken by another program; set ORDERPIPE_SERVICES_POSTGRES_PORT"
      return 1
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      log "initialising a PostgreSQL data directory in $dir/data"
      as_postgres "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 \
        >"$dir/initdb.log" 2>&1 || { log "initdb failed: see $dir/initdb.log"; return 1; }
      # the test user signs in with its password over TCP, as orderpipe's URLs do
      printf 'local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n' \
        >"$dir/data/pg_hba.conf"
    fi
    as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $postgres_port -k $dir -c fsync=off -c synchronous_commit=off -c max_connections=200 -c shared_buffers=$postgres_shared_buffers -c max_wal_size=8GB -c checkpoint_timeout=30min -c ssl=on -c ssl_cert_file=$dir/tls/server.pem -c ssl_key_file=$dir/tls/server.key" \
      start >/dev/null 2>&1 || { log "PostgreSQL did not start: see $dir/server.log"; return 1; }
  fi
  as_postgres psql -h "$dir" -p "$postgres_port" -U postgres -d postgres -v ON_ERROR_STOP=1 -q <<SQL \
    >"$dir/setup.log" 2>&1 || { log "could not create the PostgreSQL test user: see $dir/setup.log"; return 1; }
SELECT 'CREATE ROLE $db_user LOGIN CREATEDB CREATEROLE PASSWORD ''$db_password'''
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$db_user') \gexec
SELECT 'CREATE DATABASE $db_name OWNER $db_user'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$db_name') \gexec
-- the tests drop their databases WITH (FORCE): that ends an autovacuum worker there too
GRANT pg_signal_backend TO $db_user;
SQL
  postgres_answers || { log "PostgreSQL does not answer on 127.0.0.1:$postgres_port"; return 1; }
  log "PostgreSQL answers on 127.0.0.1:$postgres_port (database $db_name)"
}

postgres_down() {
  local bin dir=$state/postgres
  bin=$(postgres_bin)
  if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
    as_postgres "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 && log "stopped PostgreSQL" || true
  fi
}

# ---------------------------------------------------------------- Apache Kafka
kafka_jars() {
  local lib=$here/kafka/target/lib
  if ! ls "$lib"/kafka_2.13-*.jar >/dev/null 2>&1; then
    command -v mvn >/dev/null || { log "Maven (mvn) is needed to fetch Apache Kafka"; return 1; }
    log "resolving Apache Kafka from Maven Central (docker/kafka/pom.xml)"
    (cd "$here/kafka" && mvn -q -B dependency:copy-dependencies -DoutputDirectory=target/lib \
      -DincludeScope=runtime) >&2 || { log "mvn could not resolve the Kafka artifacts"; return 1; }
  fi
}

# Sends a Kafka Metadata request (v4) and succeeds when the answer names at least one broker.
kafka_answers() {
  python3 - "$kafka_port" <<'PY' 2>/dev/null
import socket, struct, sys
port = int(sys.argv[1])
client = b"orderpipe-services"
body = struct.pack(">i", -1) + b"\x00"  # all topics, no auto-creation
header = struct.pack(">hhih", 3, 4, 7, len(client)) + client
req = header + body
with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
    s.sendall(struct.pack(">i", len(req)) + req)
    size = struct.unpack(">i", s.recv(4))[0]
    data = b""
    while len(data) < size:
        chunk = s.recv(size - len(data))
        if not chunk:
            break
        data += chunk
corr, throttle, brokers = struct.unpack(">iii", data[:12])
sys.exit(0 if corr == 7 and brokers >= 1 else 1)
PY
}

# The SASL_SSL listener is up when it completes a TLS handshake with a certificate from our CA.
kafka_sasl_answers() {
  timeout 5 openssl s_client -connect "127.0.0.1:$sasl_port" -CAfile "$tls/ca.pem" \
    -verify_return_error -verify_hostname localhost </dev/null >/dev/null 2>&1
}

kafka_up() {
  local limit=${ORDERPIPE_SERVICES_KAFKA_WAIT:-180}  # seconds to wait for it to answer
  [[ $limit =~ ^[1-9][0-9]*$ ]] || { log "ORDERPIPE_SERVICES_KAFKA_WAIT must be a number of seconds, not '$limit'"; return 1; }
  tls_files || return 1
  if kafka_answers && kafka_sasl_answers; then
    log "Apache Kafka already answers on 127.0.0.1:$kafka_port (SASL_SSL on $sasl_port)"; return 0
  fi
  command -v java >/dev/null || { log "java is needed to run Apache Kafka"; return 1; }
  kafka_jars || return 1
  local dir=$state/kafka cp="$here/kafka/target/lib/*"
  mkdir -p "$dir"
  # Storage formatted before the SCRAM user existed (an older services.sh) is test data only:
  # format it again, with the user.
  if [ -f "$dir/data/meta.properties" ] && [ ! -f "$dir/data/.orderpipe-scram" ]; then
    kafka_down
    log "formatting the Kafka storage again, with the SCRAM user"
    rm -rf "$dir/data"
  fi
  if pid_alive "$dir/kafka.pid" kafka.Kafka; then
    log "Apache Kafka is running (pid $(cat "$dir/kafka.pid")) but does not answer yet"
  else
    if port_open "$kafka_port" || port_open "$controller_port" || port_open "$sasl_port"; then
      log "port $kafka_port, $controller_port or $sasl_port is taken by another program"
      return 1
    fi
    cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$kafka_port,SASL_SSL://127.0.0.1:$sasl_port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$kafka_port,SASL_SSL://127.0.0.1:$sasl_port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$tls/server.p12
ssl.keystore.password=$tls_password
ssl.key.password=$tls_password
log.dirs=$dir/data
num.partitions=3
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
PROPS
    local java_opts=(-Xms256m "-Xmx$kafka_heap" -XX:+UseG1GC -Djava.awt.headless=true
      "-Dlog4j2.configurationFile=$here/kafka/log4j2.properties")
    if [ ! -f "$dir/data/meta.properties" ]; then
      local cluster_id
      cluster_id=$(java -cp "$cp" "${java_opts[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
      java -cp "$cp" "${java_opts[@]}" kafka.tools.StorageTool format --standalone \
        -t "$cluster_id" -c "$dir/server.properties" \
        --add-scram "SCRAM-SHA-512=[name=$sasl_user,password=$sasl_password]" >"$dir/format.log" 2>&1 \
        || { log "formatting the Kafka storage failed: see $dir/format.log"; kafka_log_tail "$dir/format.log"; return 1; }
      touch "$dir/data/.orderpipe-scram"
    fi
    nohup java -cp "$cp" "${java_opts[@]}" kafka.Kafka "$dir/server.properties" >"$dir/kafka.log" 2>&1 &
    echo $! >"$dir/kafka.pid"
  fi
  # A cold JVM on a busy machine can take well over a minute: wait by the clock, not by a count
  # of tries (each try can itself take seconds), and say where it stands every 30 s.
  local waited=0 start=$SECONDS
  while [ $((SECONDS - start)) -lt "$limit" ]; do
    if kafka_answers && kafka_sasl_answers; then
      log "Apache Kafka answers on 127.0.0.1:$kafka_port (SASL_SSL on $sasl_port) after $((SECONDS - start)) s"
      return 0
    fi
    pid_alive "$dir/kafka.pid" kafka.Kafka || { log "Apache Kafka exited at start: see $dir/kafka.log"; kafka_log_tail "$dir/kafka.log"; return 1; }
    if [ $((SECONDS - start)) -ge $((waited + 30)) ]; then
      waited=$((SECONDS - start)); log "waiting for Apache Kafka to answer ($waited s)"
    fi
    sleep 0.5
  done
  log "Apache Kafka did not answer within $limit s: see $dir/kafka.log"
  kafka_log_tail "$dir/kafka.log"
  return 1
}

# The last lines of the broker's log, so that a failed start says why where it is seen (CI).
kafka_log_tail() {
  [ -s "$1" ] || return 0
  log "last lines of $1:"
  tail -n 25 "$1" | cut -c1-400 | sed 's/^/  | /' >&2
}

kafka_down() {
  local pidf=$state/kafka/kafka.pid
  if pid_alive "$pidf" kafka.Kafka; then
    kill "$(cat "$pidf")" && log "stopping Apache Kafka (pid $(cat "$pidf"))"
    local i; for i in $(seq 1 60); do pid_alive "$pidf" kafka.Kafka || break; sleep 0.5; done
    pid_alive "$pidf" kafka.Kafka && kill -9 "$(cat "$pidf")"
  fi
  rm -f "$pidf"
}

# ---------------------------------------------------------------- commands
# `up`/`down` take an optional service name (mariadb or kafka); the tests use it to take the
# database away in the middle of a stream.
case "${1:-}" in
  up)
    rc=0
    case "${2:-all}" in
      mariadb) mariadb_up || rc=1 ;;
      postgres) postgres_up || rc=1 ;;
      kafka) kafka_up || rc=1 ;;
      *) mariadb_up || rc=1; postgres_up || rc=1; kafka_up || rc=1 ;;
    esac
    exit $rc ;;
  down)
    case "${2:-all}" in
      mariadb) mariadb_down ;;
      postgres) postgres_down ;;
      kafka) kafka_down ;;
      *) kafka_down; postgres_down; mariadb_down ;;
    esac ;;
  env)
    if mysql_answers; then
      echo "export ORDERPIPE_TEST_MYSQL_URL='mysql+pymysql://$db_user:$db_password@127.0.0.1:$mysql_port/$db_name'"
    else
      echo "# MariaDB does not answer on 127.0.0.1:$mysql_port: run docker/services.sh up"
    fi
    if mysql_tls_answers; then
      echo "export ORDERPIPE_TEST_MYSQL_TLS_URL='mysql+pymysql://$db_tls_user:$db_password@127.0.0.1:$mysql_port/$db_name?ssl_ca=$tls/ca.pem&ssl_check_hostname=true'"
    else
      echo "# MariaDB does not answer over TLS on 127.0.0.1:$mysql_port: run docker/services.sh up"
    fi
    if postgres_answers; then
      # in clear on the loopback, as the MariaDB one; the TLS one checks the server's certificate
      echo "export ORDERPIPE_TEST_POSTGRES_URL='postgresql+psycopg://$db_user:$db_password@127.0.0.1:$postgres_port/$db_name?sslmode=disable'"
      echo "export ORDERPIPE_TEST_POSTGRES_TLS_URL='postgresql+psycopg://$db_user:$db_password@127.0.0.1:$postgres_port/$db_name?sslmode=verify-full&sslrootcert=$tls/ca.pem'"
    else
      echo "# PostgreSQL does not answer on 127.0.0.1:$postgres_port: run docker/services.sh up"
    fi
    if kafka_answers; then
      echo "export ORDERPIPE_TEST_KAFKA_BOOTSTRAP='127.0.0.1:$kafka_port'"
    else
      echo "# Apache Kafka does not answer on 127.0.0.1:$kafka_port: run docker/services.sh up"
    fi
    if kafka_sasl_answers; then
      echo "export ORDERPIPE_TEST_KAFKA_SASL_BOOTSTRAP='127.0.0.1:$sasl_port'"
      echo "export ORDERPIPE_TEST_KAFKA_SASL_USERNAME='$sasl_user'"
      echo "export ORDERPIPE_TEST_KAFKA_SASL_PASSWORD='$sasl_password'"
      echo "export ORDERPIPE_TEST_KAFKA_SSL_CAFILE='$tls/ca.pem'"
    else
      echo "# Kafka's SASL_SSL listener does not answer on 127.0.0.1:$sasl_port: run docker/services.sh up"
    fi ;;
  ci-requires)
    # The one shell copy of the rule; tests/conftest.py's ci_requires_services is the Python one.
    ci=${CI:-}
    case "${ci,,}" in
      ''|false|0) exit 1 ;;
      *) exit 0 ;;
    esac ;;
  status)
    if mysql_answers; then echo "mariadb: up (127.0.0.1:$mysql_port)"; else echo "mariadb: down"; fi
    if mysql_tls_answers; then echo "mariadb tls: up"; else echo "mariadb tls: down"; fi
    if postgres_answers; then echo "postgres: up (127.0.0.1:$postgres_port)"; else echo "postgres: down"; fi
    if kafka_answers; then echo "kafka: up (127.0.0.1:$kafka_port)"; else echo "kafka: down"; fi
    if kafka_sasl_answers; then echo "kafka sasl_ssl: up (127.0.0.1:$sasl_port)"; else echo "kafka sasl_ssl: down"; fi ;;
  *)
    echo "usage: docker/services.sh up|down|env|status|ci-requires" >&2
    exit 2 ;;
esac
