// The function app's own storage account (`AzureWebJobsStorage`: host locks, timer schedule monitor, Service Bus
// session checkpoints, the zip package) and the container that receives Event Grid dead letters.
// Reached only with Entra identities: shared-key access is off, so no connection string or key exists anywhere.

param location string

@description('Storage account name: 3-24 lowercase letters and digits, globally unique.')
@minLength(3)
@maxLength(24)
param name string

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param skuName string = 'Standard_LRS'

param tags object = {}

@description('Container for events Event Grid could not deliver to ArmEvents.')
param deadLetterContainerName string = 'eventgrid-deadletter'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35:The Functions host reaches this account over the public endpoint (no VNet integration in this template); access is Entra-only because shared keys are disabled.
  // checkov:skip=CKV_AZURE_59:Same reason as CKV_AZURE_35: public network access is needed by the Functions host and Event Grid dead-lettering without a VNet; every request must carry an Entra token.
  // checkov:skip=CKV_AZURE_206:Host bookkeeping only (locks, checkpoints, the package, dead letters); the replication SKU is a parameter (ZRS/GRS in prod.bicepparam).
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
        }
        file: {
          enabled: true
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

output id string = account.id
output name string = account.name
output deadLetterContainerName string = deadLetterContainer.name
