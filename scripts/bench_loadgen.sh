#!/usr/bin/env bash
# Builds the benchmark's load generator, idempotently, into a cache outside the repo:
#   $CACHE/bin/rdkafka_performance         librdkafka 2.12.1's examples/rdkafka_performance.c, as shipped
#   $CACHE/bin/rdkafka_performance_paced   the same source with only its -r rate limiter replaced
# and installs iperf3 (apt) for the bench's loopback probe.
# CACHE is $GRACCHUS_BENCH_CACHE, default ~/.cache/gracchus-bench. Prints CACHE/bin on success.
#
# Why a native tool: a Python client tops out near a quarter of what the broker takes, so it
# measures itself. librdkafka's source comes from the crates.io crate rdkafka-sys 4.10.0, which
# bundles the whole 2.12.1 tree: no other download site is involved, and the version is pinned.
set -euo pipefail
CACHE=${GRACCHUS_BENCH_CACHE:-$HOME/.cache/gracchus-bench}
CRATE_VERSION=4.10.0
LIBRDKAFKA_VERSION=2.12.1
CRATE=rdkafka-sys-$CRATE_VERSION+$LIBRDKAFKA_VERSION
SRC=$CACHE/librdkafka-$LIBRDKAFKA_VERSION
BIN=$CACHE/bin
CARGO_DIR=${CARGO_HOME:-$HOME/.cargo}
mkdir -p "$BIN"
log() { echo "bench_loadgen: $*" >&2; }

# iperf3: the bench's loopback probe (sendfile's cost per KiB here, read beside consume rows).
# Optional: without it the probe line is left out, so a failed install does not stop here.
if ! command -v iperf3 >/dev/null 2>&1; then
  log "installing iperf3"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3; } >&2 \
    || log "iperf3 not installed; the bench's loopback probe is skipped"
fi

if [[ -x $BIN/rdkafka_performance && -x $BIN/rdkafka_performance_paced ]]; then
  echo "$BIN"
  exit 0
fi

# 1. Debian packages: compression and TLS/SASL headers librdkafka's configure looks for,
#    and /usr/bin/time for the client's CPU.
PACKAGES="build-essential liblz4-dev libzstd-dev libssl-dev zlib1g-dev libsasl2-dev time"
missing=$(for p in $PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [[ -n $missing ]]; then
  log "installing $(echo $missing)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

# 2. The crate file: from the registry cache if cargo already has it, else `cargo fetch` in a
#    throwaway crate that depends on exactly this version.
find_crate() { ls "$CARGO_DIR"/registry/cache/*/"$CRATE.crate" 2>/dev/null | head -1 || true; }
if [[ ! -f $SRC/examples/rdkafka_performance.c ]]; then
  crate=$(find_crate)
  if [[ -z $crate ]]; then
    log "fetching $CRATE from crates.io"
    fetch_dir=$CACHE/fetch
    mkdir -p "$fetch_dir/src"
    printf '[package]\nname = "bench-fetch"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\nrdkafka-sys = "=%s"\n' \
      "$CRATE_VERSION" >"$fetch_dir/Cargo.toml"
    echo 'fn main() {}' >"$fetch_dir/src/main.rs"
    (cd "$fetch_dir" && cargo fetch --quiet)
    crate=$(find_crate)
    [[ -n $crate ]] || { log "cargo fetch did not leave $CRATE.crate in $CARGO_DIR"; exit 1; }
  fi
  unpack=$CACHE/unpack
  rm -rf "$unpack" "$SRC" && mkdir -p "$unpack"
  tar -xzf "$crate" -C "$unpack"
  mv "$unpack/$CRATE/librdkafka" "$SRC"
  rm -rf "$unpack"
fi

# 3. librdkafka itself, static, without the features that pull in curl or Kerberos.
cd "$SRC"
chmod +x configure lds-gen.py 2>/dev/null || true
if [[ ! -f Makefile.config ]]; then
  log "configure (log: $CACHE/configure.log)"
  ./configure --prefix="$CACHE/prefix" --disable-curl --disable-gssapi --enable-static \
    >"$CACHE/configure.log" 2>&1
fi
if [[ ! -f src/librdkafka.a ]]; then
  log "make libs, about 2 minutes on 2 cores (log: $CACHE/make.log)"
  make -j"$(nproc)" libs >"$CACHE/make.log" 2>&1
fi

# 4. The unmodified example.
make -C examples rdkafka_performance >"$CACHE/example.log" 2>&1
cp examples/rdkafka_performance "$BIN/rdkafka_performance.tmp"
mv "$BIN/rdkafka_performance.tmp" "$BIN/rdkafka_performance"

# 5. The paced copy. Upstream's -r sets an inter-message gap and then spins on
#    rd_kafka_poll(rk, 0) until it passes: that burns a whole core at 10k msg/s (stealing it
#    from the broker on a 2-core machine) and, since the gap is measured from after each
#    produce call, the rate undershoots. The patch keeps an absolute schedule instead: message
#    n is due at start + n / rate, and the wait sleeps (poll with a timeout for whole
#    milliseconds, nanosleep for the rest), so a late message does not delay the next ones.
python3 - examples/rdkafka_performance.c examples/rdkafka_performance_paced.c <<'PATCH'
import sys

source_path, target_path = sys.argv[1], sys.argv[2]
text = open(source_path).read()


def replace_once(old, new):
    global text
    count = text.count(old)
    assert count == 1, f"expected one match, found {count} (librdkafka version changed?):\n{old}"
    text = text.replace(old, new)


# The rate, kept as a double beside upstream's integer gap.
replace_once("static int exit_eof              = 0;",
             "static int exit_eof              = 0;\n"
             "static double paced_rate_per_second = 0.0; /* bench patch: -r as a rate */")
replace_once("                        rate_sleep = (int)(1000000.0 / dtmp);",
             "                        rate_sleep = (int)(1000000.0 / dtmp);\n"
             "                        paced_rate_per_second = dtmp;")
# The wait itself. cnt.msgs already counts the message just produced, so the next one is
# due at t_start + cnt.msgs / rate.
replace_once("""                        if (rate_sleep) {
                                rd_ts_t next = rd_clock() + (rd_ts_t)rate_sleep;
                                do {
                                        rd_kafka_poll(
                                            rk,
                                            (int)RD_MAX(0, (next - rd_clock()) /
                                                               1000));
                                } while (next > rd_clock());
                        }""",
"""                        if (rate_sleep) {
                                /* bench patch: absolute schedule, sleeping */
                                rd_ts_t due = cnt.t_start +
                                    (rd_ts_t)((double)cnt.msgs * 1000000.0 /
                                              paced_rate_per_second);
                                rd_ts_t left;
                                rd_kafka_poll(rk, 0);
                                while ((left = due - rd_clock()) > 0) {
                                        if (left >= 1000) {
                                                rd_kafka_poll(rk, (int)(left / 1000));
                                        } else {
                                                struct timespec gap = {0, (long)left * 1000};
                                                nanosleep(&gap, NULL);
                                        }
                                }
                        }""")
open(target_path, "w").write(text)
PATCH
# Link the patched copy the way examples/Makefile links the original: against the static
# library and the libraries configure found (Makefile.config's LIBS).
libs=$(sed -nE 's/^LIBS\+?=[[:space:]]*(.*)/\1/p' Makefile.config | tr '\n' ' ')
# shellcheck disable=SC2086
gcc -g -O2 -Wall -Isrc examples/rdkafka_performance_paced.c -o "$BIN/rdkafka_performance_paced.tmp" \
  src/librdkafka.a $libs -lm -ldl -lpthread -lrt >"$CACHE/paced.log" 2>&1 \
  || { log "linking the paced copy failed, see $CACHE/paced.log"; exit 1; }
mv "$BIN/rdkafka_performance_paced.tmp" "$BIN/rdkafka_performance_paced"
version=$("$BIN/rdkafka_performance" -h 2>&1 || true)  # -h exits non-zero
log "built: $(grep -m1 -o 'librdkafka version [^ ]*' <<<"$version" || echo 'version not printed')"
echo "$BIN"
