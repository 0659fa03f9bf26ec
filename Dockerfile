# syntax=docker/dockerfile:1
# The service image: `docker build -t singleuser-profiles .` (BuildKit). Not built in this
# repo's CI, which has no container engine; see deploy/README.md.
#
# Build stage: the release binary. Cache mounts keep the crates.io registry and the target
# folder between builds, so a source change recompiles only this crate.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin singleuser-profiles \
    && install -m 0755 target/release/singleuser-profiles /usr/local/bin/singleuser-profiles

# Runtime: distroless (glibc, libgcc, CA certificates; no shell, no package manager). TLS is
# rustls, so no OpenSSL is needed.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="singleuser-profiles" \
      org.opencontainers.image.description="Gives every JupyterHub notebook its own Ray cluster" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /usr/local/bin/singleuser-profiles /usr/local/bin/singleuser-profiles
# The embedded default (dry-run mode, `render`, `validate`): world-readable, owned by root, so
# whatever UID runs the image reads them and none can change them.
COPY --chmod=0644 profiles/*.yaml /opt/singleuser-profiles/profiles/
COPY --chmod=0644 templates/*.yaml /opt/singleuser-profiles/templates/
ENV SUP_PROFILES_DIR=/opt/singleuser-profiles/profiles \
    SUP_TEMPLATES_DIR=/opt/singleuser-profiles/templates \
    SUP_LOG_FORMAT=json
# Numeric and non-root, so `runAsNonRoot` can verify it. The binary writes nothing to the
# filesystem and needs no HOME or passwd entry: OpenShift's arbitrary UID (group 0) and a
# read-only root filesystem work as they are (tests/plane/deploy.rs runs it that way).
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/singleuser-profiles"]
CMD ["serve"]
