# Multi-stage build: a static-ish release binary on a minimal runtime image.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin singleuser-profiles

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/singleuser-profiles /usr/local/bin/singleuser-profiles
COPY profiles /opt/singleuser-profiles/profiles
COPY templates /opt/singleuser-profiles/templates
ENV SUP_PROFILES_DIR=/opt/singleuser-profiles/profiles \
    SUP_TEMPLATES_DIR=/opt/singleuser-profiles/templates \
    SUP_LOG_FORMAT=json
# Numeric, non-root; nothing is written to the filesystem, so any UID (OpenShift) and a
# read-only root filesystem work.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/singleuser-profiles"]
CMD ["serve"]
