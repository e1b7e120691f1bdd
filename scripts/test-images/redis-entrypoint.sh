#!/bin/sh
# rack-test/redis entrypoint: the official redis image's contract, on
# Debian's redis-server: `redis-server ARGS...` runs as the redis user in
# /data (port 6379, every address); any other command runs as given.
set -eu
if [ "${1:-}" = redis-server ]; then
  shift
  mkdir -p /data
  chown -R redis:redis /data
  cd /data
  exec setpriv --reuid=redis --regid=redis --init-groups redis-server --bind '* -::*' --dir /data "$@"
fi
exec "$@"
