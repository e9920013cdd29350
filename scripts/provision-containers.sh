#!/usr/bin/env bash
# provision-containers.sh: make sure the container tools the end-to-end
# container tests drive are installed: Debian's runc, iptables (criu runs
# iptables-restore to lock a container's network namespace) and podman
# (with conmon and the network plugins it depends on).
#
# Only missing tools are installed, with apt-get from the system's own apt
# sources, without recommends: runc recommends Debian 12's criu 3.17, which
# does not work on current kernels (`make criu` provides a working one), and
# podman recommends tools only rootless podman needs. The package lists are
# refreshed only when an install fails without them. A second run is a fast
# no-op. Needs root to install.
#
# Environment:
#   DRMCR_APT_LOCK_TIMEOUT  seconds to wait for another apt/dpkg to finish
#                           (default 600)
set -euo pipefail

LOCK_TIMEOUT=${DRMCR_APT_LOCK_TIMEOUT:-600}

for arg in "$@"; do
	case $arg in
	-h | --help)
		sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "usage: $0" >&2
		exit 2
		;;
	esac
done

log() { echo "containers: $*"; }
die() {
	echo "containers: ERROR: $*" >&2
	exit 1
}

# Each tool the tests run, and the Debian package that provides it.
TOOLS=(runc iptables-restore podman conmon)
declare -A PACKAGE_OF=([runc]=runc [iptables-restore]=iptables [podman]=podman [conmon]=conmon)

# The sbin directories hold iptables-restore and runc; a non-login root
# shell may not have them on PATH.
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

missing_packages() {
	local tool pkgs=()
	for tool in "${TOOLS[@]}"; do
		command -v "$tool" >/dev/null 2>&1 || pkgs+=("${PACKAGE_OF[$tool]}")
	done
	# unique, in order
	((${#pkgs[@]})) && printf '%s\n' "${pkgs[@]}" | awk '!seen[$0]++'
	return 0
}

versions() {
	printf 'runc %s, podman %s, %s' \
		"$(runc --version 2>/dev/null | sed -n 's/^runc version //p')" \
		"$(podman --version 2>/dev/null | sed 's/^podman version //')" \
		"$(iptables-restore --version 2>/dev/null | head -n1)"
}

mapfile -t pkgs < <(missing_packages)
if ((${#pkgs[@]} == 0)); then
	log "up to date: $(versions)"
	exit 0
fi

[[ $(id -u) == 0 ]] || die "missing ${pkgs[*]}: installing them needs root"
command -v apt-get >/dev/null || die "missing ${pkgs[*]} and no apt-get to install them"

LOG=$(mktemp "${TMPDIR:-/tmp}/drmcr-containers-apt.XXXXXX")
trap 'rm -f "$LOG"' EXIT

apt_install() {
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		-o DPkg::Lock::Timeout="$LOCK_TIMEOUT" "$@" >"$LOG" 2>&1
}

# apt-get update takes the lists lock without waiting; retry while another
# apt holds it. Its warnings (an unreachable third-party source, a download
# done unsandboxed) do not matter: the install that follows is the judge.
apt_update() {
	local i
	for ((i = 0; i < LOCK_TIMEOUT / 5 + 1; i++)); do
		if apt-get update -q -o DPkg::Lock::Timeout="$LOCK_TIMEOUT" >"$LOG" 2>&1; then
			return 0
		fi
		grep -q 'Could not get lock' "$LOG" || return 1
		sleep 5
	done
	return 1
}

log "installing ${pkgs[*]} with apt-get (no recommends)"
if ! apt_install "${pkgs[@]}"; then
	log "install failed ($(grep -E '^E: ' "$LOG" | head -n1)); refreshing the package lists"
	apt_update || log "apt-get update reported a problem: $(grep -E '^(E|W): ' "$LOG" | head -n3)"
	apt_install "${pkgs[@]}" || die "apt-get install ${pkgs[*]} failed: $(tail -n5 "$LOG")"
fi

mapfile -t still < <(missing_packages)
((${#still[@]} == 0)) || die "installed ${pkgs[*]} but still missing the tools of ${still[*]}"
log "ready: $(versions)"
