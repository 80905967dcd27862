#!/usr/bin/env bash
# Installs the system binaries the stack needs when they are missing:
#   prometheus, promtool (Debian package prometheus) and Alertmanager, amtool (prometheus-alertmanager);
#   PostgreSQL server binaries initdb, postgres (Debian package postgresql; /usr/lib/postgresql/*/bin, off
#   PATH) for the highly available stack (stackctl/postgres.py starts its own throw-away server per run).
# With --bench also nginx and wrk (benchmarks). Uses apt-get as root or through sudo; elsewhere it
# says what to install and exits 1.
set -euo pipefail

packages=()
have() { command -v "$1" >/dev/null 2>&1; }
have prometheus && have promtool || packages+=(prometheus)
{ have prometheus-alertmanager || have alertmanager; } && have amtool || packages+=(prometheus-alertmanager)
have chromium || packages+=(chromium fonts-liberation)  # browser tests (tests/browser.py): Chromium, readable fonts
have_postgres() {
  [[ -n "${PG_BINDIR:-}" && -x "${PG_BINDIR}/initdb" ]] || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null ||
    { have initdb && have postgres; }
}
have_postgres || packages+=(postgresql)
if [[ "${1:-}" == "--bench" ]]; then
  have nginx || [[ -x /usr/sbin/nginx ]] || packages+=(nginx)
  have wrk || packages+=(wrk)
fi
[[ ${#packages[@]} -eq 0 ]] && exit 0

echo "installing system packages: ${packages[*]}"
if ! have apt-get; then
  echo "error: apt-get not found. Install ${packages[*]} yourself (https://prometheus.io/download/, https://www.postgresql.org/download/), put them on PATH (PostgreSQL: or set PG_BINDIR), and run again." >&2
  exit 1
fi
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  if have sudo; then sudo="sudo"; else
    echo "error: need root to run apt-get install ${packages[*]} (no sudo found)." >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if [[ " ${packages[*]} " == *" postgresql "* ]]; then
  # Only the binaries are needed: tell postgresql-common not to create (and start) the Debian "main"
  # cluster. Its createcluster.conf includes /etc/postgresql-common/createcluster.d/*.conf.
  $sudo mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.d/stackctl.conf >/dev/null
fi
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${packages[@]}"
