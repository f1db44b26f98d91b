// edgevault: the whole system in one subscription-scope deployment.
//
//   az deployment sub create --location <region> --template-file infra/main.bicep --parameters infra/prod.bicepparam
//
// Creates edgevault's resource group (function app on Elastic Premium, its storage, Service Bus and queues,
// Application Insights + Log Analytics, alert rules), the custom least-privilege role and its assignment on every
// subscription in scope, and the Event Grid system topics whose filtered subscriptions feed the ArmEvents function.
// Deploy order (infra/README.md): infrastructure → package (zip deploy) → event subscriptions
// (deployEventSubscriptions=true), because Event Grid checks that the ArmEvents function exists.
targetScope = 'subscription'

@description('Azure region of edgevault\'s resources.')
param location string

@description('Short name of this environment, e.g. dev or prod.')
@minLength(2)
@maxLength(8)
param environmentName string

@description('Name prefix of every resource.')
@minLength(3)
@maxLength(12)
param namePrefix string = 'edgevault'

@description('Resource group that holds edgevault itself.')
param resourceGroupName string = 'rg-${namePrefix}-${environmentName}'

@description('Subscription ids whose Stack Edge devices edgevault manages (the sweep covers them, the custom role is assigned in each, and each gets an Event Grid system topic when eventScope is Subscription).')
@minLength(1)
param subscriptionsInScope array

@description('Where ARM events come from: a system topic per subscription in scope, or per resource group listed in watchedResourceGroups.')
@allowed([
  'Subscription'
  'ResourceGroups'
])
param eventScope string = 'Subscription'

@description('With eventScope ResourceGroups: the resource groups to watch, as objects { subscriptionId, resourceGroup }. Each must exist; its system topic is created inside it.')
param watchedResourceGroups array = []

@description('With eventScope Subscription: the resource group created in each subscription in scope to hold its system topic.')
param eventGridResourceGroupName string = 'rg-${namePrefix}-${environmentName}-events'

@description('Create the event subscriptions to ArmEvents. Leave false on the first deployment (the function does not exist until the package is deployed), then redeploy with true.')
param deployEventSubscriptions bool = false

@description('EDGEVAULT_CUTOVER: RFC 3339 instant; devices created before it with no vault linked are pre-integration and never touched. Empty: none are.')
param cutover string = ''

@description('RecoverySweepSchedule: NCRONTAB (six fields, UTC) of the recovery sweep.')
param recoverySweepSchedule string = '0 0 */6 * * *'

@description('EDGEVAULT_DELETE_VAULT_WITH_DEVICE: operator consent to remove the lock and delete a device\'s vault when the device is deleted (the vault stays soft-deleted and purge-protected for 90 days).')
param deleteVaultWithDevice bool = false

@description('EDGEVAULT_ACTIVATION_KEY_TTL_HOURS: how long an activation key is valid.')
@minValue(1)
@maxValue(720)
param activationKeyTtlHours int = 72

@allowed([
  'EP1'
  'EP2'
  'EP3'
])
param planSku string = 'EP1'

@minValue(1)
@maxValue(100)
param maximumElasticWorkerCount int = 10

@allowed([
  'Standard'
  'Premium'
])
param serviceBusSku string = 'Standard'

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param storageSku string = 'Standard_LRS'

@minValue(30)
@maxValue(730)
param logRetentionInDays int = 30

@description('E-mail address notified by the alert rules; empty for none.')
param alertEmail string = ''

@description('Client (application) id of the activation-key API\'s app registration, created once by an administrator (infra/README.md, "Who may call the API").')
param apiClientId string

param tags object = {}

var baseName = '${namePrefix}-${environmentName}'
var suffix = uniqueString(subscription().id, resourceGroupName)
var allTags = union(tags, {
  application: 'edgevault'
  environment: environmentName
})
var storageAccountName = toLower(take('st${replace(baseName, '-', '')}${suffix}', 24))
var serviceBusName = 'sb-${baseName}-${take(suffix, 6)}'
var appName = 'func-${baseName}-${take(suffix, 6)}'
var deadLetterContainerName = 'eventgrid-deadletter'

resource group 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: resourceGroupName
  location: location
  tags: allTags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'edgevault-monitoring'
  scope: group
  params: {
    location: location
    baseName: baseName
    retentionInDays: logRetentionInDays
    alertEmail: alertEmail
    tags: allTags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'edgevault-storage'
  scope: group
  params: {
    location: location
    name: storageAccountName
    skuName: storageSku
    deadLetterContainerName: deadLetterContainerName
    tags: allTags
  }
}

module serviceBus 'modules/servicebus.bicep' = {
  name: 'edgevault-servicebus'
  scope: group
  params: {
    location: location
    name: serviceBusName
    skuName: serviceBusSku
    workspaceId: monitoring.outputs.workspaceId
    tags: allTags
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'edgevault-functionapp'
  scope: group
  params: {
    location: location
    baseName: baseName
    appName: appName
    planSku: planSku
    maximumElasticWorkerCount: maximumElasticWorkerCount
    storageAccountName: storage.outputs.name
    serviceBusFullyQualifiedNamespace: serviceBus.outputs.fullyQualifiedNamespace
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    subscriptionsInScope: subscriptionsInScope
    cutover: cutover
    recoverySweepSchedule: recoverySweepSchedule
    deleteVaultWithDevice: deleteVaultWithDevice
    activationKeyTtlHours: activationKeyTtlHours
    apiClientId: apiClientId
    tags: allTags
  }
}

module appAccess 'modules/app-access.bicep' = {
  name: 'edgevault-app-access'
  scope: group
  params: {
    principalId: functionApp.outputs.principalId
    storageAccountName: storage.outputs.name
    serviceBusName: serviceBus.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'edgevault-alerts'
  scope: group
  params: {
    location: location
    baseName: baseName
    appInsightsId: monitoring.outputs.appInsightsId
    serviceBusId: serviceBus.outputs.id
    actionGroupId: monitoring.outputs.actionGroupId
    workerQueues: [
      'resource-created'
      'activation-key-requested'
      'vault-deleted'
      'resource-deleted'
      'sweep-pages'
    ]
    tags: allTags
  }
}

// The fleet workbook in Azure Monitor, over the same workspace (modules/workbook.bicep).
module workbook 'modules/workbook.bicep' = {
  name: 'edgevault-workbook'
  scope: group
  params: {
    location: location
    baseName: baseName
    workspaceId: monitoring.outputs.workspaceId
    tags: allTags
  }
}

// Least privilege on the subscriptions in scope: one custom role (see modules/role-definition.bicep for why no
// built-in role fits), assigned at each subscription.
module roleDefinition 'modules/role-definition.bicep' = {
  name: 'edgevault-role-definition'
  params: {
    subscriptionsInScope: subscriptionsInScope
    roleNameSuffix: baseName
  }
}

module subscriptionAccess 'modules/subscription-access.bicep' = [for sub in subscriptionsInScope: {
  name: 'edgevault-access-${take(uniqueString(sub), 8)}'
  scope: subscription(sub)
  params: {
    principalId: functionApp.outputs.principalId
    roleDefinitionId: roleDefinition.outputs.roleDefinitionId
  }
}]

// ARM events: one system topic per source.
var subscriptionSources = [for sub in subscriptionsInScope: {
  subscriptionId: sub
  resourceGroup: eventGridResourceGroupName
  source: '/subscriptions/${sub}'
  topicType: 'Microsoft.Resources.Subscriptions'
}]
var resourceGroupSources = [for watched in watchedResourceGroups: {
  subscriptionId: watched.subscriptionId
  resourceGroup: watched.resourceGroup
  source: '/subscriptions/${watched.subscriptionId}/resourceGroups/${watched.resourceGroup}'
  topicType: 'Microsoft.Resources.ResourceGroups'
}]
var eventSources = eventScope == 'Subscription' ? subscriptionSources : resourceGroupSources

module eventHostGroups 'modules/event-host-rg.bicep' = [for sub in (eventScope == 'Subscription' ? subscriptionsInScope : []): {
  name: 'edgevault-events-rg-${take(uniqueString(sub), 8)}'
  scope: subscription(sub)
  params: {
    name: eventGridResourceGroupName
    location: location
    tags: allTags
  }
}]

module eventTopics 'modules/eventgrid-topic.bicep' = [for src in eventSources: {
  name: 'edgevault-topic-${take(uniqueString(src.source), 8)}'
  scope: resourceGroup(src.subscriptionId, src.resourceGroup)
  dependsOn: [
    eventHostGroups
  ]
  params: {
    name: 'evgt-${baseName}-${take(uniqueString(src.source), 8)}'
    source: src.source
    topicType: src.topicType
    actionGroupId: monitoring.outputs.actionGroupId
    tags: allTags
  }
}]

module deadLetterAccess 'modules/deadletter-access.bicep' = [for (src, i) in eventSources: {
  name: 'edgevault-deadletter-${take(uniqueString(src.source), 8)}'
  scope: group
  params: {
    principalId: eventTopics[i].outputs.principalId
    storageAccountName: storage.outputs.name
    containerName: deadLetterContainerName
  }
}]

module eventSubscriptions 'modules/eventgrid-subscriptions.bicep' = [for (src, i) in eventSources: if (deployEventSubscriptions) {
  name: 'edgevault-eventsubs-${take(uniqueString(src.source), 8)}'
  scope: resourceGroup(src.subscriptionId, src.resourceGroup)
  dependsOn: [
    deadLetterAccess
  ]
  params: {
    topicName: eventTopics[i].outputs.name
    armEventsFunctionId: functionApp.outputs.armEventsFunctionId
    deadLetterStorageId: storage.outputs.id
    deadLetterContainerName: deadLetterContainerName
  }
}]

output resourceGroupName string = group.name
output functionAppName string = functionApp.outputs.name
output functionAppHostName string = functionApp.outputs.defaultHostName
output workbookId string = workbook.outputs.id
output principalId string = functionApp.outputs.principalId
output serviceBusNamespace string = serviceBus.outputs.fullyQualifiedNamespace
output storageAccountName string = storage.outputs.name
output customRoleDefinitionId string = roleDefinition.outputs.roleDefinitionId
