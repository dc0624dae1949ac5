# wecom-relay in a small static image: a musl build, then only the binary on `scratch`.
#   docker build -t wecom-relay .
#   docker run -p 8645:8645 -e WECOM_CALLBACK_CORP_ID=... -e WECOM_CALLBACK_ALLOWED_USERS=... wecom-relay
#   docker run -p 8645:8645 -v $PWD/config.yaml:/config/config.yaml:ro wecom-relay
# With no settings at all it serves nothing useful but starts (the echo agent, no app):
# check-config says what is missing:  docker run --rm wecom-relay check-config
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
# .git stays out of the context: pass the commit for `wecom-relay --version`
# (docker build --build-arg WECOM_RELAY_COMMIT=$(git rev-parse --short=12 HEAD) .).
ARG WECOM_RELAY_COMMIT=unknown
ENV WECOM_RELAY_COMMIT=$WECOM_RELAY_COMMIT
RUN cargo build --release --locked -p wecom-relay --target x86_64-unknown-linux-musl \
    && mkdir -p /out/state \
    && cp target/x86_64-unknown-linux-musl/release/wecom-relay /out/wecom-relay

FROM scratch
COPY --from=build /out/wecom-relay /wecom-relay
# A writable place for relay.state_dir, owned by the unprivileged user.
COPY --from=build --chown=65532:65532 /out/state /state
USER 65532:65532
ENV WECOM_CALLBACK_HOST=0.0.0.0 \
    WECOM_CALLBACK_PORT=8645 \
    WECOM_RELAY_LOG_FORMAT=json
# A config.yaml mounted here is read (./config.yaml); without one, the variables alone.
WORKDIR /config
EXPOSE 8645
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/wecom-relay", "health"]
ENTRYPOINT ["/wecom-relay"]
CMD ["serve"]
