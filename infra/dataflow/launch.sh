#!/usr/bin/env bash
# Launch `plm-index build` on Dataflow with GPU workers running the custom worker image.
#
# Required environment:  PROJECT  REGION  BUCKET  IMAGE  INPUT  OUTPUT  MODEL
# Optional environment:  MACHINE_TYPE (g2-standard-8)  GPU_TYPE (nvidia-l4)  GPU_COUNT (1)
#                        DISK_GB (200)  MAX_WORKERS (8)  SERVICE_ACCOUNT  SUBNETWORK  NO_PUBLIC_IPS=1
#                        PLM_INDEX (the plm-index command to run)
# Any arguments are passed on to `plm-index build` (e.g. --clips scenes --batch-size 8).
#
# The command runs until the job ends: workers commit each video as it finishes; the launcher then
# compacts the index and prints the accounting line, so run it where it can stay up (tmux, a small VM).
set -euo pipefail

missing=()
for name in PROJECT REGION BUCKET IMAGE INPUT OUTPUT MODEL; do
  if [[ -z "${!name:-}" ]]; then
    missing+=("$name")
  fi
done
if (( ${#missing[@]} )); then
  echo "launch.sh: set ${missing[*]} (see infra/dataflow/README.md)" >&2
  exit 2
fi

machine_type="${MACHINE_TYPE:-g2-standard-8}"
gpu_type="${GPU_TYPE:-nvidia-l4}"
gpu_count="${GPU_COUNT:-1}"
disk_gb="${DISK_GB:-200}"
max_workers="${MAX_WORKERS:-8}"
plm_index="${PLM_INDEX:-plm-index}"

args=(
  build
  --input "$INPUT"
  --output "$OUTPUT"
  --model "$MODEL"
  --no-progress
  --runner=DataflowRunner
  "--project=$PROJECT"
  "--region=$REGION"
  "--temp_location=gs://$BUCKET/dataflow/tmp"
  "--staging_location=gs://$BUCKET/dataflow/staging"
  "--job_name=plm-index-$(date -u +%Y%m%d-%H%M%S)"
  "--sdk_container_image=$IMAGE"
  --sdk_location=container
  --experiments=use_runner_v2
  "--dataflow_service_options=worker_accelerator=type:${gpu_type};count:${gpu_count};install-nvidia-driver"
  "--machine_type=$machine_type"
  "--disk_size_gb=$disk_gb"
  "--max_num_workers=$max_workers"
)
if [[ -n "${SERVICE_ACCOUNT:-}" ]]; then
  args+=("--service_account_email=$SERVICE_ACCOUNT")
fi
if [[ -n "${SUBNETWORK:-}" ]]; then
  args+=("--subnetwork=$SUBNETWORK")
fi
if [[ "${NO_PUBLIC_IPS:-}" == 1 ]]; then
  args+=(--no_use_public_ips)
fi

printf 'launching:'
printf ' %q' "$plm_index" "${args[@]}" "$@"
printf '\n'
exec "$plm_index" "${args[@]}" "$@"
