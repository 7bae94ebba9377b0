# Plait node image. Build: docker build -t plait .
# Run:   docker run -p 8080:8080 -v plait-data:/data -e PLAIT_ALLOW_ANONYMOUS=true plait
# (Without a login provider a node listening beyond loopback refuses to
# start unless the operator allows anonymous clients explicitly; with one,
# set PLAIT_PUBLIC_URL, PLAIT_AUTH_KEY_FILE and PLAIT_OIDC_* instead: see
# README.md, "Login and permissions".)
#
# The build runs `make build`, the same target CI runs (followed by
# .ci/image-check on the binary), because this machine has no Docker engine.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN make build

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /data plait && mkdir -p /data && chown plait /data
COPY --from=build /src/bin/plait /usr/local/bin/plait
USER plait
ENV PLAIT_ADDR=0.0.0.0:8080 PLAIT_DATA_DIR=/data PLAIT_LOG_FORMAT=json
VOLUME /data
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD ["/usr/local/bin/plait", "probe", "http://127.0.0.1:8080/readyz"]
ENTRYPOINT ["/usr/local/bin/plait"]
