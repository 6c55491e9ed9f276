#!/bin/sh
# Installs the teleport-event-bus commands (ingest, fluentd-sink, configure)
# into BINDIR (default /usr/local/bin). Shipped as `install` at the top of the
# release archive and used by `make install`.
#
#   ./install                       # into /usr/local/bin (usually needs sudo)
#   BINDIR="$HOME/.local/bin" ./install
#
# Nothing is half-installed: every binary is copied next to its target under
# a temporary name first, and only when all copies succeeded are they renamed
# into place.
set -eu

BINDIR="${BINDIR:-/usr/local/bin}"
# SRCDIR holds the binaries: the directory of this script in an archive,
# ./bin for `make install`.
SRCDIR="${SRCDIR:-$(cd "$(dirname "$0")" && pwd)}"
COMMANDS="ingest fluentd-sink configure"

fail() {
	echo "install: $*" >&2
	exit 1
}

for cmd in $COMMANDS; do
	[ -f "$SRCDIR/$cmd" ] || fail "missing $SRCDIR/$cmd: run this from an unpacked release archive, or 'make build' first"
done

if [ ! -d "$BINDIR" ]; then
	mkdir -p "$BINDIR" 2>/dev/null || fail "cannot create $BINDIR. Choose a directory you can write to, e.g. BINDIR=\$HOME/.local/bin $0, or run with sudo."
fi
probe="$BINDIR/.teleport-event-bus-install.$$"
if ! (: >"$probe") 2>/dev/null; then
	fail "cannot write to $BINDIR (permission denied or read-only). Run 'sudo $0', or install elsewhere: BINDIR=\$HOME/.local/bin $0"
fi
rm -f "$probe"

staged=""
cleanup() {
	for f in $staged; do rm -f "$f"; done
}
trap cleanup EXIT INT TERM

for cmd in $COMMANDS; do
	tmp="$BINDIR/.$cmd.install.$$"
	staged="$staged $tmp"
	cp "$SRCDIR/$cmd" "$tmp" || fail "copy $cmd to $BINDIR failed; nothing was installed"
	chmod 0755 "$tmp" || fail "chmod $tmp failed; nothing was installed"
done
for cmd in $COMMANDS; do
	mv -f "$BINDIR/.$cmd.install.$$" "$BINDIR/$cmd" || fail "rename into $BINDIR/$cmd failed"
done
staged=""

for cmd in $COMMANDS; do
	echo "installed $BINDIR/$cmd"
done
