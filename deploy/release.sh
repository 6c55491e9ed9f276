#!/bin/sh
# Builds the release archives: for each platform, static binaries with the
# version and commit stamped in, packed with the install script, README,
# licence, example config and deploy/ files, plus dist/SHA256SUMS.
#
#   [DIST=dir] deploy/release.sh VERSION COMMIT "linux/amd64 linux/arm64"
set -eu

VERSION="$1"
COMMIT="$2"
PLATFORMS="$3"
GO="${GO:-go}"
PKG="github.com/teleport-event-bus/teleport-event-bus"
LDFLAGS="-s -w -X $PKG/pkg/version.Version=$VERSION -X $PKG/pkg/version.Commit=$COMMIT"

cd "$(dirname "$0")/.."
DIST="${DIST:-dist}"
rm -rf "$DIST"
mkdir -p "$DIST"

for platform in $PLATFORMS; do
	os="${platform%/*}"
	arch="${platform#*/}"
	name="teleport-event-bus-$VERSION-$os-$arch"
	stage="$DIST/stage/$name"
	mkdir -p "$stage"
	echo "release: building $name"
	CGO_ENABLED=0 GOOS="$os" GOARCH="$arch" "$GO" build -trimpath -ldflags "$LDFLAGS" \
		-o "$stage/" ./cmd/ingest ./cmd/fluentd-sink ./cmd/configure
	cp deploy/install.sh "$stage/install"
	chmod 0755 "$stage/install"
	cp README.md LICENSE "$stage/"
	mkdir -p "$stage/example"
	cp example/teleport-event-handler.toml "$stage/example/"
	cp -R deploy "$stage/deploy"
	rm -f "$stage/deploy/release.sh"
	tar -C "$DIST/stage" -czf "$DIST/$name-bin.tar.gz" "$name"
done
rm -rf "$DIST/stage"
(cd "$DIST" && sha256sum -- *.tar.gz >SHA256SUMS)
echo "release: wrote $(ls "$DIST" | tr '\n' ' ')"
