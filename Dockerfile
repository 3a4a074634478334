# syntax=docker/dockerfile:1
#
# One image for every role: `esm-operator controller` (the default CMD), `esm-operator poller`
# (the per-mapping Deployments the controller creates) and `esm-operator crd`.
#
#   docker build -t esm-operator:dev .

# ---- build: a static musl binary ------------------------------------------------------------
FROM rust:1.95-alpine AS build
# musl-dev: crt files and libc.a for static linking. aws-lc-sys (rustls' crypto) needs only a
# C compiler on x86_64/aarch64 musl; cmake, make, perl and clang cover its CMake/bindgen
# fallback on other targets, linux-headers its <linux/random.h> entropy path.
RUN apk add --no-cache musl-dev linux-headers cmake make perl clang
WORKDIR /src
COPY . .
# The registry, git checkouts and target/ live in BuildKit cache mounts (kept between builds,
# not in the image), so the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin esm-operator \
 && cp target/release/esm-operator /esm-operator

# ---- run: distroless static (CA certificates, /etc/passwd with nonroot, no shell) -----------
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /esm-operator /esm-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/esm-operator"]
CMD ["controller"]
