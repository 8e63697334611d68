#!/usr/bin/env bash
# Fuzzes what reads untrusted bytes natively, one libFuzzer target after the
# other, each under AddressSanitizer and UBSan, built into build-fuzz/:
#   nbd_fuzz    the NBD front with the tap core (native/fuzz/nbd_fuzz.cc),
#               seeded with valid client conversations;
#   batch_fuzz  the appliance's batch ingest (native/fuzz/batch_fuzz.cc),
#               seeded with valid batches, raw and LZ4;
#   microscan_fuzz  the agent's scan and payload encoder
#               (native/fuzz/microscan_fuzz.cc), seeded with the batch seeds.
# Each runs for ${FUZZ_SECONDS:-60} seconds (FUZZ_TARGETS picks some).
# Exits non-zero if libFuzzer finds a crash, a sanitizer error, a leak or a
# hang (-timeout), or if fewer than ${FUZZ_MIN_EXECS:-100 per second} inputs
# ran in a target; crash inputs are left in build-fuzz/ as crash-*, timeout-*.
# Needs clang++ and libFuzzer's runtime (Debian: clang, libclang-rt-14-dev),
# and liblz4-dev, libxxhash-dev for batch_fuzz.
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${FUZZ_SECONDS:-60}
# At least this many inputs must have run (a quiet machine does thousands a second).
min_execs=${FUZZ_MIN_EXECS:-$((seconds * 100))}
cxx=${FUZZ_CXX:-clang++}
out=build-fuzz
targets=(${FUZZ_TARGETS:-nbd_fuzz batch_fuzz microscan_fuzz})
declare -A srcs=(
  [nbd_fuzz]="native/src/dirty_map.cc native/src/seq.cc native/src/volume.cc native/src/nbd_server.cc native/src/nbd_tls.cc native/src/tap.cc native/fuzz/nbd_fuzz.cc"
  [batch_fuzz]="native/src/batch_ingest.cc native/fuzz/batch_fuzz.cc"
  [microscan_fuzz]="native/src/batch_ingest.cc native/src/microscan.cc native/fuzz/microscan_fuzz.cc"
)
declare -A libs=([nbd_fuzz]="" [batch_fuzz]="-llz4" [microscan_fuzz]="-llz4")
flags=(-std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
       -I native/src -pthread)

command -v "$cxx" >/dev/null || { echo "fuzz: $cxx not found (install clang and libclang-rt-14-dev)" >&2; exit 1; }
mkdir -p "$out/obj"

# ---- build (objects two at a time; only what changed)
build() {
  local target=$1 stale=0 src obj
  local pids=() objs=()
  for src in ${srcs[$target]}; do
    obj=$out/obj/$(basename "${src%.cc}").o
    objs+=("$obj")
    if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$(find native/src -name '*.h' -newer "$obj")" ] ||
       [ native/fuzz/run.sh -nt "$obj" ]; then
      stale=1
      # -fsanitize=fuzzer on the core too, for coverage; it only links in the target.
      "$cxx" "${flags[@]}" -c "$src" -o "$obj" &
      pids+=($!)
      if [ ${#pids[@]} -ge 2 ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
    fi
  done
  for p in "${pids[@]}"; do wait "$p"; done
  if [ $stale = 1 ] || [ ! -x "$out/$target" ]; then
    echo "fuzz: linking $out/$target"
    # shellcheck disable=SC2086
    "$cxx" "${flags[@]}" "${objs[@]}" ${libs[$target]} -o "$out/$target"
  fi
}
for t in "${targets[@]}"; do build "$t"; done

# ---- seeds: whole client conversations, written as hex (no python needed)
bytes() { printf '%b' "$(sed 's/../\\x&/g' <<<"$1")"; }
u16() { printf '%04x' "$1"; }
u32() { printf '%08x' "$1"; }
u64() { printf '%016x' "$1"; }
str() { printf '%s' "$1" | od -An -v -tx1 | tr -d ' \n'; }
fill() { printf "%0$(($1 * 2))d" 0 | sed "s/00/$2/g"; }    # fill N BYTE
opt() { printf '49484156454f5054%s%s%s' "$(u32 "$1")" "$(u32 $((${#2} / 2)))" "$2"; }
go() { opt 7 "$(u32 ${#1})$(str "$1")0000"; }               # GO NAME, no info requests
req() { printf '25609513%s%s%s%s%s' "$(u16 "$2")" "$(u16 "$1")" "$(u64 "$3")" "$(u64 "$4")" "$(u32 "$5")"; }
# req TYPE FLAGS COOKIE OFFSET LENGTH; types: 0 READ 1 WRITE 2 DISC 3 FLUSH 4 TRIM 6 WRITE_ZEROES
hello=00000003  # fixed newstyle, no zeroes
mkdir -p "$out/nbd_fuzz-seeds" "$out/batch_fuzz-seeds"
seed() { bytes "$2" > "$out/nbd_fuzz-seeds/$1"; }

seed go-write-read-disc "$hello$(go vol)$(req 1 0 1 4096 512)$(fill 512 ab)$(req 0 0 2 4096 512)$(req 3 0 3 0 0)$(req 2 0 4 0 0)"
seed ops "$hello$(go vol)$(req 1 1 1 65536 1024)$(fill 1024 5a)$(req 4 0 2 131072 65536)$(req 6 2 3 196608 8192)$(req 6 1 4 1000 3000)$(req 0 0 5 0 4096)$(req 3 0 6 0 0)$(req 2 0 7 0 0)"
seed unaligned "$hello$(go vol)$(req 1 0 1 1000 100)$(fill 100 c3)$(req 1 0 2 70000 600)$(fill 600 3c)$(req 4 1 3 100 1000)$(req 0 0 4 512 1024)$(req 2 0 5 0 0)"
seed list-info-exportname "00000001$(opt 3 '')$(opt 6 "$(u32 3)$(str vol)00020001")$(opt 6 "$(u32 3)$(str vol)000200010002")$(opt 1 "$(str vol)")$(req 0 0 1 0 512)$(req 2 0 2 0 0)"
seed read-only "$hello$(go ro)$(req 1 0 1 0 512)$(fill 512 11)$(req 4 0 2 0 512)$(req 0 0 3 0 512)$(req 2 0 4 0 0)"
seed rejected "$hello$(go nope)$(go vol)$(req 0 0 1 1048064 1024)$(req 1 0 2 1048064 1024)$(fill 1024 77)$(req 5 0 3 0 0)$(req 3 1 4 0 0)$(req 0 0 5 0 0)$(req 0 0 6 0 512)"
seed bad-magic "$hello$(go vol)$(req 0 0 1 0 512)1234567800000000000000000000000000000000000000000000000000000000"
seed abort "$hello$(opt 8 '')$(opt 2 '')"
# overlapping requests in flight at once: unaligned and FUA writes go to the connection's workers, an aligned
# one is run by the reader; the READ and the FLUSH must wait for the writes before them
seed overlap "$hello$(go vol)$(req 1 0 1 1000 700)$(fill 700 a1)$(req 1 1 2 1200 900)$(fill 900 b2)$(req 1 0 3 1024 1024)$(fill 1024 c3)$(req 0 0 4 512 2048)$(req 6 0 5 1500 100)$(req 3 0 6 0 0)$(req 4 0 7 0 4096)$(req 1 0 8 300 3000)$(fill 3000 d4)$(req 2 0 9 0 0)"
# a last byte of 0xf0..0xff also starts a copy from region (byte & 15) during the conversation
seed copy-during-writes "$hello$(go vol)$(req 1 0 1 200000 4096)$(fill 4096 e7)$(req 6 0 2 300000 70000)$(req 2 0 3 0 0)f3"

# ---- seeds: batches (16 control bytes, see batch_fuzz.cc, then records; little-endian)
le() { local v=$2 i; for ((i = 0; i < $1; i++)); do printf '%02x' $((v & 255)); v=$((v >> 8)); done; }
record() { printf '%s%s%s%s00%s%s' "$(le 8 "$1")" "$(le 8 "$2")" "$(le 4 "$3")" "$(printf '%02x' "$4")" "0000$(le 4 "$5")" "$(le 4 0)"; }
ctl() { printf '%02x%s%s%s%s00' "$1" "$(le 4 "$2")" "$(le 2 "$3")" "$(le 4 "$4")" "$(le 4 "${5:-0}")"; }  # flags count span sectors rawlen
bseed() { bytes "$2" > "$out/batch_fuzz-seeds/$1"; }
mark='{"v":1,"label":"x","consistency":"app","wallMs":1,"group":""}'
every="$(record 11 0 2 1 1024)$(fill 1024 ab)$(record 12 8 4 2 0)$(record 12 16 8 3 0)$(record 13 0 0 4 0)$(record 14 0 0 7 0)"
every+="$(record 15 40 1 5 512)$(fill 512 cd)$(record 15 0 0 8 0)$(record 16 0 0 6 ${#mark})$(str "$mark")"
bseed every-kind "$(ctl 4 8 5 2048)$every"
bseed every-kind-lz4 "$(ctl 6 8 5 2048)$every"
bseed wrong-checksum "$(ctl 8 8 5 2048)$every"
bseed past-the-end "$(ctl 0 1 0 16)$(record 11 12 8 1 4096)$(fill 4096 11)"
bseed lz4-as-sent "$(ctl 1 1 0 2048 544)20020000f00f$(record 11 0 1 1 512 | cut -c1-48)"

# ---- seeds: scans (4 control bytes, see microscan_fuzz.cc, then records)
mkdir -p "$out/microscan_fuzz-seeds"
mseed() { bytes "$2" > "$out/microscan_fuzz-seeds/$1"; }
mseed every-kind "04020203$every"
mseed rewrite-resync "02000103$(record 1 0 2 1 1024)$(fill 1024 ab)$(record 2 1 2 1 1024)$(fill 1024 ab)$(record 3 0 4 5 2048)$(fill 2048 ab)"
mseed huge-trim "01010004$(record 1 130 2 1 1024)$(fill 1024 01)$(record 2 0 3000 2 0)$(record 3 130 2 1 1024)$(fill 1024 00)"

# ---- fuzz
for t in "${targets[@]}"; do
bin=$out/$t
mkdir -p "$out/$t-corpus"
echo "fuzz: $seconds s on $bin, corpus $out/$t-corpus (+ $(ls "$out/$t-seeds" | wc -l) seeds)"
log=$out/$t.log
set +e
"$bin" -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$out/" "$out/$t-corpus" "$out/$t-seeds" > "$log" 2>&1
status=$?
set -e
# (a crash can leave no stats or coverage lines: these must not stop the script)
execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log" | tail -1 || true)
rate=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+).*/\1/p' "$log" | tail -1 || true)
cov=$({ grep -E '^#[0-9]+' "$log" || true; } | tail -1 |
      sed -nE 's/.*cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+).*/cov \1, features \2, corpus \3/p')
if [ $status -ne 0 ]; then
  tail -60 "$log"
  echo "fuzz: $t FAILED (libFuzzer exit $status) after ${execs:-?} execs; see $log and $out/crash-* / timeout-*"
  exit 1
fi
# A run that executed (almost) nothing proves nothing: a floor of executions.
if [ -z "$execs" ] || [ "$execs" -lt "$min_execs" ]; then
  tail -20 "$log"
  echo "fuzz: $t FAILED: ${execs:-no} execs in $seconds s, the floor is $min_execs (FUZZ_MIN_EXECS)"
  exit 1
fi
echo "fuzz: $t ok, ${execs:-?} execs in $seconds s (${rate:-?}/s), ${cov:-no coverage line}, no crash"
done
