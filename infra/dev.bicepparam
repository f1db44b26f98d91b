// Development: one subscription, small and cheap, deletion consent on so test devices clean up after themselves.
using './main.bicep'

param location = 'westeurope'
param environmentName = 'dev'
// Replace with your subscription id(s).
param subscriptionsInScope = [
  '00000000-0000-0000-0000-000000000000'
]
param eventScope = 'Subscription'
// First deployment: false. After `az functionapp deployment source config-zip`, redeploy with true.
param deployEventSubscriptions = false
// Dev has no pre-integration devices.
param cutover = ''
// Every 30 minutes, so drift shows up quickly while testing.
param recoverySweepSchedule = '0 */30 * * * *'
param deleteVaultWithDevice = true
param activationKeyTtlHours = 24
param planSku = 'EP1'
param maximumElasticWorkerCount = 3
param serviceBusSku = 'Standard'
param storageSku = 'Standard_LRS'
param logRetentionInDays = 30
param alertEmail = ''
param tags = {
  costCenter: 'dev'
}
// The activation-key API's app registration (infra/README.md, "Who may call the API"): replace with its client id.
param apiClientId = '00000000-0000-0000-0000-000000000000'
