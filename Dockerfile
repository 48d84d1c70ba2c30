# tollgate container image: build with the Rust toolchain, run from a small distroless image as a
# non-root user. The image has no shell or curl; the health check runs `tollgate probe`.
#
#   docker build -t tollgate .
#   docker run -p 5000:5000 -e TOLLGATE_ADMIN_TOKEN=$(openssl rand -hex 32) tollgate
#
# Listening on 0.0.0.0 needs an admin token (or TOLLGATE_INSECURE_ADMIN=1); see the README.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tollgate-server --bin tollgate \
 && install -D -m 0755 target/release/tollgate /out/tollgate \
 && install -d -m 0750 /out/data

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/tollgate /usr/local/bin/tollgate
# Runtime configuration persisted in memory mode; mount a volume to keep it across containers.
COPY --from=build --chown=nonroot:nonroot /out/data /var/lib/tollgate
USER nonroot:nonroot
ENV TOLLGATE_LISTEN=0.0.0.0:5000 \
    TOLLGATE_DATA_DIR=/var/lib/tollgate \
    TOLLGATE_DRAIN_DELAY=5 \
    TOLLGATE_SHUTDOWN_GRACE=10 \
    TOLLGATE_LOG_FORMAT=json
EXPOSE 5000
VOLUME ["/var/lib/tollgate"]
# SIGTERM starts the drain (readiness 503, serve for the drain delay, then the grace period); give
# `docker stop` a timeout above drain delay + grace, e.g. `docker stop -t 20`.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/tollgate", "probe", "http://127.0.0.1:5000/livez"]
ENTRYPOINT ["/usr/local/bin/tollgate"]
