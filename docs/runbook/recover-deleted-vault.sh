#!/usr/bin/env bash
# Manual recovery of an Azure Stack Edge device's deleted Key Vault with the Azure CLI alone: what an operator runs
# when edgevault is not there (docs/RUNBOOK.md explains each step). Needs `az` logged in with rights on the device,
# the vault and its locks (e.g. Owner on the resource group); nothing else (no jq).
#
#   recover-deleted-vault.sh <device resource id> <operator object id>
#
# The operator's object id is the identity `az` is logged in as: the CIK check reads the secret's id with a
# short-lived `get` access policy for it, removed again at the end. Secret values are never printed.
# Exit codes: 0 recovered, 2 usage, 3 the vault cannot be recovered (purged or past retention: reconfigure the
# device with a new vault instead), 4 the CIK in the vault is not the one the device links.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 <device resource id> <operator object id>" >&2
  exit 2
fi
device="$1"
operator="$2"
az="${AZ:-az}"
# The Data Box Edge api-version of the device operations (databoxedge.json, stable/2023-12-01).
api=2023-12-01
lock_name="${LOCK_NAME:-edgevault-do-not-delete}"
step() { echo "== $*"; }

step "1. the vault and CIK the device is linked to (getExtendedInformation)"
# (-o tsv prints a list one value a line.)
{ read -r vault_id && read -r cik_name && read -r cik_version; } < <("$az" rest -m post \
  --url "https://management.azure.com${device}/getExtendedInformation?api-version=${api}" \
  --query "properties.[clientSecretStoreId, channelIntegrityKeyName, channelIntegrityKeyVersion]" -o tsv)
if [[ -z "$vault_id" || -z "$cik_name" || -z "$cik_version" ]]; then
  echo "the device links no vault or no CIK: nothing to recover (activate it instead)" >&2
  exit 3
fi
vault="${vault_id##*/}"
group="$(sed -E 's#.*/resource[gG]roups/([^/]+)/.*#\1#' <<<"$vault_id")"
echo "vault $vault (resource group $group), CIK $cik_name version $cik_version"

step "2. find the soft-deleted vault"
if ! deleted_id="$("$az" keyvault show-deleted -n "$vault" --query properties.vaultId -o tsv 2>/dev/null)"; then
  echo "the vault $vault is not in the soft-deleted list: purged or past retention, it cannot be recovered" >&2
  exit 3
fi
if [[ "${deleted_id,,}" != "${vault_id,,}" ]]; then
  echo "the soft-deleted vault named $vault is $deleted_id, not the device's $vault_id" >&2
  exit 3
fi

step "3. recover it (PUT with createMode recover)"
"$az" keyvault recover -n "$vault" -g "$group" -o none

step "4. lock it again (CanNotDelete)"
"$az" lock create -n "$lock_name" --lock-type CanNotDelete -g "$group" --resource "$vault" \
  --resource-type Microsoft.KeyVault/vaults --notes "Key Vault of ${device##*/}; re-applied after recovery" -o none

step "5. the device identity's access policy (secrets get, set)"
principal="$("$az" resource show --ids "$device" --query identity.principalId -o tsv)"
"$az" keyvault set-policy -n "$vault" -g "$group" --object-id "$principal" --secret-permissions get set -o none

step "6. the CIK is intact (the linked version is the current one)"
"$az" keyvault set-policy -n "$vault" -g "$group" --object-id "$operator" --secret-permissions get -o none
current="$("$az" keyvault secret show --vault-name "$vault" -n "$cik_name" --query id -o tsv)"
"$az" keyvault delete-policy -n "$vault" -g "$group" --object-id "$operator" -o none
if [[ "${current##*/}" != "$cik_version" ]]; then
  echo "the vault's current $cik_name is version ${current##*/}, the device links $cik_version" >&2
  exit 4
fi

step "7. re-sync the device's extended information (updateExtendedInformation)"
body="{\"clientSecretStoreId\":\"$vault_id\",\"clientSecretStoreUrl\":\"https://${vault,,}.vault.azure.net/\",\"channelIntegrityKeyName\":\"$cik_name\",\"channelIntegrityKeyVersion\":\"$cik_version\",\"syncStatus\":\"KeyVaultSynced\"}"
status="$("$az" rest -m post --url "https://management.azure.com${device}/updateExtendedInformation?api-version=${api}" \
  --body "$body" --query properties.keyVaultSyncStatus -o tsv)"
echo "recovered: $vault_id locked, device policy restored, CIK $cik_version intact, device $status"
