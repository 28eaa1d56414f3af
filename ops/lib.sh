# shellcheck shell=bash
# Shared by ops/test, ops/demo and ops/bench: prerequisites and a private PostgreSQL cluster.
# Sourced, not run.

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The newest PostgreSQL (15 or later) server binaries installed, if any.
pg_bindir() {
  local dir best=""
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/initdb" ] || continue
    local version=${dir#/usr/lib/postgresql/}
    version=${version%/bin}
    [ "$version" -ge 15 ] 2>/dev/null || continue
    best=$dir
  done
  [ -n "$best" ] && printf '%s\n' "$best"
}

# Installs what this project needs from Debian's packages, when something is missing.
ensure_prerequisites() {
  local missing=()
  command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
  pkg-config --exists libpq 2>/dev/null || missing+=(libpq-dev)
  # libphonenumber ships no pkg-config file: look for its header and the shared library that
  # Package.swift links (it brings protobuf, abseil and ICU along).
  local libdir
  libdir=/usr/lib/$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)
  [ -f /usr/include/phonenumbers/phonenumberutil.h ] && [ -f "$libdir/libphonenumber.so" ] ||
    missing+=(libphonenumber-dev)
  [ -n "$(pg_bindir)" ] || missing+=(postgresql-15)
  # The mail tests hand a message to a real exim through its sendmail interface, and read what it
  # delivered with Python's email parser.
  [ -x /usr/sbin/exim4 ] || missing+=(exim4-daemon-light)
  [ -x /usr/bin/python3 ] || missing+=(python3)
  command -v swift >/dev/null 2>&1 || [ -x /opt/swift/usr/bin/swift ] || die "Swift 6 is not installed (expected on PATH or in /opt/swift)"
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
      command -v sudo >/dev/null 2>&1 || die "missing packages: ${missing[*]}; install them as root (apt-get install ${missing[*]})"
      sudo=(sudo -n)
    fi
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  case ":$PATH:" in
    *:/opt/swift/usr/bin:*) ;;
    *) [ -x /opt/swift/usr/bin/swift ] && export PATH="$PATH:/opt/swift/usr/bin" ;;
  esac
  PG_BIN=$(pg_bindir)
  [ -n "$PG_BIN" ] || die "PostgreSQL 15 or later was not found after installing it"
  export PG_BIN
}

# The server refuses to run as root: as root, the cluster belongs to an unprivileged user.
PG_OS_USER=$(id -un)
if [ "$(id -u)" -eq 0 ]; then
  PG_OS_USER=postgres
fi

ensure_pg_os_user() {
  [ "$(id -u)" -eq 0 ] || return 0
  id "$PG_OS_USER" >/dev/null 2>&1 ||
    useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_OS_USER"
}

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u "$PG_OS_USER" -- "$@"
  else
    "$@"
  fi
}

# True when the cluster's OS user can create files in $1 (a folder that exists).
pg_can_use() {
  as_pg test -w "$1" -a -x "$1" 2>/dev/null
}

# start_cluster DATADIR SOCKETDIR [fast]: initdb when needed, then start on a Unix socket only.
# "fast" turns off durability (fsync), for throwaway test clusters.
start_cluster() {
  local data=$1 sock=$2 mode=${3:-}
  ensure_pg_os_user
  mkdir -p "$data" "$sock"
  if [ "$(id -u)" -eq 0 ]; then chown "$PG_OS_USER" "$data" "$sock"; fi
  chmod 700 "$data"
  chmod 755 "$sock"
  if [ ! -f "$data/PG_VERSION" ]; then
    say "creating a PostgreSQL cluster in $data"
    as_pg "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    {
      echo "listen_addresses = ''"
      echo "unix_socket_directories = '$sock'"
      echo "max_connections = 300"
      echo "shared_buffers = 256MB"
      echo "log_min_messages = warning"
      if [ "$mode" = fast ]; then
        echo "fsync = off"
        echo "synchronous_commit = off"
        echo "full_page_writes = off"
      fi
    } | as_pg tee -a "$data/postgresql.conf" >/dev/null
    # Logins in the group hms2fa_password_logins must give a password (tests of refusals).
    {
      echo "local all +hms2fa_password_logins scram-sha-256"
      echo "local all all trust"
    } | as_pg tee "$data/pg_hba.conf" >/dev/null
  fi
  if as_pg "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    say "PostgreSQL is already running in $data"
  else
    say "starting PostgreSQL (socket in $sock)"
    as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start >/dev/null ||
      { cat "$data/server.log" >&2 || true; die "PostgreSQL did not start"; }
  fi
}

stop_cluster() {
  local data=$1
  [ -f "$data/PG_VERSION" ] || return 0
  if as_pg "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    say "stopping PostgreSQL in $data"
    as_pg "$PG_BIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null || true
  fi
}
