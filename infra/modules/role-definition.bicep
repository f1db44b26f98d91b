// The custom role edgevault's identity holds on every subscription in scope.
//
// Why a custom role: the narrowest built-in roles that cover the work are far too wide. `Key Vault Contributor`
// manages every vault and includes purging soft-deleted vaults (`Microsoft.KeyVault/locations/deletedVaults/purge/
// action`), which would let a compromised edgevault destroy exactly what it exists to protect; locks need
// `Microsoft.Authorization/locks/*`, which only Owner and User Access Administrator carry among the general roles;
// and there is no Stack Edge role narrower than Contributor. This role lists exactly the operations the handler calls
// (handlers/src/azure/arm.rs) and nothing else.
//
// Deliberately absent: `Microsoft.KeyVault/locations/deletedVaults/purge/action` (edgevault never purges; a deleted
// vault stays recoverable for its 90-day retention), any `Microsoft.KeyVault/vaults/secrets/*` or data action
// (secrets are reached through the access policy edgevault grants itself on each vault it creates), and
// `Microsoft.Authorization/roleAssignments/*`.
targetScope = 'subscription'

@description('Subscription ids the role may be assigned in.')
param subscriptionsInScope array

@description('Distinguishes the role of one deployment (e.g. dev, prod) from another in the same tenant.')
param roleNameSuffix string

var scopesInScope = [for s in subscriptionsInScope: '/subscriptions/${s}']
// The subscription the definition is created in must be one of its assignable scopes, even when edgevault lives in a
// platform subscription that holds no devices (assignable is not assigned: no assignment is made there).
var assignableScopes = union([
  subscription().id
], scopesInScope)

resource vaultKeeper 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(tenant().tenantId, 'edgevault-vault-keeper', roleNameSuffix)
  properties: {
    roleName: 'edgevault vault keeper (${roleNameSuffix})'
    description: 'What edgevault needs: manage Stack Edge device identity and extended information, create, recover, lock and (with consent) delete Key Vaults and their audit logging. Never purge.'
    type: 'CustomRole'
    assignableScopes: assignableScopes
    permissions: [
      {
        actions: [
          // Stack Edge devices: list/read, enable the system-assigned identity (PATCH), extended information.
          'Microsoft.DataBoxEdge/dataBoxEdgeDevices/read'
          'Microsoft.DataBoxEdge/dataBoxEdgeDevices/write'
          'Microsoft.DataBoxEdge/dataBoxEdgeDevices/getExtendedInformation/action'
          'Microsoft.DataBoxEdge/dataBoxEdgeDevices/updateExtendedInformation/action'
          // Vaults: name check, create / recover (PUT createMode=recover), read, access policies, delete with consent.
          'Microsoft.KeyVault/vaults/read'
          'Microsoft.KeyVault/vaults/write'
          'Microsoft.KeyVault/vaults/delete'
          'Microsoft.KeyVault/vaults/accessPolicies/write'
          'Microsoft.KeyVault/checkNameAvailability/read'
          'Microsoft.KeyVault/deletedVaults/read'
          'Microsoft.KeyVault/locations/deletedVaults/read'
          'Microsoft.KeyVault/locations/operationResults/read'
          // The CanNotDelete lock on each vault (removed only before a consented vault deletion).
          'Microsoft.Authorization/locks/read'
          'Microsoft.Authorization/locks/write'
          'Microsoft.Authorization/locks/delete'
          'Microsoft.Resources/subscriptions/resourceGroups/read'
          // Resources – List with a tag filter: where a device's vault went when it was moved away (reconfigure).
          'Microsoft.Resources/subscriptions/resources/read'
          // Prerequisites: whether Microsoft.KeyVault (and, for audit logging, Microsoft.Storage and Microsoft.Insights)
          // are registered. Registering them is left to the subscription's owner (no */register/action: README).
          'Microsoft.Resources/subscriptions/providers/read'
          // Audit logging: each vault's storage account (created, never deleted) and its diagnostic setting.
          'Microsoft.Storage/storageAccounts/read'
          'Microsoft.Storage/storageAccounts/write'
          'Microsoft.Storage/checknameavailability/read'
          'Microsoft.Insights/diagnosticSettings/read'
          'Microsoft.Insights/diagnosticSettings/write'
        ]
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
  }
}

output roleDefinitionId string = vaultKeeper.id
