#!/usr/bin/env bash
# Prove GPU telemetry on a GPU host (ORCH-3028): orchestratord's own NVML reader reads
# every GPU; given a config, a daemon started on it exports gpu_utilization and
# vram_used_bytes for the replicas of its GPU pools that run on this host.
#
#   scripts/gpu-check.sh [CONFIG]
#
# Creates .venv (scripts/setup.sh) and installs nvidia-ml-py into it when missing. Set
# METRICS_KEY when the config closes /metrics. Exits 1, saying why, when NVML cannot be
# used here or the daemon exports no GPU series; 2 on bad usage.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -gt 1 ] || [[ "${1:-}" == -* ]]; then
  echo "usage: scripts/gpu-check.sh [CONFIG]" >&2
  exit 2
fi
config=${1:-}

[ -x .venv/bin/python ] || bash scripts/setup.sh
.venv/bin/python -c 'import pynvml' 2>/dev/null \
  || .venv/bin/python -m pip install --quiet 'nvidia-ml-py>=12'

echo "== nvidia-smi"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=index,name,uuid,utilization.gpu,memory.used,memory.total \
    --format=csv || echo "gpu-check: nvidia-smi failed (see above)"
else
  echo "nvidia-smi is not on PATH"
fi

echo "== NVML through orchestratord_server.runtime.gpu_telemetry"
.venv/bin/python - <<'PY'
import sys

import pynvml

from orchestratord_server.runtime.gpu_telemetry import Nvml

nvml = Nvml()
if nvml.unavailable is not None:
    sys.exit(f"gpu-check: FAILED: {nvml.unavailable}")
count = pynvml.nvmlDeviceGetCount()  # NVML was initialised by the reader above
if count == 0:
    sys.exit("gpu-check: FAILED: NVML works but sees no GPU")
for index in range(count):
    r = nvml.read(index)
    utilization = "-" if r.utilization is None else f"{r.utilization:.0%}"
    used = "-" if r.memory_used_bytes is None else f"{r.memory_used_bytes / 2**20:.0f} MiB"
    total = "-" if r.memory_total_bytes is None else f"{r.memory_total_bytes / 2**20:.0f} MiB"
    print(f"device {index}: {r.name} {r.uuid} busy {utilization}, memory {used} of {total}")
    if r.error is not None:
        print(f"  absent: {r.error}")
PY

if [ -z "$config" ]; then
  echo "gpu-check: OK (NVML readings; pass a config to check a daemon's /metrics too)"
  exit 0
fi

echo "== daemon on $config"
port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
.venv/bin/orchestratord serve --config "$config" --host 127.0.0.1 --port "$port" \
  >"$log" 2>&1 &
daemon=$!
stop_daemon() {
  kill "$daemon" 2>/dev/null || true
  wait "$daemon" 2>/dev/null || true
  rm -f "$log"
}
trap stop_daemon EXIT

for _ in $(seq 1 60); do
  curl -fsS "http://127.0.0.1:$port/livez" >/dev/null 2>&1 && break
  if ! kill -0 "$daemon" 2>/dev/null; then
    cat "$log" >&2
    echo "gpu-check: FAILED: the daemon exited (log above)" >&2
    exit 1
  fi
  sleep 0.5
done

auth=()
[ -n "${METRICS_KEY:-}" ] && auth=(-H "Authorization: Bearer $METRICS_KEY")
metrics=$(curl -fsS "${auth[@]}" "http://127.0.0.1:$port/metrics") || {
  echo "gpu-check: FAILED: no /metrics from the daemon (closed? set METRICS_KEY)" >&2
  exit 1
}
series=$(grep -E '^(gpu_utilization|vram_used_bytes)\{' <<<"$metrics" || true)
if ! grep -q '^gpu_utilization{' <<<"$series" || ! grep -q '^vram_used_bytes{' <<<"$series"; then
  [ -z "$series" ] || echo "$series"
  echo "gpu-check: FAILED: no gpu_utilization and vram_used_bytes series; does the config" \
    "have a GPU pool with a replica on this host (launch, command or a loopback url)?" \
    "Its pool health's gpu_telemetry says why." >&2
  exit 1
fi
echo "$series"
echo "gpu-check: OK"
