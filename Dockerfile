# Herald in a container: a static binary (pure-Go SQLite, no cgo) on
# distroless/static, run as a non-root user, with its data in the /data
# volume. docs/operations.md, "Running in a container", says more.
#
#   docker build -t herald .
#   docker run -d --name herald -p 8480:8480 -v herald-data:/data --stop-timeout 45 herald
#   docker logs herald        # the first admin key, printed once
#
# The image runs any herald verb: docker run --rm herald version.

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# CGO_ENABLED=0 selects the pure-Go SQLite driver and links statically, so
# the binary needs no C library at run time.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/herald ./cmd/herald \
 && mkdir /out/data

# distroless/static has CA certificates (webhooks over HTTPS), time zone
# data and a nonroot user (65532), and no shell.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/herald /usr/local/bin/herald
# A new named volume takes this directory's owner, so Herald can write it.
COPY --from=build --chown=65532:65532 /out/data /data
ENV HERALD_DATA_DIR=/data \
    HERALD_ADDR=:8480
VOLUME /data
EXPOSE 8480
USER 65532:65532
# No HEALTHCHECK: the image has no shell or HTTP client, and herald has no
# health-check verb. Probe GET /readyz from outside (a load balancer, or a
# Kubernetes httpGet readiness probe); GET /healthz for liveness.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/herald"]
CMD ["serve"]
