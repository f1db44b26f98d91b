// Production: every subscription with Stack Edge devices, devices older than the integration left alone, vaults kept
// when a device is deleted unless the operator consents.
using './main.bicep'

param location = 'westeurope'
param environmentName = 'prod'
// Replace with the subscriptions whose Stack Edge devices edgevault manages.
param subscriptionsInScope = [
  '11111111-1111-1111-1111-111111111111'
  '22222222-2222-2222-2222-222222222222'
]
param eventScope = 'Subscription'
// First deployment: false. After the package is deployed, redeploy with true.
param deployEventSubscriptions = false
// Devices created before the integration went live with no vault linked are pre-integration (legacy): never touched.
param cutover = '2026-12-01T00:00:00Z'
// Every 6 hours, on the hour (UTC).
param recoverySweepSchedule = '0 0 */6 * * *'
// No consent: deleting a device leaves its vault (locked) and raises an "orphaned vault" alert.
param deleteVaultWithDevice = false
param activationKeyTtlHours = 72
param planSku = 'EP1'
param maximumElasticWorkerCount = 10
param serviceBusSku = 'Standard'
param storageSku = 'Standard_ZRS'
param logRetentionInDays = 90
param alertEmail = 'edge-operations@example.com'
param tags = {
  costCenter: 'edge-platform'
}
// The activation-key API's app registration (infra/README.md, "Who may call the API"): replace with its client id.
param apiClientId = '00000000-0000-0000-0000-000000000000'
