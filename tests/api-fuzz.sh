#!/usr/bin/env bash
# Generates test cases for the activation-key API and the fleet view's JSON form from its OpenAPI document (docs/activation-key-api.openapi.json)
# with schemathesis, and runs them against the function app on local-azure: the Functions host, the edgevault
# handler, ARM and Key Vault, as in production. Every answer must match the document and no input may cause a 5xx.
#
# Excluded: `unsupported_method`. Methods outside the route's `methods` (TRACE, PUT, …) never reach edgevault: the
# Functions host answers them with 404, as the real host does; edgevault itself answers 405 with `Allow` for the
# methods it routes but does not take (POST on a status URL, GET on the collection).
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
bash tests/tools/install-schemathesis.sh
venv="$target/tools/schemathesis"
cargo build --quiet -p edgevault -p local-azure --bins

data=$(mktemp -d)
"$target/debug/local-azure" up --data-dir "$data" --port 0 --admin-port 0 --host-port 0 \
  --app . --handler "$target/debug/edgevault" >"$data/out" 2>"$data/err" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 1 300); do
  grep -q '^local-azure ready' "$data/out" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$data/err"; echo "local-azure exited" >&2; exit 1; }
  sleep 0.2
done
eval "$("$target/debug/local-azure" env --data-dir "$data")"

# The caller: a signed-in user with every right on the subscription (App Service Authentication admits its token,
# ARM's permissions API says it may act on any device there), so the cases exercise the API behind the checks.
user=$(curl -sf --noproxy '*' -H 'content-type: application/json' "$LOCAL_AZURE_ADMIN/admin/principals" \
  -d '{"displayName": "api-fuzz", "userPrincipalName": "api-fuzz@local-azure.test"}' |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["objectId"])')
curl -sf --noproxy '*' -o /dev/null -H 'content-type: application/json' "$LOCAL_AZURE_ADMIN/admin/grants" \
  -d "{\"principalId\": \"$user\", \"scope\": \"/subscriptions/$AZURE_SUBSCRIPTION_ID\", \"actions\": [\"*\"]}"
token=$("$target/debug/local-azure" token --data-dir "$data" --principal "$user")

"$venv/bin/schemathesis" --config-file tests/schemathesis.toml run docs/activation-key-api.openapi.json \
  --url "$EDGEVAULT_API_BASE_URL" \
  --header "Authorization: Bearer $token" \
  --max-examples "${API_FUZZ_EXAMPLES:-100}" \
  --seed "${API_FUZZ_SEED:-20261128}" \
  --exclude-checks unsupported_method
