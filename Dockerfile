# syntax=docker/dockerfile:1
#
# tilestream: a static binary on distroless, running as a non-root user.
#
#   docker build -t tilestream .
#   docker build --build-arg VERSION=$(git describe --always) -t tilestream .
#
# The builder runs on the build machine's platform and cross-compiles for the
# target one (docker buildx build --platform linux/amd64,linux/arm64 .):
# CGO_ENABLED=0 and the pebblegozstd tag (pure-Go zstd) keep the binary free
# of C, so it needs no libc and runs on distroless/static.
#
# No HEALTHCHECK: distroless has no shell, curl or wget to run one, and the
# binary has no probe subcommand. Orchestrators probe GET /readyz (200 once
# consuming and serving) from outside: a Kubernetes readinessProbe, or a
# load balancer's health check.

# golang:1.26 follows the latest 1.26.x, which satisfies go.mod's `go 1.26.8`.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS TARGETARCH
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -tags pebblegozstd -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
        -o /out/tilestream ./cmd/tilestream
# The data directory (the Pebble store, or the cache in front of DynamoDB),
# owned by the nonroot user (65532) so that a fresh named volume mounted on it
# takes that owner and is writable.
RUN mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tilestream /usr/local/bin/tilestream
# A default configuration so that the image runs on its own; compose.yaml
# mounts deploy/tilestream.yaml over it, and so can any deployment.
COPY deploy/tilestream.yaml /etc/tilestream/tilestream.yaml
COPY --from=build --chown=65532:65532 /out/data /var/lib/tilestream
USER 65532:65532
WORKDIR /var/lib/tilestream
VOLUME ["/var/lib/tilestream"]
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/tilestream"]
CMD ["run", "--config", "/etc/tilestream/tilestream.yaml"]
