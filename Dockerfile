# Static tilestream binary on a distroless base, running as non-root.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -tags pebblegozstd -trimpath -ldflags "-s -w" -o /out/tilestream ./cmd/tilestream
# The data directory, owned by the nonroot user (65532) so a fresh named volume
# mounted on it inherits a writable owner.
RUN mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tilestream /usr/local/bin/tilestream
COPY deploy/tilestream.yaml /etc/tilestream/tilestream.yaml
COPY --from=build --chown=65532:65532 /out/data /var/lib/tilestream
USER nonroot:nonroot
WORKDIR /var/lib/tilestream
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/tilestream"]
CMD ["run", "--config", "/etc/tilestream/tilestream.yaml"]
