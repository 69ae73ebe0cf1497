#!/usr/bin/env bash
# One lent GPU machine's checks and figures (issue 17), in one prepared run.
#
#   bash benchmarks/gpu_run.sh gpu   # the CPU's float32 ceilings, batch dependence, CUDA
#                                    # tests, throughput with a profile, warm-server latency,
#                                    # candidate speed-ups; trained weights if the CPU has fp16
#   bash benchmarks/gpu_run.sh cpu   # the same machine's CPU: the default's 2-core latency,
#                                    # and openvino-f16's deviations and latency if it has fp16
#                                    # (and where it overflows, if it still does)
#
# The machine has PyTorch and CUDA but none of our other dependencies and no
# network, and it gets only the repository, so the run needs what
# benchmarks/gpu_prepare.sh puts beside it (git-ignored, never committed; its
# header has the two calls). Carried paths do not outlive their call, so the data
# is copied to /tmp/devdata, which does while the machine stays warm: a second
# call soon after the first (cpu after gpu) needs to carry only .ovpkg, and finds
# the trained weights.
# Everything lands in $OUT (log.txt, JSON); the tables are printed last.
set -u
mode=${1:-gpu}
OUT=${OUT:-/tmp/gpu-run}
mkdir -p "$OUT"
log="$OUT/log.txt"
step() { echo "=== $* ($(date +%T))" | tee -a "$log"; }
quiet() { local limit=$1; shift; timeout "$limit" "$@" >>"$log" 2>&1 || echo "  exit $? : $*" | tee -a "$log"; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1

step "machine ($mode)"
{ nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  lscpu | grep -E "Model name|^CPU\(s\)"
  echo "flags: $(grep -o -w 'avx512f\|avx512_bf16\|avx512_fp16\|avx512_vnni\|avx_vnni\|amx_bf16\|amx_fp16\|amx_tile\|amx_int8' /proc/cpuinfo | sort -u | tr '\n' ' ')"
} 2>&1 | tee -a "$log"
if [ ! -d /tmp/site/demucs ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl >>"$log" 2>&1
fi
data=/tmp/devdata
if [ -d .devdata ]; then mkdir -p "$data" && cp -rn .devdata/. "$data"/; fi
[ -e ../shared ] || ln -s "$data/shared" ../shared
python3 -c "import daw_bridge.server.server, daw_bridge.separation.engine" 2>&1 | tee -a "$log"

has_fp16() { grep -q -w 'avx512_fp16\|avx_vnni_int16\|amx_fp16' /proc/cpuinfo; }
ceilings() { # the float32 ceilings of CPUs 0,1 (where the latencies run) and of two separate cores
  # CPUs 0 and 1 may be two hyperthreads of one core, which share its FMA units.
  local distinct cpus
  distinct=$(lscpu -p=CPU,CORE | grep -v '^#' | awk -F, '!seen[$2]++ {print $1}' | head -n 2 | paste -sd, -)
  step "float32 ceilings on 2 CPUs: CPU 0's hyperthreads are $(cat /sys/devices/system/cpu/cpu0/topology/thread_siblings_list); two separate cores: $distinct"
  command -v gcc >/dev/null && gcc -O2 -march=native -fopenmp benchmarks/fma_peak.c -o /tmp/fma_peak 2>>"$log" ||
    echo "  no C compiler: FMA peak not measured" | tee -a "$log"
  for cpus in $(printf "%s\n" 0,1 "$distinct" | sort -u); do
    echo "CPUs $cpus:" | tee -a "$log"
    [ -x /tmp/fma_peak ] && timeout 30 taskset -c "$cpus" /tmp/fma_peak 2 2>&1 | tee -a "$log"
    timeout 30 taskset -c "$cpus" python3 -c "import sys, torch; sys.path.insert(0, 'benchmarks'); torch.set_num_threads(2)
from throughput import matmul_peak_gflops; print(f'2 threads: {matmul_peak_gflops():.0f} GFLOP/s float32 sgemm (3072²)')" 2>&1 | tee -a "$log"
  done
}

if [ "$mode" = gpu ]; then
  ceilings
  step "batch dependence"
  timeout 60 python3 benchmarks/gpu_batch_check.py --device cuda 2>&1 | tee -a "$log"
  step "CUDA tests"
  timeout 90 python3 -m pytest -q -p no:cacheprovider tests/separation/test_engine.py -k "gpu or half" 2>&1 | tail -n 15 | tee -a "$log"
  # float32 last, so --profile shows where the default path's time goes.
  step "throughput"
  quiet 120 python3 benchmarks/throughput.py --device cuda --seconds 600 --rounds 2 \
    --precision float16,float32 --batch 16 --profile
  step "latency, warm server on the GPU"
  quiet 90 python3 benchmarks/latency.py --device cuda --rounds 2 --no-cold
  if has_fp16; then # trained weights for openvino-f16's deviations in the cpu call
    step "structured weights"
    quiet 130 python3 benchmarks/structured_weights.py --songs "$data/stems" --steps 300 --batch 8 \
      --device cuda --out "$data/trained.th"
  fi
  step "candidate speed-ups (forward only)"
  timeout 150 python3 benchmarks/gpu_speedups.py --device cuda --batch 16 --budget 90 2>&1 |
    grep -v Warning | tee -a "$log"
  step "summary"
  grep -E "^CPUs|GFLOP/s" "$log"
  grep -A 6 "^htdemucs (full size" "$log"
  grep -A 20 "^Where the GPU's time goes" "$log"
  grep -A 6 "^Full-size htdemucs" "$log"
else
  step "OpenVINO"
  tar xJf .ovpkg/ov-stripped.tar.xz -C /tmp/site
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .ovpkg/*.whl >>"$log" 2>&1
  python3 -c "import openvino as ov; print(ov.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES'))" 2>&1 | tee -a "$log"
  [ -x /tmp/fma_peak ] || ceilings # measured by the gpu call on a warm machine
  step "latency on 2 cores, auto (float32)"
  quiet 90 taskset -c 0,1 python3 benchmarks/latency.py --rounds 2 --no-cold --clips 10
  if has_fp16; then
    weights=()
    [ -f "$data/trained.th" ] && weights=(--weights "$data/trained.th")
    # bfloat16 already missed the bound on 38 songs (more songs can only find a worse
    # stem), and its 3.31 s is known: the time goes to float16 on all 50.
    step "openvino-f16 deviations on this CPU (${weights[*]:-random weights})"
    quiet 170 python3 benchmarks/precision.py --paths openvino-f16 "${weights[@]}" \
      --json "$OUT/dev_cpu.json"
    step "latency on 2 cores, openvino-f16"
    quiet 90 env DAW_BRIDGE_BACKEND=openvino-f16 taskset -c 0,1 python3 benchmarks/latency.py \
      --rounds 2 --no-cold --clips 10
    if grep -q NaN "$OUT/dev_cpu.json" 2>/dev/null; then # still overflowing: where?
      step "where float16 overflows"
      timeout 150 python3 benchmarks/f16_overflow.py --precision f16 "${weights[@]}" 2>&1 | tee -a "$log"
    fi
  else
    echo "no float16 arithmetic on this CPU: openvino-f16 not measured" | tee -a "$log"
  fi
  step "summary"
  grep -E "^CPUs|GFLOP/s" "$log"
  [ -f "$OUT/dev_cpu.json" ] && python3 benchmarks/precision.py --report "$OUT/dev_cpu.json"
  grep -B 2 -A 6 "^Full-size htdemucs" "$log"
fi
