// An Event Grid system topic over Azure Resource Manager events of one subscription
// (`Microsoft.Resources.Subscriptions`) or one resource group (`Microsoft.Resources.ResourceGroups`). Only one system
// topic may exist per source: if the subscription already has one, reuse it (see infra/README.md).
// Its system-assigned identity writes dead letters to edgevault's storage account (shared keys are disabled there).

@description('Resource id of the source: /subscriptions/<id> or /subscriptions/<id>/resourceGroups/<name>.')
param source string

@allowed([
  'Microsoft.Resources.Subscriptions'
  'Microsoft.Resources.ResourceGroups'
])
param topicType string

param name string
param tags object = {}

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: name
  // ARM events are global.
  location: 'global'
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: source
    topicType: topicType
  }
}

output name string = topic.name
output principalId string = topic.identity.principalId
