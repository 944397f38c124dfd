# Image of the host binary, with the engine component built in.
#   docker build -t litellm-secrets-host .
FROM rust:1.95-bookworm AS build
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p litellm-secrets-host

FROM debian:bookworm-slim
RUN useradd --system --create-home --home-dir /var/lib/litellm-secrets litellm-secrets
COPY --from=build /src/target/release/litellm-secrets-host /usr/local/bin/litellm-secrets-host
USER litellm-secrets
# Inside a container the host must listen beyond loopback; publish the port only to a
# network you trust, or put a TLS proxy in front.
ENV LITELLM_SECRETS_LISTEN=0.0.0.0:8200 \
    LITELLM_SECRETS_DATA=/var/lib/litellm-secrets/data.redb
EXPOSE 8200
ENTRYPOINT ["litellm-secrets-host"]
CMD ["serve"]
