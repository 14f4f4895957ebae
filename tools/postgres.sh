#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests that need one (results store, tuning storage).
#
#   tools/postgres.sh start DIR   initdb in DIR, start on 127.0.0.1 (a free port), create the
#                                 database workbench_test, print its SQLAlchemy URL on stdout
#   tools/postgres.sh stop DIR    stop it (DIR can then be removed)
#
# Uses Debian's packaged server (apt-get install postgresql; .ci/run installs it). The server
# listens on 127.0.0.1 only, trusts local connections and lives in DIR, so nothing on the machine
# changes. As root it runs as the "postgres" user the Debian package creates (PostgreSQL refuses root).
set -euo pipefail
action=${1:?usage: tools/postgres.sh start|stop DIR}
dir=${2:?usage: tools/postgres.sh start|stop DIR}
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bindir" ]; then
    echo "tools/postgres.sh: no PostgreSQL server found under /usr/lib/postgresql (apt-get install postgresql)" >&2
    exit 2
fi
as_owner=()
if [ "$(id -u)" -eq 0 ]; then as_owner=(runuser -u postgres --); fi

case "$action" in
start)
    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ]; then chown postgres "$dir"; fi
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "${as_owner[@]}" "$bindir/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    "${as_owner[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off" start >/dev/null \
        || { cat "$dir/server.log" >&2; exit 1; }
    "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres workbench_test
    echo "postgresql+psycopg://postgres@127.0.0.1:$port/workbench_test"
    ;;
stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
        "${as_owner[@]}" "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    fi
    ;;
*)
    echo "usage: tools/postgres.sh start|stop DIR" >&2
    exit 2
    ;;
esac
