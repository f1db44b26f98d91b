// The resource group that holds a subscription's Event Grid system topic (a system topic lives in the subscription
// whose events it carries).
targetScope = 'subscription'

param name string
param location string
param tags object = {}

resource group 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: name
  location: location
  tags: tags
}
