#!/usr/bin/env bash
# The real services orderpipe's integration tests need, started without Docker on 127.0.0.1:
# MariaDB from Debian's mariadb-server package and Apache Kafka (KRaft, one combined
# broker+controller) from its Maven Central artifacts (version pinned in docker/kafka/pom.xml).
#
#   docker/services.sh up [mariadb|kafka]    install what is missing, start, wait for answers
#   docker/services.sh down [mariadb|kafka]  stop what `up` started (by PID)
#   docker/services.sh env    print the export lines the tests read (only for services that answer)
#   docker/services.sh status one line per service
#   docker/services.sh ci-requires  exit 0 when $CI requires every service, 1 otherwise: any
#                                   non-empty CI but false/0 (any case) does, so CI=1 is CI too
#
# `up` twice is harmless. Exit code of `up`: 0 when both answer, 1 when one could not start
# (the reason is printed). State lives in $ORDERPIPE_SERVICES_DIR (default /tmp/orderpipe-services).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
state=${ORDERPIPE_SERVICES_DIR:-/tmp/orderpipe-services}
mysql_port=${ORDERPIPE_SERVICES_MYSQL_PORT:-3306}
kafka_port=${ORDERPIPE_SERVICES_KAFKA_PORT:-9092}
controller_port=${ORDERPIPE_SERVICES_KAFKA_CONTROLLER_PORT:-9093}
db_user=orderpipe
db_password=orderpipe
db_name=orderpipe_test

log() { printf 'services: %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pid_alive FILE PATTERN: the PID in FILE runs and its command line mentions PATTERN (a PID file
# left by a killed session may name a process that has nothing to do with us).
pid_alive() {
  [ -f "$1" ] || return 1
  local pid; pid=$(cat "$1")
  kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"
}

# ---------------------------------------------------------------- MariaDB
mariadb_bin() {
  command -v mariadbd 2>/dev/null || { [ -x /usr/sbin/mariadbd ] && echo /usr/sbin/mariadbd; } || true
}

mariadb_install() {
  [ -n "$(mariadb_bin)" ] && command -v mariadb >/dev/null && return 0
  if [ "$(id -u)" != 0 ]; then
    log "mariadb-server is not installed and installing it needs root (apt-get install mariadb-server)"
    return 1
  fi
  log "installing mariadb-server with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || true
  apt-get install -y -qq mariadb-server mariadb-client >/dev/null
}

mysql_answers() {
  mariadb --protocol=tcp -h 127.0.0.1 -P "$mysql_port" -u "$db_user" -p"$db_password" \
    -e 'SELECT 1' "$db_name" >/dev/null 2>&1
}

mariadb_up() {
  if mysql_answers; then log "MariaDB already answers on 127.0.0.1:$mysql_port"; return 0; fi
  mariadb_install || return 1
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
      --local-infile=1 --innodb-buffer-pool-size=2G --innodb-log-file-size=1G \
      --innodb-flush-log-at-trx-commit=2 \
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

kafka_up() {
  if kafka_answers; then log "Apache Kafka already answers on 127.0.0.1:$kafka_port"; return 0; fi
  command -v java >/dev/null || { log "java is needed to run Apache Kafka"; return 1; }
  kafka_jars || return 1
  local dir=$state/kafka cp="$here/kafka/target/lib/*"
  mkdir -p "$dir"
  if pid_alive "$dir/kafka.pid" kafka.Kafka; then
    log "Apache Kafka is running (pid $(cat "$dir/kafka.pid")) but does not answer yet"
  else
    if port_open "$kafka_port" || port_open "$controller_port"; then
      log "port $kafka_port or $controller_port is taken by another program"
      return 1
    fi
    cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$kafka_port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$kafka_port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
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
    local java_opts=(-Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true
      "-Dlog4j2.configurationFile=$here/kafka/log4j2.properties")
    if [ ! -f "$dir/data/meta.properties" ]; then
      local cluster_id
      cluster_id=$(java -cp "$cp" "${java_opts[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
      java -cp "$cp" "${java_opts[@]}" kafka.tools.StorageTool format --standalone \
        -t "$cluster_id" -c "$dir/server.properties" >"$dir/format.log" 2>&1 \
        || { log "formatting the Kafka storage failed: see $dir/format.log"; return 1; }
    fi
    nohup java -cp "$cp" "${java_opts[@]}" kafka.Kafka "$dir/server.properties" >"$dir/kafka.log" 2>&1 &
    echo $! >"$dir/kafka.pid"
  fi
  local i
  for i in $(seq 1 120); do
    kafka_answers && { log "Apache Kafka answers on 127.0.0.1:$kafka_port"; return 0; }
    pid_alive "$dir/kafka.pid" kafka.Kafka || { log "Apache Kafka exited at start: see $dir/kafka.log"; return 1; }
    sleep 0.5
  done
  log "Apache Kafka did not answer within 60 s: see $dir/kafka.log"
  return 1
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
      kafka) kafka_up || rc=1 ;;
      *) mariadb_up || rc=1; kafka_up || rc=1 ;;
    esac
    exit $rc ;;
  down)
    case "${2:-all}" in
      mariadb) mariadb_down ;;
      kafka) kafka_down ;;
      *) kafka_down; mariadb_down ;;
    esac ;;
  env)
    if mysql_answers; then
      echo "export ORDERPIPE_TEST_MYSQL_URL='mysql+pymysql://$db_user:$db_password@127.0.0.1:$mysql_port/$db_name'"
    else
      echo "# MariaDB does not answer on 127.0.0.1:$mysql_port: run docker/services.sh up"
    fi
    if kafka_answers; then
      echo "export ORDERPIPE_TEST_KAFKA_BOOTSTRAP='127.0.0.1:$kafka_port'"
    else
      echo "# Apache Kafka does not answer on 127.0.0.1:$kafka_port: run docker/services.sh up"
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
    if kafka_answers; then echo "kafka: up (127.0.0.1:$kafka_port)"; else echo "kafka: down"; fi ;;
  *)
    echo "usage: docker/services.sh up|down|env|status|ci-requires" >&2
    exit 2 ;;
esac
