// The filtered event subscriptions that deliver ARM events to the ArmEvents function (Event Grid trigger, endpoint
// type AzureFunction). Only the events edgevault acts on leave Event Grid: ArmEvents classifies again and ignores the
// rest, but filtering here keeps invocations (and cost) to what matters.
//
// Key Vault has no "vault deleted" event of its own: a vault deletion is seen as ARM's ResourceDeleteSuccess with
// operationName Microsoft.KeyVault/vaults/delete.
//
// ArmEvents must exist when these are created (Event Grid validates the function): deploy the package first, then
// deploy with deployEventSubscriptions=true (infra/README.md).

@description('Name of the system topic (eventgrid-topic.bicep) in this resource group.')
param topicName string

@description('Resource id of the ArmEvents function: <function app id>/functions/ArmEvents.')
param armEventsFunctionId string

@description('Resource id of the storage account holding the dead-letter container.')
param deadLetterStorageId string

param deadLetterContainerName string

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: topicName
}

var delivery = {
  endpointType: 'AzureFunction'
  properties: {
    resourceId: armEventsFunctionId
    // One event per invocation: ArmEvents enqueues it and answers quickly.
    maxEventsPerBatch: 1
    preferredBatchSizeInKilobytes: 64
  }
}

// ArmEvents only enqueues, so a failed delivery is a transient outage: retry for a day, then dead-letter.
var retryPolicy = {
  maxDeliveryAttempts: 30
  eventTimeToLiveInMinutes: 1440
}

var deadLetter = {
  identity: {
    type: 'SystemAssigned'
  }
  deadLetterDestination: {
    endpointType: 'StorageBlob'
    properties: {
      resourceId: deadLetterStorageId
      blobContainerName: deadLetterContainerName
    }
  }
}

// Stack Edge device written (creation and every later write; the worker is idempotent) or deleted, and a device's
// own updateExtendedInformation (its "Sync device secrets" request; ArmEvents ignores edgevault's own).
resource stackEdgeDevices 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: 'edgevault-stack-edge-devices'
  properties: {
    destination: delivery
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Resources.ResourceWriteSuccess'
        'Microsoft.Resources.ResourceDeleteSuccess'
        'Microsoft.Resources.ResourceActionSuccess'
      ]
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.operationName'
          values: [
            'Microsoft.DataBoxEdge/dataBoxEdgeDevices/write'
            'Microsoft.DataBoxEdge/dataBoxEdgeDevices/delete'
            'Microsoft.DataBoxEdge/dataBoxEdgeDevices/updateExtendedInformation/action'
          ]
        }
      ]
    }
    retryPolicy: retryPolicy
    deadLetterWithResourceIdentity: deadLetter
  }
}

// Key Vault vault deleted: ArmEvents enqueues VaultDeleted, whose worker recovers the vault if a device owns it.
resource keyVaultDeletes 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: 'edgevault-key-vault-deletes'
  properties: {
    destination: delivery
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Resources.ResourceDeleteSuccess'
      ]
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.operationName'
          values: [
            'Microsoft.KeyVault/vaults/delete'
          ]
        }
      ]
    }
    retryPolicy: retryPolicy
    deadLetterWithResourceIdentity: deadLetter
  }
}
