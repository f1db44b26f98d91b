// The Service Bus namespace and every queue edgevault uses. Local (SAS) auth is disabled: the function app reaches it
// through the identity-based connection `ServiceBusConnection` (`ServiceBusConnection__fullyQualifiedNamespace`).
//
// Queue settings mirror the code (tests/infra.rs checks them against handlers/src/messages.rs and the function.json
// files):
// - requiresSession: one session per device (`Command::session_id`), so one device's work on a queue runs in order,
//   one message at a time; the workers' function.json files set `isSessionsEnabled: true`.
// - requiresDuplicateDetection: every command and alert carries a deterministic MessageId (`Command::message_id`),
//   so a replayed ARM event, a retried send or a repeated sweep finding is dropped within the window.
// - maxDeliveryCount 10 = `edgevault::messages::MAX_DELIVERY_COUNT`: the workers treat delivery 10 as the last one
//   (mark the device KeyVaultSyncFailed and raise a critical alert) before Service Bus dead-letters the message.
// - lockDuration PT1M: the host renews message and session locks while a handler runs (host.json
//   `maxAutoLockRenewalDuration` 10 minutes, as long as `functionTimeout`, because vault creation is a long-running
//   ARM operation). A short base lock means a crashed instance's message or session is picked up again within a
//   minute instead of the 5-minute maximum, while renewal keeps a slow but healthy worker's lock.
// - deadLetteringOnMessageExpiration: an expired command is kept in the dead-letter queue (and alerted on by
//   alerts.bicep) instead of silently vanishing.

param location string

@description('Namespace name: 6-50 letters, digits and hyphens, globally unique.')
@minLength(6)
@maxLength(50)
param name string

@description('Standard is the smallest tier with sessions and duplicate detection; Premium adds isolation and private endpoints.')
@allowed([
  'Standard'
  'Premium'
])
param skuName string = 'Standard'

param tags object = {}

@description('Log Analytics workspace that receives the namespace\'s operational logs and metrics.')
param workspaceId string

@description('How long duplicate detection remembers a MessageId.')
param duplicateDetectionWindow string = 'PT10M'

// One entry per queue; the literal values are what tests/infra.rs reads.
var queues = [
  {
    name: 'resource-created'
    requiresSession: true
    requiresDuplicateDetection: true
    maxDeliveryCount: 10
    deadLetteringOnMessageExpiration: true
  }
  {
    name: 'activation-key-requested'
    requiresSession: true
    requiresDuplicateDetection: true
    maxDeliveryCount: 10
    deadLetteringOnMessageExpiration: true
  }
  {
    name: 'vault-deleted'
    requiresSession: true
    requiresDuplicateDetection: true
    maxDeliveryCount: 10
    deadLetteringOnMessageExpiration: true
  }
  {
    name: 'resource-deleted'
    requiresSession: true
    requiresDuplicateDetection: true
    maxDeliveryCount: 10
    deadLetteringOnMessageExpiration: true
  }
  {
    // The recovery sweep's pages (one subscription's page of devices each; two sessions per subscription and sweep).
    name: 'sweep-pages'
    requiresSession: true
    requiresDuplicateDetection: true
    maxDeliveryCount: 10
    deadLetteringOnMessageExpiration: true
  }
  {
    // Alerts leave edgevault here for whatever pages the operator; nothing in edgevault consumes them, so no
    // sessions. Raise and resolve reuse the alert id, so duplicate detection drops a retried worker's repeat. An
    // unread alert simply expires: dead-lettering it would trip the dead-letter alert for no failure.
    name: 'alerts'
    requiresSession: false
    requiresDuplicateDetection: true
    maxDeliveryCount: 10
    deadLetteringOnMessageExpiration: false
  }
]

resource namespace 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
    tier: skuName
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

resource queue 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = [for q in queues: {
  parent: namespace
  name: q.name
  properties: {
    requiresSession: q.requiresSession
    requiresDuplicateDetection: q.requiresDuplicateDetection
    duplicateDetectionHistoryTimeWindow: duplicateDetectionWindow
    maxDeliveryCount: q.maxDeliveryCount
    deadLetteringOnMessageExpiration: q.deadLetteringOnMessageExpiration
    lockDuration: 'PT1M'
    defaultMessageTimeToLive: 'P14D'
    maxSizeInMegabytes: 1024
    enableBatchedOperations: true
    enablePartitioning: false
  }
}]

// Operational logs (entity changes, auth failures) and metrics next to the app's telemetry.
resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: namespace
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output id string = namespace.id
output name string = namespace.name
// The host name the identity-based connection needs, e.g. edgevault-prod-sb.servicebus.windows.net.
output fullyQualifiedNamespace string = replace(replace(namespace.properties.serviceBusEndpoint, 'https://', ''), ':443/', '')
output queueNames array = [for q in queues: q.name]
