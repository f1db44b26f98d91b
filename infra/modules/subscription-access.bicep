// Assigns the custom vault-keeper role to edgevault's identity on one subscription in scope.
targetScope = 'subscription'

param principalId string

@description('Resource id of the custom role definition (role-definition.bicep).')
param roleDefinitionId string

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, roleDefinitionId)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: roleDefinitionId
    description: 'edgevault: Stack Edge device identity, vault lifecycle and locks (never purge).'
  }
}
