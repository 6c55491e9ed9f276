# Static binaries on a minimal base, run as a non-root user.
#   make image            (or: docker build -t teleport-event-bus .)
FROM golang:1.26 AS build
ARG VERSION=dev
ARG COMMIT=unknown
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd ./cmd
COPY pkg ./pkg
RUN CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X github.com/teleport-event-bus/teleport-event-bus/pkg/version.Version=${VERSION} -X github.com/teleport-event-bus/teleport-event-bus/pkg/version.Commit=${COMMIT}" \
    -o /out/ ./cmd/ingest ./cmd/fluentd-sink ./cmd/configure \
 && mkdir -p /out/state

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ingest /out/fluentd-sink /out/configure /usr/local/bin/
COPY --from=build --chown=65532:65532 /out/state /var/lib/teleport-event-bus
COPY example/teleport-event-handler.toml /etc/teleport-event-bus/teleport-event-handler.toml
ENV FDFWD_CONFIG=/etc/teleport-event-bus/teleport-event-handler.toml \
    FDFWD_STORAGE=/var/lib/teleport-event-bus
USER nonroot:nonroot
WORKDIR /var/lib/teleport-event-bus
ENTRYPOINT ["/usr/local/bin/ingest"]
