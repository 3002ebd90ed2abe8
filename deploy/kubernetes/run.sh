#!/usr/bin/env bash
# Runs the sharded Job and merges its shards' reports:
#   deploy/kubernetes/run.sh [SHARDS] [START_DELAY_S]
# Needs kubectl on a cluster with the image (Containerfile) and imsload on this machine for the
# merge. Writes shards.log, all.json and all.csv here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shards=${1:-4}
delay=${2:-60}
start=$(date -u -d "+${delay} sec" +%Y-%m-%dT%H:%M:%SZ)
kubectl apply -f "$here/configmap.yaml"
kubectl patch configmap imsload-run --type merge -p "{\"data\":{\"start_at\":\"$start\"}}"
kubectl delete job imsload-shards --ignore-not-found --wait=true
# completions, parallelism and --shards set together: they must agree.
sed -e "s/^  completions: .*/  completions: $shards/" \
    -e "s/^  parallelism: .*/  parallelism: $shards/" \
    -e "/- \"--shards\"/{n;s/\"[0-9]*\"/\"$shards\"/}" "$here/job.yaml" | kubectl apply -f -
echo "shards start at $start"
# The Job ends complete or failed; both are waited for, a bounded time.
kubectl wait --for=condition=complete --timeout=2h job/imsload-shards \
    || kubectl wait --for=condition=failed --timeout=10s job/imsload-shards || true
kubectl logs -l job-name=imsload-shards --tail=-1 --max-log-requests="$shards" > shards.log
imsload merge shards.log --report all.json --series all.csv
