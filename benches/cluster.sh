#!/usr/bin/env bash
# The cluster scenario at full size and the PostgreSQL/SQLite comparison (issue 16,
# docs/cluster.md): three instances behind HAProxy on one PostgreSQL and one Redis under a mixed
# load, one killed with kill -9 and restarted, then PostgreSQL restarted; then the figures.
#
#   bash benches/cluster.sh                       # about 2 minutes after the build
#   CLUSTER_SECS=20 COMPARE_SECS=5 bash benches/cluster.sh
#
# Needs Debian's postgresql, redis-server and haproxy.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench --bench cluster
