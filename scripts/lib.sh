# Shared by scripts/run.sh and scripts/test.sh: install what is missing, idempotently.

# apt_install PKG...: installs the Debian packages not installed yet (one apt-get update first).
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# need_cargo: fails with a clear message when there is no Rust toolchain.
need_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
}

# pip_install REQ...: installs the Python packages (pinned requirements) not installed yet.
pip_install() {
  local missing=()
  for req in "$@"; do
    python3 -m pip show -q "${req%%[=<>]*}" >/dev/null 2>&1 || missing+=("$req")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3 python3-pip
  local flags=(-q --disable-pip-version-check)
  [ "$(id -u)" -eq 0 ] && flags+=(--root-user-action=ignore)
  # Debian's own python3 refuses pip installs (PEP 668) unless told otherwise.
  python3 -c 'import sys, sysconfig, os; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))' \
    && flags+=(--break-system-packages)
  echo "installing (pip): ${missing[*]}" >&2
  python3 -m pip install "${flags[@]}" "${missing[@]}"
}
