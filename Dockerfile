# One image with every plantd binary; docker-compose.yml (or a Kubernetes manifest) picks the
# command and the health port per service. Build from the repository root:
#   docker build -t plantd .
# The build step is CI's own build command with --release (see docs/operations.md: CI has no
# container engine, so this image is not built there).

# The toolchain CI builds with (the locked dependencies need at least 1.88).
FROM rust:1.95-bookworm AS build
WORKDIR /src
# libzmq and libsodium are compiled from the sources vendored in the crates (third_party/zmq-sys):
# the Rust image's C/C++ compiler and make are all they need.
COPY . .
RUN cargo build --release --locked --workspace --bins \
 && mkdir /out \
 && find target/release -maxdepth 1 -type f -executable -name 'plant*' -exec cp {} /out/ \;

FROM debian:bookworm-slim
# curl for the HEALTHCHECK; libstdc++ for the statically linked libzmq's C++ runtime.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 plantd \
 && useradd --system --uid 10001 --gid plantd --home-dir /data --shell /usr/sbin/nologin plantd \
 && mkdir -p /data \
 && chown plantd:plantd /data
COPY --from=build /out/ /usr/local/bin/
USER plantd
WORKDIR /data
VOLUME ["/data"]
# MDP, the buses (state, event, metric: frontend and backend), the proxy's HTTP API and every
# health port (8081 broker, 8082 state, 8083 identity, 8084 logger, 8085 proxy, 8086 echo,
# 8087 metric, 8088 bridge-nats).
EXPOSE 9797 11000 11001 12000 12001 13000 13001 8080 8081 8082 8083 8084 8085 8086 8087 8088
# The health port of the service this container runs: set HEALTH_PORT with the command.
ENV HEALTH_PORT=8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${HEALTH_PORT}/healthz" >/dev/null || exit 1
CMD ["plantd-broker"]
