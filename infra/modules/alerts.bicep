// Alert rules: edgevault's own alert events (log search on the handler's `edgevault::alert` log target) and
// dead-lettered Service Bus messages (a command that failed MAX_DELIVERY_COUNT times).

param location string
param baseName string
param appInsightsId string
param serviceBusId string
param actionGroupId string

@description('Worker queues whose dead-letter count is watched (the alerts queue is not: nothing consumes it).')
param workerQueues array

param tags object = {}

// The handler logs each alert as one line on stderr (handlers/src/alerts.rs, tracing's text format):
//   <time> WARN edgevault::alert: <what> alert_id=… state=Raised severity=Warning device=… vault=… action=…
// The Functions host collects the custom handler's output as traces (host.json logs at Information), so the rules
// count raised alerts of each severity; resolutions (state=Resolved) do not fire.
var alertTraces = 'traces | where message has "edgevault::alert" and message contains "state=Raised"'

resource criticalAlerts 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: 'alert-${baseName}-critical'
  location: location
  tags: tags
  properties: {
    displayName: 'edgevault: critical alert (vault unrecoverable, device KeyVaultSyncFailed)'
    description: 'edgevault raised a Critical alert: a vault could not be recovered or a command failed for good. The log line names the device, the vault and what the operator must do.'
    severity: 0
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: '${alertTraces} and message contains "severity=Critical"'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: false
    actions: {
      actionGroups: [
        actionGroupId
      ]
    }
  }
}

resource warningAlerts 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: 'alert-${baseName}-warning'
  location: location
  tags: tags
  properties: {
    displayName: 'edgevault: warning alert (vault deleted, being recovered; orphaned vault)'
    description: 'edgevault raised a Warning alert, e.g. a device\'s vault was deleted and is being recovered, or a deleted device left a vault behind without deletion consent.'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: '${alertTraces} and message contains "severity=Warning"'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: false
    actions: {
      actionGroups: [
        actionGroupId
      ]
    }
  }
}

resource deadLetters 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'alert-${baseName}-deadletters'
  location: 'global'
  tags: tags
  properties: {
    description: 'A command was dead-lettered after MAX_DELIVERY_COUNT deliveries: the device is marked KeyVaultSyncFailed; inspect the dead-letter queue, fix the cause and resubmit.'
    severity: 1
    enabled: true
    scopes: [
      serviceBusId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'DeadletteredMessages'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'DeadletteredMessages'
          dimensions: [
            {
              name: 'EntityName'
              operator: 'Include'
              values: workerQueues
            }
          ]
          timeAggregation: 'Maximum'
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
