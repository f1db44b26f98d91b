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

@description('Action group notified when the topic dead-letters an event it could not deliver to ArmEvents.')
param actionGroupId string

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

// An ARM event that never reached ArmEvents (24 h of retries) is a device or vault change edgevault missed until
// the next sweep: page on it.
resource deadLetters 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'alert-${name}-deadletters'
  location: 'global'
  tags: tags
  properties: {
    description: 'Event Grid dead-lettered an ARM event it could not deliver to ArmEvents (see the eventgrid-deadletter container); the recovery sweep will catch the change, or replay the event.'
    severity: 1
    enabled: true
    scopes: [
      topic.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'DeadLetteredCount'
          metricNamespace: 'Microsoft.EventGrid/systemTopics'
          metricName: 'DeadLetteredCount'
          timeAggregation: 'Total'
          operator: 'GreaterThan'
          threshold: 0
        }
      ]
    }
    autoMitigate: true
    actions: [
      {
        actionGroupId: actionGroupId
      }
    ]
  }
}

output name string = topic.name
output principalId string = topic.identity.principalId
