#!/usr/bin/env bash
# provision-criu.sh: provide a working criu >= 4.0 as build/bin/criu without
# changing the system.
#
# - If the system's criu is >= 4.0 and `criu check` passes, the wrapper just
#   execs it.
# - Otherwise Debian trixie's criu and its whole dependency closure are
#   downloaded with apt into build/criu/ (private sources list, lists, cache and
#   dpkg status: the system's apt state is not touched), unpacked with dpkg -x
#   into build/criu/root, and the wrapper runs it through that root's own
#   dynamic loader and libraries.
# - A probe dump decides whether criu needs CRIU_FAULT=130 (FI_NO_BREAKPOINTS:
#   in some VMs hardware breakpoints never fire and `criu dump` hangs at
#   "Waiting for PID to trap"). The outcome is recorded in
#   build/criu/needs-no-breakpoints (0 or 1); the wrapper reads it, and
#   DRMCR_CRIU_NO_BREAKPOINTS=0|1 in the environment overrides it.
#
# Idempotent: a second run is a fast no-op. Use --force (or
# DRMCR_CRIU_FORCE=1) to redo everything. Needs root (criu does).
#
# Environment:
#   DRMCR_BUILD_DIR         build tree (default: <repo>/build)
#   DRMCR_CRIU_SUITE        Debian suite to take criu from (default: trixie)
#   DRMCR_DEBIAN_MIRROR     mirror URL (default: derived from the system's apt
#                           sources)
#   DRMCR_CRIU_PRIVATE=1    ignore a good system criu, always use the private one
#   DRMCR_CRIU_FORCE=1      same as --force
#   DRMCR_APT_KEYRING       keyring to check SUITE with first (default: the
#                           system's debian-archive-keyring.gpg)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${DRMCR_BUILD_DIR:-$ROOT/build}
CRIU_DIR=$BUILD/criu
PRIV_ROOT=$CRIU_DIR/root
WRAPPER=$BUILD/bin/criu
STAMP=$CRIU_DIR/stamp
MARKER=$CRIU_DIR/needs-no-breakpoints
VERSION_FILE=$CRIU_DIR/version
SUITE=${DRMCR_CRIU_SUITE:-trixie}
MIN_MAJOR=4
MIN_MINOR=0
FORCE=${DRMCR_CRIU_FORCE:-0}
PRIVATE_ONLY=${DRMCR_CRIU_PRIVATE:-0}

for arg in "$@"; do
	case $arg in
	--force) FORCE=1 ;;
	-h | --help)
		sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "usage: $0 [--force]" >&2
		exit 2
		;;
	esac
done

log() { echo "criu: $*"; }
die() {
	echo "criu: ERROR: $*" >&2
	exit 1
}

# The stamp ties the provisioned state to this script's content and to the
# options that change the outcome.
stamp_content() {
	printf 'script %s\nsuite %s\nprivate %s\n' \
		"$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)" "$SUITE" "$PRIVATE_ONLY"
}

# ---------------------------------------------------------------------------
# Fast path
# ---------------------------------------------------------------------------
if [[ $FORCE != 1 && -f $STAMP && -x $WRAPPER && -f $MARKER && -f $VERSION_FILE ]] &&
	[[ "$(cat "$STAMP")" == "$(stamp_content)" ]] &&
	"$WRAPPER" --version >/dev/null 2>&1; then
	log "up to date: $WRAPPER (criu $(cat "$VERSION_FILE"), no-breakpoints=$(cat "$MARKER"))"
	exit 0
fi

[[ $(id -u) == 0 ]] || die "must run as root (criu check/dump need it)"
mkdir -p "$CRIU_DIR" "$(dirname "$WRAPPER")"
rm -f "$STAMP"

# version_ok "Version: 4.1.1" -> true when >= MIN_MAJOR.MIN_MINOR
version_of() { sed -n 's/^Version: *\([0-9][0-9.]*\).*/\1/p' | head -n1; }
version_ok() {
	local v=$1 major minor
	[[ $v =~ ^([0-9]+)\.([0-9]+) ]] || return 1
	major=${BASH_REMATCH[1]}
	minor=${BASH_REMATCH[2]}
	((major > MIN_MAJOR || (major == MIN_MAJOR && minor >= MIN_MINOR)))
}

# ---------------------------------------------------------------------------
# Private apt: download SUITE's criu and its dependency closure
# ---------------------------------------------------------------------------

# Mirror URL of the system's Debian main archive, read from its apt sources
# (deb822 *.sources and one-line *.list). Prefers an entry for the system's
# own codename (not -security/-updates); falls back to any Debian-looking one.
derive_mirror() {
	local codename files=() f
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
	[[ -f /etc/apt/sources.list ]] && files+=(/etc/apt/sources.list)
	for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
		[[ -f $f ]] && files+=("$f")
	done
	((${#files[@]})) || return 1
	awk -v codename="$codename" '
		function consider(uri, suites, comps,   n, i, s) {
			if (uri !~ /^https?:\/\//) return
			if (comps !~ /(^|[ \t])main([ \t]|$)/) return
			n = split(suites, s, /[ \t]+/)
			for (i = 1; i <= n; i++) {
				if (s[i] == codename && best == "") best = uri
				else if (s[i] !~ /-security$/ && fallback == "" && uri !~ /security/) fallback = uri
			}
		}
		function flush() {
			if (types ~ /(^|[ \t])deb([ \t]|$)/ && enabled !~ /^(no|false)$/) {
				n = split(uris, u, /[ \t]+/)
				for (i = 1; i <= n; i++) if (u[i] != "") consider(u[i], suites, comps)
			}
			types = uris = suites = comps = enabled = ""
		}
		FNR == 1 { flush(); deb822 = (FILENAME ~ /\.sources$/) }
		deb822 {
			if ($0 ~ /^[ \t]*$/) { flush(); next }
			if ($0 ~ /^#/) next
			line = $0; key = tolower(line); sub(/:.*/, "", key)
			val = line; sub(/^[^:]*:[ \t]*/, "", val)
			if (key == "types") types = val
			else if (key == "uris") uris = val
			else if (key == "suites") suites = val
			else if (key == "components") comps = val
			else if (key == "enabled") enabled = tolower(val)
			next
		}
		/^[ \t]*deb[ \t]/ {
			line = $0; sub(/#.*/, "", line)
			sub(/^[ \t]*deb[ \t]+/, "", line)
			if (line ~ /^\[/) sub(/^\[[^]]*\][ \t]*/, "", line)
			n = split(line, w, /[ \t]+/)
			comps = ""
			for (i = 3; i <= n; i++) comps = comps " " w[i]
			consider(w[1], w[2], comps)
		}
		END { flush(); if (best != "") print best; else if (fallback != "") print fallback }
	' "${files[@]}"
}

APT_DIR=$CRIU_DIR/apt
APT_CONF=$APT_DIR/apt.conf

# write_apt_conf SOURCES_LINE...: a self-contained apt configuration. The
# system's apt.conf.d is not read (no update hooks, no extra index targets);
# only its proxy and date-check settings are carried over.
write_apt_conf() {
	local arch
	arch=$(dpkg --print-architecture)
	rm -rf "$APT_DIR/etc"
	mkdir -p "$APT_DIR/etc/apt.conf.d" "$APT_DIR/etc/preferences.d" "$APT_DIR/etc/sources.list.d" \
		"$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
	: >"$APT_DIR/status"
	printf '%s\n' "$@" >"$APT_DIR/etc/sources.list"
	{
		echo "Dir::Etc::main \"/dev/null\";"
		echo "Dir::Etc::Parts \"$APT_DIR/etc/apt.conf.d\";"
		echo "Dir::Etc::SourceList \"$APT_DIR/etc/sources.list\";"
		echo "Dir::Etc::SourceParts \"$APT_DIR/etc/sources.list.d\";"
		echo "Dir::Etc::Preferences \"$APT_DIR/etc/preferences\";"
		echo "Dir::Etc::PreferencesParts \"$APT_DIR/etc/preferences.d\";"
		echo "Dir::State \"$APT_DIR\";"
		echo "Dir::State::Lists \"$APT_DIR/lists\";"
		echo "Dir::State::status \"$APT_DIR/status\";"
		echo "Dir::State::extended_states \"$APT_DIR/extended_states\";"
		echo "Dir::Cache \"$APT_DIR/cache\";"
		echo "Dir::Cache::archives \"$APT_DIR/cache/archives\";"
		echo "Dir::Log \"$APT_DIR\";"
		echo "APT::Architecture \"$arch\";"
		echo "APT::Architectures { \"$arch\"; };"
		echo "APT::Install-Recommends \"false\";"
		echo "APT::Install-Suggests \"false\";"
		echo "Acquire::Languages \"none\";"
		echo "Debug::NoLocking \"true\";"
		sandbox_conf
		# Inherit how the system reaches the archive (proxies, date checks).
		apt-config dump 2>/dev/null | grep -E '^Acquire::(https?::Proxy|Check-Valid-Until|Check-Date|Retries)' || true
	} >"$APT_CONF"
}

# sandbox_conf: apt downloads as its sandbox user (_apt), into partial
# directories it hands to that user, when the user can reach them. Under a
# directory only root may enter (a checkout inside `mktemp -d`) it cannot;
# apt then downloads as root anyway and says so with a warning, which
# apt_update_checked would take for a failure. Choose root explicitly
# there, so apt has nothing to warn about.
SANDBOX_LOGGED=0
sandbox_conf() {
	local user gid
	user=$(apt-config dump 2>/dev/null | sed -n 's/^APT::Sandbox::User "\(.*\)";$/\1/p' | tail -n1)
	user=${user:-_apt}
	[[ $user == root ]] && return 0
	if gid=$(id -g "$user" 2>/dev/null) &&
		setpriv --reuid="$user" --regid="$gid" --clear-groups -- \
			test -x "$APT_DIR/lists" 2>/dev/null; then
		return 0
	fi
	if ((SANDBOX_LOGGED == 0)); then
		log "apt's sandbox user $user cannot reach $APT_DIR (a parent directory is private): apt downloads as root" >&2
		SANDBOX_LOGGED=1
	fi
	echo "APT::Sandbox::User \"root\";"
}

papt_get() { APT_CONFIG=$APT_CONF apt-get -q "$@"; }

# apt_update_checked: apt-get update; fails on any fetch or signature problem.
apt_update_checked() {
	local out=$APT_DIR/update.log
	if ! papt_get update >"$out" 2>&1 || grep -qE '^(W|E): ' "$out"; then
		return 1
	fi
}

# newer_keyring MIRROR CODENAME: the debian-archive-keyring package of the
# system's own suite (and its -updates), unpacked privately. Used only when
# the system keyring cannot verify SUITE.
newer_keyring() {
	local mirror=$1 codename=$2 kdir=$CRIU_DIR/keyring deb
	# stdout is the result: progress goes to stderr
	log "system keyring cannot verify $SUITE; fetching debian-archive-keyring from $codename" >&2
	write_apt_conf \
		"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $codename main" \
		"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $codename-updates main"
	apt_update_checked || die "apt-get update for $codename failed: $(tail -n5 "$APT_DIR/update.log")"
	rm -rf "$kdir" && mkdir -p "$kdir/debs"
	(cd "$kdir/debs" && APT_CONFIG=$APT_CONF apt-get -q download debian-archive-keyring >"$APT_DIR/download.log" 2>&1) ||
		die "cannot download debian-archive-keyring: $(tail -n5 "$APT_DIR/download.log")"
	deb=$(ls "$kdir"/debs/debian-archive-keyring_*.deb | head -n1)
	dpkg -x "$deb" "$kdir/root"
	[[ -f $kdir/root/usr/share/keyrings/debian-archive-keyring.gpg ]] || die "no keyring in $deb"
	echo "$kdir/root/usr/share/keyrings/debian-archive-keyring.gpg"
}

provision_private() {
	local mirror codename keyring pkgs debdir=$CRIU_DIR/debs stage=$CRIU_DIR/root.new n
	mirror=${DRMCR_DEBIAN_MIRROR:-$(derive_mirror || true)}
	[[ -n $mirror ]] || die "cannot derive a Debian mirror from /etc/apt/sources.list{,.d}; set DRMCR_DEBIAN_MIRROR"
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
	command -v apt-get >/dev/null && command -v dpkg >/dev/null || die "apt-get and dpkg are required"

	# bookworm's debian-archive-keyring (2023.3+deb12u*) already carries the
	# trixie archive keys; newer_keyring covers systems whose keyring does not.
	keyring=${DRMCR_APT_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
	log "fetching $SUITE package lists from $mirror (private apt state in ${APT_DIR#"$ROOT"/})"
	write_apt_conf "deb [signed-by=$keyring] $mirror $SUITE main"
	if ! apt_update_checked; then
		if grep -qiE 'NO_PUBKEY|signature|not signed|EXPKEYSIG' "$APT_DIR/update.log"; then
			keyring=$(newer_keyring "$mirror" "$codename")
			write_apt_conf "deb [signed-by=$keyring] $mirror $SUITE main"
			apt_update_checked || die "apt-get update for $SUITE failed: $(tail -n5 "$APT_DIR/update.log")"
		else
			die "apt-get update for $SUITE failed: $(tail -n5 "$APT_DIR/update.log")"
		fi
	fi

	# Dependency closure against an empty dpkg status: everything criu needs,
	# libc included, since it runs on the private root's own loader.
	pkgs=$(papt_get -s install criu 2>&1 | awk '/^Inst /{print $2}') ||
		die "cannot resolve criu's dependencies in $SUITE"
	[[ -n $pkgs ]] || die "apt found no criu in $SUITE: $(papt_get -s install criu 2>&1 | tail -n3)"
	n=$(wc -w <<<"$pkgs")
	log "downloading criu and its dependency closure ($n packages)"
	rm -rf "$debdir" && mkdir -p "$debdir"
	# shellcheck disable=SC2086 # one word per package
	(cd "$debdir" && APT_CONFIG=$APT_CONF apt-get -q download $pkgs >"$APT_DIR/download.log" 2>&1) ||
		die "apt-get download failed: $(tail -n5 "$APT_DIR/download.log")"

	log "unpacking into ${PRIV_ROOT#"$ROOT"/}"
	rm -rf "$stage" && mkdir -p "$stage"
	for deb in "$debdir"/*.deb; do
		dpkg -x "$deb" "$stage"
	done
	[[ -x $stage/usr/sbin/criu ]] || die "no usr/sbin/criu in the unpacked packages"
	# swap in with the shortest window for concurrent users of the wrapper
	rm -rf "$PRIV_ROOT.old"
	[[ -e $PRIV_ROOT ]] && mv "$PRIV_ROOT" "$PRIV_ROOT.old"
	mv "$stage" "$PRIV_ROOT"
	rm -rf "$PRIV_ROOT.old"
	# The lists and apt's binary caches (~140 MB) are only needed to
	# provision again; the .debs stay as a record of what was unpacked.
	rm -rf "$APT_DIR/lists" "$APT_DIR/cache"
}

# write_wrapper_private: build/bin/criu runs the private criu on its own
# loader and libraries.
write_wrapper_private() {
	local libdirs=() d ld rel
	for d in usr/lib/x86_64-linux-gnu lib/x86_64-linux-gnu usr/lib lib \
		usr/lib/aarch64-linux-gnu lib/aarch64-linux-gnu; do
		# only real directories with shared objects in them
		[[ -d $PRIV_ROOT/$d && ! -L $PRIV_ROOT/$d ]] || continue
		compgen -G "$PRIV_ROOT/$d/*.so*" >/dev/null || continue
		libdirs+=("$d")
	done
	ld=$(cd "$PRIV_ROOT" && ls usr/lib/*/ld-linux*.so.* usr/lib64/ld-linux*.so.* 2>/dev/null | head -n1 || true)
	[[ -n $ld ]] || die "no dynamic loader in $PRIV_ROOT"
	rel=$(printf '$R/%s:' "${libdirs[@]}")
	rel=${rel%:}
	cat >"$WRAPPER.tmp" <<EOF
#!/bin/sh
# Generated by scripts/provision-criu.sh: do not edit.
# Runs the private criu ($SUITE) on its own loader and libraries.
R="$PRIV_ROOT"
$(wrapper_breakpoints)
exec "\$R/$ld" --library-path "$rel" "\$R/usr/sbin/criu" "\$@"
EOF
	chmod 0755 "$WRAPPER.tmp"
	mv "$WRAPPER.tmp" "$WRAPPER"
}

write_wrapper_system() {
	local bin=$1
	cat >"$WRAPPER.tmp" <<EOF
#!/bin/sh
# Generated by scripts/provision-criu.sh: do not edit.
# The system's criu is good enough.
$(wrapper_breakpoints)
exec "$bin" "\$@"
EOF
	chmod 0755 "$WRAPPER.tmp"
	mv "$WRAPPER.tmp" "$WRAPPER"
}

# The CRIU_FAULT=130 (FI_NO_BREAKPOINTS) decision, shared by both wrappers.
wrapper_breakpoints() {
	cat <<EOF
# CRIU_FAULT=130 (no hardware breakpoints) when the provisioning probe found
# that dumps hang without it; DRMCR_CRIU_NO_BREAKPOINTS=0|1 overrides.
# No redirection to /dev/null here: runc starts criu for a restore inside
# the container's cgroup, whose device rules may refuse it.
nobp=\${DRMCR_CRIU_NO_BREAKPOINTS:-}
if [ -z "\$nobp" ] && [ -r "$MARKER" ]; then
	read -r nobp <"$MARKER"
fi
if [ "\$nobp" = 1 ] && [ -z "\${CRIU_FAULT:-}" ]; then
	CRIU_FAULT=130
	export CRIU_FAULT
fi
EOF
}

# ---------------------------------------------------------------------------
# Breakpoint probe
# ---------------------------------------------------------------------------

# probe_dump NOBP: dump a detached sleep with DRMCR_CRIU_NO_BREAKPOINTS=NOBP.
# Returns 0 on success, 1 on failure, 2 when it hung at "Waiting for PID to
# trap". Leaves the log in $PROBE_DIR/dump-NOBP.log.
PROBE_DIR=
PROBE_PID=
probe_cleanup() {
	if [[ -n $PROBE_PID ]] && kill -0 "$PROBE_PID" 2>/dev/null; then
		kill -KILL "$PROBE_PID" 2>/dev/null || true
	fi
	PROBE_PID=
	if [[ -n $PROBE_DIR ]]; then
		rm -rf "$PROBE_DIR"
	fi
}
probe_dump() {
	local nobp=$1 d logf cpid i rc=1 wrc trap_seen=0
	d=$PROBE_DIR/img-$nobp
	logf=$d/dump.log
	mkdir -p "$d"
	rm -f "$PROBE_DIR/pid"
	# setsid --fork: the sleep is detached from us (new session, parent init).
	setsid -f sh -c 'echo $$ >"$1"; exec sleep 1000' sh "$PROBE_DIR/pid" </dev/null >/dev/null 2>&1
	for ((i = 0; i < 50; i++)); do
		[[ -s $PROBE_DIR/pid ]] && break
		sleep 0.1
	done
	PROBE_PID=$(cat "$PROBE_DIR/pid" 2>/dev/null || true)
	[[ -n $PROBE_PID ]] || die "probe: could not start a test process"
	# wait for the exec of sleep
	for ((i = 0; i < 50; i++)); do
		[[ $(readlink "/proc/$PROBE_PID/exe" 2>/dev/null) == */sleep ]] && break
		sleep 0.1
	done

	DRMCR_CRIU_NO_BREAKPOINTS=$nobp timeout 20 "$WRAPPER" dump -t "$PROBE_PID" -D "$d" \
		--shell-job -v4 -o dump.log </dev/null >/dev/null 2>&1 &
	cpid=$!
	# A healthy dump of a sleep takes well under a second, and only a
	# moment passes between "Waiting for PID to trap" and the trap. Still
	# running 3 s after that message means the breakpoint never fired.
	for ((i = 0; i < 200; i++)); do
		kill -0 "$cpid" 2>/dev/null || break
		if grep -q 'Waiting for [0-9]* to trap' "$logf" 2>/dev/null; then
			trap_seen=$((trap_seen + 1))
			if ((trap_seen > 30)); then
				kill -TERM "$cpid" 2>/dev/null || true
				break
			fi
		fi
		sleep 0.1
	done
	wrc=0
	wait "$cpid" || wrc=$?
	if ((wrc == 0)); then
		rc=0
	elif { ((trap_seen > 30)) || ((wrc == 124)); } &&
		grep -q 'Waiting for [0-9]* to trap' "$logf" 2>/dev/null; then
		rc=2 # hung waiting for the trap (killed by us or by timeout)
	fi
	cp "$logf" "$PROBE_DIR/dump-$nobp.log" 2>/dev/null || true
	kill -KILL "$PROBE_PID" 2>/dev/null || true
	PROBE_PID=
	return $rc
}

run_probe() {
	local rc
	PROBE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/drmcr-criu-probe.XXXXXX")
	trap probe_cleanup EXIT
	log "probing whether criu dump works with hardware breakpoints"
	rc=0
	probe_dump 0 || rc=$?
	if ((rc == 0)); then
		echo 0 >"$MARKER"
		log "dump works with breakpoints: CRIU_FAULT not needed"
	elif ((rc == 2)); then
		log "dump hangs at 'Waiting for PID to trap': retrying with CRIU_FAULT=130"
		rc=0
		probe_dump 1 || rc=$?
		if ((rc != 0)); then
			echo "--- dump log (CRIU_FAULT=130), last lines:" >&2
			tail -n 15 "$PROBE_DIR/dump-1.log" >&2 || true
			die "criu dump fails even with CRIU_FAULT=130"
		fi
		echo 1 >"$MARKER"
		log "dump works with CRIU_FAULT=130: the wrapper will set it"
	else
		echo "--- dump log, last lines:" >&2
		tail -n 15 "$PROBE_DIR/dump-0.log" >&2 || true
		die "probe dump of a sleep process failed"
	fi
	probe_cleanup
	trap - EXIT
}

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------
mode=
if [[ $PRIVATE_ONLY != 1 ]] && sys=$(command -v criu); then
	sysver=$("$sys" --version 2>/dev/null | version_of || true)
	if version_ok "$sysver"; then
		if "$sys" check >/dev/null 2>&1; then
			log "using the system criu $sysver ($sys)"
			mode=system
			write_wrapper_system "$sys"
		else
			log "system criu $sysver fails 'criu check': using a private $SUITE criu"
		fi
	else
		log "system criu ${sysver:-?} is older than $MIN_MAJOR.$MIN_MINOR: using a private $SUITE criu"
	fi
fi

if [[ -z $mode ]]; then
	mode=private
	provision_private
	# no marker yet: the wrapper must not guess
	echo 0 >"$MARKER"
	write_wrapper_private
fi

version=$("$WRAPPER" --version 2>&1 | version_of || true)
version_ok "$version" || die "$WRAPPER does not run or is too old: $("$WRAPPER" --version 2>&1 | head -n3)"
echo "$version" >"$VERSION_FILE"

check_out=$("$WRAPPER" check 2>&1) || die "'criu check' fails: $(tail -n5 <<<"$check_out")"
log "criu $version ($mode): $(tail -n1 <<<"$check_out")"

run_probe

stamp_content >"$STAMP"
log "ready: $WRAPPER (criu $version, no-breakpoints=$(cat "$MARKER"))"
